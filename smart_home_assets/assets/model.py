"""usage_model: a rolling-origin backtest of the LightGBM candidate, the current champion and the naive baselines
on the same folds; the candidate fitted on every labeled day; everything logged to MLflow; the ``champion``
alias moved only when the candidate wins, and to the best baseline when nothing trained beats it, so a champion
always exists once features do. Moving the alias is the last step.
"""


import base64
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable
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
from smart_home_assets.lib import training
from smart_home_assets.assets.metadata import mlflow_run_metadata
from smart_home_assets.automation import retrain_when_features_land_or_decay
from smart_home_assets.partitions import daily_partitions
from smart_home_assets.lib.tables import DUCKDB_POOL, USAGE_FEATURES

_P = training.DEFAULT_PARAMS


class UsageModelConfig(dg.Config):
    """Training settings (override in the launchpad or with --config-json); defaults from training."""

    backtest_folds: int = training.BACKTEST_FOLDS  # folds of the rolling-origin backtest (fewer if history is short)
    fold_days: int = training.FOLD_DAYS  # labeled days per fold
    training_window_days: int = 0  # 0 = every labeled day before a fold (and for the final fit); N = the last N
    n_estimators: int = _P["n_estimators"]
    learning_rate: float = _P["learning_rate"]
    num_leaves: int = _P["num_leaves"]
    min_child_samples: int = _P["min_child_samples"]
    seed: int = 0
    # True for data where a device is not metered every day (history imports): a next day without events
    # is "not measured" and is neither trained on nor scored, instead of a zero label.
    silent_next_day_is_unknown: bool = False
    # "" trains in the step's process; "local" / "local:N" on a local Dask cluster of N workers; a scheduler
    # address (tcp://host:8786) on that cluster: LightGBM's Dask interface, each worker reading its own days.
    dask_scheduler: str = ""
    # A bounded hyper-parameter search on the backtest folds before the candidate is fitted (0 = off, the
    # default path): at most tuning_trials trials and tuning_timeout_s seconds, each trial an MLflow child run.
    tuning_trials: int = 0
    tuning_timeout_s: float = 600.0


def params_of(config: UsageModelConfig) -> dict[str, Any]:
    return {"n_estimators": config.n_estimators, "learning_rate": config.learning_rate,
            "num_leaves": config.num_leaves, "min_child_samples": config.min_child_samples}


def load_features(warehouse: Warehouse, excluded: list[dt.date] | None = None) -> pl.DataFrame:
    if not warehouse.table_exists(USAGE_FEATURES):
        raise dg.Failure(f"table {USAGE_FEATURES} does not exist yet: materialize usage_features first")
    if excluded:
        return warehouse.query(f"SELECT * FROM {USAGE_FEATURES} WHERE partition_date NOT IN "
                               "(SELECT unnest(?::DATE[]))", [excluded])
    return warehouse.query(f"SELECT * FROM {USAGE_FEATURES}")


def feature_days_held_back(context: dg.AssetExecutionContext) -> dict[str, list[str]]:
    """Feature days whose latest materialization has not passed its blocking checks (failed, running, or
    never evaluated by a run that ended), with the checks: training leaves them out, as a row and as a label."""
    from asset_checks.feature_checks import BLOCKING_FEATURE_CHECKS
    from smart_home_assets.check_status import partitions_not_passing

    return partitions_not_passing(context.instance, BLOCKING_FEATURE_CHECKS, daily_partitions)


def _window(rows: pl.DataFrame, before: dt.date | None, window_days: int) -> pl.DataFrame:
    """Labeled rows before ``before`` (all when None), only the last ``window_days`` days of them when > 0."""
    if before is not None:
        rows = rows.filter(pl.col("partition_date") < before)
    if window_days > 0 and rows.height:
        rows = rows.filter(pl.col("partition_date") > rows["partition_date"].max() - dt.timedelta(days=window_days))
    return rows


@dataclass
class Trainer:
    """Where rows come from and where models are fitted: in the step, or on a Dask cluster."""

    labeled_days: list[dt.date]
    rows_of: Callable[[dt.date, dt.date], pl.DataFrame]  # labeled rows of first..last
    fit_before: Callable[[dt.date | None, dict], tuple[Any, int]]  # (model, training rows) on days before a day
    device_types: list[str]


def in_step_trainer(warehouse: Warehouse, config: UsageModelConfig, excluded: list[dt.date]) -> Trainer:
    labeled = training.attach_labels(load_features(warehouse, excluded), config.silent_next_day_is_unknown)
    types = training.device_type_categories(labeled) if labeled.height else training.device_type_categories()

    def fit(before: dt.date | None, params: dict) -> tuple[Any, int]:
        rows = _window(labeled, before, config.training_window_days)
        return training.train_model(rows, params=params, seed=config.seed, device_types=types), rows.height

    return Trainer(sorted(labeled["partition_date"].unique().to_list()),
                   lambda first, last: labeled.filter(pl.col("partition_date").is_between(first, last)), fit, types)


def dask_trainer(warehouse: Warehouse, config: UsageModelConfig, client, excluded: list[dt.date]) -> Trainer:
    """Fits on the cluster: workers read their own training days; the step reads only the days it scores."""
    from smart_home_assets.lib import distributed_training as dist

    days = dist.labeled_days(warehouse, config.silent_next_day_is_unknown, excluded)
    types = training.device_type_categories(warehouse.query(f"SELECT DISTINCT device_type FROM {USAGE_FEATURES}"))

    def fit(before: dt.date | None, params: dict) -> tuple[Any, int]:
        train_days = [d for d in days if before is None or d < before]
        if config.training_window_days > 0:
            train_days = train_days[-config.training_window_days:]
        return dist.train_model_dask(client, warehouse, train_days, types, params=params, seed=config.seed,
                                     silent_next_day_is_unknown=config.silent_next_day_is_unknown)

    def rows_of(first: dt.date, last: dt.date) -> pl.DataFrame:
        return dist.load_labeled_days(warehouse, [d for d in days if first <= d <= last],
                                      config.silent_next_day_is_unknown, excluded)

    return Trainer(days, rows_of, fit, types)


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the plot itself."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def model_spec(params: dict, config: UsageModelConfig) -> dict[str, Any]:
    """What a LightGBM version is, beyond its weights: refit on other days, it is the same model."""
    return {"kind": "lightgbm", "target": training.TARGET, "features": list(training.FEATURE_COLUMNS),
            "params": dict(sorted(params.items())), "seed": config.seed,
            "training_window_days": config.training_window_days,
            "silent_next_day_is_unknown": config.silent_next_day_is_unknown}


@dataclass
class Champion:
    version: str
    kind: str  # lightgbm | baseline
    name: str  # lightgbm, or the baseline's name
    spec: dict | None
    forecaster: Any

    @property
    def label(self) -> str:
        return f"champion v{self.version} ({self.name})"


def retrain_reason(context: dg.AssetExecutionContext) -> dict[str, dg.MetadataValue]:
    """Why this retrain: the decay episode open now (smart_home_assets/lib/decay.py), which it answers, so that
    automation requests no second retrain for it, or new feature days (also the MLflow run's tag)."""
    from smart_home_assets.lib import decay

    found = decay.open_decay(context.instance)
    reason = f"model decay: {found.summary}" if found else "new feature days"
    if found:
        context.log.warning(f"retraining for {reason} (episode {found.episode})")
    return {"retrain_reason": dg.MetadataValue.text(reason),
            decay.EPISODE_KEY: dg.MetadataValue.text(found.episode if found else decay.NO_EPISODE)}


def current_champion(registry: ModelRegistry) -> Champion | None:
    found = registry.champion_version()
    if found is None:
        return None
    forecaster = registry.load_forecaster(found.version)
    spec = json.loads(found.tags["model_spec"]) if "model_spec" in found.tags else None
    return Champion(str(found.version), forecaster.kind, forecaster.name, spec, forecaster)


def scores_table(scores, folds) -> dg.MetadataValue:
    """Markdown: MAE (WAPE) of every contender per fold, and overall (mean MAE over folds, pooled WAPE)."""
    names = ["candidate", *[n for n in scores.mae if n != "candidate"]]
    lines = ["| fold | days | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for k, fold in enumerate(folds):
        lines.append(f"| {fold.index} | {fold.first}..{fold.last} | "
                     + " | ".join(f"{scores.fold_mae[n][k]:.1f} ({scores.fold_wape[n][k]:.3f})" for n in names) + " |")
    lines.append("| overall | | " + " | ".join(f"**{scores.mae[n]:.1f}** ({scores.wape[n]:.3f})" for n in names) + " |")
    return dg.MetadataValue.md("Backtest: MAE in Wh (WAPE) per fold\n\n" + "\n".join(lines))


def by_device_type(scores) -> dg.MetadataValue:
    return dg.MetadataValue.json({t: {n: {"mae": round(scores.type_mae[n][t], 2), "wape": round(scores.type_wape[n][t], 4)}
                                      for n in scores.type_mae} for t in sorted(scores.type_mae["candidate"])})


def tune(trainer: Trainer, folds, base_params: dict, config: UsageModelConfig, context) -> dict:
    """Random search over a small space on the backtest folds; each trial is a nested MLflow run. Returns the
    best parameters (the configured ones when no trial beats them)."""
    import mlflow
    import numpy as np

    rng = np.random.default_rng(config.seed)
    started = time.monotonic()

    def score(params: dict) -> float:
        maes = []
        for fold in folds:
            model, _ = trainer.fit_before(fold.first, params)
            maes.append(training.evaluate(model, trainer.rows_of(fold.first, fold.last))["mae"])
        return float(np.mean(maes))

    best_params, best = base_params, score(base_params)
    for trial in range(config.tuning_trials):
        if time.monotonic() - started > config.tuning_timeout_s:
            context.log.info(f"tuning stopped after {trial} trials: {config.tuning_timeout_s:g} s time box")
            break
        params = {"n_estimators": int(rng.choice([150, 300, 500])), "learning_rate": float(rng.choice([0.03, 0.05, 0.1])),
                  "num_leaves": int(rng.choice([15, 31, 63])), "min_child_samples": int(rng.choice([10, 20, 50]))}
        with mlflow.start_run(run_name=f"tuning trial {trial}", nested=True):
            mlflow.log_params(params)
            mae = score(params)
            mlflow.log_metric("backtest_mae", mae)
        if mae < best:
            best_params, best = params, mae
    mlflow.log_metric("tuning_best_backtest_mae", best)
    return best_params


@dg.asset(
    deps=[USAGE_FEATURES],
    pool=DUCKDB_POOL,
    kinds={"lightgbm", "mlflow"},
    group_name="training",
    # dagster-mlflow's resource is a legacy resource: it is reached through context.resources, so the
    # other resources are too (Dagster does not mix both styles in one asset).
    required_resource_keys={"mlflow", "warehouse", "model_registry"},
    automation_condition=retrain_when_features_land_or_decay(),
)
def usage_model(context: dg.AssetExecutionContext, config: UsageModelConfig) -> dg.MaterializeResult:
    """LightGBM next-day energy model in the MLflow registry as ``smart_home_usage``, judged by a rolling-origin
    backtest against the champion and the naive baselines; ``champion`` moves to it only if it wins, and to the
    best baseline (registered as a model too) when nothing trained beats that baseline."""
    import contextlib

    import mlflow

    warehouse: Warehouse = context.resources.warehouse
    registry: ModelRegistry = context.resources.model_registry
    client = registry.client()
    params = params_of(config)

    held_back = feature_days_held_back(context)
    excluded = [dt.date.fromisoformat(day) for day in held_back]
    if held_back:
        context.log.warning(f"{len(held_back)} feature day(s) left out of training, their blocking checks not "
                            "passed: " + "; ".join(f"{d} ({', '.join(c)})" for d, c in held_back.items()))
    exclusions = {"excluded_feature_days": dg.MetadataValue.json(held_back),
                  "excluded_feature_day_count": dg.MetadataValue.int(len(held_back)),
                  **retrain_reason(context)}

    with mlflow_run_for_materialization(context, run_name=f"usage_model {context.run_id[:8]}") as run, \
            contextlib.ExitStack() as stack:
        if config.dask_scheduler:
            from smart_home_assets.lib.distributed_training import dask_client

            trainer = dask_trainer(warehouse, config, stack.enter_context(dask_client(config.dask_scheduler)),
                                   excluded)
        else:
            trainer = in_step_trainer(warehouse, config, excluded)
        mlflow.log_param("excluded_feature_days", ",".join(held_back)[:6000] or "none")
        mlflow.set_tag("retrain_reason", exclusions["retrain_reason"].value[:500])
        mlflow.log_params({**params, "seed": config.seed, "backtest_folds": config.backtest_folds,
                           "fold_days": config.fold_days, "training_window_days": config.training_window_days,
                           "silent_next_day_is_unknown": config.silent_next_day_is_unknown,
                           "target": training.TARGET, "features": ",".join(training.FEATURE_COLUMNS),
                           "trained_on": config.dask_scheduler or "the step's process"})
        mlflow.log_params({"labeled_days": len(trainer.labeled_days),
                           "labeled_first_day": str(trainer.labeled_days[0]) if trainer.labeled_days else "none",
                           "labeled_last_day": str(trainer.labeled_days[-1]) if trainer.labeled_days else "none"})
        champion = current_champion(registry)
        try:
            folds = training.fold_windows(trainer.labeled_days, config.backtest_folds, config.fold_days)
        except training.NotEnoughHistory as exc:
            result = serve_baseline_for_short_history(context, client, trainer, champion, str(exc))
            run_id, experiment_id = run.info.run_id, run.info.experiment_id
            return dg.MaterializeResult(metadata={**result, **exclusions, **mlflow_run_metadata(
                registry.uri(), experiment_id, run_id, REGISTERED_MODEL_NAME, result["champion_version"].value)})
        if len(folds) < config.backtest_folds:
            context.log.warning(f"history holds {len(folds)} of the {config.backtest_folds} backtest folds "
                                f"({len(trainer.labeled_days)} labeled days)")
        if config.tuning_trials > 0:
            params = tune(trainer, folds, params, config, context)
            mlflow.log_params({f"tuned_{k}": v for k, v in params.items()})
        spec = model_spec(params, config)

        # The backtest: candidate, champion and baselines forecast the same fold rows.
        contenders: dict[str, training.Contender] = {
            "candidate": lambda fold, rows: training.predict(trainer.fit_before(fold.first, params)[0], rows)}
        same_recipe = champion is not None and champion.spec == spec
        champion_column = None
        if champion is not None and champion.kind == "baseline":
            champion_column = champion.name
        elif champion is not None:
            champion_column = "champion"
            if same_recipe:
                contenders["champion"] = None  # filled from the candidate's own column below
            elif champion.spec and champion.spec.get("features") == training.FEATURE_COLUMNS \
                    and champion.spec.get("target") == training.TARGET:
                champ_params = champion.spec["params"]
                contenders["champion"] = lambda fold, rows: training.predict(
                    trainer.fit_before(fold.first, champ_params)[0], rows)
            else:  # a model of another recipe (an older code version): scored as it is
                contenders["champion"] = lambda fold, rows: champion.forecaster.point_forecast(rows)
        fold_rows = lambda fold: trainer.rows_of(fold.first, fold.last)  # noqa: E731
        started = time.perf_counter()
        oof = training.backtest(folds, fold_rows, {k: v for k, v in contenders.items() if v is not None})
        if same_recipe:
            oof = oof.with_columns(pred_champion=pl.col("pred_candidate"))
        backtest_s = time.perf_counter() - started
        scores = training.backtest_scores(oof)
        decision = training.decide_promotion(
            scores, champion=champion_column, champion_label=champion.label if champion else "champion",
            champion_is_baseline=champion is not None and champion.kind == "baseline", same_recipe=same_recipe)
        best_name = decision.baseline

        # The candidate: fitted on every labeled day, with the interval of its backtest errors.
        model, training_rows = trainer.fit_before(None, params)
        interval = training.IntervalCalibration.fit(oof, oof["pred_candidate"])
        candidate = training.LightGBMForecaster(model, interval)
        mlflow.log_params({"training_rows": training_rows, "backtest_first_day": str(folds[0].first),
                           "backtest_last_day": str(folds[-1].last)})
        log_backtest(scores, folds, oof, backtest_s)

        newest = trainer.rows_of(folds[-1].first, folds[-1].last)
        from smart_home_assets.lib.forecast_model import log_forecaster

        info = log_forecaster(candidate, newest, registered_model_name=REGISTERED_MODEL_NAME)
        version = str(info.registered_model_version)
        tags = {"model_kind": "lightgbm", "model_name": "lightgbm", "model_spec": json.dumps(spec),
                "backtest_mae": f"{scores.mae['candidate']:.6f}", "backtest_skill": f"{scores.skill('candidate'):.6f}",
                "best_baseline": best_name, "best_baseline_mae": f"{scores.mae[best_name]:.6f}",
                "promoted": str(decision.promote), "decision_reason": decision.reason,
                "dagster_run_id": context.run_id, "trained_through": str(trainer.labeled_days[-1]),
                "backtest_days": f"{folds[0].first}..{folds[-1].last}"}
        for key, value in tags.items():
            client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)

        with tempfile.TemporaryDirectory() as tmp:
            importance_png = training.importance_plot_png(model, Path(tmp) / "feature_importance.png")
            scatter_png = training.predicted_vs_actual_png(oof[training.LABEL], oof["pred_candidate"],
                                                           Path(tmp) / "predicted_vs_actual.png")
            mlflow.log_artifact(str(importance_png), artifact_path="plots")
            mlflow.log_artifact(str(scatter_png), artifact_path="plots")
            importance_md = png_markdown(importance_png, "feature importance")
            scatter_md = png_markdown(scatter_png, "predicted vs actual (backtest)")

        champion_version, champion_kind, champion_name = (champion.version, champion.kind, champion.name) \
            if champion else ("none", "none", "none")
        if decision.outcome == "candidate":
            champion_version, champion_kind, champion_name = version, "lightgbm", "lightgbm"
        elif decision.outcome == "baseline":
            champion_version = register_baseline(client, best_name, oof, scores, decision.reason, context.run_id,
                                                 newest)
            champion_kind, champion_name = "baseline", best_name
        # The champion's own backtest score: the candidate's, a baseline's column, or the trained champion's.
        champion_mae = scores.mae["candidate" if decision.outcome == "candidate" else
                                  champion_name if champion_kind == "baseline" else "champion"]
        mlflow.set_tags({"promoted": str(decision.promote), "decision_reason": decision.reason,
                         "model_version": version, "champion_version": champion_version})
        if champion_version != (champion.version if champion else None):
            # Last step: everything above can fail and leave the champion untouched.
            client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, champion_version)
        context.log.info(f"model version {version}: {decision.outcome} — {decision.reason}; champion is "
                         f"v{champion_version} ({champion_name})")
        run_id, experiment_id = run.info.run_id, run.info.experiment_id

    return dg.MaterializeResult(metadata={
        "model_version": dg.MetadataValue.text(version),
        "promoted": dg.MetadataValue.bool(decision.promote),
        "decision": dg.MetadataValue.text(decision.outcome),
        "decision_reason": dg.MetadataValue.text(decision.reason),
        "champion_version": dg.MetadataValue.text(champion_version),
        "champion_kind": dg.MetadataValue.text(champion_kind),
        "champion_name": dg.MetadataValue.text(champion_name),
        "champion_backtest_mae": dg.MetadataValue.float(float(champion_mae)),
        "previous_champion": dg.MetadataValue.text(champion.label if champion else "none"),
        **mlflow_run_metadata(registry.uri(), experiment_id, run_id, REGISTERED_MODEL_NAME, version),
        "training_rows": dg.MetadataValue.int(training_rows),
        **exclusions,
        "backtest_folds": dg.MetadataValue.int(len(folds)),
        "backtest_days": dg.MetadataValue.text(f"{folds[0].first}..{folds[-1].last}"),
        "backtest_mae": dg.MetadataValue.float(scores.mae["candidate"]),
        "backtest_wape": dg.MetadataValue.float(scores.wape["candidate"]),
        "backtest_skill": dg.MetadataValue.float(scores.skill("candidate")),
        "backtest_folds_lost": dg.MetadataValue.int(scores.losses("candidate", best_name)),
        **{f"backtest_mae_{name}": dg.MetadataValue.float(scores.mae[name]) for name in training.BASELINE_NAMES},
        "best_baseline": dg.MetadataValue.text(best_name),
        "best_baseline_mae": dg.MetadataValue.float(scores.mae[best_name]),
        "backtest": scores_table(scores, folds),
        "backtest_by_device_type": by_device_type(scores),
        "interval": dg.MetadataValue.json(interval.to_dict()),
        "backtest_seconds": dg.MetadataValue.float(round(backtest_s, 2)),
        "feature_importance": importance_md,
        "predicted_vs_actual": scatter_md,
        "trained_at": dg.MetadataValue.text(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")),
    })


def log_backtest(scores, folds, oof: pl.DataFrame, seconds: float) -> None:
    """backtest_mae / _wape / _skill, backtest_mae_<baseline> (means over folds), per fold and per device type."""
    import mlflow

    metrics = {"backtest_mae": scores.mae["candidate"], "backtest_wape": scores.wape["candidate"],
               "backtest_skill": scores.skill("candidate"), "backtest_seconds": seconds,
               "backtest_folds": len(folds)}
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
    mlflow.log_dict({"folds": [{"fold": f.index, "first": str(f.first), "last": str(f.last)} for f in folds],
                     "fold_mae": scores.fold_mae, "fold_wape": scores.fold_wape, "type_mae": scores.type_mae,
                     "mae": scores.mae, "wape": scores.wape, "best_baseline": scores.best_baseline(),
                     "rows": oof.height, "label": training.LABEL}, "backtest.json")


def register_baseline(client, name: str, oof: pl.DataFrame | None, scores, reason: str, run_id: str,
                      sample: pl.DataFrame) -> str:
    """Log the baseline ``name`` as a pyfunc model version (interval from its own backtest errors) and tag it."""
    from smart_home_assets.lib.forecast_model import log_forecaster

    interval = None
    if oof is not None and oof.height:
        interval = training.IntervalCalibration.fit(oof, oof[f"pred_{name}"])
    info = log_forecaster(training.BaselineForecaster(name, interval), sample,
                          registered_model_name=REGISTERED_MODEL_NAME, name="baseline_model")
    version = str(info.registered_model_version)
    tags = {"model_kind": "baseline", "model_name": name, "promoted": "True", "decision_reason": reason,
            "dagster_run_id": run_id}
    if scores is not None:
        tags |= {"backtest_mae": f"{scores.mae[name]:.6f}", "backtest_skill": "0.0", "best_baseline": name,
                 "best_baseline_mae": f"{scores.mae[name]:.6f}"}
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)
    return version


def serve_baseline_for_short_history(context, client, trainer: Trainer, champion: Champion | None,
                                     why: str) -> dict[str, dg.MetadataValue]:
    """Too little history for a backtest: the best baseline on the labeled rows there are (mean_last_7_days
    when there are none) serves, unless a champion exists already."""
    import mlflow

    rows = trainer.rows_of(dt.date.min, dt.date.max) if trainer.labeled_days else pl.DataFrame(
        schema={c: pl.Float64 for c in training.SOURCE_COLUMNS} | {"device_type": pl.String})
    name, metrics = ("mean_last_7_days", None) if rows.is_empty() else training.best_baseline(
        training.baseline_metrics(rows))
    reason = f"{why}: no model can be trained and judged yet"
    mlflow.set_tags({"promoted": "False", "decision_reason": reason})
    if champion is not None:
        version, kind, label = champion.version, champion.kind, champion.name
        reason += f"; {champion.label} stays"
    elif rows.is_empty():  # not one labeled row yet: the mean of the last 7 days, without an interval
        version = register_baseline(client, name, None, None, reason + f"; the baseline {name} serves",
                                    context.run_id, rows)
        kind, label = "baseline", name
        reason += f"; the baseline {name} becomes champion"
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
    else:
        # A baseline trains on nothing: every labeled row is out of sample for its interval.
        everything = training.Fold(0, rows["partition_date"].min(), rows["partition_date"].max())
        oof = training.backtest([everything], lambda _: rows, {})
        version = register_baseline(client, name, oof, None, reason + f"; the baseline {name} serves", context.run_id,
                                    rows.head(20))
        kind, label = "baseline", name
        reason += f"; the baseline {name} becomes champion"
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
    context.log.warning(reason)
    return {
        "promoted": dg.MetadataValue.bool(False),
        "decision": dg.MetadataValue.text("baseline" if champion is None else "keep"),
        "decision_reason": dg.MetadataValue.text(reason),
        "champion_version": dg.MetadataValue.text(version),
        "champion_kind": dg.MetadataValue.text(kind),
        "champion_name": dg.MetadataValue.text(label),
        "best_baseline": dg.MetadataValue.text(name),
        "best_baseline_mae": dg.MetadataValue.float(metrics["mae"] if metrics else float("nan")),
        "labeled_days": dg.MetadataValue.int(len(trainer.labeled_days)),
    }
