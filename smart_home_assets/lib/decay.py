"""Model decay: live accuracy worse than the backtest promised, for days on end, or features that drifted.

Two signals, each already a check in the UI:
- ``check_live_accuracy_holds`` on prediction_feedback (asset_checks/model_checks.py) fails when the batch
  predictions' live MAE stayed above the predicting version's backtest MAE by more than
  ``SMART_HOME_DECAY_MARGIN`` (default 0.25, i.e. 25 %) on each of the last ``SMART_HOME_DECAY_DAYS`` (default 3)
  consecutive scored days;
- ``check_feature_drift_psi`` on usage_features fails on a day whose PSI passes its threshold; it counts as decay
  when it failed on the last ``SMART_HOME_DECAY_DAYS`` feature days in a row.

An *episode* is one continuous stretch of decay, named by its signal, its model version and its first day, e.g.
``accuracy:v3:2026-03-21``. While one is open, usage_model's automation requests one retrain (the retrain
records the episode it answered in its metadata, so a retrain that keeps the champion is not repeated on the
next tick) and alerts_sensor sends one alert; its end sends the recovery. Retraining on new feature days goes on
as before, whatever this says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence

import polars as pl

MARGIN_VAR = "SMART_HOME_DECAY_MARGIN"
DEFAULT_MARGIN = 0.25
DAYS_VAR = "SMART_HOME_DECAY_DAYS"
DEFAULT_DAYS = 3
ACCURACY_CHECK = "check_live_accuracy_holds"
DRIFT_CHECK = "check_feature_drift_psi"  # asset_checks/feature_checks.py (its name, without importing numpy there)
EPISODE_KEY = "decay_episode"  # in the check's evaluation metadata and in usage_model's materialization metadata
NO_EPISODE = "-"
# How far back a streak is followed to find its first day.
LOOKBACK_DAYS = 90


def margin() -> float:
    raw = os.environ.get(MARGIN_VAR, "").strip()
    value = float(raw) if raw else DEFAULT_MARGIN
    if value < 0:
        raise ValueError(f"{MARGIN_VAR}={raw!r}: a fraction of the backtest MAE, 0 or more (0.25 = 25 % worse)")
    return value


def days() -> int:
    raw = os.environ.get(DAYS_VAR, "").strip()
    value = int(raw) if raw else DEFAULT_DAYS
    if value < 1:
        raise ValueError(f"{DAYS_VAR}={raw!r}: at least 1 day")
    return value


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the latest scored days say. ``episode`` is set only when decayed."""

    decayed: bool
    reason: str
    days_over: int = 0  # consecutive latest days above the margin (same version)
    version: str | None = None
    first_day: str | None = None
    last_day: str | None = None
    worst_ratio: float | None = None

    @property
    def episode(self) -> str:
        return f"accuracy:v{self.version}:{self.first_day}" if self.decayed else NO_EPISODE


def accuracy_verdict(feedback: pl.DataFrame, *, margin: float, days: int) -> Verdict:
    """From prediction_feedback's batch rows (partition_date, model_version, live_mae, backtest_mae): decayed
    when each of the latest ``days`` consecutive scored days, all predicted by one version, had a live MAE above
    its backtest MAE times (1 + margin). Days without a backtest MAE (the unregistered fallback) say nothing."""
    rows = (
        feedback.filter(pl.col("backtest_mae").is_not_null() & (pl.col("backtest_mae") > 0))
        .sort("partition_date", descending=True)
        .select(
            "partition_date",
            "model_version",
            "live_mae",
            "backtest_mae",
            ratio=pl.col("live_mae") / pl.col("backtest_mae"),
        )
    )
    if rows.is_empty():
        return Verdict(False, "no scored day with a backtest MAE yet")
    latest = rows.row(0, named=True)
    version, limit = latest["model_version"], 1 + margin
    streak: list[dict] = []
    expected_day = latest["partition_date"]
    for row in rows.iter_rows(named=True):
        if row["partition_date"] != expected_day or row["model_version"] != version or not row["ratio"] > limit:
            break
        streak.append(row)
        expected_day = row["partition_date"] - dt.timedelta(days=1)
    ratio = latest["ratio"]
    if len(streak) < days:
        return Verdict(
            False,
            f"v{version}: live MAE {latest['live_mae']:.1f} Wh is {ratio:.2f}x its backtest MAE "
            f"{latest['backtest_mae']:.1f} on {latest['partition_date']}; "
            f"{len(streak)} of {days} consecutive days above {limit:.2f}x",
            len(streak),
            version,
        )
    worst = max(r["ratio"] for r in streak)
    first, last = streak[-1]["partition_date"].isoformat(), latest["partition_date"].isoformat()
    return Verdict(
        True,
        f"v{version}: live MAE above {limit:.2f}x its backtest MAE for {len(streak)} consecutive "
        f"days ({first} to {last}, up to {worst:.2f}x)",
        len(streak),
        version,
        first,
        last,
        worst,
    )


def drift_streak(outcomes: Sequence[tuple[str, bool]]) -> list[str]:
    """The latest run of consecutive days whose drift check failed, oldest first, from (day, passed) pairs of
    each day's latest evaluation (any order)."""
    latest_first = sorted(outcomes, reverse=True)
    streak: list[str] = []
    expected = None
    for day, passed in latest_first:
        current = dt.date.fromisoformat(day)
        if passed or (expected is not None and current != expected):
            break
        streak.append(day)
        expected = current - dt.timedelta(days=1)
    return streak[::-1]
