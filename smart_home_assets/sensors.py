"""The landing-zone sensor: a new or changed upload file requests a raw_usage run for its day.

The cursor keeps each file's fingerprint (size and mtime) as JSON. A day is requested when any of its
files is new or changed; the run key carries a digest of the day's fingerprints, because Dagster
remembers run keys forever and silently drops a repeated one.
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import polars as pl

from resources import LandingZone, LandingZoneError, Warehouse
from smart_home_assets.lib.tables import RAW_USAGE, RAW_USAGE_FILES
from smart_home_assets.partitions import daily_partitions

ingest_job = dg.define_asset_job(
    "ingest_uploads",
    selection=dg.AssetSelection.assets(RAW_USAGE),
    partitions_def=daily_partitions,
    description="Read one day's landing files into raw_usage; device_usage follows by automation.",
)


def changed_days(previous: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> list[str]:
    """Days whose set of files or any file's fingerprint differs from the cursor (pure, for tests)."""
    return sorted(day for day, files in current.items() if files and previous.get(day) != files)


def day_run_key(day: str, files: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return f"{day}:{digest}"


def ingested_fingerprints(warehouse: Warehouse) -> dict[str, dict[str, str]]:
    """What raw_usage has already ingested, per day and file, from its manifest (read-only: never takes
    DuckDB's write lock; on Delta, reads never block writers).

    Used when the sensor has no cursor yet (first start, or a reset), so uploads that a CLI backfill
    already ingested are not requested again.
    """
    manifest = warehouse.read_only_table(RAW_USAGE_FILES, ["partition_date", "source_file", "size_bytes", "mtime_ns"])
    if manifest.is_empty():
        return {}
    rows = manifest.select(
        day=pl.col("partition_date").cast(pl.String),
        name=pl.col("source_file").str.splitn("/", 2).struct.field("field_1"),
        fingerprint=pl.format("{}:{}", "size_bytes", "mtime_ns"),
    )
    seen: dict[str, dict[str, str]] = {}
    for day, name, fingerprint in rows.iter_rows():
        seen.setdefault(day, {})[name] = fingerprint
    return seen


@dg.sensor(job=ingest_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_zone_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZone, warehouse: dg.ResourceParam[Warehouse]
):
    """Requests raw_usage for each day with a new or changed upload file (late days included)."""
    try:
        scan = landing.scan()
    except (LandingZoneError, OSError) as exc:
        return dg.SkipReason(f"landing zone unavailable: {exc}")
    current = {day: {f.name: f.fingerprint for f in files} for day, files in scan.items()}
    if context.cursor:
        previous = json.loads(context.cursor)
    else:
        try:
            previous = ingested_fingerprints(warehouse)
        except Exception as exc:  # e.g. the file is locked by a run: decide on the next tick
            return dg.SkipReason(f"first tick: cannot read what raw_usage already ingested yet ({exc})")
    valid_keys = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests, skipped = [], []
    for day in changed_days(previous, current):
        if day not in valid_keys:
            skipped.append(day)
            continue
        requests.append(
            dg.RunRequest(
                partition_key=day,
                run_key=day_run_key(day, current[day]),
                tags={"smart_home/trigger": "landing_zone_sensor"},
            )
        )
    for day in skipped:
        context.log.warning(
            f"landing folder {day} is outside the partitions window; its files are not ingested"
            " until the window covers it"
        )
    for folder in landing.invalid_day_folders():
        context.log.warning(f"landing folder {folder!r} is not a YYYY-MM-DD date; its files are not ingested")
    # Skipped days stay out of the cursor, so they are requested once the partitions window covers them.
    cursor = json.dumps({day: files for day, files in current.items() if day not in skipped}, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new or changed uploads"), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
