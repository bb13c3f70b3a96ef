"""The decay episode open now, read from the Dagster instance: the latest evaluations of the two decay checks
(the verdicts themselves are pure: ``smart_home_assets.lib.decay``). usage_model's automation, the model's
retrain metadata and alerts_sensor all read it here."""

from __future__ import annotations

import dataclasses

import dagster as dg

from smart_home_assets.lib import decay
from smart_home_assets.lib.tables import PREDICTION_FEEDBACK, USAGE_FEATURES, USAGE_MODEL


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
    accuracy_key = dg.AssetCheckKey(dg.AssetKey(PREDICTION_FEEDBACK), decay.ACCURACY_CHECK)
    drift_key = dg.AssetCheckKey(dg.AssetKey(USAGE_FEATURES), decay.DRIFT_CHECK)
    if asset_graph is not None:
        known = set(asset_graph.asset_check_keys)
        if accuracy_key not in known and drift_key not in known:
            return None
    storage = instance.event_log_storage
    summary = storage.get_asset_check_summary_records([accuracy_key])[accuracy_key]
    record = summary.last_completed_check_execution_record
    evaluation = record.event.asset_check_evaluation if record is not None and record.event else None
    if evaluation is not None and not evaluation.passed:
        episode = evaluation.metadata.get(decay.EPISODE_KEY)
        if episode is not None and episode.value != decay.NO_EPISODE:
            last = evaluation.metadata.get("last_day")
            return OpenDecay(
                episode.value,
                "accuracy",
                evaluation.description or "live accuracy decayed",
                record.run_id,
                last.value if last is not None else None,
            )
    history = storage.get_asset_check_execution_history(drift_key, limit=decay.LOOKBACK_DAYS * 3)
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
    streak = decay.drift_streak(list(latest_by_day.items()))
    needed = decay.days()
    if len(streak) >= needed:
        return OpenDecay(
            f"drift:{streak[0]}",
            "drift",
            f"usage_features drifted (PSI above its threshold) on {len(streak)} consecutive days "
            f"({streak[0]} to {streak[-1]})",
            runs.get(streak[-1]),
            streak[-1],
        )
    return None


def handled_episode(instance) -> str | None:
    """The decay episode usage_model's latest materialization answered (its metadata), if any."""
    event = instance.get_latest_materialization_event(dg.AssetKey(USAGE_MODEL))
    materialization = event.asset_materialization if event is not None else None
    value = materialization.metadata.get(decay.EPISODE_KEY) if materialization is not None else None
    return value.value if value is not None and value.value != decay.NO_EPISODE else None
