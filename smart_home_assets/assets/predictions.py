"""usage_predictions: next-day energy per device from the champion; prediction_feedback: how they did
once the actuals landed (the production feedback loop). The scoring itself and the tables' schemas are pure
code in :mod:`smart_home_assets.lib.scoring`; these assets read, write and report."""

import datetime as dt

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.tracking import REGISTERED_MODEL_NAME, ModelRegistry
from smart_home_assets.assets.metadata import preview_table
from smart_home_assets.assets.usage import column_schema, partition_table
from smart_home_assets.automation import predict_latest_days, score_when_actuals_land
from smart_home_assets.lib import training
from smart_home_assets.lib.scoring import (
    FEEDBACK_SCHEMA,
    NOMINAL_COVERAGE,
    PREDICTIONS_SCHEMA,
    feedback_for_day,
    online_answers_for,
    predictions_for_day,
    version_order,
)
from smart_home_assets.lib.tables import (
    DUCKDB_POOL,
    ONLINE_PREDICTIONS,
    PREDICTION_FEEDBACK,
    USAGE_FEATURES,
    USAGE_MODEL,
    USAGE_PREDICTIONS,
)
from smart_home_assets.partitions import daily_partitions


def serving_forecaster(model_registry: ModelRegistry, log) -> tuple[training.Forecaster, str]:
    """The champion's forecaster and version; without any champion (a registry nobody trained into yet), the
    naive mean of the last 7 days, so predictions never go missing once features exist."""
    champion = model_registry.champion_version()
    if champion is None:
        log.warning(
            "no champion in the registry yet: predicting with the unregistered baseline "
            "mean_last_7_days (materialize usage_model to register a champion)"
        )
        return training.BaselineForecaster("mean_last_7_days"), "unregistered"
    return model_registry.load_forecaster(champion.version), str(champion.version)


@dg.asset(
    deps=[USAGE_FEATURES, USAGE_MODEL],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"lightgbm", "mlflow", "duckdb"},
    group_name="scoring",
    automation_condition=predict_latest_days(),
    metadata={
        "dagster/table_name": f"warehouse.main.{USAGE_PREDICTIONS}",
        "dagster/column_schema": column_schema(PREDICTIONS_SCHEMA),
    },
)
def usage_predictions(
    context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse], model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """For day D, each device's predicted energy on D+1 with its 80 % interval, from the champion (a LightGBM
    version or a naive baseline), with the model's kind, name and version on every row."""
    forecaster, version = serving_forecaster(model_registry, context.log)
    now = dt.datetime.now(dt.UTC)
    per_partition = []
    for key in context.partition_keys:
        features = warehouse.read_partitions(USAGE_FEATURES, [key])
        if features.is_empty():
            raise dg.Failure(f"usage_features has no rows for partition {key}: materialize it first")
        rows = predictions_for_day(features, forecaster, version, now)
        warehouse.replace_partitions({USAGE_PREDICTIONS: rows}, [key])
        per_partition.append(
            {
                "partition": key,
                "predicted": rows.height,
                "skipped_too_little_history": features.height - rows.height,
                "predicted_total_kwh": round(float(rows["predicted_energy_wh"].sum()) / 1000, 1),
            }
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(p["predicted"] for p in per_partition)),
            "model_version": dg.MetadataValue.text(version),
            "model": dg.MetadataValue.text(f"{forecaster.kind} {forecaster.name}"),
            "skipped_devices": dg.MetadataValue.int(sum(p["skipped_too_little_history"] for p in per_partition)),
            "partitions": partition_table(per_partition),
            "preview": preview_table(rows, f"partition {context.partition_keys[-1]}"),
        }
    )


@dg.asset(
    deps=[
        USAGE_PREDICTIONS,
        # D's features (what the naive baselines would have said) and D+1's (the actuals)
        dg.AssetDep(USAGE_FEATURES, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=1)),
        # the service's answers for D+1, asked on D or D+1 (UTC)
        dg.AssetDep(ONLINE_PREDICTIONS, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=1)),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars", "mlflow"},
    group_name="scoring",
    automation_condition=score_when_actuals_land(),
    metadata={
        "dagster/table_name": f"warehouse.main.{PREDICTION_FEEDBACK}",
        "dagster/column_schema": column_schema(FEEDBACK_SCHEMA),
    },
)
def prediction_feedback(
    context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse], model_registry: ModelRegistry
) -> dg.MaterializeResult:
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
        latest_online = max(online["model_version"].unique().to_list(), key=version_order, default=None)
        online_frame = feedback_for_day(online, features, actuals, backtest_mae(latest_online), source="online")
        frame = pl.concat([batch, online_frame])
        warehouse.replace_partitions({PREDICTION_FEEDBACK: frame}, [key])
        frames.append(frame)
        per_partition.append(
            {
                "partition": key,
                "devices": batch["devices"].sum(),
                "live_mae": round(float(batch["live_mae"][0]), 1) if batch.height else "-",
                "live_skill": round(float(batch["live_skill"][0]), 3)
                if batch.height and batch["live_skill"][0] is not None
                else "-",
                "interval_coverage": round(float(batch["interval_coverage"][0]), 3)
                if batch.height and batch["interval_coverage"][0] is not None
                else "-",
                "online_answers": online_frame["predictions"].sum(),
                "online_live_mae": round(float(online_frame["live_mae"][0]), 1) if online_frame.height else "-",
            }
        )
    everything = pl.concat(frames) if frames else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(everything.height),
        "partitions": partition_table(per_partition),
    }
    online_rows = everything.filter(pl.col("source") == "online")
    metadata["online_answers_scored"] = dg.MetadataValue.int(int(online_rows["predictions"].sum() or 0))
    if online_rows.height:
        metadata["online_live_mae"] = dg.MetadataValue.float(float(online_rows.sort("partition_date")["live_mae"][-1]))
    everything = everything.filter(pl.col("source") == "batch")
    if everything.height:
        latest = everything.sort("partition_date").row(-1, named=True)

        def number(value) -> dg.MetadataValue:
            return dg.MetadataValue.float(float("nan") if value is None else float(value))

        metadata.update(
            {
                "live_mae": dg.MetadataValue.float(latest["live_mae"]),
                "backtest_mae": number(latest["backtest_mae"]),
                "live_skill": number(latest["live_skill"]),
                "interval_coverage": number(latest["interval_coverage"]),
                "nominal_coverage": dg.MetadataValue.float(NOMINAL_COVERAGE),
                "best_baseline": dg.MetadataValue.text(latest["best_baseline"]),
                "model_version": dg.MetadataValue.text(latest["model_version"]),
                "devices": dg.MetadataValue.int(latest["devices"]),
            }
        )
    return dg.MaterializeResult(metadata=metadata)
