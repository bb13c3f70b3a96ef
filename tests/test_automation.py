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


def ingest_and_check(project_env, instance, day):
    from asset_checks import device_usage_checks
    from smart_home_assets.assets.usage import device_usage

    resources = {"landing": LandingZone(path=str(project_env["landing"])),
                 "warehouse": Warehouse(database=str(project_env["warehouse"])),
                 "pseudonym_key": PseudonymizationKey()}
    return dg.materialize([raw_usage, device_usage, device_usage_checks], partition_key=day, resources=resources,
                          instance=instance, raise_on_error=False)


def test_features_follow_device_usage_only_when_its_blocking_checks_passed(project_env, instance):
    write_upload(project_env["landing"], NEW, "hub-0001", [event(NEW, i) for i in range(3)])
    write_upload(project_env["landing"], OLD, "hub-0001", [event(OLD, i) for i in range(3)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert ingest_and_check(project_env, instance, NEW).success
    passed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert passed.get_requested_partitions(dg.AssetKey("usage_features")) == {NEW}

    # OLD: ingested and checked, then a blocking check of that materialization fails (reported through the
    # instance, as an external validator would): features must not follow that partition.
    from asset_checks.evaluations import target_materialization

    assert ingest_and_check(project_env, instance, OLD).success
    failure = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("device_usage"), check_name="check_rows_conserved", passed=False, metadata={},
        severity=dg.AssetCheckSeverity.ERROR, blocking=True, partition=OLD, description=None,
        target_materialization_data=target_materialization(instance, dg.AssetKey("device_usage"), OLD))
    instance.report_runless_asset_event(failure)
    failed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=passed.cursor)
    # Nor any day whose 28-day window holds OLD (NEW is 15 days later): their lags would carry the bad day.
    assert failed.get_requested_partitions(dg.AssetKey("usage_features")) == set()


def test_a_late_upload_refreshes_the_features_of_every_day_whose_window_holds_it(project_env, instance):
    """Day D's features read D-28..D: a late file for OLD changes the lags of NEW (15 days later) too. Days
    in between and after, whose own device_usage does not exist, are not built from an empty day."""
    from smart_home_assets.assets.features import usage_features

    resources = {"warehouse": Warehouse(database=str(project_env["warehouse"]))}
    for day in (OLD, NEW):
        write_upload(project_env["landing"], day, "hub-0001", [event(day, i) for i in range(3)])
        assert ingest_and_check(project_env, instance, day).success
        assert dg.materialize([usage_features], partition_key=day, resources=resources, instance=instance).success
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert settled.get_requested_partitions(dg.AssetKey("usage_features")) == set()

    write_upload(project_env["landing"], OLD, "hub-0002", [event(OLD, 0, hub="hub-0002")])
    assert ingest_and_check(project_env, instance, OLD).success
    late = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert late.get_requested_partitions(dg.AssetKey("usage_features")) == {OLD, NEW}


def test_features_of_a_day_are_not_refreshed_by_a_run_that_already_wrote_them(project_env, instance):
    """A run that rewrote device_usage and then the features of the same day leaves nothing to do."""
    from smart_home_assets.assets.features import usage_features

    resources = {"warehouse": Warehouse(database=str(project_env["warehouse"]))}
    write_upload(project_env["landing"], NEW, "hub-0001", [event(NEW, i) for i in range(3)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert ingest_and_check(project_env, instance, NEW).success
    assert dg.materialize([usage_features], partition_key=NEW, resources=resources, instance=instance).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert after.get_requested_partitions(dg.AssetKey("usage_features")) == set()


def test_model_retrains_once_per_batch_of_new_feature_partitions_despite_gaps(project_env, instance):
    """Two feature partitions land (hundreds of older ones missing): one retrain, then quiet."""
    from smart_home_assets.assets.features import usage_features

    resources = {"warehouse": Warehouse(database=str(project_env["warehouse"]))}
    for day in (OLD, NEW):
        write_upload(project_env["landing"], day, "hub-0001", [event(day, i) for i in range(3)])
        assert ingest_and_check(project_env, instance, day).success
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    for day in (OLD, NEW):
        assert dg.materialize([usage_features], partition_key=day, resources=resources, instance=instance).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert first.get_num_requested(dg.AssetKey("usage_model")) == 1
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert second.get_num_requested(dg.AssetKey("usage_model")) == 0
