"""The bare-engine competitor: the project's transformation without Dagster, in one script.

    python -m bench.bare_pipeline --landing DIR --warehouse FILE --from YYYY-MM-DD --to YYYY-MM-DD

For each day, in one process: in batches of whole hubs (``SMART_HOME_BATCH_ROWS``, as the assets), read the
landing files and parse every line (:func:`smart_home_assets.lib.ingest.ingest_partitions_in_batches`), clean,
deduplicate and pseudonymize (:func:`smart_home_assets.lib.cleaning.clean_usage`) and validate device_usage with the
same Pandera schema, then write raw_usage, raw_usage_files, device_usage and the quarantine in one transaction
(the project's ``DuckDBWarehouse.replace_partition_in_batches``: bounded memory at any size), count conservation,
aggregate the 28-day lookback in DuckDB and build the features (:mod:`smart_home_assets.lib.features`), write
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

# Importing these also imports dagster (the resources/checks packages define Dagster resources and checks):
# only their pure functions are used, and the import is counted apart from the per-day times.
from asset_checks.feature_checks import DRIFT_REFERENCE_DAYS, drift_report, features_schema  # noqa: E402
from asset_checks.schemas import device_usage_schema, failure_cases  # noqa: E402
from resources.landing import LandingZone  # noqa: E402
from resources.privacy import resolve_key  # noqa: E402
from resources.settings import batch_rows  # noqa: E402
from resources.warehouse import DuckDBWarehouse  # noqa: E402
from smart_home_assets.lib.catalog import load_device_catalog  # noqa: E402
from smart_home_assets.lib.cleaning import clean_usage  # noqa: E402
from smart_home_assets.lib.features import LOOKBACK_DAYS, build_features, daily_usage_sql  # noqa: E402
from smart_home_assets.lib.ingest import ingest_partitions_in_batches  # noqa: E402
from smart_home_assets.lib.tables import (  # noqa: E402
    DEVICE_USAGE,
    DEVICE_USAGE_QUARANTINE,
    RAW_USAGE,
    RAW_USAGE_FILES,
    USAGE_FEATURES,
)

IMPORT_S = time.perf_counter() - _STARTED


def run_day(warehouse: DuckDBWarehouse, landing: LandingZone, day: dt.date, catalog, key: bytes) -> dict:
    partition = day.isoformat()
    schema = device_usage_schema(partition, catalog.device_types)
    counts = dict.fromkeys(("raw_lines", "device_usage", "quarantine", "usage_check_failures"), 0)

    def batches():
        # batches of whole hubs, each ingested and cleaned in one pass: raw rows are never read back
        for raw, manifest in ingest_partitions_in_batches(
            [(partition, landing.files_for_day(partition))], dt.datetime.now(dt.UTC), batch_rows()
        ):
            clean = clean_usage(raw, catalog.device_types, key)
            counts["raw_lines"] += raw.height
            counts["device_usage"] += clean.device_usage.height
            counts["quarantine"] += clean.quarantine.height
            counts["usage_check_failures"] += failure_cases(schema, clean.device_usage).height
            yield {
                RAW_USAGE: raw,
                RAW_USAGE_FILES: manifest,
                DEVICE_USAGE: clean.device_usage,
                DEVICE_USAGE_QUARANTINE: clean.quarantine,
            }

    warehouse.replace_partition_in_batches(
        partition, [RAW_USAGE, RAW_USAGE_FILES, DEVICE_USAGE, DEVICE_USAGE_QUARANTINE], batches()
    )
    conserved = counts["raw_lines"] == counts["device_usage"] + counts["quarantine"]

    daily = warehouse.query(daily_usage_sql(DEVICE_USAGE), [day - dt.timedelta(days=LOOKBACK_DAYS), day])
    features = build_features(daily, day)
    warehouse.replace_partitions({USAGE_FEATURES: features}, [partition])
    feature_failures = failure_cases(features_schema(), features)
    reference = warehouse.query(
        f"SELECT * FROM {USAGE_FEATURES} WHERE partition_date BETWEEN ? AND ?",
        [day - dt.timedelta(days=DRIFT_REFERENCE_DAYS), day - dt.timedelta(days=1)],
    )
    psi = drift_report(reference, features) if reference.height and features.height else {}
    return {
        "partition": partition,
        **counts,
        "features": features.height,
        "conserved": conserved,
        "feature_check_failures": feature_failures.height,
        "max_psi": max(psi.values(), default=0.0),
    }


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
    warehouse = DuckDBWarehouse(database=args.warehouse)
    day = args.first
    while day <= args.last:
        started = time.perf_counter()
        counts = run_day(warehouse, landing, day, catalog, key)
        days.append({**counts, "seconds": time.perf_counter() - started})
        day += dt.timedelta(days=1)
    print(
        "BENCH_RESULT "
        + json.dumps({"import_s": IMPORT_S, "days": days, "compute_s": sum(d["seconds"] for d in days)}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
