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
    rows = (feedback.filter(pl.col("backtest_mae").is_not_null() & (pl.col("backtest_mae") > 0))
            .sort("partition_date", descending=True)
            .select("partition_date", "model_version", "live_mae", "backtest_mae",
                    ratio=pl.col("live_mae") / pl.col("backtest_mae")))
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
        return Verdict(False, f"v{version}: live MAE {latest['live_mae']:.1f} Wh is {ratio:.2f}x its backtest MAE "
                              f"{latest['backtest_mae']:.1f} on {latest['partition_date']}; "
                              f"{len(streak)} of {days} consecutive days above {limit:.2f}x",
                       len(streak), version)
    worst = max(r["ratio"] for r in streak)
    first, last = streak[-1]["partition_date"].isoformat(), latest["partition_date"].isoformat()
    return Verdict(True, f"v{version}: live MAE above {limit:.2f}x its backtest MAE for {len(streak)} consecutive "
                         f"days ({first} to {last}, up to {worst:.2f}x)",
                   len(streak), version, first, last, worst)


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


@dataclasses.dataclass(frozen=True)
class OpenDecay:
    """An episode open now, read from the instance: the signal's latest evaluation and the run behind it."""

    episode: str
    signal: str  # accuracy | drift
    summary: str
    run_id: str | None
    last_day: str | None


def open_decay(instance, asset_graph=None) -> OpenDecay | None:
    """The decay episode open now, from the latest evaluation of the accuracy check (its metadata carries the
    episode) and the drift check's recent per-day evaluations; None when neither says decay. Accuracy first:
    it is what users feel."""
    import dagster as dg

    accuracy_key = dg.AssetCheckKey(dg.AssetKey("prediction_feedback"), ACCURACY_CHECK)
    drift_key = dg.AssetCheckKey(dg.AssetKey("usage_features"), DRIFT_CHECK)
    if asset_graph is not None:
        known = set(asset_graph.asset_check_keys)
        if accuracy_key not in known and drift_key not in known:
            return None
    storage = instance.event_log_storage
    summary = storage.get_asset_check_summary_records([accuracy_key])[accuracy_key]
    record = summary.last_completed_check_execution_record
    evaluation = record.event.asset_check_evaluation if record is not None and record.event else None
    if evaluation is not None and not evaluation.passed:
        episode = evaluation.metadata.get(EPISODE_KEY)
        if episode is not None and episode.value != NO_EPISODE:
            last = evaluation.metadata.get("last_day")
            return OpenDecay(episode.value, "accuracy", evaluation.description or "live accuracy decayed",
                             record.run_id, last.value if last is not None else None)
    history = storage.get_asset_check_execution_history(drift_key, limit=LOOKBACK_DAYS * 3)
    latest_by_day: dict[str, bool] = {}
    runs: dict[str, str] = {}
    for item in history:  # newest first: the first seen per day is its latest evaluation
        event = item.event
        check_evaluation = event.asset_check_evaluation if event is not None else None
        if check_evaluation is None or check_evaluation.partition is None:
            continue
        if check_evaluation.partition not in latest_by_day:
            latest_by_day[check_evaluation.partition] = check_evaluation.passed
            runs[check_evaluation.partition] = item.run_id
    streak = drift_streak(list(latest_by_day.items()))
    needed = days()
    if len(streak) >= needed:
        return OpenDecay(f"drift:{streak[0]}", "drift",
                         f"usage_features drifted (PSI above its threshold) on {len(streak)} consecutive days "
                         f"({streak[0]} to {streak[-1]})", runs.get(streak[-1]), streak[-1])
    return None


def handled_episode(instance) -> str | None:
    """The decay episode usage_model's latest materialization answered (its metadata), if any."""
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("usage_model"))
    materialization = event.asset_materialization if event is not None else None
    value = materialization.metadata.get(EPISODE_KEY) if materialization is not None else None
    return value.value if value is not None and value.value != NO_EPISODE else None
