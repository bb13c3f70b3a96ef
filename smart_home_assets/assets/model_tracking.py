"""What usage_model records in MLflow: the run's parameters, metrics, artifacts and tags, and the registered
versions with their tags. The names written here are what the model checks, the decay sensor, the serving tools
and the report read back; the decisions behind them are in :mod:`smart_home_assets.assets.model`.

mlflow is imported inside the functions: the code location imports this module (the definitions stay cheap).
"""

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry
from smart_home_assets.assets.metadata import mlflow_run_metadata
from smart_home_assets.lib import training


def log_training_inputs(
    params: dict[str, Any], labeled_days: list, held_back: dict[str, list[str]], retrain_reason: str
) -> None:
    """The run's inputs, before anything is trained: left-out days, why it retrains, the config, the history."""
    import mlflow

    mlflow.log_param("excluded_feature_days", ",".join(held_back)[:6000] or "none")
    mlflow.set_tag("retrain_reason", retrain_reason[:500])
    mlflow.log_params(params)
    mlflow.log_params(
        {
            "labeled_days": len(labeled_days),
            "labeled_first_day": str(labeled_days[0]) if labeled_days else "none",
            "labeled_last_day": str(labeled_days[-1]) if labeled_days else "none",
        }
    )


def log_fit_and_backtest(training_rows: int, scores, folds, oof: pl.DataFrame, seconds: float) -> None:
    """The fit's rows and backtest days (params); backtest_mae/_wape/_skill, per baseline, fold, device type."""
    import mlflow

    mlflow.log_params(
        {
            "training_rows": training_rows,
            "backtest_first_day": str(folds[0].first),
            "backtest_last_day": str(folds[-1].last),
        }
    )
    metrics = {
        "backtest_mae": scores.mae["candidate"],
        "backtest_wape": scores.wape["candidate"],
        "backtest_skill": scores.skill("candidate"),
        "backtest_seconds": seconds,
        "backtest_folds": len(folds),
    }
    for name in scores.mae:
        if name != "candidate":
            metrics[f"backtest_mae_{name}"] = scores.mae[name]
            metrics[f"backtest_wape_{name}"] = scores.wape[name]
    for k, fold in enumerate(folds):
        for name in scores.fold_mae:
            suffix = "" if name == "candidate" else f"_{name}"
            metrics[f"fold{fold.index}_mae{suffix}"] = scores.fold_mae[name][k]
            metrics[f"fold{fold.index}_wape{suffix}"] = scores.fold_wape[name][k]
    for device_type, mae in scores.type_mae["candidate"].items():
        metrics[f"type_{device_type}_mae"] = mae
        metrics[f"type_{device_type}_wape"] = scores.type_wape["candidate"][device_type]
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_dict(
        {
            "folds": [{"fold": f.index, "first": str(f.first), "last": str(f.last)} for f in folds],
            "fold_mae": scores.fold_mae,
            "fold_wape": scores.fold_wape,
            "type_mae": scores.type_mae,
            "mae": scores.mae,
            "wape": scores.wape,
            "best_baseline": scores.best_baseline(),
            "rows": oof.height,
            "label": training.LABEL,
        },
        "backtest.json",
    )


def candidate_version_tags(
    spec: dict, scores, folds, decision: training.PromotionDecision, run_id: str, trained_through
) -> dict[str, str]:
    """The candidate version's tags: its recipe, backtest scores and the promotion decision taken on them."""
    best_name = decision.baseline
    return {
        "model_kind": "lightgbm",
        "model_name": "lightgbm",
        "model_spec": json.dumps(spec),
        "backtest_mae": f"{scores.mae['candidate']:.6f}",
        "backtest_skill": f"{scores.skill('candidate'):.6f}",
        "best_baseline": best_name,
        "best_baseline_mae": f"{scores.mae[best_name]:.6f}",
        "promoted": str(decision.promote),
        "decision_reason": decision.reason,
        "dagster_run_id": run_id,
        "trained_through": str(trained_through),
        "backtest_days": f"{folds[0].first}..{folds[-1].last}",
    }


def register_candidate(client, forecaster, sample: pl.DataFrame, tags: dict[str, str]) -> str:
    """Log the candidate as a pyfunc model version of the registered model, tag it, and return the version."""
    from smart_home_assets.lib.forecast_model import log_forecaster

    info = log_forecaster(forecaster, sample, registered_model_name=REGISTERED_MODEL_NAME)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)
    return version


def register_baseline(
    client, name: str, oof: pl.DataFrame | None, scores, reason: str, run_id: str, sample: pl.DataFrame
) -> str:
    """Log the baseline ``name`` as a pyfunc model version (interval from its own backtest errors) and tag it."""
    from smart_home_assets.lib.forecast_model import log_forecaster

    interval = None
    if oof is not None and oof.height:
        interval = training.IntervalCalibration.fit(oof, oof[f"pred_{name}"])
    info = log_forecaster(
        training.BaselineForecaster(name, interval),
        sample,
        registered_model_name=REGISTERED_MODEL_NAME,
        name="baseline_model",
    )
    version = str(info.registered_model_version)
    tags = {
        "model_kind": "baseline",
        "model_name": name,
        "promoted": "True",
        "decision_reason": reason,
        "dagster_run_id": run_id,
    }
    if scores is not None:
        tags |= {
            "backtest_mae": f"{scores.mae[name]:.6f}",
            "backtest_skill": "0.0",
            "best_baseline": name,
            "best_baseline_mae": f"{scores.mae[name]:.6f}",
        }
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)
    return version


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the plot itself."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def log_plots(model, oof: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    """Feature importance and backtest predicted-vs-actual, as MLflow artifacts and as inline Dagster metadata."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        importance_png = training.importance_plot_png(model, Path(tmp) / "feature_importance.png")
        scatter_png = training.predicted_vs_actual_png(
            oof[training.LABEL], oof["pred_candidate"], Path(tmp) / "predicted_vs_actual.png"
        )
        mlflow.log_artifact(str(importance_png), artifact_path="plots")
        mlflow.log_artifact(str(scatter_png), artifact_path="plots")
        return {
            "feature_importance": png_markdown(importance_png, "feature importance"),
            "predicted_vs_actual": png_markdown(scatter_png, "predicted vs actual (backtest)"),
        }


def tag_run_with_decision(decision: training.PromotionDecision, model_version: str, champion_version: str) -> None:
    """The run's outcome tags: promoted or not and why, the version it registered, the champion after it."""
    import mlflow

    mlflow.set_tags(
        {
            "promoted": str(decision.promote),
            "decision_reason": decision.reason,
            "model_version": model_version,
            "champion_version": champion_version,
        }
    )


def run_links(registry: ModelRegistry, run, model_version: str) -> dict[str, dg.MetadataValue]:
    """Where the materialization's MLflow run and the model version it names are (metadata, no credentials)."""
    return mlflow_run_metadata(
        registry.uri(), run.info.experiment_id, run.info.run_id, REGISTERED_MODEL_NAME, model_version
    )
