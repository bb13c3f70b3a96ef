"""Freshness: each day's device_usage by a deadline, and the model retrained soon after.

``device_usage:freshness_check``: once the deadline cron has ticked (by default 03:00 UTC), the last day that
ended before it must have been materialized, or the check fails and names that day (metadata
``expected_partition``). It is Dagster's ``build_time_partition_freshness_checks`` with one change: Dagster
expects the partition that is the partitions definition's *last* at the deadline, and ``daily_partitions`` has
``end_offset=1`` (today's uploads are accepted as they arrive), so at 03:00 on D+1 Dagster's check would demand
D+1 itself, a day that has just begun. Here the expected day is the last one that *ended* by the deadline.

``usage_model:freshness_check``: Dagster's last-update semantics (``build_last_update_freshness_checks``): by
the model deadline (the data deadline plus ``SMART_HOME_RETRAIN_BOUND_HOURS``, 05:00 UTC by default) it must
have been materialized in the 24 hours before, i.e. retrained on the day that landed.

Both keep Dagster's spec name, its metadata and the evaluation's (``dagster/freshness_params``,
``dagster/latest_cron_tick_timestamp``, ``dagster/fresh_until_timestamp``), so Dagster's own freshness sensor
drives them; their ops are named after the asset (``device_usage_freshness``) where Dagster's builders would
name them by a hash, which run logs and progress lines would show. Both are WARN checks: a late day must not
hold back the days that did arrive.

``freshness_checks_sensor`` (Dagster's builder) runs a check when it may have become overdue; a failed check is
evaluated again by the run that materializes its asset, since the checks are part of every run of it. So a day
that arrives late turns the check green as soon as it is ingested, and alerts_sensor sends the recovery.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_factories.utils import (
    FRESH_UNTIL_METADATA_KEY,
    FRESHNESS_PARAMS_METADATA_KEY,
    LAST_UPDATED_TIMESTAMP_METADATA_KEY,
    LATEST_CRON_TICK_METADATA_KEY,
    retrieve_last_update_record,
    retrieve_timestamp_from_record,
)
from dagster._time import get_current_timestamp
from dagster._utils.schedules import get_latest_completed_cron_tick, get_next_cron_tick, is_valid_cron_string

from smart_home_assets.lib.tables import DEVICE_USAGE, USAGE_MODEL
from smart_home_assets.partitions import daily_partitions

DEADLINE_CRON_VAR = "SMART_HOME_FRESHNESS_DEADLINE_CRON"
DEFAULT_DEADLINE_CRON = "0 3 * * *"  # a day's uploads are in by 03:00 UTC the next morning
TIMEZONE_VAR = "SMART_HOME_FRESHNESS_TIMEZONE"
DEFAULT_TIMEZONE = "UTC"
RETRAIN_BOUND_VAR = "SMART_HOME_RETRAIN_BOUND_HOURS"
DEFAULT_RETRAIN_BOUND_HOURS = 2
# The built-in checks' names (Dagster's builders choose them).
USAGE_FRESHNESS_CHECK = "freshness_check"
SENSOR_NAME = "freshness_checks_sensor"


def deadline_cron() -> str:
    cron = os.environ.get(DEADLINE_CRON_VAR, "").strip() or DEFAULT_DEADLINE_CRON
    if not is_valid_cron_string(cron):
        raise ValueError(
            f"{DEADLINE_CRON_VAR}={cron!r} is not a cron expression (the default is "
            f"{DEFAULT_DEADLINE_CRON!r}: 03:00 every day)"
        )
    return cron


def deadline_timezone() -> str:
    return os.environ.get(TIMEZONE_VAR, "").strip() or DEFAULT_TIMEZONE


def retrain_bound() -> dt.timedelta:
    raw = os.environ.get(RETRAIN_BOUND_VAR, "").strip()
    hours = float(raw) if raw else DEFAULT_RETRAIN_BOUND_HOURS
    if not 0 < hours < 24:
        raise ValueError(f"{RETRAIN_BOUND_VAR}={raw!r}: hours after the data deadline, more than 0 and under 24")
    return dt.timedelta(hours=hours)


def model_deadline_cron(data_cron: str, bound: dt.timedelta) -> str:
    """The model's deadline: the data deadline's cron shifted by ``bound`` (a daily ``M H * * *`` cron only;
    another shape keeps the data deadline itself, so the model is judged at the same moments)."""
    fields = data_cron.split()
    if len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit() and fields[2:] == ["*", "*", "*"]:
        minutes = (int(fields[1]) * 60 + int(fields[0]) + int(bound.total_seconds() // 60)) % (24 * 60)
        return f"{minutes % 60} {minutes // 60} * * *"
    return data_cron


def expected_partition(partitions_def: dg.TimeWindowPartitionsDefinition, deadline: dt.datetime) -> str | None:
    """The last partition whose window ended by ``deadline`` (None before the first one ended); a definition
    pinned to an earlier last day (SMART_HOME_PARTITIONS_END) expects that day."""
    first = partitions_def.start
    if deadline < first + dt.timedelta(days=1):
        return None
    # The window that contains the deadline has not ended; the one before it has.
    key = partitions_def.get_partition_key_for_timestamp(deadline.timestamp())
    before = partitions_def.get_prev_partition_window(partitions_def.time_window_for_partition_key(key).start)
    if before is None:
        return None
    expected = partitions_def.get_partition_key_range_for_time_window(before).start
    last = partitions_def.end
    if last is not None and partitions_def.time_window_for_partition_key(expected).end > last:
        return partitions_def.get_partition_key_for_timestamp((last - dt.timedelta(seconds=1)).timestamp())
    return expected


def _deadline_now(cron: str, timezone: str) -> tuple[float, dt.datetime]:
    now = get_current_timestamp()
    return now, get_latest_completed_cron_tick(cron, dt.datetime.fromtimestamp(now, dt.UTC), timezone)


def _fresh_until(cron: str, timezone: str, now: float) -> dg.MetadataValue:
    """When the check can next be overdue: the next deadline (Dagster's freshness sensor waits until then)."""
    return dg.MetadataValue.timestamp(
        get_next_cron_tick(cron, dt.datetime.fromtimestamp(now, dt.UTC), timezone).timestamp()
    )


def _freshness_check(asset: str, params: dg.MetadataValue, description: str):
    """The decorator of one freshness check: Dagster's spec (name ``freshness_check``, the params metadata its
    sensor and UI read), in an op named after the asset (``device_usage_freshness``) so that run logs say which."""
    spec = dg.AssetCheckSpec(
        "freshness_check",
        asset=asset,
        description=description,
        metadata={FRESHNESS_PARAMS_METADATA_KEY: params},
        blocking=False,
    )
    return dg.multi_asset_check(specs=[spec], can_subset=True, name=f"{asset}_freshness")


def build_partition_freshness_check(
    asset: str, cron: str, timezone: str, partitions_def: dg.TimeWindowPartitionsDefinition
) -> dg.AssetChecksDefinition:
    params = dg.MetadataValue.json({"timezone": timezone, "deadline_cron": cron})
    key = dg.AssetKey(asset)

    @_freshness_check(
        asset,
        params,
        f"Each day of {asset} by its deadline ({cron}, {timezone}): the last day "
        "that ended before the latest deadline is materialized.",
    )
    def partition_freshness(context):  # (no annotation: this module postpones them, the decorator reads it)
        now, deadline = _deadline_now(cron, timezone)
        expected = expected_partition(partitions_def, deadline)
        metadata = {
            FRESHNESS_PARAMS_METADATA_KEY: params,
            LATEST_CRON_TICK_METADATA_KEY: dg.MetadataValue.timestamp(deadline.timestamp()),
            "expected_partition": dg.MetadataValue.text(expected or "-"),
        }
        latest = retrieve_last_update_record(context.instance, key, expected) if expected else None
        passed = expected is None or latest is not None
        at = deadline.strftime("%Y-%m-%d %H:%M %Z")
        if passed:
            metadata[FRESH_UNTIL_METADATA_KEY] = _fresh_until(cron, timezone, now)
            description = (
                f"partition {expected} arrived by its deadline {at}" if expected else "no partition is due yet"
            )
        else:
            any_partition = retrieve_last_update_record(context.instance, key, None)
            if any_partition is not None:
                metadata[LAST_UPDATED_TIMESTAMP_METADATA_KEY] = dg.MetadataValue.timestamp(
                    retrieve_timestamp_from_record(any_partition) or 0.0
                )
            description = f"partition {expected} is late: expected by {at}, not materialized yet"
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=passed,
            description=description,
            metadata=metadata,
            severity=dg.AssetCheckSeverity.WARN,
        )

    return partition_freshness


def build_last_update_check(asset: str, cron: str, timezone: str, within: dt.timedelta) -> dg.AssetChecksDefinition:
    """Dagster's last-update freshness semantics: at each deadline, the asset was updated in the ``within``
    before it (a run after a deadline counts towards the next one)."""
    params = dg.MetadataValue.json(
        {"timezone": timezone, "deadline_cron": cron, "lower_bound_delta_seconds": int(within.total_seconds())}
    )
    key = dg.AssetKey(asset)

    @_freshness_check(asset, params, f"{asset} updated within {within} before each deadline ({cron}, {timezone}).")
    def last_update_freshness(context):
        now, deadline = _deadline_now(cron, timezone)
        lower_bound = deadline - within
        latest = retrieve_last_update_record(context.instance, key, None)
        updated = retrieve_timestamp_from_record(latest) if latest is not None else None
        passed = updated is not None and updated >= lower_bound.timestamp()
        at = deadline.strftime("%Y-%m-%d %H:%M %Z")
        metadata = {
            FRESHNESS_PARAMS_METADATA_KEY: params,
            LATEST_CRON_TICK_METADATA_KEY: dg.MetadataValue.timestamp(deadline.timestamp()),
            "dagster/freshness_lower_bound_timestamp": dg.MetadataValue.timestamp(lower_bound.timestamp()),
        }
        if updated is not None:
            metadata[LAST_UPDATED_TIMESTAMP_METADATA_KEY] = dg.MetadataValue.timestamp(updated)
        if passed:
            metadata[FRESH_UNTIL_METADATA_KEY] = _fresh_until(cron, timezone, now)
            description = f"updated since {lower_bound:%Y-%m-%d %H:%M %Z}, in time for its deadline {at}"
        elif updated is None:
            description = f"never materialized: expected an update by {at}"
        else:
            description = (
                f"not updated since {dt.datetime.fromtimestamp(updated, dt.UTC):%Y-%m-%d %H:%M} "
                f"UTC: expected an update between {lower_bound:%Y-%m-%d %H:%M} and {at}"
            )
        yield dg.AssetCheckResult(
            asset_key=key,
            passed=passed,
            description=description,
            metadata=metadata,
            severity=dg.AssetCheckSeverity.WARN,
        )

    return last_update_freshness


def build_freshness_checks() -> list[dg.AssetChecksDefinition]:
    cron, timezone = deadline_cron(), deadline_timezone()
    return [
        build_partition_freshness_check(DEVICE_USAGE, cron, timezone, daily_partitions),
        build_last_update_check(
            USAGE_MODEL, model_deadline_cron(cron, retrain_bound()), timezone, dt.timedelta(days=1)
        ),
    ]


FRESHNESS_CHECKS = build_freshness_checks()
freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=FRESHNESS_CHECKS,
    name=SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
