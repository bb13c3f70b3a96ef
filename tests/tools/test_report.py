"""report.check_results and report.model_summary against a real Dagster instance ($DAGSTER_HOME) and a real
MLflow registry (SQLite), compared with what the instance and the registry themselves hold."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from asset_checks.feature_checks import DRIFT, ROWS, usage_features_checks
from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry
from smart_home_assets.assets.features import usage_features
from smart_home_assets.assets.model import usage_model
from smart_home_assets.lib.tables import USAGE_FEATURES
from smart_home_assets.lib.training import BASELINE_NAMES
from smart_home_tools import report
from tests.conftest import FLEET_DAYS, FLEET_START, model_resources

START, DAYS = FLEET_START, FLEET_DAYS  # the `features` fixture's fleet (tests/conftest.py)
KEYS = [str(START + dt.timedelta(days=d)) for d in range(DAYS)]


@pytest.fixture
def env(project_env, features, monkeypatch):
    resources = model_resources(project_env, features, monkeypatch)
    warehouse = resources["warehouse"]
    with dg.DagsterInstance.get() as instance:  # the instance report.check_results reads
        yield {"resources": resources, "instance": instance, "warehouse": warehouse, "features": features}


def run_checks(env, first: str, last: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [usage_features, usage_features_checks],
        resources={"warehouse": env["warehouse"]},
        instance=env["instance"],
        selection=dg.AssetSelection.checks_for_assets(usage_features),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success
    return result


def test_check_results_counts_the_latest_evaluation_per_check_and_partition(env):
    assert report.check_results().is_empty()
    day, before = KEYS[-1], KEYS[-2]
    features = env["features"]
    last_day = features.filter(pl.col("partition_date") == START + dt.timedelta(days=DAYS - 1))
    shifted = last_day.with_columns(pl.col("energy_wh") * 5)  # the drift check warns on it
    env["warehouse"].replace_partitions({USAGE_FEATURES: shifted}, [day])
    first = run_checks(env, before, day)
    assert {
        (e.check_name, e.partition, e.passed) for e in first.get_asset_check_evaluations() if e.check_name == DRIFT
    } == {(DRIFT, before, True), (DRIFT, day, False)}

    rows = {r["check"]: r for r in report.check_results().iter_rows(named=True)}
    assert set(rows) == {ROWS, DRIFT}
    assert (rows[DRIFT]["partitions"], rows[DRIFT]["passed"], rows[DRIFT]["failed"]) == (2, 1, 1)
    assert rows[DRIFT]["severity"] == "WARN" and rows[ROWS]["severity"] == "ERROR"
    assert (rows[ROWS]["partitions"], rows[ROWS]["passed"], rows[ROWS]["failed"]) == (2, 2, 0)

    # The day is fixed and checked again: its newer evaluation replaces the warning, per partition.
    env["warehouse"].replace_partitions({USAGE_FEATURES: last_day}, [day])
    second = run_checks(env, day, day)
    drift = report.check_results().filter(pl.col("check") == DRIFT).row(0, named=True)
    assert (drift["partitions"], drift["passed"], drift["failed"]) == (2, 2, 0)
    # Restricted to runs, only their evaluations count.
    only_first = report.check_results([first.run_id]).filter(pl.col("check") == DRIFT).row(0, named=True)
    assert (only_first["partitions"], only_first["passed"], only_first["failed"]) == (2, 1, 1)
    only_second = report.check_results([second.run_id]).filter(pl.col("check") == DRIFT).row(0, named=True)
    assert (only_second["partitions"], only_second["passed"], only_second["failed"]) == (1, 1, 0)


def train(env, **config) -> dict:
    result = dg.materialize(
        [usage_model],
        resources=env["resources"],
        instance=env["instance"],
        run_config={"ops": {"usage_model": {"config": config}}} if config else None,
        selection=[usage_model.key],
    )
    return {k: v.value for k, v in result.asset_materializations_for_node("usage_model")[0].metadata.items()}


def test_model_summary_reports_the_champion_and_the_newest_candidate_from_the_registry(env):
    import mlflow

    assert report.model_summary() == {}  # nothing registered yet
    champion = train(env, backtest_folds=2)
    assert champion["promoted"] is True and champion["champion_kind"] == "lightgbm"
    challenger = train(env, backtest_folds=2, n_estimators=1, num_leaves=2, learning_rate=0.01)
    assert challenger["promoted"] is False

    summary = report.model_summary()
    registry = ModelRegistry()
    assert champion["model_version"] == "1"
    assert str(summary["champion_version"]) == str(registry.champion_version().version) == "1"
    assert (summary["champion_kind"], summary["champion_name"]) == ("lightgbm", "lightgbm")
    assert summary["champion_backtest_mae"] == pytest.approx(champion["backtest_mae"])
    # the newest trained version is the challenger, not the champion, with its own decision
    assert str(summary["newest_version"]) == challenger["model_version"] == "2" and summary["versions"] == 2
    assert summary["newest_promoted"] == "False" and summary["newest_reason"] == challenger["decision_reason"]
    metrics = mlflow.MlflowClient().get_run(challenger["mlflow_run_id"]).data.metrics
    assert summary["backtest_mae"] == metrics["backtest_mae"] and summary["backtest_skill"] == metrics["backtest_skill"]
    assert summary["baselines_mae"] == {b: metrics[f"backtest_mae_{b}"] for b in BASELINE_NAMES}
    best = summary["best_baseline"]
    assert best == challenger["best_baseline"] == min(summary["baselines_mae"], key=summary["baselines_mae"].get)
    assert summary["fold_skill"] == pytest.approx(
        [1 - metrics[f"fold{k}_mae"] / metrics[f"fold{k}_mae_{best}"] for k in (1, 2)]
    )
    assert summary["alias"] == "champion" and summary["tracking_uri"] == registry.uri()
    assert report.print_model_summary(env["warehouse"].path()) is True  # a trained model is champion
    version = registry.client().get_model_version(REGISTERED_MODEL_NAME, "2")
    assert version.tags["promoted"] == "False"
