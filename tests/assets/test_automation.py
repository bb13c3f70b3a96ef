"""device_usage follows raw_usage by declarative automation, for any partition (late uploads included)."""

import dagster as dg
import pytest

from resources import DuckDBWarehouse
from smart_home_assets.assets.usage import raw_usage
from smart_home_assets.definitions import defs
from tests.check_runs import check_outcomes, run_checks
from tests.conftest import event, pipeline_resources, write_upload

OLD, NEW = "2026-01-05", "2026-01-20"


@pytest.fixture
def instance(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield instance


def materialize_raw(project_env, instance, day):
    resources = pipeline_resources(project_env["landing"], project_env["warehouse"])
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

    resources = pipeline_resources(project_env["landing"], project_env["warehouse"])
    return dg.materialize(
        [raw_usage, device_usage, device_usage_checks],
        partition_key=day,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def test_features_follow_device_usage_only_when_its_blocking_checks_passed(project_env, instance):
    from asset_checks import device_usage_checks
    from smart_home_assets.assets.usage import device_usage

    write_upload(project_env["landing"], NEW, "hub-0001", [event(NEW, i) for i in range(3)])
    write_upload(project_env["landing"], OLD, "hub-0001", [event(OLD, i) for i in range(3)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert ingest_and_check(project_env, instance, NEW).success
    passed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert passed.get_requested_partitions(dg.AssetKey("usage_features")) == {NEW}

    # OLD: ingested and checked; then a row of it is duplicated in the warehouse (a bad hand edit, a bug in a
    # writer) and the checks, run again on that materialization, really fail.
    resources = pipeline_resources(project_env["landing"], project_env["warehouse"])
    assert ingest_and_check(project_env, instance, OLD).success
    with resources["warehouse"].connect() as conn:
        conn.execute("INSERT INTO device_usage SELECT * FROM device_usage WHERE partition_date = ? LIMIT 1", [OLD])
    rerun = run_checks(device_usage_checks, [raw_usage, device_usage], OLD, resources, instance)
    assert not rerun.success
    assert check_outcomes(rerun, "check_rows_conserved") == {False}
    assert check_outcomes(rerun, "check_event_id_unique") == {False}
    failed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=passed.cursor)
    # Nor any day whose 28-day window holds OLD (NEW is 15 days later): their lags would carry the bad day.
    assert failed.get_requested_partitions(dg.AssetKey("usage_features")) == set()


def features_run(project_env, instance, day):
    """usage_features of ``day`` with its checks, in one run (as automation and the CLI run them)."""
    from asset_checks import usage_features_checks
    from smart_home_assets.assets.features import usage_features

    return dg.materialize(
        [usage_features, usage_features_checks],
        partition_key=day,
        instance=instance,
        resources={"warehouse": DuckDBWarehouse(database=str(project_env["warehouse"]))},
        raise_on_error=False,
    )


def held_back_days(result) -> dict:
    """The retrain condition's account of the new feature days it held back (its evaluation metadata)."""

    def walk(node):
        yield node
        for child in node.child_results:
            yield from walk(child)

    (model,) = [r for r in result.results if r.key == dg.AssetKey("usage_model")]
    (mine,) = [n for n in walk(model) if n.condition.name.startswith("new_usage_features_days")]
    return mine.serializable_evaluation.metadata["held_back_days"].value  # what the UI shows


def test_a_feature_day_that_failed_its_blocking_check_does_not_trigger_a_retrain(project_env, instance):
    """OLD's device_usage rows are edited to negative energy after they passed their checks: its features are
    built from them and check_features_valid fails for real. That day alone is no reason to retrain (the
    condition names it); NEW, which passes, is."""
    for day in (OLD, NEW):
        write_upload(project_env["landing"], day, "hub-0001", [event(day, i) for i in range(3)])
        assert ingest_and_check(project_env, instance, day).success
    with DuckDBWarehouse(database=str(project_env["warehouse"])).connect() as conn:
        conn.execute("UPDATE device_usage SET energy_wh = -1.0 WHERE partition_date = ?", [OLD])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    bad = features_run(project_env, instance, OLD)
    assert not bad.success and check_outcomes(bad, "check_features_valid") == {False}
    after_bad = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert after_bad.get_num_requested(dg.AssetKey("usage_model")) == 0
    assert held_back_days(after_bad) == {OLD: ["check_features_valid: failed"]}

    good = features_run(project_env, instance, NEW)
    assert good.success and check_outcomes(good, "check_features_valid") == {True}
    after_good = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_bad.cursor)
    assert after_good.get_num_requested(dg.AssetKey("usage_model")) == 1
    assert held_back_days(after_good) == {OLD: ["check_features_valid: failed"]}


def test_a_late_upload_refreshes_the_features_of_every_day_whose_window_holds_it(project_env, instance):
    """Day D's features read D-28..D: a late file for OLD changes the lags of NEW (15 days later) too. Days
    in between and after, whose own device_usage does not exist, are not built from an empty day."""
    from smart_home_assets.assets.features import usage_features

    resources = {"warehouse": DuckDBWarehouse(database=str(project_env["warehouse"]))}
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

    resources = {"warehouse": DuckDBWarehouse(database=str(project_env["warehouse"]))}
    write_upload(project_env["landing"], NEW, "hub-0001", [event(NEW, i) for i in range(3)])
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert ingest_and_check(project_env, instance, NEW).success
    assert dg.materialize([usage_features], partition_key=NEW, resources=resources, instance=instance).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert after.get_requested_partitions(dg.AssetKey("usage_features")) == set()


def test_model_retrains_once_per_batch_of_new_feature_partitions_despite_gaps(project_env, instance):
    """Two feature partitions land (hundreds of older ones missing): one retrain, then quiet."""
    from smart_home_assets.assets.features import usage_features

    resources = {"warehouse": DuckDBWarehouse(database=str(project_env["warehouse"]))}
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


@pytest.fixture
def trained_env(project_env, instance, monkeypatch):
    """40 simulated feature days in the warehouse, reported to the instance as materialized (an external
    writer's report: these tests are about the model's check), the latest days' feature checks run for real,
    and a real MLflow registry."""
    import datetime as dt

    from asset_checks import usage_features_checks
    from resources.tracking import ModelRegistry, mlflow_tracking
    from smart_home_assets.assets.features import usage_features
    from smart_home_assets.lib.tables import USAGE_FEATURES
    from tests import PARTITIONS_END
    from tests.conftest import simulated_features

    days = 40  # ending on the last partition: the latest days, which predictions follow
    start = dt.date.fromisoformat(PARTITIONS_END) - dt.timedelta(days=days - 1)
    keys = [str(start + dt.timedelta(days=d)) for d in range(days)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_env['data'] / 'mlflow.db'}")
    warehouse = DuckDBWarehouse(database=str(project_env["warehouse"]))
    warehouse.replace_partitions({USAGE_FEATURES: simulated_features(start, days)}, keys)
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(USAGE_FEATURES, partition=key))
    resources = {"warehouse": warehouse, "model_registry": ModelRegistry(), "mlflow": mlflow_tracking}
    for key in keys[-3:]:  # the latest days', which predictions need passed
        assert run_checks(usage_features_checks, [usage_features], key, resources, instance).success
    return {"resources": resources, "last": keys[-1], "registry": resources["model_registry"]}


def test_predictions_wait_while_the_models_blocking_check_fails(instance, trained_env):
    """check_champion_beats_naive_baselines fails for real when the champion alias was moved by hand to a
    version usage_model did not choose: no predictions follow until a retrain passes it again."""
    from asset_checks import check_champion_beats_naive_baselines
    from resources.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
    from smart_home_assets.assets.model import usage_model

    def train(**config):
        result = dg.materialize(
            [usage_model, check_champion_beats_naive_baselines],
            instance=instance,
            resources=trained_env["resources"],
            raise_on_error=False,
            run_config={"ops": {"usage_model": {"config": config}}} if config else None,
        )
        assert result.success
        return result, result.asset_materializations_for_node("usage_model")[0].metadata

    def evaluate(cursor):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    predictions = dg.AssetKey("usage_predictions")
    start = evaluate(None)
    assert check_outcomes(train()[0], "check_champion_beats_naive_baselines") == {True}
    first = evaluate(start.cursor)
    assert trained_env["last"] in first.get_requested_partitions(predictions)

    _, loser = train(n_estimators=1, num_leaves=2, learning_rate=0.01)  # a challenger that loses
    assert loser["promoted"].value is False
    trained_env["registry"].client().set_registered_model_alias(
        REGISTERED_MODEL_NAME, CHAMPION_ALIAS, loser["model_version"].value
    )
    rerun = run_checks(check_champion_beats_naive_baselines, [usage_model], None, trained_env["resources"], instance)
    assert check_outcomes(rerun, "check_champion_beats_naive_baselines") == {False}
    held = evaluate(first.cursor)
    assert held.get_requested_partitions(predictions) == set()

    assert check_outcomes(train()[0], "check_champion_beats_naive_baselines") == {True}
    resumed = evaluate(held.cursor)
    assert trained_env["last"] in resumed.get_requested_partitions(predictions)
