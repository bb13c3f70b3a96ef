"""Automation of the scoring assets, evaluated on a real instance (smart_home_assets/automation.py):
usage_predictions follows features and model for the latest 3 days only, once the model's blocking check
passed; prediction_feedback for day D follows once D's predictions and D+1's features (the actuals) exist.

Materializations and check results are written to the instance directly (no run executes), so each tick's
decision depends only on what exists, not on training a model.
"""

import datetime as dt
import uuid

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from asset_checks.feature_checks import FEATURES_KEY, ROWS
from asset_checks.model_checks import CHECK_NAME as CHAMPION_CHECK
from asset_checks.model_checks import MODEL_KEY
from smart_home_assets.definitions import defs
from smart_home_assets.partitions import daily_partitions

PREDICTIONS, FEEDBACK = dg.AssetKey("usage_predictions"), dg.AssetKey("prediction_feedback")
_LAST_KEY = daily_partitions.get_last_partition_key()
assert _LAST_KEY is not None  # the partitions end at the current day
LAST = dt.date.fromisoformat(_LAST_KEY)


def day(offset: int) -> str:
    """The partition key ``offset`` days from the last one (0: the latest day)."""
    return (LAST + dt.timedelta(days=offset)).isoformat()


@pytest.fixture
def instance(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield instance


def tick(instance, previous=None):
    """One evaluation of every automation condition, after ``previous`` (the daemon's earlier tick)."""
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=previous.cursor if previous else None)


def materialized(instance, key: dg.AssetKey, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def checked(instance, key: dg.AssetKey, check: str, passed: bool, partition: str | None = None) -> None:
    """A blocking check's result for the latest materialization of ``key`` (and ``partition``), recorded as a
    check run of its own records it (runless results of one check and partition cannot repeat)."""
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    target = AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].event_log_entry.run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp
    )
    evaluation = dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check,
        passed=passed,
        metadata={},
        severity=dg.AssetCheckSeverity.ERROR,
        blocking=True,
        partition=partition,
        description=None,
        target_materialization_data=target,
    )
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
            event_specific_data=evaluation,
            job_name="checks",
        ),
        run_id=str(uuid.uuid4()),
    )


def features_landed(instance, *days: str) -> None:
    for d in days:
        materialized(instance, FEATURES_KEY, d)
        checked(instance, FEATURES_KEY, ROWS, True, d)


def model_trained(instance, champion_check_passed: bool = True) -> None:
    materialized(instance, MODEL_KEY)
    checked(instance, MODEL_KEY, CHAMPION_CHECK, champion_check_passed)


def test_latest_days_are_predicted_once_features_and_a_model_that_passed_its_check_exist(instance):
    baseline = tick(instance)
    features_landed(instance, day(-5), day(-1), day(0))  # day(-2) has no features
    no_model = tick(instance, baseline)
    assert no_model.get_requested_partitions(PREDICTIONS) == set()  # nothing to predict with yet

    materialized(instance, MODEL_KEY)  # trained; its blocking check has not run
    unchecked = tick(instance, no_model)
    assert unchecked.get_requested_partitions(PREDICTIONS) == set()

    checked(instance, MODEL_KEY, CHAMPION_CHECK, False)
    failed = tick(instance, unchecked)
    assert failed.get_requested_partitions(PREDICTIONS) == set()  # a champion worse than a naive forecast

    checked(instance, MODEL_KEY, CHAMPION_CHECK, True)  # the same model, checked again: now it passes
    passed = tick(instance, failed)
    # the latest 3 days that have features; day(-5) has features too but is older
    assert passed.get_requested_partitions(PREDICTIONS) == {day(-1), day(0)}
    assert tick(instance, passed).get_requested_partitions(PREDICTIONS) == set()  # handled: asked once


def test_older_days_keep_their_predictions(instance):
    """A new model or late features re-predict the latest days; an older day keeps what it was predicted then."""
    baseline = tick(instance)
    old, edge = day(-3), day(-2)  # just outside and just inside the 3-day window
    features_landed(instance, old, edge, day(0))
    first = tick(instance, baseline)
    model_trained(instance)
    second = tick(instance, first)
    assert second.get_requested_partitions(PREDICTIONS) == {edge, day(0)}
    for d in (old, edge, day(0)):  # old's predictions were made when it was a recent day
        materialized(instance, PREDICTIONS, d)
    settled = tick(instance, second)
    assert settled.get_requested_partitions(PREDICTIONS) == set()

    model_trained(instance)  # a new champion
    retrained = tick(instance, settled)
    assert retrained.get_requested_partitions(PREDICTIONS) == {edge, day(0)}
    for d in (edge, day(0)):
        materialized(instance, PREDICTIONS, d)
    predicted = tick(instance, retrained)
    assert predicted.get_requested_partitions(PREDICTIONS) == set()

    features_landed(instance, old, day(0))  # late uploads rewrote both days' features
    late = tick(instance, predicted)
    model_trained(instance)  # the retrain they triggered
    after = tick(instance, late)
    requested = late.get_requested_partitions(PREDICTIONS) | after.get_requested_partitions(PREDICTIONS)
    assert requested == {edge, day(0)}  # old's features changed too: its predictions stay


def test_predictions_wait_for_the_retrain_their_new_features_trigger(instance):
    """As automation.py says: not scored with the old model while the new one is requested on the same tick."""
    baseline = tick(instance)
    features_landed(instance, day(0))
    first = tick(instance, baseline)
    model_trained(instance)
    second = tick(instance, first)
    assert second.get_requested_partitions(PREDICTIONS) == {day(0)}
    materialized(instance, PREDICTIONS, day(0))
    settled = tick(instance, second)

    features_landed(instance, day(0))  # a late upload rewrote the day's features
    late = tick(instance, settled)
    assert late.get_num_requested(MODEL_KEY) == 1  # the model retrains on them
    assert late.get_requested_partitions(PREDICTIONS) == set()  # and the predictions wait for it


def test_feedback_for_a_day_waits_for_its_predictions_and_the_next_days_features(instance):
    """Old days (outside the predictions' window), so that only prediction_feedback's own condition acts."""
    baseline = tick(instance)
    scored, late_predictions = day(-20), day(-10)
    features_landed(instance, scored)
    materialized(instance, PREDICTIONS, scored)  # its actuals, day(-19)'s features, are not in yet
    features_landed(instance, late_predictions, day(-9))  # actuals in, predictions not yet
    first = tick(instance, baseline)
    assert first.get_requested_partitions(FEEDBACK) == set()

    features_landed(instance, day(-19))
    actuals = tick(instance, first)
    assert actuals.get_requested_partitions(FEEDBACK) == {scored}

    materialized(instance, PREDICTIONS, late_predictions)
    predicted = tick(instance, actuals)
    assert predicted.get_requested_partitions(FEEDBACK) == {late_predictions}
    handled = tick(instance, predicted)
    assert handled.get_requested_partitions(FEEDBACK) == set()  # scored once

    materialized(instance, PREDICTIONS, scored)  # predicted again (a new champion): scored again
    assert tick(instance, handled).get_requested_partitions(FEEDBACK) == {scored}
