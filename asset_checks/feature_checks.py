"""Checks on usage_features, per partition: Pandera for the rows, population stability for drift."""

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
import polars as pl

from asset_checks.evaluations import check_outputs, partition_evaluation, prefetch_targets
from asset_checks.schemas import failure_cases
from resources import Warehouse
from resources.settings import batch_rows
from smart_home_assets.lib.features import NON_NULL_COLUMNS
from smart_home_assets.lib.tables import DUCKDB_POOL, USAGE_FEATURES
from smart_home_assets.partitions import daily_partitions

if TYPE_CHECKING:
    import pandera.polars as pa


FEATURES_KEY = dg.AssetKey(USAGE_FEATURES)
PSI_WARN_ABOVE = 0.2
DRIFT_FEATURES = ("energy_wh", "energy_roll7_mean", "event_count", "active_s")
DRIFT_REFERENCE_DAYS = 28
NON_NEGATIVE = (
    "energy_wh",
    "active_s",
    "event_count",
    "energy_lag_1",
    "energy_lag_2",
    "energy_lag_6",
    "energy_lag_7",
    "energy_roll7_mean",
    "energy_roll28_mean",
    "hub_energy_wh",
    "history_days",
    "energy_prev7_mean",
    "energy_same_weekday_mean4",
    "fleet_type_ratio",
    "fleet_type_ratio_lag_1",
    "hub_energy_ratio",
    "energy_last_year",
    "energy_last_year_mean7",
    "fleet_type_last_year_trend",
)
REQUIRED = NON_NULL_COLUMNS  # never null in a feature row (lib.features says why each may or may not be)

ROWS = "check_features_valid"
DRIFT = "check_feature_drift_psi"


def features_schema() -> "pa.DataFrameSchema":
    import pandera.polars as pa  # imported by check steps only (see asset_checks/schemas.py)

    columns = {c: pa.Column(nullable=False) for c in REQUIRED}
    for c in NON_NEGATIVE:
        columns[c] = pa.Column(nullable=c not in REQUIRED, checks=pa.Check.ge(0))
    return pa.DataFrameSchema(columns, unique=["partition_date", "device_id"], name="usage_features")


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` over the reference's quantile bins (0 = same distribution)."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / reference.size
    actual = np.histogram(current, edges)[0] / current.size
    expected, actual = np.clip(expected, 1e-6, None), np.clip(actual, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_report(reference: pl.DataFrame, current: pl.DataFrame) -> dict[str, float]:
    return {
        f: round(
            population_stability_index(reference[f].to_numpy().astype(float), current[f].to_numpy().astype(float)), 4
        )
        for f in DRIFT_FEATURES
    }


FEATURE_CHECK_SPECS = [
    dg.AssetCheckSpec(
        ROWS,
        asset=FEATURES_KEY,
        blocking=True,
        partitions_def=daily_partitions,
        description="Required features not null, non-negative where they must be, one row per device and day.",
    ),
    dg.AssetCheckSpec(
        DRIFT,
        asset=FEATURES_KEY,
        blocking=False,
        partitions_def=daily_partitions,
        description=f"Population stability index of key features vs the previous {DRIFT_REFERENCE_DAYS}"
        f" days; warns above {PSI_WARN_ABOVE}.",
    ),
]

# What training must not learn from when it failed (smart_home_assets.check_status reads their state).
BLOCKING_FEATURE_CHECKS = [spec.key for spec in FEATURE_CHECK_SPECS if spec.blocking]


def day_chunks(row_counts: dict[str, int], keys: list[str], max_rows: int) -> list[list[str]]:
    """Consecutive partition keys in chunks of about ``max_rows`` feature rows (at least one key each)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    held = 0
    for key in keys:
        current.append(key)
        held += row_counts.get(key, 0)
        if held >= max_rows:
            chunks.append(current)
            current, held = [], 0
    return chunks + ([current] if current else [])


@dg.multi_asset_check(specs=FEATURE_CHECK_SPECS, pool=DUCKDB_POOL, can_subset=False)
def usage_features_checks(context: dg.AssetCheckExecutionContext, warehouse: dg.ResourceParam[Warehouse]) -> Iterator:
    """Validate each usage_features partition of the run and measure its drift.

    Consecutive days are read and validated together (one Pandera validation and one reference read per chunk
    of about SMART_HOME_BATCH_ROWS rows); each day still gets its own evaluation of each check."""
    schema = features_schema()
    keys = sorted(context.partition_keys)
    sizes = (
        warehouse.query(
            f"SELECT strftime(partition_date, '%Y-%m-%d') AS day, count(*) AS n FROM {USAGE_FEATURES}"
            " WHERE partition_date IN (SELECT UNNEST(?::DATE[])) GROUP BY ALL",
            [keys],
        )
        if keys
        else pl.DataFrame()
    )
    row_counts = dict(sizes.iter_rows()) if sizes.height else {}
    prefetch_targets(context, FEATURES_KEY, keys)
    for chunk in day_chunks(row_counts, keys, batch_rows()):
        first, last = dt.date.fromisoformat(chunk[0]), dt.date.fromisoformat(chunk[-1])
        rows = warehouse.read_partitions(USAGE_FEATURES, chunk)
        cases = failure_cases(schema, rows, by="partition_date") if rows.height else pl.DataFrame()
        reference_rows = warehouse.query(
            f"SELECT partition_date, {', '.join(DRIFT_FEATURES)} FROM {USAGE_FEATURES} "
            "WHERE partition_date BETWEEN ? AND ?",
            [first - dt.timedelta(days=DRIFT_REFERENCE_DAYS), last - dt.timedelta(days=1)],
        )
        rows_of = (
            {str(day): part for (day,), part in rows.partition_by("partition_date", as_dict=True).items()}
            if rows.height
            else {}
        )
        for key in chunk:
            day = dt.date.fromisoformat(key)
            mine = rows_of.get(key, rows.clear() if rows.width else pl.DataFrame())
            day_cases = (
                cases.filter(pl.col("partition_date").is_null() | (pl.col("partition_date") == day))
                if cases.height
                else cases
            )
            metadata: dict[str, Any] = {"rows_checked": mine.height, "failures": day_cases.height}
            if day_cases.height:
                counts = day_cases.group_by("column", "check").len().sort("len", descending=True)
                metadata["failures_by_check"] = {f"{c}: {k}": n for c, k, n in counts.iter_rows()}
            yield partition_evaluation(context, FEATURES_KEY, ROWS, key, day_cases.height == 0, metadata)
            reference = (
                reference_rows.filter(
                    pl.col("partition_date").is_between(
                        day - dt.timedelta(days=DRIFT_REFERENCE_DAYS), day - dt.timedelta(days=1)
                    )
                )
                if reference_rows.height
                else reference_rows
            )
            psi = drift_report(reference, mine) if reference.height and mine.height else {}
            worst = max(psi.values(), default=0.0)
            yield partition_evaluation(
                context,
                FEATURES_KEY,
                DRIFT,
                key,
                worst <= PSI_WARN_ABOVE,
                {"psi": psi, "max_psi": worst, "warn_above": PSI_WARN_ABOVE, "reference_rows": reference.height},
                blocking=False,
                severity=dg.AssetCheckSeverity.WARN,
            )
    yield from check_outputs(context)
