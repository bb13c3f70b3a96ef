"""usage_predictions: next-day energy per device from the champion; prediction_feedback: how they did
once the actuals landed (the production feedback loop)."""

import datetime as dt

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry
from smart_home_assets.assets.usage import column_schema, partition_table
from smart_home_assets.assets.metadata import preview_table
from smart_home_assets.automation import predict_latest_days, score_when_actuals_land
from smart_home_assets.partitions import daily_partitions
from smart_home_assets.lib.tables import (DUCKDB_POOL, ONLINE_PREDICTIONS, PREDICTION_FEEDBACK, USAGE_FEATURES,
                                      USAGE_PREDICTIONS)

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
    return eligible.select(
        "partition_date", (pl.col("partition_date") + pl.duration(days=1)).alias("target_date"),
        "device_id", "hub_id", "device_type",
    ).with_columns(predicted_energy_wh=forecast["prediction_wh"], p10_wh=forecast["p10_wh"],
                   p90_wh=forecast["p90_wh"], model_kind=pl.lit(forecaster.kind), model_name=pl.lit(forecaster.name),
                   model_version=pl.lit(model_version),
                   predicted_at=pl.lit(now, dtype=pl.Datetime("us", "UTC"))).select(
        [pl.col(c).cast(t) for c, t in PREDICTIONS_SCHEMA.items()])


def serving_forecaster(model_registry: ModelRegistry, log) -> tuple[object, str]:
    """The champion's forecaster and version; without any champion (a registry nobody trained into yet), the
    naive mean of the last 7 days, so predictions never go missing once features exist."""
    from smart_home_assets.lib import training

    champion = model_registry.champion_version()
    if champion is None:
        log.warning("no champion in the registry yet: predicting with the unregistered baseline "
                    "mean_last_7_days (materialize usage_model to register a champion)")
        return training.BaselineForecaster("mean_last_7_days"), "unregistered"
    return model_registry.load_forecaster(champion.version), str(champion.version)


@dg.asset(
    deps=[USAGE_FEATURES, "usage_model"],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"lightgbm", "mlflow", "duckdb"},
    group_name="scoring",
    automation_condition=predict_latest_days(),
    metadata={"dagster/table_name": f"warehouse.main.{USAGE_PREDICTIONS}",
              "dagster/column_schema": column_schema(PREDICTIONS_SCHEMA)},
)
def usage_predictions(context: dg.AssetExecutionContext, warehouse: Warehouse,
                      model_registry: ModelRegistry) -> dg.MaterializeResult:
    """For day D, each device's predicted energy on D+1 with its 80 % interval, from the champion (a LightGBM
    version or a naive baseline), with the model's kind, name and version on every row."""
    forecaster, version = serving_forecaster(model_registry, context.log)
    now = dt.datetime.now(dt.timezone.utc)
    per_partition = []
    for key in context.partition_keys:
        features = warehouse.read_partitions(USAGE_FEATURES, [key])
        if features.is_empty():
            raise dg.Failure(f"usage_features has no rows for partition {key}: materialize it first")
        rows = predictions_for_day(features, forecaster, version, now)
        warehouse.replace_partitions({USAGE_PREDICTIONS: rows}, [key])
        per_partition.append({"partition": key, "predicted": rows.height,
                              "skipped_too_little_history": features.height - rows.height,
                              "predicted_total_kwh": round(float(rows["predicted_energy_wh"].sum()) / 1000, 1)})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(sum(p["predicted"] for p in per_partition)),
        "model_version": dg.MetadataValue.text(version),
        "model": dg.MetadataValue.text(f"{forecaster.kind} {forecaster.name}"),
        "skipped_devices": dg.MetadataValue.int(sum(p["skipped_too_little_history"] for p in per_partition)),
        "partitions": partition_table(per_partition),
        "preview": preview_table(rows, f"partition {context.partition_keys[-1]}"),
    })


def feedback_for_day(predictions: pl.DataFrame, features: pl.DataFrame, actuals: pl.DataFrame,
                     backtest_mae: float | None, source: str = "batch") -> pl.DataFrame:
    """Live error of one day's predictions against the next day's actual energy (devices in both), their
    interval coverage, and the naive baselines' live error on the same devices (from D's features)."""
    from smart_home_assets.lib.training import BASELINE_NAMES, baseline_predictions, interval_coverage, regression_metrics

    joined = predictions.join(actuals.select("device_id", pl.col("energy_wh").alias("actual")), on="device_id")
    joined = joined.join(features, on="device_id", how="inner", suffix="_features")
    if joined.is_empty():
        return pl.DataFrame(schema=FEEDBACK_SCHEMA)
    actual = joined["actual"].to_numpy()
    metrics = regression_metrics(actual, joined["predicted_energy_wh"].to_numpy())
    naive = {n: regression_metrics(actual, p)["mae"] for n, p in baseline_predictions(joined).items()}
    best = min(BASELINE_NAMES, key=lambda n: (naive[n], n))
    return pl.DataFrame([{
        "partition_date": joined["partition_date"][0], "target_date": joined["target_date"][0], "source": source,
        "model_version": ",".join(sorted(joined["model_version"].unique().to_list())),
        "devices": joined["device_id"].n_unique(), "predictions": joined.height, "live_mae": metrics["mae"], "live_wape": metrics["wape"],
        "interval_coverage": interval_coverage(actual, joined["p10_wh"].fill_null(float("nan")),
                                               joined["p90_wh"].fill_null(float("nan")))
        if joined["p10_wh"].null_count() < joined.height else None,
        "nominal_coverage": NOMINAL_COVERAGE, "best_baseline": best, "best_baseline_live_mae": naive[best],
        "live_skill": 1 - metrics["mae"] / naive[best] if naive[best] > 0 else None,
        "backtest_mae": backtest_mae,
        "mae_ratio_live_to_backtest": metrics["mae"] / backtest_mae if backtest_mae else None,
    }], schema=FEEDBACK_SCHEMA)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def online_answers_for(online: pl.DataFrame, key: str) -> pl.DataFrame:
    """The service's answers predicting D+1 (from online_predictions rows of D and D+1), in the columns of
    usage_predictions that feedback_for_day reads."""
    target = dt.date.fromisoformat(key) + dt.timedelta(days=1)
    columns = ["partition_date", "target_date", "device_id", "predicted_energy_wh", "p10_wh", "p90_wh", "model_version"]
    if online.is_empty():
        return pl.DataFrame(schema={c: PREDICTIONS_SCHEMA[c] for c in columns})
    return online.filter(pl.col("for_day") == target).select(
        partition_date=pl.lit(dt.date.fromisoformat(key)), target_date="for_day", device_id="device_id",
        predicted_energy_wh="prediction_wh", p10_wh="p10_wh", p90_wh="p90_wh", model_version="model_version")


@dg.asset(
    deps=[USAGE_PREDICTIONS,
          # D's features (what the naive baselines would have said) and D+1's (the actuals)
          dg.AssetDep(USAGE_FEATURES, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=1)),
          # the service's answers for D+1, asked on D or D+1 (UTC)
          dg.AssetDep(ONLINE_PREDICTIONS, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=1))],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars", "mlflow"},
    group_name="scoring",
    automation_condition=score_when_actuals_land(),
    metadata={"dagster/table_name": f"warehouse.main.{PREDICTION_FEEDBACK}",
              "dagster/column_schema": column_schema(FEEDBACK_SCHEMA)},
)
def prediction_feedback(context: dg.AssetExecutionContext, warehouse: Warehouse,
                        model_registry: ModelRegistry) -> dg.MaterializeResult:
    """Once D+1's actuals land: the live MAE of D's predictions, their interval coverage against the nominal
    80 %, the live skill against the naive baselines, next to the model version's backtest MAE."""
    from smart_home_assets.lib.training import SOURCE_COLUMNS

    per_partition, frames = [], []
    client = model_registry.client()
    backtest_by_version: dict[str, float | None] = {"unregistered": None}

    def backtest_mae(version: str | None) -> float | None:
        if version is not None and version not in backtest_by_version:
            tags = client.get_model_version(REGISTERED_MODEL_NAME, version).tags
            mae = tags.get("backtest_mae", tags.get("holdout_mae"))  # holdout_mae: versions before the backtest
            backtest_by_version[version] = float(mae) if mae is not None else None
        return backtest_by_version.get(version) if version is not None else None

    for key in context.partition_keys:
        predictions = warehouse.read_partitions(USAGE_PREDICTIONS, [key])
        target = (dt.date.fromisoformat(key) + dt.timedelta(days=1)).isoformat()
        actuals = warehouse.read_partitions(USAGE_FEATURES, [target], columns=["device_id", "energy_wh"])
        features = warehouse.read_partitions(USAGE_FEATURES, [key], columns=["device_id", *SOURCE_COLUMNS])
        version = predictions["model_version"][0] if predictions.height else None
        batch = feedback_for_day(predictions, features, actuals, backtest_mae(version))
        online = online_answers_for(warehouse.read_partitions(ONLINE_PREDICTIONS, [key, target]), key)
        latest_online = max(online["model_version"].unique().to_list(), key=_version_order, default=None)
        online_frame = feedback_for_day(online, features, actuals, backtest_mae(latest_online), source="online")
        frame = pl.concat([batch, online_frame])
        warehouse.replace_partitions({PREDICTION_FEEDBACK: frame}, [key])
        frames.append(frame)
        per_partition.append({"partition": key, "devices": batch["devices"].sum(),
                              "live_mae": round(float(batch["live_mae"][0]), 1) if batch.height else "-",
                              "live_skill": round(float(batch["live_skill"][0]), 3)
                              if batch.height and batch["live_skill"][0] is not None else "-",
                              "interval_coverage": round(float(batch["interval_coverage"][0]), 3)
                              if batch.height and batch["interval_coverage"][0] is not None else "-",
                              "online_answers": online_frame["predictions"].sum(),
                              "online_live_mae": round(float(online_frame["live_mae"][0]), 1)
                              if online_frame.height else "-"})
    everything = pl.concat(frames) if frames else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    metadata = {"dagster/row_count": dg.MetadataValue.int(everything.height),
                "partitions": partition_table(per_partition)}
    online_rows = everything.filter(pl.col("source") == "online")
    metadata["online_answers_scored"] = dg.MetadataValue.int(int(online_rows["predictions"].sum() or 0))
    if online_rows.height:
        metadata["online_live_mae"] = dg.MetadataValue.float(
            float(online_rows.sort("partition_date")["live_mae"][-1]))
    everything = everything.filter(pl.col("source") == "batch")
    if everything.height:
        latest = everything.sort("partition_date").row(-1, named=True)
        def number(value) -> dg.MetadataValue:
            return dg.MetadataValue.float(float("nan") if value is None else float(value))

        metadata.update({"live_mae": dg.MetadataValue.float(latest["live_mae"]),
                         "backtest_mae": number(latest["backtest_mae"]),
                         "live_skill": number(latest["live_skill"]),
                         "interval_coverage": number(latest["interval_coverage"]),
                         "nominal_coverage": dg.MetadataValue.float(NOMINAL_COVERAGE),
                         "best_baseline": dg.MetadataValue.text(latest["best_baseline"]),
                         "model_version": dg.MetadataValue.text(latest["model_version"]),
                         "devices": dg.MetadataValue.int(latest["devices"])})
    return dg.MaterializeResult(metadata=metadata)
