"""Scoring: one day's next-day predictions from a forecaster, and their feedback once the actuals landed.

Pure functions and the schemas of ``usage_predictions`` and ``prediction_feedback`` (no Dagster, no resources):
the assets in :mod:`smart_home_assets.assets.predictions` read and write the tables and call these.
"""

import datetime as dt

import polars as pl

PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),  # D: the day whose features were used
    "target_date": pl.Date(),  # D + 1: the day predicted
    "device_id": pl.String(),
    "hub_id": pl.String(),
    "device_type": pl.String(),
    "predicted_energy_wh": pl.Float64(),  # the point forecast (p50)
    "p10_wh": pl.Float64(),  # the 80 % interval
    "p90_wh": pl.Float64(),
    "model_kind": pl.String(),  # lightgbm | baseline
    "model_name": pl.String(),  # lightgbm, or the baseline's name
    "model_version": pl.String(),  # the registered version ("unregistered" for the fallback without a registry)
    "predicted_at": pl.Datetime("us", "UTC"),
}

FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "target_date": pl.Date(),
    "source": pl.String(),  # batch (usage_predictions) | online (the prediction service's answers)
    "model_version": pl.String(),
    "devices": pl.Int64(),
    "predictions": pl.Int64(),  # predictions scored (online: every answer, a device asked twice counts twice)
    "live_mae": pl.Float64(),
    "live_wape": pl.Float64(),
    "interval_coverage": pl.Float64(),  # share of actuals inside [p10, p90]
    "nominal_coverage": pl.Float64(),  # 0.8
    "best_baseline": pl.String(),  # the naive baseline with the lowest live MAE on the same devices
    "best_baseline_live_mae": pl.Float64(),
    "live_skill": pl.Float64(),  # 1 - live_mae / best_baseline_live_mae
    "backtest_mae": pl.Float64(),  # the version's backtest MAE
    "mae_ratio_live_to_backtest": pl.Float64(),
}
NOMINAL_COVERAGE = 0.8


def predictions_for_day(features: pl.DataFrame, forecaster, model_version: str, now: dt.datetime) -> pl.DataFrame:
    """Rows of usage_predictions for the devices with enough history (the rest are counted, not guessed)."""
    eligible = features.filter(pl.col("has_enough_history"))
    forecast = forecaster.forecast(eligible)
    return (
        eligible.select(
            "partition_date",
            (pl.col("partition_date") + pl.duration(days=1)).alias("target_date"),
            "device_id",
            "hub_id",
            "device_type",
        )
        .with_columns(
            predicted_energy_wh=forecast["prediction_wh"],
            p10_wh=forecast["p10_wh"],
            p90_wh=forecast["p90_wh"],
            model_kind=pl.lit(forecaster.kind),
            model_name=pl.lit(forecaster.name),
            model_version=pl.lit(model_version),
            predicted_at=pl.lit(now, dtype=pl.Datetime("us", "UTC")),
        )
        .select([pl.col(c).cast(t) for c, t in PREDICTIONS_SCHEMA.items()])
    )


def feedback_for_day(
    predictions: pl.DataFrame,
    features: pl.DataFrame,
    actuals: pl.DataFrame,
    backtest_mae: float | None,
    source: str = "batch",
) -> pl.DataFrame:
    """Live error of one day's predictions against the next day's actual energy (devices in both), their
    interval coverage, and the naive baselines' live error on the same devices (from D's features)."""
    from smart_home_assets.lib.training import (
        BASELINE_NAMES,
        baseline_predictions,
        interval_coverage,
        regression_metrics,
    )

    joined = predictions.join(actuals.select("device_id", pl.col("energy_wh").alias("actual")), on="device_id")
    joined = joined.join(features, on="device_id", how="inner", suffix="_features")
    if joined.is_empty():
        return pl.DataFrame(schema=FEEDBACK_SCHEMA)
    actual = joined["actual"].to_numpy()
    metrics = regression_metrics(actual, joined["predicted_energy_wh"].to_numpy())
    naive = {n: regression_metrics(actual, p)["mae"] for n, p in baseline_predictions(joined).items()}
    best = min(BASELINE_NAMES, key=lambda n: (naive[n], n))
    return pl.DataFrame(
        [
            {
                "partition_date": joined["partition_date"][0],
                "target_date": joined["target_date"][0],
                "source": source,
                "model_version": ",".join(sorted(joined["model_version"].unique().to_list())),
                "devices": joined["device_id"].n_unique(),
                "predictions": joined.height,
                "live_mae": metrics["mae"],
                "live_wape": metrics["wape"],
                "interval_coverage": interval_coverage(
                    actual, joined["p10_wh"].fill_null(float("nan")), joined["p90_wh"].fill_null(float("nan"))
                )
                if joined["p10_wh"].null_count() < joined.height
                else None,
                "nominal_coverage": NOMINAL_COVERAGE,
                "best_baseline": best,
                "best_baseline_live_mae": naive[best],
                "live_skill": 1 - metrics["mae"] / naive[best] if naive[best] > 0 else None,
                "backtest_mae": backtest_mae,
                "mae_ratio_live_to_backtest": metrics["mae"] / backtest_mae if backtest_mae else None,
            }
        ],
        schema=FEEDBACK_SCHEMA,
    )


def version_order(version: str) -> tuple[int, str]:
    """Sort key of registered model versions: numerically, a non-numeric one ("unregistered") before them all."""
    return (int(version), version) if version.isdigit() else (-1, version)


def online_answers_for(online: pl.DataFrame, key: str) -> pl.DataFrame:
    """The service's answers predicting D+1 (from online_predictions rows of D and D+1), in the columns of
    usage_predictions that feedback_for_day reads."""
    target = dt.date.fromisoformat(key) + dt.timedelta(days=1)
    columns = ["partition_date", "target_date", "device_id", "predicted_energy_wh", "p10_wh", "p90_wh", "model_version"]
    if online.is_empty():
        return pl.DataFrame(schema={c: PREDICTIONS_SCHEMA[c] for c in columns})
    return online.filter(pl.col("for_day") == target).select(
        partition_date=pl.lit(dt.date.fromisoformat(key)),
        target_date="for_day",
        device_id="device_id",
        predicted_energy_wh="prediction_wh",
        p10_wh="p10_wh",
        p90_wh="p90_wh",
        model_version="model_version",
    )
