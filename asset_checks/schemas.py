"""Pandera (polars) schemas for the clean table. Built per partition: the timestamp window and the device
catalog are parameters, not constants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from smart_home_assets.contract import MAX_EVENT_DURATION_S, MAX_EVENT_ENERGY_WH

if TYPE_CHECKING:
    import pandera.polars as pa

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"


def device_usage_schema(partition_key: str, catalog: Iterable[str]) -> pa.DataFrameSchema:
    """The contract device_usage rows of one partition must satisfy."""
    # Imported here, not at module level: pandera imports pandas (about 1 s) into every process that loads the
    # definitions (code server, webserver, daemon, each run), and only check steps use it.
    import pandera.polars as pa

    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(days=1)
    return pa.DataFrameSchema(
        {
            "event_id": pa.Column(pl.String, nullable=False),
            "hub_id": pa.Column(pl.String, nullable=False),
            "user_pseudonym": pa.Column(pl.String, nullable=False, checks=pa.Check.str_matches(PSEUDONYM_PATTERN)),
            "device_id": pa.Column(pl.String, nullable=False),
            "device_type": pa.Column(pl.String, nullable=False, checks=pa.Check.isin(sorted(catalog))),
            "event_timestamp": pa.Column(
                pl.Datetime("us", "UTC"), nullable=False,
                checks=pa.Check.in_range(start, end, include_min=True, include_max=False)),
            "duration_s": pa.Column(pl.Float64, nullable=False, checks=pa.Check.in_range(0.0, MAX_EVENT_DURATION_S)),
            "energy_wh": pa.Column(pl.Float64, nullable=False, checks=pa.Check.in_range(0.0, MAX_EVENT_ENERGY_WH)),
        },
        unique=["hub_id", "event_id"],
        coerce=True,  # DuckDB returns time zones as it stores them; coerce to the declared types
        name=f"device_usage[{partition_key}]",
    )


def failure_cases(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """All failure cases of ``frame`` against ``schema`` (empty when valid), as one polars frame with
    the columns ``column``, ``check`` and ``failure_case`` (as text). A missing column is a failure case
    of that column (check ``column_in_dataframe``), not a crash."""
    import pandera.polars as pa

    missing = [name for name in schema.columns if name not in frame.columns]
    if missing:
        return pl.DataFrame({"column": missing, "check": ["column_in_dataframe"] * len(missing),
                             "failure_case": missing})
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return cases.select(
            pl.col("column").cast(pl.String), pl.col("check").cast(pl.String),
            pl.col("failure_case").cast(pl.String),
        )
    return pl.DataFrame(schema={"column": pl.String, "check": pl.String, "failure_case": pl.String})
