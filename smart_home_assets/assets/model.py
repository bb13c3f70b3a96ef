"""usage_model: a rolling-origin backtest of the LightGBM candidate, the current champion and the naive baselines
on the same folds; the candidate fitted on every labeled day; everything logged to MLflow; the ``champion``
alias moved only when the candidate wins, and to the best baseline when nothing trained beats it, so a champion
always exists once features do. Moving the alias is the last step.

The asset is the sequence of steps; each step is a function here, and what is written to MLflow (params,
metrics, plots, registered versions and their tags) is in :mod:`smart_home_assets.assets.model_tracking`.
"""

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.tracking import (
    CHAMPION_ALIAS,
    REGISTERED_MODEL_NAME,
    ModelRegistry,
    mlflow_run_for_materialization,
)
from smart_home_assets.assets.model_tracking import (
    candidate_version_tags,
    log_fit_and_backtest,
    log_plots,
    log_training_inputs,
    register_baseline,
    register_candidate,
    run_links,
    tag_run_with_decision,
)
from smart_home_assets.automation import retrain_when_features_land_or_decay
from smart_home_assets.lib import training
from smart_home_assets.lib.tables import DUCKDB_POOL, USAGE_FEATURES
from smart_home_assets.partitions import daily_partitions

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
    """The LightGBM parameters of a training config."""
    return {
        "n_estimators": config.n_estimators,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
    }


def run_params(config: UsageModelConfig) -> dict[str, Any]:
    """The MLflow run's parameters of a training config: LightGBM's, the seed, the backtest, what is learned, where."""
    return {
        **params_of(config),
        "seed": config.seed,
        "backtest_folds": config.backtest_folds,
        "fold_days": config.fold_days,
        "training_window_days": config.training_window_days,
        "silent_next_day_is_unknown": config.silent_next_day_is_unknown,
        "target": training.TARGET,
        "features": ",".join(training.FEATURE_COLUMNS),
        "trained_on": config.dask_scheduler or "the step's process",
    }


def load_features(warehouse: Warehouse, excluded: list[dt.date] | None = None) -> pl.DataFrame:
    """Every usage_features row but those of the ``excluded`` days; fails when the table does not exist yet."""
    if not warehouse.table_exists(USAGE_FEATURES):
        raise dg.Failure(f"table {USAGE_FEATURES} does not exist yet: materialize usage_features first")
    if excluded:
        return warehouse.query(
            f"SELECT * FROM {USAGE_FEATURES} WHERE partition_date NOT IN (SELECT unnest(?::DATE[]))", [excluded]
        )
    return warehouse.query(f"SELECT * FROM {USAGE_FEATURES}")


def feature_days_held_back(context: dg.AssetExecutionContext) -> dict[str, list[str]]:
    """Feature days whose latest materialization has not passed its blocking checks (failed, running, or
    never evaluated by a run that ended), with the checks: training leaves them out, as a row and as a label."""
    from asset_checks.feature_checks import BLOCKING_FEATURE_CHECKS
    from smart_home_assets.check_status import partitions_not_passing

    return partitions_not_passing(context.instance, BLOCKING_FEATURE_CHECKS, daily_partitions)


def held_back_metadata(held_back: dict[str, list[str]], log) -> dict[str, dg.MetadataValue]:
    """The left-out feature days as metadata, with a warning naming them and their checks when there are any."""
    if held_back:
        log.warning(
            f"{len(held_back)} feature day(s) left out of training, their blocking checks not "
            "passed: " + "; ".join(f"{d} ({', '.join(c)})" for d, c in held_back.items())
        )
    return {
        "excluded_feature_days": dg.MetadataValue.json(held_back),
        "excluded_feature_day_count": dg.MetadataValue.int(len(held_back)),
    }


def _window(rows: pl.DataFrame, before: dt.date | None, window_days: int) -> pl.DataFrame:
    """Labeled rows before ``before`` (all when None), only the last ``window_days`` days of them when > 0."""
    if before is not None:
        rows = rows.filter(pl.col("partition_date") < before)
    if window_days > 0 and rows.height:
        latest = cast(dt.date, rows["partition_date"].max())
        rows = rows.filter(pl.col("partition_date") > latest - dt.timedelta(days=window_days))
    return rows


@dataclass
class Trainer:
    """Where rows come from and where models are fitted: in the step, or on a Dask cluster."""

    labeled_days: list[dt.date]
    rows_of: Callable[[dt.date, dt.date], pl.DataFrame]  # labeled rows of first..last
    fit_before: Callable[[dt.date | None, dict], tuple[Any, int]]  # (model, training rows) on days before a day
    device_types: list[str]


def in_step_trainer(warehouse: Warehouse, config: UsageModelConfig, excluded: list[dt.date]) -> Trainer:
    """Fits in the step's process, on every labeled feature row read once."""
    labeled = training.attach_labels(load_features(warehouse, excluded), config.silent_next_day_is_unknown)
    types = training.device_type_categories(labeled) if labeled.height else training.device_type_categories()

    def fit(before: dt.date | None, params: dict) -> tuple[Any, int]:
        rows = _window(labeled, before, config.training_window_days)
        return training.train_model(rows, params=params, seed=config.seed, device_types=types), rows.height

    return Trainer(
        sorted(labeled["partition_date"].unique().to_list()),
        lambda first, last: labeled.filter(pl.col("partition_date").is_between(first, last)),
        fit,
        types,
    )


def dask_trainer(warehouse: Warehouse, config: UsageModelConfig, client, excluded: list[dt.date]) -> Trainer:
    """Fits on the cluster: workers read their own training days; the step reads only the days it scores."""
    from smart_home_assets.lib import distributed_training as dist

    days = dist.labeled_days(warehouse, config.silent_next_day_is_unknown, excluded)
    types = training.device_type_categories(warehouse.query(f"SELECT DISTINCT device_type FROM {USAGE_FEATURES}"))

    def fit(before: dt.date | None, params: dict) -> tuple[Any, int]:
        train_days = [d for d in days if before is None or d < before]
        if config.training_window_days > 0:
            train_days = train_days[-config.training_window_days :]
        return dist.train_model_dask(
            client,
            warehouse,
            train_days,
            types,
            params=params,
            seed=config.seed,
            silent_next_day_is_unknown=config.silent_next_day_is_unknown,
        )

    def rows_of(first: dt.date, last: dt.date) -> pl.DataFrame:
        return dist.load_labeled_days(
            warehouse, [d for d in days if first <= d <= last], config.silent_next_day_is_unknown, excluded
        )

    return Trainer(days, rows_of, fit, types)


def open_trainer(
    warehouse: Warehouse, config: UsageModelConfig, held_back: dict[str, list[str]], stack: contextlib.ExitStack
) -> Trainer:
    """The trainer the config asks for, without the held-back days; a Dask client stays open until ``stack`` closes."""
    excluded = [dt.date.fromisoformat(day) for day in held_back]
    if config.dask_scheduler:
        from smart_home_assets.lib.distributed_training import dask_client

        return dask_trainer(warehouse, config, stack.enter_context(dask_client(config.dask_scheduler)), excluded)
    return in_step_trainer(warehouse, config, excluded)


def model_spec(params: dict, config: UsageModelConfig) -> dict[str, Any]:
    """What a LightGBM version is, beyond its weights: refit on other days, it is the same model."""
    return {
        "kind": "lightgbm",
        "target": training.TARGET,
        "features": list(training.FEATURE_COLUMNS),
        "params": dict(sorted(params.items())),
        "seed": config.seed,
        "training_window_days": config.training_window_days,
        "silent_next_day_is_unknown": config.silent_next_day_is_unknown,
    }


@dataclass
class Champion:
    """The registered version the ``champion`` alias points to when training starts."""

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
    from smart_home_assets import decay_state
    from smart_home_assets.lib import decay

    found = decay_state.open_decay(context.instance)
    reason = f"model decay: {found.summary}" if found else "new feature days"
    if found:
        context.log.warning(f"retraining for {reason} (episode {found.episode})")
    return {
        "retrain_reason": dg.MetadataValue.text(reason),
        decay.EPISODE_KEY: dg.MetadataValue.text(found.episode if found else decay.NO_EPISODE),
    }


def current_champion(registry: ModelRegistry) -> Champion | None:
    """The current champion with its forecaster and recipe (``model_spec`` tag), or None when there is none."""
    found = registry.champion_version()
    if found is None:
        return None
    forecaster = registry.load_forecaster(found.version)
    spec = json.loads(found.tags["model_spec"]) if "model_spec" in found.tags else None
    return Champion(str(found.version), forecaster.kind, forecaster.name, spec, forecaster)


def backtest_folds(trainer: Trainer, config: UsageModelConfig, log) -> list[training.Fold]:
    """The backtest's folds over the labeled days (raises NotEnoughHistory); warns when history holds fewer."""
    folds = training.fold_windows(trainer.labeled_days, config.backtest_folds, config.fold_days)
    if len(folds) < config.backtest_folds:
        log.warning(
            f"history holds {len(folds)} of the {config.backtest_folds} backtest folds "
            f"({len(trainer.labeled_days)} labeled days)"
        )
    return folds


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
        params = {
            "n_estimators": int(rng.choice([150, 300, 500])),
            "learning_rate": float(rng.choice([0.03, 0.05, 0.1])),
            "num_leaves": int(rng.choice([15, 31, 63])),
            "min_child_samples": int(rng.choice([10, 20, 50])),
        }
        with mlflow.start_run(run_name=f"tuning trial {trial}", nested=True):
            mlflow.log_params(params)
            mae = score(params)
            mlflow.log_metric("backtest_mae", mae)
        if mae < best:
            best_params, best = params, mae
    mlflow.log_metric("tuning_best_backtest_mae", best)
    return best_params


def tuned_params(trainer: Trainer, folds, config: UsageModelConfig, context) -> dict[str, Any]:
    """The configured LightGBM parameters, or the best of the bounded search when tuning_trials > 0 (logged)."""
    params = params_of(config)
    if config.tuning_trials > 0:
        import mlflow

        params = tune(trainer, folds, params, config, context)
        mlflow.log_params({f"tuned_{k}": v for k, v in params.items()})
    return params


@dataclass
class Backtest:
    """The rolling-origin backtest's outcome: every contender's out-of-fold forecasts and their scores."""

    folds: list[training.Fold]
    oof: pl.DataFrame  # the fold rows with pred_<contender> columns
    scores: training.BacktestScores
    seconds: float
    champion_column: str | None  # the champion's column in the scores: a baseline's name, "champion", or None
    same_recipe: bool  # the champion is the candidate's own recipe (scored from the candidate's column)


def backtest_contenders(
    trainer: Trainer, params: dict, champion: Champion | None, spec: dict
) -> tuple[dict[str, training.Contender], str | None]:
    """The per-fold contenders (the candidate; a trained champion of another recipe) and the champion's column."""
    contenders: dict[str, training.Contender] = {
        "candidate": lambda fold, rows: training.predict(trainer.fit_before(fold.first, params)[0], rows)
    }
    if champion is None:
        return contenders, None
    if champion.kind == "baseline":  # a baseline is scored anyway, under its own name
        return contenders, champion.name
    if champion.spec == spec:  # the candidate's own recipe: run_backtest copies the candidate's column
        return contenders, "champion"
    if (
        champion.spec
        and champion.spec.get("features") == training.FEATURE_COLUMNS
        and champion.spec.get("target") == training.TARGET
    ):
        champ_params = champion.spec["params"]  # this code's recipe: refitted per fold with its own parameters
        contenders["champion"] = lambda fold, rows: training.predict(
            trainer.fit_before(fold.first, champ_params)[0], rows
        )
    else:  # a model of another recipe (an older code version): scored as it is
        contenders["champion"] = lambda fold, rows: champion.forecaster.point_forecast(rows)
    return contenders, "champion"


def run_backtest(
    trainer: Trainer, folds: list[training.Fold], params: dict, champion: Champion | None, spec: dict
) -> Backtest:
    """Candidate, champion and baselines forecast the same fold rows, each fold from the days before it."""
    contenders, champion_column = backtest_contenders(trainer, params, champion, spec)
    same_recipe = champion is not None and champion.spec == spec
    started = time.perf_counter()
    oof = training.backtest(folds, lambda fold: trainer.rows_of(fold.first, fold.last), contenders)
    if same_recipe:
        oof = oof.with_columns(pred_champion=pl.col("pred_candidate"))
    seconds = time.perf_counter() - started
    return Backtest(folds, oof, training.backtest_scores(oof), seconds, champion_column, same_recipe)


def judge_candidate(backtest: Backtest, champion: Champion | None) -> training.PromotionDecision:
    """The promotion rule (training.decide_promotion) on the backtest: candidate, keep, or the best baseline."""
    return training.decide_promotion(
        backtest.scores,
        champion=backtest.champion_column,
        champion_label=champion.label if champion else "champion",
        champion_is_baseline=champion is not None and champion.kind == "baseline",
        same_recipe=backtest.same_recipe,
    )


@dataclass
class Candidate:
    """The candidate fitted on every labeled day, with the interval of its backtest errors."""

    model: Any
    training_rows: int
    interval: training.IntervalCalibration
    forecaster: training.LightGBMForecaster


def fit_candidate(trainer: Trainer, params: dict, backtest: Backtest) -> Candidate:
    """The model that is registered: fitted on every labeled day, its interval calibrated on the backtest."""
    model, training_rows = trainer.fit_before(None, params)
    interval = training.IntervalCalibration.fit(backtest.oof, backtest.oof["pred_candidate"])
    return Candidate(model, training_rows, interval, training.LightGBMForecaster(model, interval))


@dataclass
class Promotion:
    """What promote_if_better did: the decision it applied and the champion after it."""

    decision: training.PromotionDecision
    champion_version: str
    champion_kind: str
    champion_name: str
    champion_mae: float  # the champion's own backtest MAE: the candidate's, a baseline's, or the trained champion's

    @property
    def outcome(self) -> str:
        return self.decision.outcome

    @property
    def reason(self) -> str:
        return self.decision.reason


def promote_if_better(
    client,
    decision: training.PromotionDecision,
    champion: Champion | None,
    version: str,
    backtest: Backtest,
    sample: pl.DataFrame,
    context,
) -> Promotion:
    """Apply the decision: move ``champion`` to the candidate or the best baseline, or keep it; the alias moves last."""
    champion_version, champion_kind, champion_name = (
        (champion.version, champion.kind, champion.name) if champion else ("none", "none", "none")
    )
    if decision.outcome == "candidate":
        champion_version, champion_kind, champion_name = version, "lightgbm", "lightgbm"
    elif decision.outcome == "baseline":
        champion_version = register_baseline(
            client, decision.baseline, backtest.oof, backtest.scores, decision.reason, context.run_id, sample
        )
        champion_kind, champion_name = "baseline", decision.baseline
    # The champion's own backtest score: the candidate's, a baseline's column, or the trained champion's.
    champion_mae = backtest.scores.mae[
        "candidate" if decision.outcome == "candidate" else champion_name if champion_kind == "baseline" else "champion"
    ]
    tag_run_with_decision(decision, version, champion_version)
    if champion_version != (champion.version if champion else None):
        # Last step: everything above can fail and leave the champion untouched.
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, champion_version)
    context.log.info(
        f"model version {version}: {decision.outcome} — {decision.reason}; champion is "
        f"v{champion_version} ({champion_name})"
    )
    return Promotion(decision, champion_version, champion_kind, champion_name, float(champion_mae))


def scores_table(scores, folds) -> dg.MetadataValue:
    """Markdown: MAE (WAPE) of every contender per fold, and overall (mean MAE over folds, pooled WAPE)."""
    names = ["candidate", *[n for n in scores.mae if n != "candidate"]]
    lines = ["| fold | days | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for k, fold in enumerate(folds):
        lines.append(
            f"| {fold.index} | {fold.first}..{fold.last} | "
            + " | ".join(f"{scores.fold_mae[n][k]:.1f} ({scores.fold_wape[n][k]:.3f})" for n in names)
            + " |"
        )
    lines.append("| overall | | " + " | ".join(f"**{scores.mae[n]:.1f}** ({scores.wape[n]:.3f})" for n in names) + " |")
    return dg.MetadataValue.md("Backtest: MAE in Wh (WAPE) per fold\n\n" + "\n".join(lines))


def by_device_type(scores) -> dg.MetadataValue:
    """JSON: every contender's backtest MAE and WAPE per device type."""
    return dg.MetadataValue.json(
        {
            t: {
                n: {"mae": round(scores.type_mae[n][t], 2), "wape": round(scores.type_wape[n][t], 4)}
                for n in scores.type_mae
            }
            for t in sorted(scores.type_mae["candidate"])
        }
    )


def trained_model_metadata(
    version: str,
    promotion: Promotion,
    previous: Champion | None,
    links: dict[str, dg.MetadataValue],
    candidate: Candidate,
    exclusions: dict[str, dg.MetadataValue],
    backtest: Backtest,
    plots: dict[str, dg.MetadataValue],
) -> dict[str, dg.MetadataValue]:
    """The materialization's metadata after a backtest: the version, the decision, the champion, the scores."""
    scores, folds, best_name = backtest.scores, backtest.folds, promotion.decision.baseline
    return {
        "model_version": dg.MetadataValue.text(version),
        "promoted": dg.MetadataValue.bool(promotion.decision.promote),
        "decision": dg.MetadataValue.text(promotion.outcome),
        "decision_reason": dg.MetadataValue.text(promotion.reason),
        "champion_version": dg.MetadataValue.text(promotion.champion_version),
        "champion_kind": dg.MetadataValue.text(promotion.champion_kind),
        "champion_name": dg.MetadataValue.text(promotion.champion_name),
        "champion_backtest_mae": dg.MetadataValue.float(promotion.champion_mae),
        "previous_champion": dg.MetadataValue.text(previous.label if previous else "none"),
        **links,
        "training_rows": dg.MetadataValue.int(candidate.training_rows),
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
        "interval": dg.MetadataValue.json(candidate.interval.to_dict()),
        "backtest_seconds": dg.MetadataValue.float(round(backtest.seconds, 2)),
        **plots,
        "trained_at": dg.MetadataValue.text(dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
    }


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
    warehouse: Warehouse = context.resources.warehouse
    registry: ModelRegistry = context.resources.model_registry
    client = registry.client()
    held_back = feature_days_held_back(context)
    exclusions = {**held_back_metadata(held_back, context.log), **retrain_reason(context)}

    with (
        mlflow_run_for_materialization(context, run_name=f"usage_model {context.run_id[:8]}") as run,
        contextlib.ExitStack() as stack,
    ):
        trainer = open_trainer(warehouse, config, held_back, stack)
        log_training_inputs(
            run_params(config), trainer.labeled_days, held_back, str(exclusions["retrain_reason"].value)
        )
        champion = current_champion(registry)
        try:
            folds = backtest_folds(trainer, config, context.log)
        except training.NotEnoughHistory as exc:
            result = serve_baseline_for_short_history(context, client, trainer, champion, str(exc))
            return dg.MaterializeResult(
                metadata={**result, **exclusions, **run_links(registry, run, str(result["champion_version"].value))}
            )
        params = tuned_params(trainer, folds, config, context)
        spec = model_spec(params, config)
        backtest = run_backtest(trainer, folds, params, champion, spec)
        decision = judge_candidate(backtest, champion)
        candidate = fit_candidate(trainer, params, backtest)
        log_fit_and_backtest(candidate.training_rows, backtest.scores, folds, backtest.oof, backtest.seconds)
        newest = trainer.rows_of(folds[-1].first, folds[-1].last)
        version = register_candidate(
            client,
            candidate.forecaster,
            newest,
            candidate_version_tags(spec, backtest.scores, folds, decision, context.run_id, trainer.labeled_days[-1]),
        )
        plots = log_plots(candidate.model, backtest.oof)
        promotion = promote_if_better(client, decision, champion, version, backtest, newest, context)
        links = run_links(registry, run, version)

    return dg.MaterializeResult(
        metadata=trained_model_metadata(version, promotion, champion, links, candidate, exclusions, backtest, plots)
    )


def serve_baseline_for_short_history(
    context, client, trainer: Trainer, champion: Champion | None, why: str
) -> dict[str, dg.MetadataValue]:
    """Too little history for a backtest: the best baseline on the labeled rows there are (mean_last_7_days
    when there are none) serves, unless a champion exists already."""
    import mlflow

    rows = (
        trainer.rows_of(dt.date.min, dt.date.max)
        if trainer.labeled_days
        else pl.DataFrame(schema={c: pl.Float64 for c in training.SOURCE_COLUMNS} | {"device_type": pl.String})
    )
    name, metrics = (
        ("mean_last_7_days", None) if rows.is_empty() else training.best_baseline(training.baseline_metrics(rows))
    )
    reason = f"{why}: no model can be trained and judged yet"
    mlflow.set_tags({"promoted": "False", "decision_reason": reason})
    if champion is not None:
        version, kind, label = champion.version, champion.kind, champion.name
        reason += f"; {champion.label} stays"
    elif rows.is_empty():  # not one labeled row yet: the mean of the last 7 days, without an interval
        version = register_baseline(
            client, name, None, None, reason + f"; the baseline {name} serves", context.run_id, rows
        )
        kind, label = "baseline", name
        reason += f"; the baseline {name} becomes champion"
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
    else:
        # A baseline trains on nothing: every labeled row is out of sample for its interval.
        everything = training.Fold(0, rows["partition_date"].min(), rows["partition_date"].max())
        oof = training.backtest([everything], lambda _: rows, {})
        version = register_baseline(
            client, name, oof, None, reason + f"; the baseline {name} serves", context.run_id, rows.head(20)
        )
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
