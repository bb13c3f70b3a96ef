"""usage_model: train LightGBM on every labeled feature row, evaluate on a time-based holdout against
naive baselines and the current champion, log it all to MLflow, register a version, and move the
``champion`` alias only when the new version wins. Moving the alias is the last step.
"""

import base64
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.tracking import (
    CHAMPION_ALIAS,
    REGISTERED_MODEL_NAME,
    ModelRegistry,
    mlflow_run_for_materialization,
)
from smart_home_assets.assets.metadata import mlflow_run_metadata
from smart_home_assets.automation import retrain_when_features_land
from smart_home_assets.tables import DUCKDB_POOL, USAGE_FEATURES


class UsageModelConfig(dg.Config):
    """Training settings (override in the launchpad or with --config)."""

    holdout_days: int = 7
    training_window_days: int = 0  # 0 = every labeled day; N = only the last N days before the holdout
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    seed: int = 0
    # True for data where a device is not metered every day (history imports): a next day without events
    # is "not measured" and is neither trained on nor scored, instead of a zero label.
    silent_next_day_is_unknown: bool = False
    # "" trains in the step's process; "local" / "local:N" on a local Dask cluster of N workers; a scheduler
    # address (tcp://host:8786) on that cluster: LightGBM's Dask interface, each worker reading its own days.
    dask_scheduler: str = ""


def load_features(warehouse: Warehouse, training_window_days: int, holdout_days: int) -> pl.DataFrame:
    """Feature rows for training: all of them, or the last window + holdout (+1 day for labels)."""
    if not warehouse.table_exists(USAGE_FEATURES):
        raise dg.Failure(f"table {USAGE_FEATURES} does not exist yet: materialize usage_features first")
    if training_window_days <= 0:
        return warehouse.query(f"SELECT * FROM {USAGE_FEATURES}")
    days = training_window_days + holdout_days + 1
    return warehouse.query(
        f"SELECT * FROM {USAGE_FEATURES} WHERE partition_date > (SELECT max(partition_date) FROM {USAGE_FEATURES})"
        f" - ?::INTEGER", [days])


@dataclass(frozen=True)
class Fitted:
    model: Any
    holdout: pl.DataFrame
    training_rows: int
    train_first_day: dt.date


def fit_in_step(warehouse: Warehouse, config: UsageModelConfig, params: dict) -> Fitted:
    """Read the labeled window into the step and fit there."""
    from smart_home_assets import training

    features = load_features(warehouse, config.training_window_days, config.holdout_days)
    labeled = training.attach_labels(features, config.silent_next_day_is_unknown)
    train, holdout = training.split_holdout(labeled, holdout_days=config.holdout_days)
    model = training.train_model(train, params=params, seed=config.seed)
    return Fitted(model, holdout, train.height, train["partition_date"].min())


def fit_on_dask(warehouse: Warehouse, config: UsageModelConfig, params: dict) -> Fitted:
    """Fit on a Dask cluster: the step reads only the holdout days; workers read the training days."""
    from smart_home_assets import distributed_training as dist
    from smart_home_assets import training

    train_days, holdout_days = dist.split_days(dist.feature_days(warehouse), config.holdout_days,
                                               config.training_window_days)
    holdout = dist.load_labeled_days(warehouse, holdout_days, config.silent_next_day_is_unknown)
    types = training.device_type_categories(
        warehouse.query(f"SELECT DISTINCT device_type FROM {USAGE_FEATURES}"))
    with dist.dask_client(config.dask_scheduler) as client:
        model, rows = dist.train_model_dask(client, warehouse, train_days, types, params=params, seed=config.seed,
                                            silent_next_day_is_unknown=config.silent_next_day_is_unknown)
    return Fitted(model, holdout, rows, train_days[0])


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the plot itself."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


@dg.asset(
    deps=[USAGE_FEATURES],
    pool=DUCKDB_POOL,
    kinds={"lightgbm", "mlflow"},
    group_name="training",
    # dagster-mlflow's resource is a legacy resource: it is reached through context.resources, so the
    # other resources are too (Dagster does not mix both styles in one asset).
    required_resource_keys={"mlflow", "warehouse", "model_registry"},
    automation_condition=retrain_when_features_land(),
)
def usage_model(context: dg.AssetExecutionContext, config: UsageModelConfig) -> dg.MaterializeResult:
    """LightGBM next-day energy model in the MLflow registry as ``smart_home_usage``; ``champion`` moves
    to the new version only if it beats the current champion on the same holdout and the best naive baseline.
    """
    import mlflow

    from smart_home_assets import training

    warehouse: Warehouse = context.resources.warehouse
    model_registry: ModelRegistry = context.resources.model_registry
    client = model_registry.client()
    params = {"n_estimators": config.n_estimators, "learning_rate": config.learning_rate,
              "num_leaves": config.num_leaves, "min_child_samples": config.min_child_samples}

    # The MLflow run covers everything from reading features on, so any failure ends it as FAILED.
    with mlflow_run_for_materialization(context, run_name=f"usage_model {context.run_id[:8]}") as run:
        mlflow.log_params({**params, "seed": config.seed, "holdout_days": config.holdout_days,
                           "training_window_days": config.training_window_days,
                           "silent_next_day_is_unknown": config.silent_next_day_is_unknown,
                           "features": ",".join(training.FEATURE_COLUMNS)})
        fitted = (fit_on_dask if config.dask_scheduler else fit_in_step)(warehouse, config, params)
        model, holdout = fitted.model, fitted.holdout
        holdout_dates = holdout["partition_date"].unique().sort()
        mlflow.log_params({"training_rows": fitted.training_rows, "holdout_rows": holdout.height,
                           "train_first_day": str(fitted.train_first_day),
                           "holdout_first_day": str(holdout_dates.min()),
                           "holdout_last_day": str(holdout_dates.max()),
                           "trained_on": config.dask_scheduler or "the step's process"})
        metrics = training.evaluate(model, holdout)
        baselines = training.baseline_metrics(holdout)
        best_name, best = training.best_baseline(baselines)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"baseline_{name}_{k}": v for name, m in baselines.items() for k, v in m.items()})

        # mlflow.lightgbm flavor, servable with `mlflow models serve`: numeric input with the model's own
        # device-type codes, signature from the whole holdout (nullable features optional), 20-row example.
        info = training.log_lightgbm_model(model, holdout, registered_model_name=REGISTERED_MODEL_NAME)
        version = str(info.registered_model_version)

        with tempfile.TemporaryDirectory() as tmp:
            importance_png = training.importance_plot_png(model, Path(tmp) / "feature_importance.png")
            scatter_png = training.predicted_vs_actual_png(
                holdout[training.LABEL], training.predict(model, holdout), Path(tmp) / "predicted_vs_actual.png")
            mlflow.log_artifact(str(importance_png), artifact_path="plots")
            mlflow.log_artifact(str(scatter_png), artifact_path="plots")
            importance_md = png_markdown(importance_png, "feature importance")
            scatter_md = png_markdown(scatter_png, "predicted vs actual")

        champion = model_registry.champion_version()
        champion_mae = None
        if champion is not None:
            champion_model = model_registry.load_version(champion.version)
            champion_mae = training.evaluate(champion_model, holdout)["mae"]
            mlflow.log_metric("champion_holdout_mae", champion_mae)
        decision = training.decide_promotion(metrics["mae"], champion_mae, best["mae"], best_baseline_name=best_name,
                                             champion_version=str(champion.version) if champion else None)
        for key, value in {"holdout_mae": f"{metrics['mae']:.6f}", "best_baseline": best_name,
                           "best_baseline_mae": f"{best['mae']:.6f}", "promoted": str(decision.promote),
                           "decision_reason": decision.reason, "dagster_run_id": context.run_id,
                           "holdout_last_day": str(holdout_dates.max())}.items():
            client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)
        mlflow.set_tags({"promoted": str(decision.promote), "decision_reason": decision.reason,
                         "model_version": version})
        if decision.promote:
            # Last step: everything above can fail and leave the champion untouched.
            client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
        context.log.info(f"model version {version}: {'promoted to champion' if decision.promote else 'challenger'}"
                         f" — {decision.reason}")
        run_id, experiment_id = run.info.run_id, run.info.experiment_id

    return dg.MaterializeResult(metadata={
        "model_version": dg.MetadataValue.text(version),
        "promoted": dg.MetadataValue.bool(decision.promote),
        "decision_reason": dg.MetadataValue.text(decision.reason),
        "champion_version": dg.MetadataValue.text(version if decision.promote else
                                                  (str(champion.version) if champion else "none")),
        "previous_champion_holdout_mae": dg.MetadataValue.float(champion_mae) if champion_mae is not None
        else dg.MetadataValue.text("none"),
        **mlflow_run_metadata(model_registry.uri(), experiment_id, run_id, REGISTERED_MODEL_NAME, version),
        "training_rows": dg.MetadataValue.int(fitted.training_rows),
        "holdout_rows": dg.MetadataValue.int(holdout.height),
        "holdout_days": dg.MetadataValue.text(f"{holdout_dates.min()}..{holdout_dates.max()}"),
        **{f"holdout_{k}": dg.MetadataValue.float(float(v)) for k, v in metrics.items()},
        **{f"baseline_{name}_mae": dg.MetadataValue.float(float(m["mae"])) for name, m in baselines.items()},
        "best_baseline": dg.MetadataValue.text(best_name),
        "best_baseline_mae": dg.MetadataValue.float(float(best["mae"])),
        "feature_importance": importance_md,
        "predicted_vs_actual": scatter_md,
        "trained_at": dg.MetadataValue.text(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
    })
