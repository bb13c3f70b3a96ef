"""Declarative automation: how assets follow their upstreams with no clicks.

``AutomationCondition.eager()`` only targets the latest time partition, so a late upload that re-runs an
old day's raw_usage would never reach that day's device_usage. ``follows_upstream_partitions`` is eager
without that restriction: any partition whose upstream partition was updated, once all its upstreams exist
and none is still running.
"""

from __future__ import annotations

import dagster as dg


def follows_upstream_partitions() -> dg.AutomationCondition:
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows_upstream_partitions")


# The built-in automation sensor is created STOPPED; this one runs from the first start of the daemon.
automation_sensor = dg.AutomationConditionSensorDefinition(
    name="automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)


def retrain_when_features_land() -> dg.AutomationCondition:
    """For the unpartitioned model over daily features: retrain once per batch of new feature partitions.

    ``eager()`` would never fire while any upstream partition is missing (``any_deps_missing`` covers every
    partition since the start date); this fires on the first update, and waits while upstream runs (a
    backfill included) are still in progress, so a 30-day backfill leads to one retrain after it.
    """
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("retrain_when_features_land")


def _no_dep_requested_this_tick() -> dg.AutomationCondition:
    # An upstream requested on this tick for another partition key (or unpartitioned, like the model) goes
    # into another run: waiting one tick avoids scoring with the old model or before the actuals exist.
    return ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())


def predict_latest_days(lookback_days: int = 3) -> dg.AutomationCondition:
    """Predictions for the most recent days, whenever their features or the model change and the model's
    blocking checks passed. Older days keep the predictions that were made at the time."""
    import datetime as dt

    return (
        dg.AutomationCondition.in_latest_time_window(dt.timedelta(days=lookback_days))
        & follows_upstream_partitions()
        & _no_dep_requested_this_tick()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("predict_latest_days")


def score_when_actuals_land() -> dg.AutomationCondition:
    """prediction_feedback for day D: once D's predictions and D+1's features (the actuals) both exist."""
    return (follows_upstream_partitions() & _no_dep_requested_this_tick()).with_label("score_when_actuals_land")
