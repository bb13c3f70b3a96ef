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
from smart_home_assets.tables import DUCKDB_POOL, PREDICTION_FEEDBACK, USAGE_FEATURES, USAGE_PREDICTIONS

PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),  # D: the day whose features were used
    "target_date": pl.Date(),  # D + 1: the day predicted
    "device_id": pl.String(),
    "hub_id": pl.String(),
    "device_type": pl.String(),
    "predicted_energy_wh": pl.Float64(),
    "model_version": pl.String(),
    "predicted_at": pl.Datetime("us", "UTC"),
}

FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "target_date": pl.Date(),
    "model_version": pl.String(),
    "devices": pl.Int64(),
    "live_mae": pl.Float64(),
    "live_wape": pl.Float64(),
    "holdout_mae": pl.Float64(),
    "mae_ratio_live_to_holdout": pl.Float64(),
}


def predictions_for_day(features: pl.DataFrame, model, model_version: str, now: dt.datetime) -> pl.DataFrame:
    """Rows of usage_predictions for the devices with enough history (the rest are counted, not guessed)."""
    from smart_home_assets import training

    eligible = features.filter(pl.col("has_enough_history"))
    predicted = training.predict(model, eligible) if eligible.height else []
    return eligible.select(
        "partition_date", (pl.col("partition_date") + pl.duration(days=1)).alias("target_date"),
        "device_id", "hub_id", "device_type",
    ).with_columns(predicted_energy_wh=pl.Series(predicted, dtype=pl.Float64), model_version=pl.lit(model_version),
                   predicted_at=pl.lit(now, dtype=pl.Datetime("us", "UTC"))).select(
        [pl.col(c).cast(t) for c, t in PREDICTIONS_SCHEMA.items()])


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
    """For day D, each device's predicted energy on D+1 from the champion, with the model version on every row."""
    champion = model_registry.champion_version()
    if champion is None:
        raise dg.Failure("no champion model in the registry yet: materialize usage_model first "
                         "(a version is promoted only when it beats the naive baselines)")
    model = model_registry.load_version(champion.version)
    now = dt.datetime.now(dt.timezone.utc)
    per_partition = []
    for key in context.partition_keys:
        features = warehouse.read_partitions(USAGE_FEATURES, [key])
        if features.is_empty():
            raise dg.Failure(f"usage_features has no rows for partition {key}: materialize it first")
        rows = predictions_for_day(features, model, str(champion.version), now)
        warehouse.replace_partitions({USAGE_PREDICTIONS: rows}, [key])
        per_partition.append({"partition": key, "predicted": rows.height,
                              "skipped_too_little_history": features.height - rows.height,
                              "predicted_total_kwh": round(float(rows["predicted_energy_wh"].sum()) / 1000, 1)})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(sum(p["predicted"] for p in per_partition)),
        "model_version": dg.MetadataValue.text(str(champion.version)),
        "skipped_devices": dg.MetadataValue.int(sum(p["skipped_too_little_history"] for p in per_partition)),
        "partitions": partition_table(per_partition),
        "preview": preview_table(rows, f"partition {context.partition_keys[-1]}"),
    })


def feedback_for_day(predictions: pl.DataFrame, actuals: pl.DataFrame, holdout_mae: float | None) -> pl.DataFrame:
    """Live error of one day's predictions against the next day's actual energy (devices in both)."""
    from smart_home_assets.training import regression_metrics

    joined = predictions.join(actuals.select("device_id", pl.col("energy_wh").alias("actual")), on="device_id")
    if joined.is_empty():
        return pl.DataFrame(schema=FEEDBACK_SCHEMA)
    metrics = regression_metrics(joined["actual"].to_numpy(), joined["predicted_energy_wh"].to_numpy())
    return pl.DataFrame([{
        "partition_date": joined["partition_date"][0], "target_date": joined["target_date"][0],
        "model_version": ",".join(sorted(joined["model_version"].unique().to_list())),
        "devices": joined.height, "live_mae": metrics["mae"], "live_wape": metrics["wape"],
        "holdout_mae": holdout_mae,
        "mae_ratio_live_to_holdout": metrics["mae"] / holdout_mae if holdout_mae else None,
    }], schema=FEEDBACK_SCHEMA)


@dg.asset(
    deps=[USAGE_PREDICTIONS,
          dg.AssetDep(USAGE_FEATURES, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=1, end_offset=1))],
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
    """Once D+1's actuals land: the live MAE of D's predictions next to the model version's holdout MAE."""
    per_partition, frames = [], []
    client = model_registry.client()
    holdout_by_version: dict[str, float | None] = {}
    for key in context.partition_keys:
        predictions = warehouse.read_partitions(USAGE_PREDICTIONS, [key])
        target = (dt.date.fromisoformat(key) + dt.timedelta(days=1)).isoformat()
        actuals = warehouse.read_partitions(USAGE_FEATURES, [target], columns=["device_id", "energy_wh"])
        version = predictions["model_version"][0] if predictions.height else None
        if version is not None and version not in holdout_by_version:
            tags = client.get_model_version(REGISTERED_MODEL_NAME, version).tags
            holdout_by_version[version] = float(tags["holdout_mae"]) if "holdout_mae" in tags else None
        frame = feedback_for_day(predictions, actuals, holdout_by_version.get(version))
        warehouse.replace_partitions({PREDICTION_FEEDBACK: frame}, [key])
        frames.append(frame)
        per_partition.append({"partition": key, "devices": frame["devices"].sum(),
                              "live_mae": round(float(frame["live_mae"][0]), 1) if frame.height else "-",
                              "holdout_mae": round(float(frame["holdout_mae"][0]), 1)
                              if frame.height and frame["holdout_mae"][0] is not None else "-"})
    everything = pl.concat(frames) if frames else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    metadata = {"dagster/row_count": dg.MetadataValue.int(everything.height),
                "partitions": partition_table(per_partition)}
    if everything.height:
        latest = everything.sort("partition_date").row(-1, named=True)
        metadata.update({"live_mae": dg.MetadataValue.float(latest["live_mae"]),
                         "holdout_mae": dg.MetadataValue.float(latest["holdout_mae"] or float("nan")),
                         "model_version": dg.MetadataValue.text(latest["model_version"]),
                         "devices": dg.MetadataValue.int(latest["devices"])})
    return dg.MaterializeResult(metadata=metadata)
