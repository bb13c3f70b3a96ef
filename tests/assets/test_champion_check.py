"""The champion check's branches tests/lib/test_scoring.py leaves out: a NaN baseline score, no champion in the
registry, and the real check run by Dagster before usage_model was ever materialized."""

import dagster as dg

from asset_checks.model_checks import CHECK_NAME, check_champion_beats_naive_baselines, judge_champion
from resources import DuckDBWarehouse
from resources.tracking import ModelRegistry, mlflow_tracking
from smart_home_assets.assets.model import usage_model


def metadata(**values) -> dict:
    return {k: dg.MetadataValue.text(v) if isinstance(v, str) else dg.MetadataValue.float(v) for k, v in values.items()}


def test_a_trained_champion_without_a_baseline_score_fails():
    # what usage_model records when it keeps a trained champion on too short a history: best_baseline_mae NaN
    kept = metadata(
        champion_version="3",
        champion_kind="lightgbm",
        champion_name="lightgbm",
        decision="keep",
        best_baseline="mean_last_7_days",
        best_baseline_mae=float("nan"),
    )
    passed, description, out = judge_champion(kept, "3")
    assert not passed and "no backtest scores" in description
    assert "skill_vs_best_baseline" not in out
    scored = metadata(
        champion_version="3", champion_kind="lightgbm", champion_backtest_mae=80.0, best_baseline_mae=float("nan")
    )
    assert not judge_champion(scored, "3")[0]


def test_no_champion_in_the_registry_fails_even_when_usage_model_decided_on_one():
    winner = metadata(
        champion_version="1", champion_kind="lightgbm", best_baseline_mae=100.0, champion_backtest_mae=80.0
    )
    passed, description, out = judge_champion(winner, None)
    assert not passed and "moved outside the pipeline" in description and out["registry_champion"] == "none"


def test_the_real_check_fails_when_usage_model_was_never_materialized(project_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_env['data'] / 'mlflow.db'}")
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        result = dg.materialize(
            [usage_model, check_champion_beats_naive_baselines],
            instance=instance,
            resources={
                "model_registry": ModelRegistry(),
                "mlflow": mlflow_tracking,
                "warehouse": DuckDBWarehouse(database=str(project_env["warehouse"])),
            },
            selection=dg.AssetSelection.checks(check_champion_beats_naive_baselines),
            raise_on_error=False,
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME and not evaluation.passed
    assert evaluation.description == "usage_model was never materialized"
    assert not result.success  # the check is blocking: its failure fails the step
