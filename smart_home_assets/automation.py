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
