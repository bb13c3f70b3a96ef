"""The bare-engine competitor: the project's transformation without Dagster, in one script.

    python -m bench.bare_pipeline --landing DIR --warehouse FILE --from YYYY-MM-DD --to YYYY-MM-DD

For each day, in one process and on one DuckDB connection: read the landing files and parse every line
(:func:`smart_home_assets.ingest.ingest_day`), clean, deduplicate and pseudonymize
(:func:`smart_home_assets.cleaning.clean_usage`), write raw_usage, raw_usage_files, device_usage and the
quarantine in one transaction, validate device_usage with the same Pandera schema and count conservation,
aggregate the 28-day lookback in DuckDB and build the features (:mod:`smart_home_assets.features`), write
them, validate them and compute the drift PSI. The same polars/DuckDB code and the same checks as the assets,
so the difference to the project path is what Dagster and the asset boundaries add: run and step bookkeeping,
event logs, metadata, and each asset re-reading its input from the warehouse.

It prints ``BENCH_RESULT {json}``: seconds per day (after imports), imports, and row counts.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

# Importing these also imports dagster (the resources/checks packages define Dagster resources and checks):
# only their pure functions are used, and the import is counted apart from the per-day times.
from asset_checks.feature_checks import DRIFT_REFERENCE_DAYS, drift_report, features_schema  # noqa: E402
from asset_checks.schemas import device_usage_schema, failure_cases  # noqa: E402
from resources.landing import LandingZone  # noqa: E402
from resources.privacy import resolve_key  # noqa: E402
from smart_home_assets.catalog import load_device_catalog  # noqa: E402
from smart_home_assets.cleaning import clean_usage  # noqa: E402
from smart_home_assets.features import LOOKBACK_DAYS, build_features, daily_usage_sql  # noqa: E402
from smart_home_assets.ingest import ingest_day  # noqa: E402
from smart_home_assets.tables import (  # noqa: E402
    DEVICE_USAGE,
    DEVICE_USAGE_QUARANTINE,
    RAW_USAGE,
    RAW_USAGE_FILES,
    USAGE_FEATURES,
)

IMPORT_S = time.perf_counter() - _STARTED


def replace_partition(con: duckdb.DuckDBPyConnection, tables: dict[str, pl.DataFrame], day: dt.date) -> None:
    """Replace ``day`` in every table in one transaction (the same statements as the project's warehouse)."""
    con.execute("BEGIN TRANSACTION")
    for name, frame in tables.items():
        con.register("incoming_frame", frame)
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM incoming_frame LIMIT 0")
        con.execute(f"DELETE FROM {name} WHERE partition_date = ?", [day])
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming_frame")
        con.unregister("incoming_frame")
    con.execute("COMMIT")


def run_day(con: duckdb.DuckDBPyConnection, landing: LandingZone, day: dt.date, catalog, key: bytes) -> dict:
    partition = day.isoformat()
    raw, manifest = ingest_day(partition, landing.files_for_day(partition), dt.datetime.now(dt.timezone.utc))
    clean = clean_usage(raw, catalog.device_types, key)
    replace_partition(con, {RAW_USAGE: raw, RAW_USAGE_FILES: manifest, DEVICE_USAGE: clean.device_usage,
                            DEVICE_USAGE_QUARANTINE: clean.quarantine}, day)

    usage_failures = failure_cases(device_usage_schema(partition, catalog.device_types), clean.device_usage)
    conserved = raw.height == clean.device_usage.height + clean.quarantine.height

    daily = con.execute(daily_usage_sql(DEVICE_USAGE), [day - dt.timedelta(days=LOOKBACK_DAYS), day]).pl()
    features = build_features(daily, day)
    replace_partition(con, {USAGE_FEATURES: features}, day)
    feature_failures = failure_cases(features_schema(), features)
    reference = con.execute(f"SELECT * FROM {USAGE_FEATURES} WHERE partition_date BETWEEN ? AND ?",
                            [day - dt.timedelta(days=DRIFT_REFERENCE_DAYS), day - dt.timedelta(days=1)]).pl()
    psi = drift_report(reference, features) if reference.height and features.height else {}
    return {"partition": partition, "raw_lines": raw.height, "device_usage": clean.device_usage.height,
            "quarantine": clean.quarantine.height, "features": features.height, "conserved": conserved,
            "usage_check_failures": usage_failures.height, "feature_check_failures": feature_failures.height,
            "max_psi": max(psi.values(), default=0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--landing", required=True)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    landing = LandingZone(path=args.landing)
    catalog = load_device_catalog()
    key = resolve_key()
    days = []
    con = duckdb.connect(args.warehouse)
    try:
        con.execute("SET TimeZone = 'UTC'")
        day = args.first
        while day <= args.last:
            started = time.perf_counter()
            counts = run_day(con, landing, day, catalog, key)
            days.append({**counts, "seconds": time.perf_counter() - started})
            day += dt.timedelta(days=1)
    finally:
        con.close()
    print("BENCH_RESULT " + json.dumps({"import_s": IMPORT_S, "days": days,
                                        "compute_s": sum(d["seconds"] for d in days)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
