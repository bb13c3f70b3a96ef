"""device_usage follows raw_usage by declarative automation, for any partition (late uploads included)."""

import dagster as dg
import pytest

from resources import LandingZone, PseudonymizationKey, Warehouse
from smart_home_assets.assets.usage import raw_usage
from smart_home_assets.definitions import defs
from tests.conftest import event, write_upload

OLD, NEW = "2026-01-05", "2026-01-20"


@pytest.fixture
def instance(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield instance


def materialize_raw(project_env, instance, day):
    resources = {"landing": LandingZone(path=str(project_env["landing"])),
                 "warehouse": Warehouse(database=str(project_env["warehouse"])),
                 "pseudonym_key": PseudonymizationKey()}
    assert dg.materialize([raw_usage], partition_key=day, resources=resources, instance=instance).success


def test_new_raw_partitions_request_device_usage_once(project_env, instance):
    for day in (OLD, NEW):
        write_upload(project_env["landing"], day, "hub-0001", [event(day, i) for i in range(3)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the daemon's earlier tick
    materialize_raw(project_env, instance, NEW)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert result.get_requested_partitions(dg.AssetKey("device_usage")) == {NEW}
    assert result.get_requested_partitions(dg.AssetKey("device_usage_quarantine")) == {NEW}
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert again.total_requested == 0  # handled: no second request for the same update


def test_a_late_upload_for_an_old_day_reaches_that_days_device_usage(project_env, instance):
    """eager() would only look at the latest partition; our condition follows any updated partition."""
    write_upload(project_env["landing"], NEW, "hub-0001", [event(NEW, 0)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    materialize_raw(project_env, instance, NEW)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert first.get_requested_partitions(dg.AssetKey("device_usage")) == {NEW}
    write_upload(project_env["landing"], OLD, "hub-0002", [event(OLD, 0, hub="hub-0002")])
    materialize_raw(project_env, instance, OLD)
    late = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert late.get_requested_partitions(dg.AssetKey("device_usage")) == {OLD}


def test_nothing_is_requested_while_raw_usage_is_missing(project_env, instance):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0
