"""Ingestion and cleaning assets: landing files -> raw_usage -> device_usage (+ quarantine).

Thin Dagster layer: each asset says what it depends on, calls the pure functions in
``smart_home_assets.lib.ingest`` / ``smart_home_assets.lib.cleaning``, writes through the Warehouse resource in
one transaction per partition, and reports metadata.
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from resources import LandingZone, PseudonymizationKey, Warehouse
from resources.settings import batch_rows
from smart_home_assets.assets.metadata import PREVIEW_ROWS, preview_table, quarantine_rate
from smart_home_assets.automation import follows_upstream_partitions
from smart_home_assets.lib.batching import partitions_file_batches
from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import DEVICE_USAGE_SCHEMA, QUARANTINE_SCHEMA, clean_usage
from smart_home_assets.lib.ingest import RAW_USAGE_SCHEMA, ingest_partitions_in_batches
from smart_home_assets.lib.tables import (
    DEVICE_USAGE,
    DEVICE_USAGE_QUARANTINE,
    DUCKDB_POOL,
    RAW_USAGE,
    RAW_USAGE_FILES,
)
from smart_home_assets.partitions import daily_partitions


def column_schema(schema: dict[str, pl.DataType]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


# cleaning reads every raw column but the line text (the bulk of a raw row, which no rule reads)
CLEANED_RAW_COLUMNS = [c for c in RAW_USAGE_SCHEMA if c != "raw_line"]


def raw_file_batches(warehouse: Warehouse, partitions: list[str], max_rows: int) -> list[tuple[list[str], list[str]]]:
    """The partitions' raw_usage source files in batches of whole hubs of a day, as (days, files); at least one
    batch, maybe empty."""
    return partitions_file_batches(warehouse, RAW_USAGE, "file_hub_id", partitions, max_rows) or [(partitions, [])]


RAW_STATS = ("files", "lines", "bytes", "parse_errors", "file_problems")
# A run logs one line per partition up to this many partitions; a longer backfill's per-partition figures are in
# the materialization's "partitions" table (a log line is an event-log write, as costly as a partition's rows).
PARTITIONS_LOGGED = 31


def raw_batch_stats(raw: pl.DataFrame, manifest: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per partition key of a raw_usage batch: files, lines, bytes, parse errors and file problems."""
    lines = raw.group_by("partition_date").agg(lines=pl.len(), parse_errors=pl.col("parse_error").is_not_null().sum())
    files = manifest.group_by("partition_date").agg(
        files=pl.len(), bytes=pl.col("size_bytes").sum(), file_problems=pl.col("problem").is_not_null().sum()
    )
    out: dict[str, dict[str, int]] = {}
    for row in lines.iter_rows(named=True):
        out.setdefault(str(row["partition_date"]), {}).update(lines=row["lines"], parse_errors=row["parse_errors"])
    for row in files.iter_rows(named=True):
        out.setdefault(str(row["partition_date"]), {}).update(
            files=row["files"], bytes=int(row["bytes"] or 0), file_problems=row["file_problems"]
        )
    return out


def partition_table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(no partitions)")
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return dg.MetadataValue.md(header + "\n".join("| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows))


def raw_batches(
    landing: LandingZone, keys: list[str], ingested_at: dt.datetime, stats: dict[str, dict[str, int]], log
) -> Iterator[dict[str, pl.DataFrame]]:
    """raw_usage's write batches, parsed lazily one at a time (memory bounded by a batch), counted in ``stats``."""
    # batches of whole files, spanning days when the days are small: memory is bounded by the batch, and all
    # the run's partitions are replaced in one transaction
    for raw, manifest in ingest_partitions_in_batches(
        ((key, landing.files_for_day(key)) for key in keys), ingested_at, batch_rows()
    ):
        problems = manifest.filter(pl.col("problem").is_not_null())
        for row in problems.iter_rows(named=True):
            log.warning(f"partition {row['partition_date']}: file {row['source_file']}: {row['problem']}")
        for key, values in raw_batch_stats(raw, manifest).items():
            for name, value in values.items():
                stats[key][name] += value
        yield {RAW_USAGE: raw, RAW_USAGE_FILES: manifest}


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars"},
    group_name="ingestion",
    metadata={
        "dagster/table_name": f"warehouse.main.{RAW_USAGE}",
        "dagster/column_schema": column_schema(RAW_USAGE_SCHEMA),
    },
    tags={"zone": "restricted"},
)
def raw_usage(
    context: dg.AssetExecutionContext, landing: LandingZone, warehouse: dg.ResourceParam[Warehouse]
) -> dg.MaterializeResult:
    """Every line of the day's landing files, kept as it came, with file, line number and parse error.

    The restricted zone: it holds clear-text user ids. Re-materializing a day replaces it in one transaction.
    """
    ingested_at = dt.datetime.now(dt.UTC)
    keys = context.partition_keys
    stats = {key: dict.fromkeys(RAW_STATS, 0) for key in keys}

    warehouse.replace_partitions_in_batches(
        keys, [RAW_USAGE, RAW_USAGE_FILES], raw_batches(landing, keys, ingested_at, stats, context.log)
    )
    per_partition = [{"partition": key, **stats[key]} for key in keys]
    if len(keys) <= PARTITIONS_LOGGED:
        for row in per_partition:
            context.log.info(f"raw_usage {row['partition']}: {row}")
    totals = {k: sum(p[k] for p in per_partition) for k in RAW_STATS}
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.int(int(v)) for k, v in totals.items()},
            "dagster/row_count": dg.MetadataValue.int(int(totals["lines"])),
            "landing_zone": dg.MetadataValue.path(str(landing.root())),
            "partitions": partition_table(per_partition),
        }
    )


@dataclass
class CleaningTally:
    """device_usage's figures per partition key, added up batch by batch (the batches' rows are not kept)."""

    keys: list[str]
    counts: dict[str, dict[str, int]] = field(init=False)  # raw_lines, device_usage, quarantined
    reasons: dict[str, dict[str, int]] = field(init=False)  # quarantined rows by reason
    preview: pl.DataFrame = field(default_factory=pl.DataFrame)  # the last partition's first clean rows

    def __post_init__(self) -> None:
        self.counts = {k: {"raw_lines": 0, "device_usage": 0, "quarantined": 0} for k in self.keys}
        self.reasons = {k: {} for k in self.keys}

    def add(self, raw: pl.DataFrame, result) -> None:
        """Count one batch's raw, clean and quarantined rows per day (group-bys, not a pass over the rows)."""
        for column, frame in (
            ("raw_lines", raw),
            ("device_usage", result.device_usage),
            ("quarantined", result.quarantine),
        ):
            for day, n in frame.group_by("partition_date").len().iter_rows():
                self.counts[str(day)][column] += n
        for day, reason, n in result.quarantine.group_by("partition_date", "reason").len().iter_rows():
            self.reasons[str(day)][reason] = self.reasons[str(day)].get(reason, 0) + n
        last = self.keys[-1]
        if self.preview.is_empty():
            self.preview = result.device_usage.filter(pl.col("partition_date") == dt.date.fromisoformat(last)).head(
                PREVIEW_ROWS
            )


def cleaned_batches(
    warehouse: Warehouse, keys: list[str], device_types, secret: bytes, tally: CleaningTally
) -> Iterator[dict[str, pl.DataFrame]]:
    """device_usage's and the quarantine's write batches, read and cleaned lazily, counted in ``tally``."""
    # whole hubs of a day at a time, several small days per batch (duplicates are judged per day and hub:
    # the same rows as cleaning each day on its own); one transaction replaces every partition of the run
    for days, files in raw_file_batches(warehouse, keys, batch_rows()):
        raw = (
            warehouse.read_partitions(RAW_USAGE, days, columns=CLEANED_RAW_COLUMNS, where={"source_file": files})
            if files
            else pl.DataFrame()
        )
        if raw.is_empty():
            raw = pl.DataFrame(schema={c: RAW_USAGE_SCHEMA[c] for c in CLEANED_RAW_COLUMNS})
        result = clean_usage(raw, device_types, secret)
        tally.add(raw, result)
        yield {DEVICE_USAGE: result.device_usage, DEVICE_USAGE_QUARANTINE: result.quarantine}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DEVICE_USAGE,
            deps=[raw_usage],
            kinds={"duckdb", "polars"},
            group_name="cleaning",
            automation_condition=follows_upstream_partitions(),
            description="Clean, typed, UTC, deduplicated and pseudonymized device events: the table analysts query.",
            metadata={
                "dagster/table_name": f"warehouse.main.{DEVICE_USAGE}",
                "dagster/column_schema": column_schema(DEVICE_USAGE_SCHEMA),
            },
        ),
        dg.AssetSpec(
            DEVICE_USAGE_QUARANTINE,
            deps=[raw_usage],
            kinds={"duckdb", "polars"},
            group_name="cleaning",
            automation_condition=follows_upstream_partitions(),
            description="Every raw line that is not in device_usage, with a reason code (duplicates included).",
            metadata={
                "dagster/table_name": f"warehouse.main.{DEVICE_USAGE_QUARANTINE}",
                "dagster/column_schema": column_schema(QUARANTINE_SCHEMA),
            },
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    can_subset=False,
)
def device_usage(
    context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse], pseudonym_key: PseudonymizationKey
):
    """Clean each raw_usage partition into device_usage and device_usage_quarantine, written together."""
    catalog = load_device_catalog()
    keys = context.partition_keys
    tally = CleaningTally(keys)
    warehouse.replace_partitions_in_batches(
        keys,
        [DEVICE_USAGE, DEVICE_USAGE_QUARANTINE],
        cleaned_batches(warehouse, keys, catalog.device_types, pseudonym_key.secret(), tally),
    )
    counts, reasons = tally.counts, tally.reasons
    per_partition = [
        {
            "partition": k,
            **counts[k],
            "quarantine_rate": f"{quarantine_rate(counts[k]['raw_lines'], counts[k]['quarantined']):.2%}",
            "reasons": ", ".join(f"{r}={n}" for r, n in sorted(reasons[k].items(), key=lambda kv: -kv[1])) or "-",
        }
        for k in keys
    ]
    if len(keys) <= PARTITIONS_LOGGED:
        for row in per_partition:
            context.log.info(f"device_usage {row['partition']}: {row}")
    rows = sum(p["device_usage"] for p in per_partition)
    quarantined = sum(p["quarantined"] for p in per_partition)
    shared = {
        "partitions": partition_table(per_partition),
        "device_catalog": dg.MetadataValue.text(catalog.label),
        "pseudonym_key_fingerprint": dg.MetadataValue.text(pseudonym_key.fingerprint()),
        "quarantine_rate": dg.MetadataValue.float(
            quarantine_rate(sum(p["raw_lines"] for p in per_partition), quarantined)
        ),
        "raw_lines": dg.MetadataValue.int(sum(p["raw_lines"] for p in per_partition)),
        # the run's quarantined rows by reason (the metrics sensor exports them: smart_home_assets/metrics.py)
        "quarantined_by_reason": dg.MetadataValue.json(
            {r: sum(reasons[k].get(r, 0) for k in keys) for r in sorted({r for k in keys for r in reasons[k]})}
        ),
    }
    yield dg.MaterializeResult(
        asset_key=DEVICE_USAGE,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows),
            **shared,
            "preview": preview_table(
                tally.preview, f"partition {context.partition_keys[-1]}", total=per_partition[-1]["device_usage"]
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DEVICE_USAGE_QUARANTINE, metadata={"dagster/row_count": dg.MetadataValue.int(quarantined), **shared}
    )
