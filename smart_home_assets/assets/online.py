"""online_predictions: each UTC day's answers of the prediction service, brought from its store into the warehouse.

The service appends every answer to its own store before responding (resources/online_store.py); this asset
replaces day D's partition with all of D's records, so it can run as often as wanted. A request retried with
the same ``X-Request-ID`` is one request: the last answer of each (request id, row) is kept, the others are
counted. The sensor requests a day once it has ended (UTC), and again whenever its records change.
"""

import datetime as dt
import hashlib
import json

import dagster as dg
import polars as pl

from resources import Warehouse
from resources.online_store import RECORD_SCHEMA, OnlineStoreError, OnlineStoreResource
from smart_home_assets.assets.metadata import preview_table
from smart_home_assets.assets.usage import column_schema, partition_table
from smart_home_assets.lib.tables import DUCKDB_POOL, ONLINE_PREDICTIONS
from smart_home_assets.partitions import daily_partitions

ONLINE_PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {"partition_date": pl.Date(), **RECORD_SCHEMA}


def online_rows_for_day(records: pl.DataFrame, day: str) -> tuple[pl.DataFrame, int]:
    """The day's partition (the last answer per request id and row, in arrival order) and how many retried
    answers were left out."""
    kept = records.with_row_index("_arrival").unique(["request_id", "row"], keep="last").sort("_arrival")
    rows = kept.drop("_arrival").with_columns(partition_date=pl.lit(dt.date.fromisoformat(day)))
    return rows.select([pl.col(c).cast(t) for c, t in ONLINE_PREDICTIONS_SCHEMA.items()]), records.height - kept.height


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    kinds={"duckdb", "polars"},
    group_name="scoring",
    metadata={
        "dagster/table_name": f"warehouse.main.{ONLINE_PREDICTIONS}",
        "dagster/column_schema": column_schema(ONLINE_PREDICTIONS_SCHEMA),
    },
)
def online_predictions(
    context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse], online_store: OnlineStoreResource
) -> dg.MaterializeResult:
    """The prediction service's answers of day D (UTC, by request time): each request's input row, its answer
    with the 80 % interval, the model version that gave it and the request id."""
    store = online_store.open()
    frames, per_partition = [], []
    try:
        for key in context.partition_keys:
            try:
                records, torn = store.read_day(key)
            except OnlineStoreError as exc:
                raise dg.Failure(f"online_predictions {key}: {exc}") from None
            rows, retried = online_rows_for_day(records, key)
            frames.append(rows)
            per_partition.append(
                {
                    "partition": key,
                    "answers": rows.height,
                    "retried": retried,
                    "torn_lines": torn,
                    "versions": ",".join(sorted(rows["model_version"].unique().to_list())) or "-",
                }
            )
            if torn:
                context.log.warning(
                    f"online_predictions {key}: {torn} torn last line(s) left out (a service killed "
                    "inside a write; those requests were never answered)"
                )
    finally:
        store.close()
    everything = pl.concat(frames)
    warehouse.replace_partitions({ONLINE_PREDICTIONS: everything}, context.partition_keys)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(everything.height),
            "retried_answers_left_out": dg.MetadataValue.int(sum(p["retried"] for p in per_partition)),
            "torn_lines": dg.MetadataValue.int(sum(p["torn_lines"] for p in per_partition)),
            "store": dg.MetadataValue.text(f"{store.kind} {store.describe()}"),
            "partitions": partition_table(per_partition),
            "preview": preview_table(everything.drop("input_json"), f"partitions {context.partition_keys[0]}.."),
        }
    )


online_predictions_job = dg.define_asset_job(
    "ingest_online_predictions",
    selection=dg.AssetSelection.assets(ONLINE_PREDICTIONS),
    partitions_def=daily_partitions,
    description="Bring the prediction service's answers of the selected days into the warehouse.",
)


def ended_days_to_ingest(previous: dict[str, str], current: dict[str, str], today: dt.date) -> list[str]:
    """Days before ``today`` (UTC) whose records changed since the cursor (pure, for tests)."""
    return sorted(
        day for day, fingerprint in current.items() if day < today.isoformat() and previous.get(day) != fingerprint
    )


@dg.sensor(job=online_predictions_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def online_predictions_sensor(context: dg.SensorEvaluationContext, online_store: OnlineStoreResource):
    """Requests online_predictions for each ended day whose stored answers changed (a late replica included)."""
    store = online_store.open()
    try:
        current = store.fingerprints()
    except (OnlineStoreError, OSError) as exc:
        return dg.SkipReason(f"prediction store unavailable: {exc}")
    finally:
        store.close()
    previous = json.loads(context.cursor) if context.cursor else {}
    valid = set(daily_partitions.get_partition_keys())
    today = dt.datetime.now(dt.UTC).date()
    days = ended_days_to_ingest(previous, current, today)
    outside = [d for d in days if d not in valid]
    for day in outside:
        context.log.warning(f"stored answers of {day} are outside the partitions window; not ingested")
    requests = [
        dg.RunRequest(
            partition_key=day,
            run_key=f"{day}:{hashlib.sha256(current[day].encode()).hexdigest()[:16]}",
            tags={"smart_home/trigger": "online_predictions_sensor"},
        )
        for day in days
        if day in valid
    ]
    cursor = json.dumps(
        {d: f for d, f in current.items() if d < today.isoformat() and d not in outside}, sort_keys=True
    )
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no ended day with new answers"), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
