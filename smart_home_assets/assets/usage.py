"""Ingestion and cleaning assets: landing files -> raw_usage -> device_usage (+ quarantine).

Thin Dagster layer: each asset says what it depends on, calls the pure functions in
``smart_home_assets.ingest`` / ``smart_home_assets.cleaning``, writes through the Warehouse resource in
one transaction per partition, and reports metadata.
"""


import datetime as dt

import dagster as dg
import polars as pl

from resources import LandingZone, PseudonymizationKey, Warehouse
from resources.settings import batch_rows
from smart_home_assets.assets.metadata import PREVIEW_ROWS, preview_table, quarantine_rate
from smart_home_assets.automation import follows_upstream_partitions
from smart_home_assets.catalog import load_device_catalog
from smart_home_assets.cleaning import DEVICE_USAGE_SCHEMA, QUARANTINE_SCHEMA, clean_usage
from smart_home_assets.batching import partition_file_batches
from smart_home_assets.ingest import RAW_USAGE_SCHEMA, ingest_day_in_batches
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


# cleaning reads every raw column but the line text (the bulk of a raw row, which no rule reads)
CLEANED_RAW_COLUMNS = [c for c in RAW_USAGE_SCHEMA if c != "raw_line"]


def raw_file_batches(warehouse: Warehouse, partition: str, max_rows: int) -> list[list[str]]:
    """The partition's raw_usage source files in batches of whole hubs (at least one batch, maybe empty)."""
    return partition_file_batches(warehouse, RAW_USAGE, "file_hub_id", partition, max_rows) or [[]]


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
        stats = dict.fromkeys(("files", "lines", "bytes", "parse_errors", "file_problems"), 0)

        def batches(key=key, files=files, stats=stats):
            # whole files at a time: memory is bounded by the batch, the partition is still one transaction
            for raw, manifest in ingest_day_in_batches(key, files, ingested_at, batch_rows()):
                problems = manifest.filter(pl.col("problem").is_not_null())
                for row in problems.iter_rows(named=True):
                    context.log.warning(f"partition {key}: file {row['source_file']}: {row['problem']}")
                stats["files"] += manifest.height
                stats["lines"] += raw.height
                stats["bytes"] += int(manifest["size_bytes"].sum() or 0)
                stats["parse_errors"] += raw["parse_error"].is_not_null().sum()
                stats["file_problems"] += problems.height
                yield {RAW_USAGE: raw, RAW_USAGE_FILES: manifest}

        warehouse.replace_partition_in_batches(key, [RAW_USAGE, RAW_USAGE_FILES], batches())
        per_partition.append({"partition": key, **stats})
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
    heads: dict[str, pl.DataFrame] = {}  # each partition's first clean rows, for the preview
    for partition in context.partition_keys:
        counts = {"raw_lines": 0, "device_usage": 0, "quarantined": 0}
        reasons: dict[str, int] = {}

        def batches(partition=partition, counts=counts, reasons=reasons):
            # whole hubs at a time (duplicates are judged per hub: the same rows as cleaning the whole day)
            for files in raw_file_batches(warehouse, partition, batch_rows()):
                raw = warehouse.read_partitions(RAW_USAGE, [partition], columns=CLEANED_RAW_COLUMNS,
                                                where={"source_file": files})
                if raw.is_empty():
                    raw = pl.DataFrame(schema={c: RAW_USAGE_SCHEMA[c] for c in CLEANED_RAW_COLUMNS})
                result = clean_usage(raw, catalog.device_types, key)
                counts["raw_lines"] += raw.height
                counts["device_usage"] += result.device_usage.height
                counts["quarantined"] += result.quarantine.height
                for reason, n in result.quarantine.group_by("reason").len().iter_rows():
                    reasons[reason] = reasons.get(reason, 0) + n
                if heads.get(partition, pl.DataFrame()).is_empty():
                    heads[partition] = result.device_usage.head(PREVIEW_ROWS)
                yield {DEVICE_USAGE: result.device_usage, DEVICE_USAGE_QUARANTINE: result.quarantine}

        warehouse.replace_partition_in_batches(partition, [DEVICE_USAGE, DEVICE_USAGE_QUARANTINE], batches())
        per_partition.append({
            "partition": partition, **counts,
            "quarantine_rate": f"{quarantine_rate(counts['raw_lines'], counts['quarantined']):.2%}",
            "reasons": ", ".join(f"{r}={n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-",
        })
        context.log.info(f"device_usage {partition}: {per_partition[-1]}")
    rows = sum(p["device_usage"] for p in per_partition)
    quarantined = sum(p["quarantined"] for p in per_partition)
    shared = {"partitions": partition_table(per_partition), "device_catalog": dg.MetadataValue.text(catalog.label),
              "pseudonym_key_fingerprint": dg.MetadataValue.text(pseudonym_key.fingerprint()),
              "quarantine_rate": dg.MetadataValue.float(quarantine_rate(
                  sum(p["raw_lines"] for p in per_partition), quarantined))}
    yield dg.MaterializeResult(asset_key=DEVICE_USAGE, metadata={
        "dagster/row_count": dg.MetadataValue.int(rows), **shared,
        "preview": preview_table(heads.get(context.partition_keys[-1], pl.DataFrame()),
                                 f"partition {context.partition_keys[-1]}", total=per_partition[-1]["device_usage"])})
    yield dg.MaterializeResult(asset_key=DEVICE_USAGE_QUARANTINE, metadata={
        "dagster/row_count": dg.MetadataValue.int(quarantined), **shared})
