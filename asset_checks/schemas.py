"""Pandera (polars) schemas for the clean table. Built per partition: the timestamp window and the device
catalog are parameters, not constants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from smart_home_assets.lib.contract import MAX_EVENT_DURATION_S, MAX_EVENT_ENERGY_WH

if TYPE_CHECKING:
    import pandera.polars as pa

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"


def device_usage_schema(partition_key: str | None, catalog: Iterable[str]) -> pa.DataFrameSchema:
    """The contract device_usage rows must satisfy: of one partition (``partition_key``), or, with ``None``, of
    any number of partitions at once, each row's timestamp inside the UTC day of its own ``partition_date`` and
    ``(hub_id, event_id)`` unique within each partition (one validation for a whole batch of small days)."""
    # Imported here, not at module level: pandera imports pandas (about 1 s) into every process that loads the
    # definitions (code server, webserver, daemon, each run), and only check steps use it.
    import pandera.polars as pa

    columns = {}
    if partition_key is None:
        columns["partition_date"] = pa.Column(pl.Date, nullable=False)
        window = pa.Check(
            _in_partition_window,
            name="in_partition_window",
            error="event_timestamp inside [partition_date, partition_date + 1 day) UTC",
        )
        unique = ["partition_date", "hub_id", "event_id"]
    else:
        start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.UTC)
        window = pa.Check.in_range(start, start + dt.timedelta(days=1), include_min=True, include_max=False)
        unique = ["hub_id", "event_id"]
    return pa.DataFrameSchema(
        {
            **columns,
            "event_id": pa.Column(pl.String, nullable=False),
            "hub_id": pa.Column(pl.String, nullable=False),
            "user_pseudonym": pa.Column(pl.String, nullable=False, checks=pa.Check.str_matches(PSEUDONYM_PATTERN)),
            "device_id": pa.Column(pl.String, nullable=False),
            "device_type": pa.Column(pl.String, nullable=False, checks=pa.Check.isin(sorted(catalog))),
            "event_timestamp": pa.Column(pl.Datetime("us", "UTC"), nullable=False, checks=window),
            "duration_s": pa.Column(pl.Float64, nullable=False, checks=pa.Check.in_range(0.0, MAX_EVENT_DURATION_S)),
            "energy_wh": pa.Column(pl.Float64, nullable=False, checks=pa.Check.in_range(0.0, MAX_EVENT_ENERGY_WH)),
        },
        unique=unique,
        coerce=True,  # DuckDB returns time zones as it stores them; coerce to the declared types
        name=f"device_usage[{partition_key or 'partitions'}]",
    )


def _in_partition_window(data) -> pl.LazyFrame:
    start = pl.col("partition_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return data.lazyframe.select((pl.col(data.key) >= start) & (pl.col(data.key) < start + pl.duration(days=1)))


def failure_cases(schema: pa.DataFrameSchema, frame: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """All failure cases of ``frame`` against ``schema`` (empty when valid), as one polars frame with
    the columns ``column``, ``check`` and ``failure_case`` (as text). A missing column is a failure case
    of that column (check ``column_in_dataframe``), not a crash.

    With ``by`` (a column of ``frame``, e.g. ``partition_date``), each case also carries the value of ``by`` of
    the row it was found in (null for a case of the whole frame, such as a missing column)."""
    import pandera.polars as pa

    columns = {"column": pl.String, "check": pl.String, "failure_case": pl.String}
    of_row = {by: frame.schema[by]} if by else {}
    missing = [name for name in schema.columns if name not in frame.columns]
    if missing:
        return pl.DataFrame(
            {
                "column": missing,
                "check": ["column_in_dataframe"] * len(missing),
                "failure_case": missing,
                **({by: [None] * len(missing)} if by else {}),
            },
            schema={**columns, **of_row},
        )
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        selected = [pl.col(c).cast(t) for c, t in columns.items()]
        if not by:
            return cases.select(selected)
        index = cases.get_column("index")
        values = frame.get_column(by).gather(index.fill_null(0).cast(pl.UInt32))
        return (
            cases.select(selected)
            .with_columns(values.alias(by))
            .with_columns(pl.when(index.is_not_null()).then(pl.col(by)).alias(by))
        )
    return pl.DataFrame(schema={**columns, **of_row})
