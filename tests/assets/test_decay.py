"""Decay-triggered retraining: a simulated regime change (every heating device uses twice its energy from a
given day) makes the champion's live MAE exceed its backtest MAE for days on end. The accuracy check then
fails, automation requests one retrain, alerts_sensor sends one alert saying why; the retrain answers the
episode and nothing is requested again. Real training, a real MLflow registry, real automation evaluation."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from asset_checks.model_checks import check_live_accuracy_holds
from smart_home_assets import alerts, decay_state
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.predictions import prediction_feedback, usage_predictions
from smart_home_assets.definitions import defs
from smart_home_assets.lib import decay
from smart_home_assets.lib.tables import USAGE_FEATURES
from smart_home_tools.simulate import RegimeChange
from tests.assets.test_alerts import Receiver
from tests.conftest import model_resources

START, DAYS = dt.date(2026, 1, 5), 52
TRAINED_ON = 40  # the champion sees the first 40 days
CHANGE = START + dt.timedelta(days=44)  # heating doubles from here
MODEL = dg.AssetKey("usage_model")


def regime_features(regime: RegimeChange | None) -> pl.DataFrame:
    from smart_home_assets.lib.features import build_features, daily_device_usage
    from smart_home_tools.simulate import build_fleet, simulate_hub_day

    fleet = build_fleet(3, 25)
    events = pl.concat(
        [
            simulate_hub_day(hub, START + dt.timedelta(days=d), seed=3, events_per_hub=80, regime=regime).to_frame()
            for d in range(DAYS)
            for hub in fleet
        ]
    )
    daily = daily_device_usage(events.with_columns(partition_date=pl.col("event_timestamp").dt.date()))
    return pl.concat([build_features(daily, START + dt.timedelta(days=d)) for d in range(DAYS)])


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return regime_features(RegimeChange(CHANGE, "heating", 2.0))


@pytest.fixture
def receiver(monkeypatch):
    server = Receiver()
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, server.url)
    yield server
    server.close()


def keys(first: int, last: int) -> list[str]:
    return [(START + dt.timedelta(days=d)).isoformat() for d in range(first, last + 1)]


def test_the_regime_change_in_the_simulator_doubles_only_that_type_from_that_day():
    from smart_home_tools.simulate import build_fleet, simulate_hub_day

    hub = next(h for h in build_fleet(3, 25) if "heating" in h.device_types)
    regime = RegimeChange(CHANGE, "heating", 2.0)
    for day in (CHANGE - dt.timedelta(days=1), CHANGE):
        plain = simulate_hub_day(hub, day, seed=3, events_per_hub=80).to_frame()
        changed = simulate_hub_day(hub, day, seed=3, events_per_hub=80, regime=regime).to_frame()
        by_type = {
            name: frame.group_by("device_type").agg(pl.col("energy_wh").sum()).sort("device_type")
            for name, frame in (("plain", plain), ("changed", changed))
        }
        ratio = dict(
            zip(
                by_type["plain"]["device_type"],
                by_type["changed"]["energy_wh"] / by_type["plain"]["energy_wh"],
                strict=True,
            )
        )
        expected_heating = 2.0 if day >= CHANGE else 1.0
        assert ratio.pop("heating") == pytest.approx(expected_heating, rel=0.02)
        assert all(r == pytest.approx(1.0, rel=0.02) for r in ratio.values()), ratio
    with pytest.raises(ValueError, match="unknown device type"):
        RegimeChange.parse("2026-03-01:boiler:2")


def test_a_regime_change_leads_to_one_decay_alert_and_one_retrain_with_no_clicks(
    project_env, features, monkeypatch, receiver
):
    resources = model_resources(
        project_env, features.filter(pl.col("partition_date") < START + dt.timedelta(days=TRAINED_ON)), monkeypatch
    )
    warehouse = resources["warehouse"]
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        assert dg.materialize([usage_model], resources=resources, instance=instance, selection=[MODEL]).success

        # The days after training land (written by the pipeline's pure functions, so no feature materialization
        # tells automation about them: whatever it requests below, decay asked for).
        later = keys(TRAINED_ON, DAYS - 1)
        warehouse.replace_partitions(
            {USAGE_FEATURES: features.filter(pl.col("partition_date").cast(pl.String).is_in(later))}, later
        )
        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert quiet.get_num_requested(MODEL) == 0

        scored = keys(TRAINED_ON - 1, DAYS - 2)  # D needs D+1's actuals
        for key in scored:  # day by day, as the daemon scores them
            assert dg.materialize(
                [usage_predictions, prediction_feedback, check_live_accuracy_holds],
                resources=resources,
                instance=instance,
                partition_key=key,
            ).success
        feedback = warehouse.query(
            "SELECT partition_date, live_mae, backtest_mae FROM prediction_feedback "
            "WHERE source = 'batch' ORDER BY partition_date"
        )
        ratios = dict(
            zip(
                feedback["partition_date"].cast(pl.String), feedback["live_mae"] / feedback["backtest_mae"], strict=True
            )
        )
        # Day D's predictions are for D+1: the days before the change are those up to CHANGE - 2.
        before = [r for d, r in ratios.items() if d < (CHANGE - dt.timedelta(days=1)).isoformat()]
        assert len(before) >= 4 and max(before) < 1 + decay.DEFAULT_MARGIN, ratios  # it held up until the change

        found = decay_state.open_decay(instance)
        assert found is not None and found.signal == "accuracy", ratios
        assert found.episode.startswith("accuracy:v1:") and found.episode.rsplit(":", 1)[1] >= CHANGE.isoformat()

        # The daemon's next automation tick: one retrain, for decay.
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert first.get_num_requested(MODEL) == 1
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert again.get_num_requested(MODEL) == 0  # requested once, not on every tick

        context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
        result = alerts.alerts_sensor(context)
        decays = [b for b in receiver.bodies if b["kind"] == alerts.MODEL_DECAY]
        assert len(decays) == 1 and decays[0]["asset"] == "usage_model"
        assert "live MAE above" in decays[0]["summary"] and "retrain was requested" in decays[0]["summary"]

        retrain = dg.materialize([usage_model], resources=resources, instance=instance, selection=[MODEL])
        metadata = retrain.asset_materializations_for_node("usage_model")[0].metadata
        assert metadata[decay.EPISODE_KEY].value == found.episode
        assert metadata["retrain_reason"].value.startswith("model decay:")
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=again.cursor)
        assert after.get_num_requested(MODEL) == 0  # answered: a retrain that kept the champion is not repeated

        alerts.alerts_sensor(
            dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(), cursor=result.cursor)
        )
        assert len([b for b in receiver.bodies if b["kind"] == alerts.MODEL_DECAY]) == 1  # one per episode


def test_the_verdict_needs_consecutive_days_of_one_version_above_the_margin():
    def rows(*items):
        return pl.DataFrame(
            [
                {"partition_date": dt.date(2026, 3, d), "model_version": v, "live_mae": m, "backtest_mae": 100.0}
                for d, v, m in items
            ]
        )

    over = rows((1, "3", 140.0), (2, "3", 130.0), (3, "3", 150.0))
    verdict = decay.accuracy_verdict(over, margin=0.25, days=3)
    assert verdict.decayed and verdict.episode == "accuracy:v3:2026-03-01" and verdict.worst_ratio == 1.5
    assert not decay.accuracy_verdict(over, margin=0.25, days=4).decayed
    assert not decay.accuracy_verdict(over, margin=0.45, days=3).decayed
    gap = rows((1, "3", 140.0), (3, "3", 130.0), (4, "3", 150.0))  # day 2 was never scored
    assert not decay.accuracy_verdict(gap, margin=0.25, days=3).decayed
    new_version = rows((1, "3", 140.0), (2, "4", 130.0), (3, "4", 150.0))
    assert not decay.accuracy_verdict(new_version, margin=0.25, days=3).decayed
    longer = rows((1, "3", 140.0), (2, "3", 130.0), (3, "3", 150.0), (4, "3", 160.0))
    assert decay.accuracy_verdict(longer, margin=0.25, days=3).episode == "accuracy:v3:2026-03-01"  # same episode
    assert decay.drift_streak([("2026-03-04", False), ("2026-03-02", True), ("2026-03-03", False)]) == [
        "2026-03-03",
        "2026-03-04",
    ]


def drift_checked(instance, day: str, passed: bool) -> None:
    """usage_features materialized for ``day`` and its drift check's result, as a feature run records them."""
    import uuid

    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    features = dg.AssetKey("usage_features")
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=features, partition=day))
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=features, asset_partitions=[day]), limit=1
    ).records[0]
    evaluation = dg.AssetCheckEvaluation(
        asset_key=features,
        check_name=decay.DRIFT_CHECK,
        passed=passed,
        metadata={},
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
        partition=day,
        description=None,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            run_id=record.event_log_entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
        ),
    )
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
            event_specific_data=evaluation,
            job_name="checks",
        ),
        run_id=str(uuid.uuid4()),
    )


def test_drift_on_consecutive_feature_days_opens_one_episode(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        drift_checked(instance, "2026-03-01", False)
        drift_checked(instance, "2026-03-02", True)
        drift_checked(instance, "2026-03-03", False)
        drift_checked(instance, "2026-03-04", False)
        assert decay_state.open_decay(instance) is None  # two days in a row: not yet
        drift_checked(instance, "2026-03-05", False)
        found = decay_state.open_decay(instance)
        assert (found.signal, found.episode, found.last_day) == ("drift", "drift:2026-03-03", "2026-03-05")
        drift_checked(instance, "2026-03-06", False)
        assert decay_state.open_decay(instance).episode == "drift:2026-03-03"  # the same episode goes on
        drift_checked(instance, "2026-03-04", True)  # a re-run of a day that no longer drifts ends it
        assert decay_state.open_decay(instance) is None
