"""Ingestion and cleaning assets: landing files -> raw_usage -> device_usage (+ quarantine).

Thin Dagster layer: each asset says what it depends on, calls the pure functions in
``smart_home_assets.ingest`` / ``smart_home_assets.cleaning``, writes through the Warehouse resource in
one transaction per partition, and reports metadata.
"""


import datetime as dt

import dagster as dg
import polars as pl

from resources import LandingZone, PseudonymizationKey, Warehouse
from smart_home_assets.assets.metadata import preview_table, quarantine_rate
from smart_home_assets.automation import follows_upstream_partitions
from smart_home_assets.catalog import load_device_catalog
from smart_home_assets.cleaning import DEVICE_USAGE_SCHEMA, QUARANTINE_SCHEMA, clean_usage
from smart_home_assets.ingest import RAW_USAGE_SCHEMA, ingest_day
from smart_home_assets.partitions import daily_partitions
from smart_home_assets.tables import (
    DEVICE_USAGE,
    DEVICE_USAGE_QUARANTINE,
    DUCKDB_POOL,
    RAW_USAGE,
    RAW_USAGE_FILES,
)


def column_schema(schema: dict[str, pl.DataType]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


def partition_table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(no partitions)")
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return dg.MetadataValue.md(header + "\n".join("| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows))


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars"},
    group_name="ingestion",
    metadata={"dagster/table_name": f"warehouse.main.{RAW_USAGE}", "dagster/column_schema": column_schema(RAW_USAGE_SCHEMA)},
    tags={"zone": "restricted"},
)
def raw_usage(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse) -> dg.MaterializeResult:
    """Every line of the day's landing files, kept as it came, with file, line number and parse error.

    The restricted zone: it holds clear-text user ids. Re-materializing a day replaces it in one transaction.
    """
    ingested_at = dt.datetime.now(dt.timezone.utc)
    per_partition = []
    for key in context.partition_keys:
        files = landing.files_for_day(key)
        raw, manifest = ingest_day(key, files, ingested_at)
        warehouse.replace_partitions({RAW_USAGE: raw, RAW_USAGE_FILES: manifest}, [key])
        problems = manifest.filter(pl.col("problem").is_not_null())
        for row in problems.iter_rows(named=True):
            context.log.warning(f"partition {key}: file {row['source_file']}: {row['problem']}")
        per_partition.append({
            "partition": key, "files": manifest.height, "lines": raw.height,
            "bytes": int(manifest["size_bytes"].sum() or 0),
            "parse_errors": raw["parse_error"].is_not_null().sum(), "file_problems": problems.height,
        })
        context.log.info(f"raw_usage {key}: {per_partition[-1]}")
    totals = {k: sum(p[k] for p in per_partition) for k in ("files", "lines", "bytes", "parse_errors", "file_problems")}
    return dg.MaterializeResult(metadata={
        **{k: dg.MetadataValue.int(int(v)) for k, v in totals.items()},
        "dagster/row_count": dg.MetadataValue.int(int(totals["lines"])),
        "landing_zone": dg.MetadataValue.path(str(landing.root())),
        "partitions": partition_table(per_partition),
    })


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DEVICE_USAGE, deps=[raw_usage], kinds={"duckdb", "polars"}, group_name="cleaning",
            automation_condition=follows_upstream_partitions(),
            description="Clean, typed, UTC, deduplicated and pseudonymized device events: the table analysts query.",
            metadata={"dagster/table_name": f"warehouse.main.{DEVICE_USAGE}",
                      "dagster/column_schema": column_schema(DEVICE_USAGE_SCHEMA)},
        ),
        dg.AssetSpec(
            DEVICE_USAGE_QUARANTINE, deps=[raw_usage], kinds={"duckdb", "polars"}, group_name="cleaning",
            automation_condition=follows_upstream_partitions(),
            description="Every raw line that is not in device_usage, with a reason code (duplicates included).",
            metadata={"dagster/table_name": f"warehouse.main.{DEVICE_USAGE_QUARANTINE}",
                      "dagster/column_schema": column_schema(QUARANTINE_SCHEMA)},
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    can_subset=False,
)
def device_usage(context: dg.AssetExecutionContext, warehouse: Warehouse, pseudonym_key: PseudonymizationKey):
    """Clean each raw_usage partition into device_usage and device_usage_quarantine, written together."""
    catalog = load_device_catalog()
    key = pseudonym_key.secret()
    per_partition = []
    for partition in context.partition_keys:
        raw = warehouse.read_partitions(RAW_USAGE, [partition])
        if raw.is_empty():
            raw = pl.DataFrame(schema=RAW_USAGE_SCHEMA)
        result = clean_usage(raw, catalog.device_types, key)
        warehouse.replace_partitions(
            {DEVICE_USAGE: result.device_usage, DEVICE_USAGE_QUARANTINE: result.quarantine}, [partition])
        reasons = result.quarantine.group_by("reason").len().sort("len", descending=True)
        per_partition.append({
            "partition": partition, "raw_lines": raw.height, "device_usage": result.device_usage.height,
            "quarantined": result.quarantine.height,
            "quarantine_rate": f"{quarantine_rate(raw.height, result.quarantine.height):.2%}",
            "reasons": ", ".join(f"{r}={n}" for r, n in reasons.iter_rows()) or "-",
        })
        context.log.info(f"device_usage {partition}: {per_partition[-1]}")
        latest_clean = result.device_usage
    rows = sum(p["device_usage"] for p in per_partition)
    quarantined = sum(p["quarantined"] for p in per_partition)
    shared = {"partitions": partition_table(per_partition), "device_catalog": dg.MetadataValue.text(catalog.label),
              "pseudonym_key_fingerprint": dg.MetadataValue.text(pseudonym_key.fingerprint()),
              "quarantine_rate": dg.MetadataValue.float(quarantine_rate(
                  sum(p["raw_lines"] for p in per_partition), quarantined))}
    yield dg.MaterializeResult(asset_key=DEVICE_USAGE, metadata={
        "dagster/row_count": dg.MetadataValue.int(rows), **shared,
        "preview": preview_table(latest_clean, f"partition {context.partition_keys[-1]}")})
    yield dg.MaterializeResult(asset_key=DEVICE_USAGE_QUARANTINE, metadata={
        "dagster/row_count": dg.MetadataValue.int(quarantined), **shared})
