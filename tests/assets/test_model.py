"""usage_model in a real MLflow registry (SQLite, temporary): runs, versions, champion promotion, failures."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.predictions import usage_predictions
from smart_home_assets.lib.tables import USAGE_FEATURES
from tests.conftest import FLEET_DAYS, FLEET_START, model_resources

START, DAYS = FLEET_START, FLEET_DAYS  # the `features` fixture's fleet (tests/conftest.py)
LAST = START + dt.timedelta(days=DAYS - 1)


@pytest.fixture
def env(project_env, features, monkeypatch):
    resources = model_resources(project_env, features, monkeypatch)
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield {"resources": resources, "instance": instance, "registry": ModelRegistry()}


def train(env, **config):
    result = dg.materialize(
        [usage_model],
        resources=env["resources"],
        instance=env["instance"],
        run_config={"ops": {"usage_model": {"config": config}}} if config else None,
        raise_on_error=False,
        selection=[usage_model.key],
    )
    metadata = None
    if result.success:
        metadata = {k: v.value for k, v in result.asset_materializations_for_node("usage_model")[0].metadata.items()}
    return result, metadata


def test_first_model_beats_baselines_and_becomes_champion(env):
    import mlflow

    result, meta = train(env)
    assert result.success
    assert meta["promoted"] is True and meta["model_version"] == "1" and meta["champion_kind"] == "lightgbm"
    assert meta["backtest_mae"] < meta["best_baseline_mae"] and meta["backtest_skill"] > 0
    for key in (
        "backtest_wape",
        "backtest_folds",
        "backtest_mae_same_as_yesterday",
        "backtest_mae_same_weekday_last_week",
        "backtest_mae_mean_last_7_days",
        "backtest",
        "backtest_by_device_type",
        "interval",
        "mlflow_run_id",
        "training_rows",
        "decision_reason",
    ):
        assert key in meta, key
    assert meta["feature_importance"].startswith("![feature importance](data:image/png;base64,")
    champion = env["registry"].champion_version()
    assert str(champion.version) == "1"
    run = mlflow.MlflowClient().get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    folds = meta["backtest_folds"]
    assert folds >= 2
    expected = {
        "backtest_mae",
        "backtest_skill",
        "backtest_wape",
        "backtest_mae_mean_last_7_days",
        "backtest_mae_same_as_yesterday",
        "backtest_mae_same_weekday_last_week",
        *(f"fold{k}_mae" for k in range(1, folds + 1)),
        *(f"fold{k}_mae_mean_last_7_days" for k in range(1, folds + 1)),
        "type_fridge_mae",
        "type_heating_wape",
    }
    assert expected <= set(run.data.metrics)
    assert run.data.metrics["backtest_skill"] == pytest.approx(
        1
        - run.data.metrics["backtest_mae"]
        / min(
            run.data.metrics[f"backtest_mae_{b}"]
            for b in ("mean_last_7_days", "same_as_yesterday", "same_weekday_last_week")
        )
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/feature_importance.png", "plots/predicted_vs_actual.png"}


def test_config_defaults_are_the_training_modules():
    from smart_home_assets.assets.model import UsageModelConfig, params_of
    from smart_home_assets.lib import training

    config = UsageModelConfig()
    assert params_of(config) == {k: v for k, v in training.DEFAULT_PARAMS.items() if k != "objective"}
    assert (config.backtest_folds, config.fold_days) == (training.BACKTEST_FOLDS, training.FOLD_DAYS)


@pytest.mark.slow
def test_training_on_a_two_worker_dask_cluster_is_logged_registered_and_promoted_the_same_way(env):
    """dask_scheduler selects LightGBM's Dask interface (workers read their own days), for every fold and the
    final fit; everything after the fit is the same path: MLflow run, registered version, backtest, promotion."""
    import mlflow

    in_step, local = train(env)
    result, meta = train(env, dask_scheduler="local:2")
    assert result.success
    assert meta["model_version"] == "2" and meta["training_rows"] == local["training_rows"]
    assert meta["backtest_days"] == local["backtest_days"]
    assert meta["backtest_mae"] == pytest.approx(local["backtest_mae"], rel=0.1)
    assert meta["backtest_mae"] < meta["best_baseline_mae"]
    run = mlflow.MlflowClient().get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["trained_on"] == "local:2"


def test_a_crippled_challenger_is_not_promoted(env):
    train(env)
    result, meta = train(env, n_estimators=1, num_leaves=2, learning_rate=0.01)
    assert result.success  # the materialization succeeds; the version stays a challenger
    assert meta["promoted"] is False and meta["model_version"] == "2" and meta["decision"] == "keep"
    assert "champion v1" in meta["decision_reason"]
    assert str(env["registry"].champion_version().version) == "1"
    version = env["registry"].client().get_model_version(REGISTERED_MODEL_NAME, "2")
    assert version.tags["promoted"] == "False" and version.tags["decision_reason"] == meta["decision_reason"]


def steady(features: pl.DataFrame) -> pl.DataFrame:
    """Every device uses the same energy every day: mean_last_7_days is exact, so nothing can beat it."""
    constant = pl.col("device_id").hash(seed=1).mod(1000).cast(pl.Float64) + 100.0
    energies = [
        "energy_wh",
        "energy_lag_1",
        "energy_lag_2",
        "energy_lag_6",
        "energy_lag_7",
        "energy_roll7_mean",
        "energy_roll28_mean",
        "energy_prev7_mean",
        "energy_same_weekday_mean4",
    ]
    return features.with_columns(
        **{c: pl.when(pl.col(c).is_null()).then(None).otherwise(constant) for c in energies},
        energy_roll7_std=pl.lit(0.0),
        energy_roll28_std=pl.lit(0.0),
        fleet_type_ratio=pl.lit(1.0),
        fleet_type_ratio_lag_1=pl.lit(1.0),
        hub_energy_ratio=pl.lit(1.0),
    )


def test_a_better_challenger_moves_the_champion_after_both_are_scored_on_the_same_folds(env):
    import mlflow

    _, weak = train(env, n_estimators=3, num_leaves=2, learning_rate=0.05)
    first = str(env["registry"].champion_version().version)
    result, strong = train(env)
    assert result.success and strong["decision"] == "candidate" and strong["promoted"] is True
    assert str(env["registry"].champion_version().version) == strong["model_version"] != first
    assert strong["previous_champion"].startswith(f"champion v{first}")
    metrics = mlflow.MlflowClient().get_run(strong["mlflow_run_id"]).data.metrics
    if weak["champion_kind"] == "lightgbm":  # the weak recipe was refitted on the same folds and lost
        assert metrics["backtest_mae"] < metrics["backtest_mae_champion"]
        assert metrics["backtest_mae_champion"] == pytest.approx(weak["backtest_mae"], rel=0.02)
    assert "beats" in strong["decision_reason"]


@pytest.mark.slow
def test_a_better_challenger_killed_after_its_backtest_leaves_the_champion(env, project_env):
    """A real CLI run of usage_model is SIGKILLed once its backtest is logged (read from MLflow, not guessed
    from a sleep), before it could move the alias: the champion stays. The same training, run again, moves it:
    the killed challenger was the better one."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import mlflow

    from tests.conftest import PROJECT_ROOT

    _, weak = train(env, n_estimators=3, num_leaves=2, learning_rate=0.05)
    first = str(env["registry"].champion_version().version)
    env["instance"].get_runs()  # the instance's storage exists before the CLI process opens it
    dagster = str(Path(sys.executable).with_name("dagster"))
    cli = subprocess.Popen(
        [dagster, "asset", "materialize", "-m", "smart_home_assets.definitions", "--select", "usage_model"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, backtested = time.monotonic() + 600, []
        while not backtested and cli.poll() is None and time.monotonic() < deadline:
            backtested = [
                r
                for r in mlflow.search_runs(
                    experiment_names=["smart_home_usage"],
                    output_format="list",
                    filter_string="metrics.backtest_mae > 0",
                )
                if r.info.run_id != weak["mlflow_run_id"]
            ]
            time.sleep(0.05)
        assert backtested and cli.poll() is None, "the CLI run ended before its backtest was seen"
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    (killed,) = backtested
    # killed before its decision was recorded (the alias moves after it)
    assert "promoted" not in mlflow.MlflowClient().get_run(killed.info.run_id).data.tags
    assert str(env["registry"].champion_version().version) == first

    result, again = train(env)
    assert result.success and again["promoted"] is True
    assert str(env["registry"].champion_version().version) == again["model_version"] != first


def test_when_no_model_beats_the_baselines_the_best_baseline_serves(env, features):
    """A fleet so steady that the mean of the last 7 days is exact: no trained model can beat it, and with no
    champion the best baseline is registered as a pyfunc version and becomes champion; predictions come from
    it, say so, and carry its interval."""
    env["resources"]["warehouse"].replace_partitions(
        {USAGE_FEATURES: steady(features)}, [str(START + dt.timedelta(days=d)) for d in range(DAYS)]
    )
    result, meta = train(env)
    assert result.success
    assert meta["decision"] == "baseline" and meta["promoted"] is False
    assert meta["champion_kind"] == "baseline" and meta["champion_name"] == meta["best_baseline"] == "mean_last_7_days"
    assert meta["best_baseline_mae"] == 0.0
    champion = env["registry"].champion_version()
    assert str(champion.version) == meta["champion_version"] == "2"  # v1 is the losing candidate
    assert champion.tags["model_kind"] == "baseline" and champion.tags["model_name"] == meta["best_baseline"]
    forecaster = env["registry"].load_forecaster(champion.version)
    assert forecaster.kind == "baseline" and forecaster.interval is not None

    day = str(LAST)
    assert dg.materialize(
        [usage_predictions],
        partition_key=day,
        resources=env["resources"],
        instance=env["instance"],
        selection=[usage_predictions.key],
    ).success
    rows = env["resources"]["warehouse"].read_partitions("usage_predictions", [day])
    assert set(rows["model_kind"]) == {"baseline"} and set(rows["model_name"]) == {meta["best_baseline"]}
    assert set(rows["model_version"]) == {"2"}
    features = env["resources"]["warehouse"].read_partitions(USAGE_FEATURES, [day]).filter(pl.col("has_enough_history"))
    from smart_home_assets.lib import training

    expected = dict(
        zip(features["device_id"], training.baseline_predictions(features)[meta["best_baseline"]], strict=True)
    )
    assert all(abs(p - expected[d]) < 1e-6 for d, p in zip(rows["device_id"], rows["predicted_energy_wh"], strict=True))
    assert (rows["p10_wh"] <= rows["predicted_energy_wh"]).all() and (
        rows["predicted_energy_wh"] <= rows["p90_wh"]
    ).all()


def test_too_short_a_history_serves_the_baseline(env):
    """Fewer labeled days than one fold and its training days: no model is trained, the baseline serves."""
    result, meta = train(env, fold_days=40)
    assert result.success and meta["decision"] == "baseline"
    assert "not enough labeled days" in meta["decision_reason"]
    assert env["registry"].champion_version().tags["model_kind"] == "baseline"


def test_every_materialization_is_its_own_finished_run(env):
    import mlflow

    _, first = train(env)
    _, second = train(env)
    assert first["mlflow_run_id"] != second["mlflow_run_id"]
    statuses = {mlflow.MlflowClient().get_run(m["mlflow_run_id"]).info.status for m in (first, second)}
    assert statuses == {"FINISHED"}
    assert mlflow.active_run() is None


def test_training_leaves_out_feature_days_whose_blocking_checks_failed(env, features):
    """One day's features are edited to a negative energy and check_features_valid, run on them, really fails:
    training leaves that day out as a row and as the label of the day before, and says so."""
    import mlflow

    from asset_checks import usage_features_checks
    from smart_home_assets.assets.features import usage_features
    from smart_home_assets.lib import training
    from tests.check_runs import check_outcomes, run_checks

    bad = START + dt.timedelta(days=25)
    with env["resources"]["warehouse"].connect() as conn:
        conn.execute(f"UPDATE {USAGE_FEATURES} SET energy_roll7_mean = -1 WHERE partition_date = ?", [bad])
    checked = run_checks(usage_features_checks, [usage_features], str(bad), env["resources"], env["instance"])
    assert check_outcomes(checked, "check_features_valid") == {False}

    result, meta = train(env)
    assert result.success
    assert meta["excluded_feature_days"] == {str(bad): ["check_features_valid: failed"]}
    assert meta["excluded_feature_day_count"] == 1
    kept = training.attach_labels(features.filter(pl.col("partition_date") != bad))
    assert meta["training_rows"] == kept.height < training.attach_labels(features).height
    run = mlflow.MlflowClient().get_run(meta["mlflow_run_id"])
    assert run.data.params["excluded_feature_days"] == str(bad)


def test_a_failed_training_ends_its_mlflow_run_as_failed_and_keeps_the_champion(env):
    import mlflow

    train(env)
    result, _ = train(env, backtest_folds=0)  # no fold at all: training fails
    assert not result.success
    runs = mlflow.search_runs(
        experiment_names=["smart_home_usage"], filter_string=f"tags.dagster_run_id = '{result.run_id}'"
    )
    assert list(runs["status"]) == ["FAILED"]
    assert str(env["registry"].champion_version().version) == "1"
    assert mlflow.active_run() is None


def test_predictions_carry_the_champion_version_and_an_interval_and_skip_short_histories(env):
    train(env)
    # two devices of the day without enough history (as a device newly paired with its hub has)
    warehouse = env["resources"]["warehouse"]
    day_rows = warehouse.read_partitions(USAGE_FEATURES, [str(LAST)])
    short = sorted(day_rows["device_id"].to_list())[:2]
    with warehouse.connect() as conn:
        conn.execute(
            f"UPDATE {USAGE_FEATURES} SET has_enough_history = false WHERE partition_date = ? "
            "AND device_id IN (SELECT unnest(?::VARCHAR[]))",
            [LAST, short],
        )
    result = dg.materialize(
        [usage_predictions],
        partition_key=str(LAST),
        resources=env["resources"],
        instance=env["instance"],
        selection=[usage_predictions.key],
    )
    assert result.success
    rows = env["resources"]["warehouse"].read_partitions("usage_predictions", [str(LAST)])
    assert set(rows["device_id"]) == set(day_rows["device_id"]) - set(short)
    metadata = result.asset_materializations_for_node("usage_predictions")[0].metadata
    assert metadata["skipped_devices"].value == 2
    assert rows.height > 0 and set(rows["model_version"]) == {"1"} and set(rows["model_kind"]) == {"lightgbm"}
    assert (rows["target_date"] == LAST + dt.timedelta(days=1)).all()
    assert (rows["predicted_energy_wh"] >= 0).all()
    assert (rows["p10_wh"] <= rows["predicted_energy_wh"]).all() and (
        rows["predicted_energy_wh"] <= rows["p90_wh"]
    ).all()
    assert (rows["p90_wh"] > rows["p10_wh"]).mean() > 0.9


def test_bounded_tuning_logs_each_trial_as_a_child_run_and_keeps_the_best(env):
    import mlflow

    result, meta = train(env, tuning_trials=2, n_estimators=50)
    assert result.success
    client = mlflow.MlflowClient()
    parent = client.get_run(meta["mlflow_run_id"])
    children = mlflow.search_runs(
        experiment_names=["smart_home_usage"],
        output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 2 and all("backtest_mae" in c.data.metrics for c in children)
    trials = [c.data.metrics["backtest_mae"] for c in children]
    best = parent.data.metrics["tuning_best_backtest_mae"]
    assert best <= min(trials)
    # the candidate was fitted with the winning parameters: its backtest is the best trial's (or the configured)
    assert meta["backtest_mae"] == pytest.approx(best)
    assert {f"tuned_{k}" for k in ("n_estimators", "learning_rate", "num_leaves", "min_child_samples")} <= set(
        parent.data.params
    )


def test_tuning_stops_at_its_time_box(env):
    import mlflow

    result, meta = train(env, tuning_trials=50, tuning_timeout_s=0.0, n_estimators=50)
    assert result.success
    children = mlflow.search_runs(
        experiment_names=["smart_home_usage"],
        output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{meta['mlflow_run_id']}'",
    )
    assert len(children) == 0  # the configured parameters were scored, then the time box was already spent
