"""Per-device daily features for next-day energy forecasting: device_usage events -> one row per device and day.

Two steps, both pure polars (frames in, frames out, no Dagster):

* :func:`daily_device_usage` sums the clean events of ``device_usage`` per (UTC day, device);
* :func:`build_features` turns the daily sums of a trailing window into the feature row of every device
  for one day ``D``: usage on ``D``, lags, rolling statistics, calendar and hub context.

A feature row of ``D`` only uses data up to and including ``D``; the label (energy on ``D + 1``) is attached
later by :func:`smart_home_assets.lib.training.attach_labels`, once ``D + 1`` has happened.

Context a single device cannot see. Every hub knows at the end of ``D`` what the fleet did that day: the fleet's
level of each device type on ``D`` (and ``D - 1``) relative to the week before (``fleet_type_ratio*``) shows a
fleet-wide cold spell on the day it starts, and the hub's own total relative to its week before
(``hub_energy_ratio``) shows a household away or with guests. Longer memory comes from a narrow window one year
back (``YEAR_DAYS`` = 364 days, 52 weeks, so weekdays line up): the device's energy around the predicted day last
year and the fleet's week-over-week change then (``fleet_type_last_year_trend``). Those read 15 days of daily
sums a year back (:func:`history_ranges`), never the year in between; with less than a year of history they are
null.

Silence is information. The daily sums only have rows for days with events, so a device that was seen in the
window but sent nothing on a day used *zero* energy that day (0, not missing). Days before a device's first
appearance in the window are unknown instead (the device may not have existed yet): lags that reach back
there are null and rolling statistics only cover days since the first appearance. Nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

from smart_home_assets.lib.tables import DEVICE_USAGE

# Days before ``D`` the features look at: rows of [D - LOOKBACK_DAYS, D] (29 days) are read, which covers
# the 28-day rolling window (D-27..D) and the longest lag (7). A device seen anywhere in it gets a row.
LOOKBACK_DAYS = 28
# A device needs this many days since its first appearance before its rows are used for training:
# with fewer, the weekly lags and the 7-day statistics are still mostly unknown.
MIN_HISTORY_DAYS = 7

LAGS = (1, 2, 6, 7)  # lag 6 is the same weekday as the predicted day D+1, one week earlier
ROLLING_WINDOWS = (7, 28)
# D+1 minus 1..4 weeks: the predicted day's weekday in the last four weeks.
SAME_WEEKDAY_LAGS = (6, 13, 20, 27)
# One year back, in whole weeks: D + 1 - YEAR_DAYS is the same weekday as the predicted day D + 1.
YEAR_DAYS = 364
# Days around a day last year that the year-ago features average over (D+1-364 +- 3).
YEAR_HALF_WINDOW = 3

DAILY_USAGE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "device_id": pl.String(),
    "hub_id": pl.String(),
    "device_type": pl.String(),
    "energy_wh": pl.Float64(),  # sum over the device's events that day
    "active_s": pl.Float64(),  # sum of duration_s
    "event_count": pl.Int64(),
}

# Output of build_features, in column order. device_type stays a plain string: DuckDB round trips lose
# polars Categoricals; the model side turns it into a category with a fixed list (see training.py).
FEATURES_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),  # D, the day the features describe
    "device_id": pl.String(),
    "hub_id": pl.String(),  # the device's hub on its latest day in the window
    "device_type": pl.String(),  # the device's type on its latest day in the window
    "energy_wh": pl.Float64(),  # energy on D (0 when silent on D)
    "active_s": pl.Float64(),  # summed event durations on D (0 when silent)
    "event_count": pl.Int64(),  # events on D (0 when silent)
    # energy on D-k: 0 when the device was known by then but silent, null when D-k is before its first
    # appearance in the window.
    "energy_lag_1": pl.Float64(),
    "energy_lag_2": pl.Float64(),
    "energy_lag_6": pl.Float64(),  # = same weekday as D+1, one week earlier
    "energy_lag_7": pl.Float64(),
    # Mean / sample standard deviation (ddof=1) of daily energy over D-6..D and D-27..D, silent days
    # counted as 0, only over days since the first appearance (so over min(window, history_days) days).
    # The mean is never null (D itself always counts); the std is null when only one day is covered.
    "energy_roll7_mean": pl.Float64(),
    "energy_roll7_std": pl.Float64(),
    "energy_roll28_mean": pl.Float64(),
    "energy_roll28_std": pl.Float64(),
    "day_of_week": pl.Int8(),  # of D, 0 = Monday
    "is_weekend": pl.Boolean(),  # D is a Saturday or Sunday
    "month": pl.Int8(),  # of D, 1..12
    "target_day_of_week": pl.Int8(),  # of D+1, the day being predicted (known in advance)
    "target_is_weekend": pl.Boolean(),  # D+1 is a Saturday or Sunday
    "hub_energy_wh": pl.Float64(),  # the hub's total energy on D over all its devices
    "target_day_of_year": pl.Int16(),  # of D+1, 1..366
    # Mean energy over D-7..D-1 (the week before D; silent days 0, only days since the first appearance); null
    # when D is the first day seen. The reference level of the ratios below.
    "energy_prev7_mean": pl.Float64(),
    # Mean energy on D+1's weekday over the last four weeks (D-6, D-13, D-20, D-27; those since the first
    # appearance); null when none is known yet.
    "energy_same_weekday_mean4": pl.Float64(),
    # The fleet on D, per device type, over devices seen for at least 8 days: sum of energy on D (lag 1: on D-1)
    # over the sum of their energy_prev7_mean. 1.5 = the type used half again its usual energy fleet-wide.
    "fleet_type_ratio": pl.Float64(),
    "fleet_type_ratio_lag_1": pl.Float64(),
    "hub_energy_ratio": pl.Float64(),  # the hub's energy on D over the sum of its devices' energy_prev7_mean
    # One year back (null without that history): the device's energy on D+1-364 and its mean over D-366..D-360
    # (0 when the device was seen then but silent), and the fleet's change for the type a year ago: energy over
    # D-363..D-357 (the week being predicted, last year) over energy of D-370..D-364.
    "energy_last_year": pl.Float64(),
    "energy_last_year_mean7": pl.Float64(),
    "fleet_type_last_year_trend": pl.Float64(),
    "history_days": pl.Int32(),  # days from the first appearance in the window to D, inclusive (1..29)
    "has_enough_history": pl.Boolean(),  # history_days >= MIN_HISTORY_DAYS
}
# The columns a feature row always carries. The rest are null when their history is missing: lags before the
# device's first appearance, statistics over a single day, context without a reference week, last year's values
# without a year of history. The features check (check_features_valid) and the model's input schema both read this.
NON_NULL_COLUMNS = (
    "partition_date",
    "device_id",
    "hub_id",
    "device_type",
    "energy_wh",
    "active_s",
    "event_count",
    "energy_roll7_mean",
    "energy_roll28_mean",
    "day_of_week",
    "is_weekend",
    "month",
    "target_day_of_week",
    "target_is_weekend",
    "target_day_of_year",
    "hub_energy_wh",
    "history_days",
    "has_enough_history",
)
NULLABLE_COLUMNS = tuple(c for c in FEATURES_SCHEMA if c not in NON_NULL_COLUMNS)


def daily_device_usage(events: pl.DataFrame) -> pl.DataFrame:
    """Per (partition_date, device_id): hub, type, summed energy and duration, number of events.

    ``events`` are ``device_usage`` rows (any number of partitions). Only (day, device) pairs with at least
    one event get a row; :func:`build_features` fills the silent days with zeros. Should a device report
    another hub or type within a day, the latest event's value is kept (the device ids are per hub, so this
    is only a guard that keeps one row per key).
    """
    latest = pl.col("event_timestamp")
    return (
        events.group_by("partition_date", "device_id")
        .agg(
            hub_id=pl.col("hub_id").sort_by(latest).last(),
            device_type=pl.col("device_type").sort_by(latest).last(),
            energy_wh=pl.col("energy_wh").sum(),
            active_s=pl.col("duration_s").sum(),
            event_count=pl.len(),
        )
        .select([pl.col(c).cast(t) for c, t in DAILY_USAGE_SCHEMA.items()])
        .sort("partition_date", "device_id")
    )


def daily_usage_sql(table: str = DEVICE_USAGE) -> str:
    """DuckDB query doing :func:`daily_device_usage` inside the warehouse, for days between two parameters.

    Run it with ``[first_day, last_day]`` (inclusive) as parameters; it returns the columns and types of
    :data:`DAILY_USAGE_SCHEMA` (DATE, VARCHAR, DOUBLE, BIGINT), so only the small daily sums leave DuckDB
    rather than every event of the lookback window.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
        raise ValueError(f"not a plain table name: {table!r}")
    return f"""
        SELECT partition_date, device_id,
               arg_max(hub_id, event_timestamp) AS hub_id,
               arg_max(device_type, event_timestamp) AS device_type,
               -- ordered sums: a parallel floating-point sum would differ in the last bits between runs,
               -- and re-materializing a partition must give the same rows
               CAST(sum(energy_wh ORDER BY event_timestamp, energy_wh) AS DOUBLE) AS energy_wh,
               CAST(sum(duration_s ORDER BY event_timestamp, duration_s) AS DOUBLE) AS active_s,
               CAST(count(*) AS BIGINT) AS event_count
        FROM {table}
        WHERE partition_date BETWEEN ? AND ?
        GROUP BY partition_date, device_id
        ORDER BY partition_date, device_id"""


def history_ranges(first: dt.date, last: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The day ranges (inclusive) of daily sums that the features of days ``first..last`` read: the lookback
    window and the narrow window one year back, merged into one when they meet (a backfill of a year or more).

    Reading them as separate ranges keeps one day's feature step at 29 + 14 days of daily sums, never a year.
    """
    recent = (first - dt.timedelta(days=LOOKBACK_DAYS), last)
    year_ago = (first - dt.timedelta(days=YEAR_DAYS + YEAR_HALF_WINDOW + 3), last - dt.timedelta(days=YEAR_DAYS - 7))
    if year_ago[1] >= recent[0] - dt.timedelta(days=1):
        return [(year_ago[0], recent[1])]
    return [year_ago, recent]


def _on(day: dt.date, column: str = "energy_wh") -> pl.Expr:
    """The grid value of ``column`` on ``day`` for the current device; null when the grid has no such day."""
    return pl.col(column).filter(pl.col("partition_date") == day).first()


def _since(start: dt.date) -> pl.Expr:
    return pl.col("energy_wh").filter(pl.col("partition_date") >= start)


def _between(first: dt.date, last: dt.date) -> pl.Expr:
    return pl.col("energy_wh").filter(pl.col("partition_date").is_between(first, last))


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator, null where the denominator is null or not positive."""
    return pl.when(denominator > 0).then(numerator / denominator).otherwise(None)


def year_ago_features(daily: pl.DataFrame, day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per device seen around the predicted day one year back: energy_last_year, energy_last_year_mean7; and
    per device type: fleet_type_last_year_trend (see :data:`FEATURES_SCHEMA`). Reads only D-370..D-357."""
    target = day + dt.timedelta(days=1 - YEAR_DAYS)
    half = dt.timedelta(days=YEAR_HALF_WINDOW)
    window = daily.filter(pl.col("partition_date").is_between(target - half, target + half))
    per_device = window.group_by("device_id").agg(
        energy_last_year=pl.col("energy_wh").filter(pl.col("partition_date") == target).sum(),
        energy_last_year_mean7=pl.col("energy_wh").sum() / (2 * YEAR_HALF_WINDOW + 1),
    )
    week_after = (target, target + dt.timedelta(days=6))
    week_before = (target - dt.timedelta(days=7), target - dt.timedelta(days=1))
    trend = (
        daily.filter(pl.col("partition_date").is_between(week_before[0], week_after[1]))
        .sort("device_id", "partition_date")
        .group_by("device_type")
        .agg(
            after=_between(*week_after).sum(),
            before=_between(*week_before).sum(),
            days_after=pl.col("partition_date").filter(pl.col("partition_date") >= target).n_unique(),
            days_before=pl.col("partition_date").filter(pl.col("partition_date") < target).n_unique(),
        )
        # Both weeks must have been seen, or a missing day would look like a drop.
        .filter((pl.col("days_after") == 7) & (pl.col("days_before") == 7))
        .select("device_type", fleet_type_last_year_trend=_ratio(pl.col("after"), pl.col("before")))
    )
    return per_device, trend


def build_features(daily: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """The feature row (see :data:`FEATURES_SCHEMA`) of every device seen in ``[day - LOOKBACK_DAYS, day]``.

    ``daily`` holds :func:`daily_device_usage` rows covering at least that window; rows outside it are
    ignored, and (day, device) pairs without a row are silent days. Vectorized: the devices are crossed with
    the window's days into a dense grid (from each device's first appearance on), the daily sums joined in
    with zeros for silent days, and every feature is one grouped aggregation over that grid.
    """
    start = day - dt.timedelta(days=LOOKBACK_DAYS)
    recent = daily.filter(pl.col("partition_date").is_between(start, day))
    if recent.select(pl.struct("partition_date", "device_id").is_duplicated().any()).item():
        # A duplicate would silently double a device's energy; daily_device_usage never produces one.
        raise ValueError("daily usage has more than one row per (partition_date, device_id)")

    # hub and type as of the device's latest day in the window
    latest = pl.col("partition_date")
    devices = recent.group_by("device_id").agg(
        first_seen=pl.col("partition_date").min(),
        hub_id=pl.col("hub_id").sort_by(latest).last(),
        device_type=pl.col("device_type").sort_by(latest).last(),
    )
    days = pl.DataFrame({"partition_date": pl.date_range(start, day, eager=True)})
    # Only days since the first appearance are in the grid: earlier days stay unknown (null lags), later
    # silent days become zeros.
    grid = (
        devices.select("device_id", "first_seen")
        .join(days, how="cross")
        .filter(pl.col("partition_date") >= pl.col("first_seen"))
        .join(
            recent.select("device_id", "partition_date", "energy_wh", "active_s", "event_count"),
            on=["device_id", "partition_date"],
            how="left",
        )
        .with_columns(pl.col("energy_wh", "active_s", "event_count").fill_null(0))
    )

    def back(k: int) -> dt.date:
        return day - dt.timedelta(days=k)

    rolling: dict[str, pl.Expr] = {}
    for w in ROLLING_WINDOWS:
        rolling[f"energy_roll{w}_mean"] = _since(back(w - 1)).mean()
        rolling[f"energy_roll{w}_std"] = _since(back(w - 1)).std(ddof=1)  # null for a single day
    per_device = grid.group_by("device_id").agg(
        energy_wh=_on(day),
        active_s=_on(day, "active_s"),
        event_count=_on(day, "event_count"),
        **{f"energy_lag_{k}": _on(back(k)) for k in LAGS},
        **rolling,
        energy_prev7_mean=_between(back(7), back(1)).mean(),  # null when first seen on D
        energy_same_weekday_mean4=pl.col("energy_wh")
        .filter(pl.col("partition_date").is_in([back(k) for k in SAME_WEEKDAY_LAGS]))
        .mean(),
    )
    year_devices, year_trend = year_ago_features(daily, day)

    target = day + dt.timedelta(days=1)
    features = (
        per_device.join(devices, on="device_id", how="inner")
        .sort("device_id")  # a fixed order makes the floating-point hub sums identical run to run
        .with_columns(
            partition_date=pl.lit(day, dtype=pl.Date),
            day_of_week=pl.lit(day.weekday()),
            is_weekend=pl.lit(day.weekday() >= 5),
            month=pl.lit(day.month),
            target_day_of_week=pl.lit(target.weekday()),
            target_is_weekend=pl.lit(target.weekday() >= 5),
            # Every device active on D has a row, so summing the rows is the hub's total of the day.
            hub_energy_wh=pl.col("energy_wh").sum().over("hub_id"),
            history_days=(pl.lit(day, dtype=pl.Date) - pl.col("first_seen")).dt.total_days() + 1,
            target_day_of_year=pl.lit(target.timetuple().tm_yday),
        )
        .with_columns(has_enough_history=pl.col("history_days") >= MIN_HISTORY_DAYS)
    )
    # The fleet's state on D per type, from devices with a full week before D (a newcomer has no level yet).
    settled = pl.col("history_days") >= 8
    reference = pl.col("energy_prev7_mean").filter(settled).sum()
    features = (
        features.with_columns(
            fleet_type_ratio=_ratio(pl.col("energy_wh").filter(settled).sum(), reference).over("device_type"),
            fleet_type_ratio_lag_1=_ratio(pl.col("energy_lag_1").filter(settled).sum(), reference).over("device_type"),
            hub_energy_ratio=_ratio(
                pl.col("energy_wh").filter(pl.col("energy_prev7_mean").is_not_null()).sum(),
                pl.col("energy_prev7_mean").sum(),
            ).over("hub_id"),
        )
        .join(year_devices, on="device_id", how="left")
        .join(year_trend, on="device_type", how="left")
    )
    return features.select([pl.col(c).cast(t) for c, t in FEATURES_SCHEMA.items()]).sort("device_id")
