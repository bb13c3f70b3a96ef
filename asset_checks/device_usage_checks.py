"""Asset checks on device_usage, per partition: Pandera for rows, SQL counts for conservation and quality.

One multi-check op reads each partition once and reports every check for it, so a 30-day backfill run
produces 30 evaluations of each check, each tagged with its partition. The blocking checks fail the step,
so nothing downstream of device_usage runs from a partition that failed them.
"""

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from asset_checks.evaluations import check_outputs, partition_evaluation, prefetch_targets
from asset_checks.schemas import device_usage_schema, failure_cases
from resources import PseudonymizationKey, Warehouse
from resources.settings import batch_rows
from smart_home_assets.lib.accounting import quarantined_and_duplicates, unaccounted
from smart_home_assets.lib.batching import partitions_file_batches
from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import UNKNOWN_DEVICE_TYPE, pseudonymize
from smart_home_assets.lib.contract import PLACEHOLDER_USER_ID
from smart_home_assets.lib.tables import DEVICE_USAGE, DEVICE_USAGE_QUARANTINE, DUCKDB_POOL, RAW_USAGE
from smart_home_assets.partitions import daily_partitions

QUALITY_SCORE_WARN_BELOW = 0.95
FAILURE_SAMPLE_SIZE = 10


@dataclass(frozen=True)
class PanderaRule:
    """Which Pandera failure cases belong to a Dagster check."""

    name: str
    description: str
    selects: Callable[[pl.DataFrame], pl.DataFrame]


def _column(*names: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda cases: cases.filter(pl.col("column").is_in(names))


PANDERA_RULES = (
    PanderaRule(
        "check_user_id_not_null",
        "Every row carries a user pseudonym (64 hex chars), never null.",
        _column("user_pseudonym"),
    ),
    PanderaRule(
        "check_event_timestamp_in_partition_window",
        "Every event_timestamp falls inside the partition's 24-hour UTC window.",
        _column("event_timestamp"),
    ),
    PanderaRule(
        "check_device_type_in_catalog", "device_type is one of the device catalog's types.", _column("device_type")
    ),
    PanderaRule(
        "check_event_id_unique",
        "(hub_id, event_id) is unique within the partition.",
        lambda cases: cases.filter(pl.col("check") == "multiple_fields_uniqueness"),
    ),
    PanderaRule(
        "check_energy_and_duration_plausible",
        "energy_wh and duration_s are within their plausible ranges (docs/data-quality.md).",
        _column("energy_wh", "duration_s"),
    ),
    PanderaRule(
        "check_required_fields_present",
        "event_id, hub_id and device_id are never null.",
        _column("event_id", "hub_id", "device_id"),
    ),
)
CONSERVATION = "check_rows_conserved"
QUALITY_SCORE = "check_quality_score"

DEVICE_USAGE_CHECK_SPECS = [
    *(
        dg.AssetCheckSpec(
            r.name, asset=DEVICE_USAGE, description=r.description, blocking=True, partitions_def=daily_partitions
        )
        for r in PANDERA_RULES
    ),
    dg.AssetCheckSpec(
        CONSERVATION,
        asset=DEVICE_USAGE,
        blocking=True,
        partitions_def=daily_partitions,
        description="raw lines = device_usage rows + quarantined rows + duplicates.",
    ),
    dg.AssetCheckSpec(
        QUALITY_SCORE,
        asset=DEVICE_USAGE,
        blocking=False,
        partitions_def=daily_partitions,
        description=f"Share of raw lines that reach device_usage; warns under {QUALITY_SCORE_WARN_BELOW:.0%}.",
    ),
]


def _evaluation(
    name: str,
    partition: str,
    passed: bool,
    metadata: dict,
    blocking: bool = True,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    context=None,
) -> dg.AssetCheckEvaluation:
    return partition_evaluation(
        context, dg.AssetKey(DEVICE_USAGE), name, partition, passed, metadata, blocking=blocking, severity=severity
    )


def evaluations_of_cases(
    partition: str, cases: pl.DataFrame, rows_checked: int, context=None, extra_metadata: dict[str, dict] | None = None
) -> list[dg.AssetCheckEvaluation]:
    """One evaluation per Pandera rule from the failure cases of ``rows_checked`` rows (``failure_cases``)."""
    evaluations = []
    for rule in PANDERA_RULES:
        mine = rule.selects(cases)
        metadata = {"rows_checked": rows_checked, "failures": mine.height, **(extra_metadata or {}).get(rule.name, {})}
        if mine.height:
            counts = mine.group_by("column", "check").len().sort("len", descending=True)
            metadata["failures_by_check"] = {f"{c}: {k}": n for c, k, n in counts.iter_rows()}
            metadata["failure_sample"] = dg.MetadataValue.md(
                "\n".join(f"- `{c}` {k}: `{str(v)[:200]}`" for c, k, v in mine.head(FAILURE_SAMPLE_SIZE).iter_rows())
            )
        evaluations.append(_evaluation(rule.name, partition, mine.height == 0, metadata, context=context))
    return evaluations


def conservation_evaluations(
    partition: str,
    raw_lines: int,
    clean_rows: int,
    quarantined: int,
    duplicates: int,
    quarantine_reasons: dict[str, int],
    context=None,
) -> list[dg.AssetCheckEvaluation]:
    missing = unaccounted(raw_lines, clean_rows, quarantined, duplicates)
    score = clean_rows / raw_lines if raw_lines else 1.0
    counts = {
        "raw_lines": raw_lines,
        "device_usage_rows": clean_rows,
        "quarantined_rows": quarantined,
        "duplicates": duplicates,
        "unaccounted": missing,
    }
    return [
        _evaluation(CONSERVATION, partition, missing == 0, counts, context=context),
        _evaluation(
            QUALITY_SCORE,
            partition,
            score >= QUALITY_SCORE_WARN_BELOW,
            {
                "quality_score": dg.MetadataValue.float(round(score, 6)),
                "warn_below": dg.MetadataValue.float(QUALITY_SCORE_WARN_BELOW),
                "quarantine_reasons": quarantine_reasons,
                **counts,
            },
            blocking=False,
            severity=dg.AssetCheckSeverity.WARN,
            context=context,
        ),
    ]


def _per_partition(frame: pl.DataFrame, partitions: list[str]) -> dict[str, pl.DataFrame]:
    """``frame`` split by its ``partition_date`` (as keys); a partition with no row gets an empty frame."""
    empty = frame.clear()
    found = (
        {str(day): part for (day,), part in frame.partition_by("partition_date", as_dict=True).items()}
        if frame.height
        else {}
    )
    return {p: found.get(p, empty) for p in partitions}


NO_CASES = pl.DataFrame(schema={"column": pl.String, "check": pl.String, "failure_case": pl.String})


@dg.multi_asset_check(specs=DEVICE_USAGE_CHECK_SPECS, pool=DUCKDB_POOL, can_subset=False)
def device_usage_checks(
    context: dg.AssetCheckExecutionContext, warehouse: dg.ResourceParam[Warehouse], pseudonym_key: PseudonymizationKey
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Validate each device_usage partition of the run with Pandera and count every raw line.

    The rows are read and validated in batches that may hold many small days (one Pandera validation per
    batch, each row judged against its own day), and the counts of every partition come from one query each;
    the outcome is still one evaluation per check and partition."""
    catalog = load_device_catalog()
    placeholder = pseudonymize(pl.Series([PLACEHOLDER_USER_ID]), pseudonym_key.secret())[0]
    keys = list(context.partition_keys) if context.has_partition_key_range or context.has_partition_key else []
    schema = device_usage_schema(None, catalog.device_types)
    cases: list[pl.DataFrame] = []
    rows_checked = dict.fromkeys(keys, 0)
    placeholder_rows = dict.fromkeys(keys, 0)
    # Pandera over batches of whole hubs of a day: uniqueness is per (partition, hub_id, event_id), every other
    # rule per row
    for days, files in partitions_file_batches(warehouse, DEVICE_USAGE, "hub_id", keys, batch_rows()):
        rows = warehouse.read_partitions(DEVICE_USAGE, days, where={"source_file": files})
        if rows.height:
            found = failure_cases(schema, rows, by="partition_date")
            # a case of the whole batch (a missing column) belongs to each of its days
            whole = found.filter(pl.col("partition_date").is_null()).drop("partition_date")
            cases.append(found.filter(pl.col("partition_date").is_not_null()))
            cases += [whole.with_columns(partition_date=pl.lit(dt.date.fromisoformat(d))) for d in days if whole.height]
            per_day = rows.group_by("partition_date").agg(
                rows=pl.len(), placeholder=(pl.col("user_pseudonym") == placeholder).sum()
            )
            for day, n, placeholders in per_day.iter_rows():
                rows_checked[str(day)] += n
                placeholder_rows[str(day)] += int(placeholders or 0)
        del rows
    by_partition = _per_partition(pl.concat(cases, how="vertical_relaxed"), keys) if cases else {}
    by_partition = {day: frame.drop("partition_date") for day, frame in by_partition.items()}
    date_key = "strftime(partition_date, '%Y-%m-%d')"
    in_run = "partition_date IN (SELECT UNNEST(?::DATE[]))"
    unknown = warehouse.query(
        (
            f"SELECT {date_key} AS day, device_type, count(*) AS n FROM {DEVICE_USAGE_QUARANTINE} WHERE {in_run}"
            " AND reason = ? GROUP BY day, device_type QUALIFY row_number() OVER (PARTITION BY day ORDER BY n DESC,"
            " device_type)"
            " <= 50 ORDER BY day, n DESC, device_type"
        ),
        [keys, UNKNOWN_DEVICE_TYPE],
    )
    raw_lines = warehouse.query(
        f"SELECT {date_key} AS day, count(*) AS n FROM {RAW_USAGE} WHERE {in_run} GROUP BY ALL", [keys]
    )
    reasons = warehouse.query(
        (
            f"SELECT {date_key} AS day, reason, count(*) AS n FROM {DEVICE_USAGE_QUARANTINE} WHERE {in_run}"
            " GROUP BY ALL ORDER BY day, n DESC, reason"
        ),
        [keys],
    )
    unknown_of = _grouped(unknown, "device_type")
    reasons_of = _grouped(reasons, "reason")
    raw_of = dict(raw_lines.select("day", "n").iter_rows()) if raw_lines.height else {}
    failed = []
    prefetch_targets(context, dg.AssetKey(DEVICE_USAGE), keys)
    for partition in keys:
        extra: dict[str, dict[str, Any]] = {
            "check_device_type_in_catalog": {
                "device_catalog": catalog.label,
                "catalog_path": catalog.path,
                # what an operator needs to decide whether to extend the catalog
                "unknown_types_in_quarantine": unknown_of.get(partition, {}),
            },
            "check_user_id_not_null": {
                "placeholder_user_rows": placeholder_rows[partition],
                "placeholder_user_id": PLACEHOLDER_USER_ID,
            },
        }
        mine = by_partition.get(partition, NO_CASES)
        evaluations = (
            evaluations_of_cases(partition, mine, rows_checked[partition], context, extra)
            if rows_checked[partition]
            else [
                _evaluation(r.name, partition, True, {"rows_checked": 0, **extra.get(r.name, {})}, context=context)
                for r in PANDERA_RULES
            ]
        )
        day_reasons = reasons_of.get(partition, {})
        quarantined, duplicates = quarantined_and_duplicates(day_reasons)
        evaluations += conservation_evaluations(
            partition,
            int(raw_of.get(partition, 0)),
            rows_checked[partition],
            quarantined,
            duplicates,
            day_reasons,
            context,
        )
        failed += [f"{e.check_name}[{partition}]" for e in evaluations if not e.passed and e.blocking]
        yield from evaluations
    if failed:
        context.log.error(f"blocking device_usage checks failed: {', '.join(failed)}")
    yield from check_outputs(context)


def _grouped(frame: pl.DataFrame, name: str) -> dict[str, dict[str, int]]:
    """{day: {name value: n}} of a (day, name, n) frame, in the frame's order."""
    out: dict[str, dict[str, int]] = {}
    for day, value, n in frame.select("day", name, "n").iter_rows():
        out.setdefault(day, {})[str(value)] = n
    return out
