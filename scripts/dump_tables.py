"""Dump every table of a data directory's DuckDB warehouse, sorted, to Parquet: two runs compared table by table.

    python scripts/dump_tables.py DATA_DIR OUT_DIR          # once per run
    python scripts/dump_tables.py --compare OUT_A OUT_B     # SAME/DIFF per table; exit 1 on any difference

Ingestion and prediction timestamps and file mtimes (which differ between any two runs) are left out."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import polars as pl
from polars.testing import assert_frame_equal

VOLATILE = {"ingested_at", "mtime_ns", "predicted_at"}


def dump(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        for table in tables:
            columns = [c for c in con.execute(f'SELECT * FROM "{table}" LIMIT 0').pl().columns if c not in VOLATILE]
            selected = ", ".join(f'"{c}"' for c in columns)
            frame = con.execute(f'SELECT {selected} FROM "{table}"').pl()
            (frame.sort(columns) if frame.height else frame).write_parquet(out / f"{table}.parquet")
            print(table, frame.shape)


def compare(a: Path, b: Path) -> bool:
    same = True
    for path in sorted(a.glob("*.parquet")):
        try:
            assert_frame_equal(pl.read_parquet(path), pl.read_parquet(b / path.name), check_exact=True)
            print("SAME", path.stem)
        except (AssertionError, FileNotFoundError) as exc:
            same = False
            print("DIFF", path.stem, str(exc).splitlines()[0])
    return same


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(0 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 1)
    dump(Path(sys.argv[1]), Path(sys.argv[2]))
