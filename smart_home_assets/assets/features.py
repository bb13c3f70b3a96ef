"""usage_features: one row per device and day, from device_usage history (see smart_home_assets.lib.features)."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.settings import batch_rows
from smart_home_assets.assets.usage import column_schema, partition_table
from smart_home_assets.automation import follows_history_window
from smart_home_assets.lib.features import (
    FEATURES_SCHEMA,
    LOOKBACK_DAYS,
    build_features,
    daily_usage_sql,
    history_ranges,
)
from smart_home_assets.lib.tables import DEVICE_USAGE, DUCKDB_POOL, USAGE_FEATURES
from smart_home_assets.partitions import daily_partitions

# Day D's features read device_usage from D-28 to D: the lineage says so, and a late upload for an earlier day
# re-runs every feature day whose window contains it (days before the partitions' start are simply absent).
HISTORY_WINDOW = dg.TimeWindowPartitionMapping(start_offset=-LOOKBACK_DAYS, allow_nonexistent_upstream_partitions=True)


@dg.asset(
    deps=[dg.AssetDep(DEVICE_USAGE, partition_mapping=HISTORY_WINDOW)],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars"},
    group_name="features",
    # Follows every device_usage day of its window, once its own day exists and blocking checks passed.
    automation_condition=follows_history_window(DEVICE_USAGE),
    metadata={
        "dagster/table_name": f"warehouse.main.{USAGE_FEATURES}",
        "dagster/column_schema": column_schema(FEATURES_SCHEMA),
    },
)
def usage_features(context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse]) -> dg.MaterializeResult:
    """Per device and day: usage, lags, rolling statistics, calendar and hub totals; devices with too
    little history are flagged (has_enough_history), never guessed.

    The lookback (28 days, and 14 days one year back) is one DuckDB aggregation per range over device_usage for
    the whole run, not a recomputation of all history per partition. The year-back days are not in the
    partition mapping (a mapping is one contiguous window): a late upload a year back does not re-run today.
    """
    keys = context.partition_keys
    first, last = dt.date.fromisoformat(keys[0]), dt.date.fromisoformat(keys[-1])
    # The lookback and the narrow window one year back (two ranges unless the run spans a year).
    daily = pl.concat(
        [warehouse.query(daily_usage_sql(DEVICE_USAGE), [lo, hi]) for lo, hi in history_ranges(first, last)]
    )
    per_partition = []

    def batches() -> Iterator[dict[str, pl.DataFrame]]:
        # days gathered up to about batch_rows feature rows, all replaced in one transaction at the end
        held: list[pl.DataFrame] = []
        held_rows = 0
        for key in keys:
            features = build_features(daily, dt.date.fromisoformat(key))
            per_partition.append(
                {
                    "partition": key,
                    "devices": features.height,
                    "active_devices": features.filter(pl.col("event_count") > 0).height,
                    "enough_history": int(features["has_enough_history"].sum() or 0),
                }
            )
            held.append(features)
            held_rows += features.height
            if held_rows >= batch_rows():
                yield {USAGE_FEATURES: pl.concat(held)}
                held, held_rows = [], 0
        if held:
            yield {USAGE_FEATURES: pl.concat(held)}

    warehouse.replace_partitions_in_batches(keys, [USAGE_FEATURES], batches())
    rows = sum(p["devices"] for p in per_partition)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows),
            "devices_with_too_little_history": dg.MetadataValue.int(
                sum(p["devices"] - p["enough_history"] for p in per_partition)
            ),
            "lookback_days": dg.MetadataValue.int(LOOKBACK_DAYS),
            "partitions": partition_table(per_partition),
        }
    )
