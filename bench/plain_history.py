"""The plain polars competitor of the history family: what someone would write without the project.

    python -m bench.plain_history --landing DIR --from YYYY-MM-DD --to YYYY-MM-DD [--out DIR]

Only polars and the standard library (no project code, no DuckDB, no Dagster): for every day folder
``<landing>/<YYYY-MM-DD>/`` in the range, every ``*.jsonl.gz`` / ``*.jsonl`` file is decompressed and read with
``pl.read_ndjson`` (the contract's eight fields as the schema, ``ignore_errors=True`` so a wrong-typed value
becomes null); a file whose gzip stream is cut is skipped whole, and lines that cannot be JSON objects (not
ending in ``}``) are dropped before the read, as ``read_ndjson`` fails a whole file on one of them. Then, over
all days at once: drop the bad rows (a field missing or null, a device type not in the catalog, a timestamp
without a UTC offset or outside its day, a negative or implausible number), keep the first row of each
``(hub_id, event_id)``, replace the user id by its SHA-256, and sum energy, duration and events per device and
day. With ``--out`` the clean events and the daily sums are written as Parquet.

Less than the project's contract: no raw table with every line as it came, no quarantine with reasons, no
conflicting-duplicate judgement, no keyed pseudonym, no Pandera checks, no features; so its counts may differ a
little from the project's (the remains of truncated files are not read at all, for one).

It prints ``BENCH_RESULT {json}``: seconds after imports (read, process, write), imports, and counts.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402

IMPORT_S = time.perf_counter() - _STARTED

# The device catalog shipped with the project, read as a plain JSON file.
CATALOG = Path(__file__).resolve().parents[1] / "smart_home_assets" / "lib" / "device_catalog.json"
SCHEMA = {
    "event_id": pl.String,
    "hub_id": pl.String,
    "user_id": pl.String,
    "device_id": pl.String,
    "device_type": pl.String,
    "event_timestamp": pl.String,
    "duration_s": pl.Float64,
    "energy_wh": pl.Float64,
}
MAX_ENERGY_WH, MAX_DURATION_S = 25_000.0, 86_400.0  # the contract's plausible range of one event


def read_file(path: Path) -> tuple[pl.DataFrame | None, int]:
    """The file's rows (None when its gzip stream is cut) and its number of non-empty lines."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error):
        return None, 0
    lines = [line for line in data.split(b"\n") if line.strip()]
    objects = [line for line in lines if line.rstrip().endswith(b"}")]
    if not objects:
        return pl.DataFrame(schema=SCHEMA), len(lines)
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(objects)), schema=SCHEMA, ignore_errors=True)
    except pl.exceptions.ComputeError:  # a line that still is not JSON: keep the ones json.loads takes
        parsed = []
        for line in objects:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                parsed.append(line)
        frame = (
            pl.read_ndjson(io.BytesIO(b"\n".join(parsed)), schema=SCHEMA, ignore_errors=True)
            if parsed
            else pl.DataFrame(schema=SCHEMA)
        )
    return frame, len(lines)


def read_days(landing: Path, first: dt.date, last: dt.date) -> tuple[pl.DataFrame, dict[str, int]]:
    frames, counts = [], {"days": 0, "files": 0, "files_skipped": 0, "raw_lines": 0}
    day = first
    while day <= last:
        folder = landing / day.isoformat()
        counts["days"] += 1
        paths = sorted([*folder.glob("*.jsonl.gz"), *folder.glob("*.jsonl")]) if folder.is_dir() else []
        for path in paths:
            frame, lines = read_file(path)
            counts["files"] += 1
            if frame is None:
                counts["files_skipped"] += 1
                continue
            counts["raw_lines"] += lines
            frames.append(frame.with_columns(partition_date=pl.lit(day, pl.Date)))
        day += dt.timedelta(days=1)
    events = pl.concat(frames) if frames else pl.DataFrame(schema={**SCHEMA, "partition_date": pl.Date})
    return events, counts


def clean_and_aggregate(events: pl.DataFrame, catalog: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    day_start = pl.col("partition_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    timestamp = pl.col("event_timestamp").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC", time_unit="us"
    )
    clean = (
        events.lazy()
        .with_columns(event_timestamp=timestamp)
        .filter(
            pl.all_horizontal(pl.all().is_not_null()),
            pl.col("device_type").is_in(catalog),
            pl.col("event_timestamp") >= day_start,
            pl.col("event_timestamp") < day_start + pl.duration(days=1),
            pl.col("energy_wh").is_between(0, MAX_ENERGY_WH),
            pl.col("duration_s").is_between(0, MAX_DURATION_S),
        )
        .unique(subset=["hub_id", "event_id"], keep="first", maintain_order=True)
        .collect()
    )
    users = clean["user_id"].unique().to_list()
    pseudonyms = {u: hashlib.sha256(u.encode("utf-8")).hexdigest() for u in users}
    clean = clean.with_columns(
        pl.col("user_id").replace_strict(pseudonyms, return_dtype=pl.String).alias("user_pseudonym")
    ).drop("user_id")
    daily = (
        clean.group_by("partition_date", "device_id")
        .agg(
            hub_id=pl.col("hub_id").first(),
            device_type=pl.col("device_type").first(),
            energy_wh=pl.col("energy_wh").sum(),
            active_s=pl.col("duration_s").sum(),
            event_count=pl.len(),
        )
        .sort("partition_date", "device_id")
    )
    return clean, daily


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_history", description=__doc__.split("\n")[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--out", type=Path, help="folder for events.parquet and daily.parquet (not written without)")
    args = parser.parse_args(argv)
    catalog = json.loads(CATALOG.read_text(encoding="utf-8"))["device_types"]

    started = time.perf_counter()
    events, counts = read_days(args.landing, args.first, args.last)
    read_s = time.perf_counter() - started
    clean, daily = clean_and_aggregate(events, catalog)
    process_s = time.perf_counter() - started - read_s
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        clean.write_parquet(args.out / "events.parquet")
        daily.write_parquet(args.out / "daily.parquet")
    write_s = time.perf_counter() - started - read_s - process_s
    counts.update(device_usage=clean.height, dropped=counts["raw_lines"] - clean.height, device_days=daily.height)
    print(
        "BENCH_RESULT "
        + json.dumps(
            {
                "import_s": IMPORT_S,
                "read_s": read_s,
                "process_s": process_s,
                "write_s": write_s,
                "compute_s": read_s + process_s + write_s,
                "counts": counts,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
