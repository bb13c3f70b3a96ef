"""usage_model in a real MLflow registry (SQLite, temporary): runs, versions, champion promotion, failures."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest


from resources import LandingZone, PseudonymizationKey, Warehouse
from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry, mlflow_tracking
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.predictions import usage_predictions
from smart_home_assets.tables import USAGE_FEATURES
from tests.conftest import simulated_features

START, DAYS = dt.date(2026, 1, 5), 40
LAST = START + dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    """Features of 25 simulated hubs over 40 days (computed once, written per test into a fresh warehouse)."""
    return simulated_features(START, DAYS)


@pytest.fixture
def env(project_env, features, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_env['data'] / 'mlflow.db'}")
    warehouse = Warehouse(database=str(project_env["warehouse"]))
    warehouse.replace_partitions({USAGE_FEATURES: features},
                                 [str(START + dt.timedelta(days=d)) for d in range(DAYS)])
    resources = {"warehouse": warehouse, "model_registry": ModelRegistry(), "mlflow": mlflow_tracking,
                 "landing": LandingZone(), "pseudonym_key": PseudonymizationKey()}
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield {"resources": resources, "instance": instance, "registry": ModelRegistry()}


def train(env, **config):
    result = dg.materialize([usage_model], resources=env["resources"], instance=env["instance"],
                            run_config={"ops": {"usage_model": {"config": config}}} if config else None,
                            raise_on_error=False, selection=[usage_model.key])
    metadata = None
    if result.success:
        metadata = {k: v.value for k, v in result.asset_materializations_for_node("usage_model")[0].metadata.items()}
    return result, metadata


def test_first_model_beats_baselines_and_becomes_champion(env):
    import mlflow

    result, meta = train(env)
    assert result.success
    assert meta["promoted"] is True and meta["model_version"] == "1"
    assert meta["holdout_mae"] < meta["best_baseline_mae"]
    for key in ("holdout_rmse", "holdout_wape", "baseline_same_as_yesterday_mae", "baseline_same_weekday_last_week_mae",
                "baseline_mean_last_7_days_mae", "mlflow_run_id", "training_rows", "decision_reason"):
        assert key in meta, key
    assert meta["feature_importance"].startswith("![feature importance](data:image/png;base64,")
    champion = env["registry"].champion_version()
    assert str(champion.version) == "1"
    run = mlflow.MlflowClient().get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert {"holdout_mae", "baseline_same_as_yesterday_mae"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/feature_importance.png", "plots/predicted_vs_actual.png"}


@pytest.mark.slow
def test_training_on_a_two_worker_dask_cluster_is_logged_registered_and_promoted_the_same_way(env):
    """dask_scheduler selects LightGBM's Dask interface (workers read their own days); everything after the fit
    is the same path: MLflow run, registered version, holdout and baselines, promotion."""
    import mlflow

    in_step, local = train(env)
    result, meta = train(env, dask_scheduler="local:2")
    assert result.success
    assert meta["model_version"] == "2" and meta["training_rows"] == local["training_rows"]
    assert meta["holdout_days"] == local["holdout_days"]
    assert meta["holdout_mae"] == pytest.approx(local["holdout_mae"], rel=0.1)
    assert meta["holdout_mae"] < meta["best_baseline_mae"]
    run = mlflow.MlflowClient().get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["trained_on"] == "local:2"


def test_a_crippled_challenger_is_not_promoted(env):
    train(env)
    result, meta = train(env, n_estimators=1, num_leaves=2, learning_rate=0.01)
    assert result.success  # the materialization succeeds; the version stays a challenger
    assert meta["promoted"] is False and meta["model_version"] == "2"
    assert "champion" in meta["decision_reason"] or "baseline" in meta["decision_reason"]
    assert str(env["registry"].champion_version().version) == "1"
    version = env["registry"].client().get_model_version(REGISTERED_MODEL_NAME, "2")
    assert version.tags["promoted"] == "False" and version.tags["decision_reason"] == meta["decision_reason"]


def test_every_materialization_is_its_own_finished_run(env):
    import mlflow

    _, first = train(env)
    _, second = train(env)
    assert first["mlflow_run_id"] != second["mlflow_run_id"]
    statuses = {mlflow.MlflowClient().get_run(m["mlflow_run_id"]).info.status for m in (first, second)}
    assert statuses == {"FINISHED"}
    assert mlflow.active_run() is None


def test_a_failed_training_ends_its_mlflow_run_as_failed_and_keeps_the_champion(env):
    import mlflow

    train(env)
    result, _ = train(env, holdout_days=500)  # more holdout days than there are days: training fails
    assert not result.success
    runs = mlflow.search_runs(experiment_names=["smart_home_usage"], filter_string=f"tags.dagster_run_id = '{result.run_id}'")
    assert list(runs["status"]) == ["FAILED"]
    assert str(env["registry"].champion_version().version) == "1"
    assert mlflow.active_run() is None


def test_predictions_carry_the_champion_version_and_skip_short_histories(env):
    train(env)
    result = dg.materialize([usage_predictions], partition_key=str(LAST), resources=env["resources"],
                            instance=env["instance"], selection=[usage_predictions.key])
    assert result.success
    rows = env["resources"]["warehouse"].read_partitions("usage_predictions", [str(LAST)])
    assert rows.height > 0 and set(rows["model_version"]) == {"1"}
    assert (rows["target_date"] == LAST + dt.timedelta(days=1)).all()
    assert (rows["predicted_energy_wh"] >= 0).all()
    meta = result.asset_materializations_for_node("usage_predictions")[0].metadata
    assert meta["skipped_devices"].value >= 0
