"""Checks on usage_model: the model that serves is never worse than a naive forecast (blocking predictions).

The check guards promotion, not training. A run that correctly declines to promote a worse candidate passes:
the champion that stays (or the baseline that takes over) is what it judges. It fails, and holds
``usage_predictions`` back, when the registry's ``champion`` is not the version this materialization decided
on (the alias was moved by hand since), or when that champion is a trained model whose backtest MAE is not
below the best naive baseline's on the latest backtest.
"""

import math
from typing import Any

import dagster as dg

from smart_home_assets.lib.tables import PREDICTION_FEEDBACK, USAGE_MODEL

MODEL_KEY = dg.AssetKey(USAGE_MODEL)
CHECK_NAME = "check_champion_beats_naive_baselines"


def judge_champion(metadata: dict, registry_champion: str | None) -> tuple[bool, str, dict]:
    """(passed, description, metadata) from usage_model's materialization metadata and the registry's champion."""
    value = {k: v.value for k, v in metadata.items() if hasattr(v, "value")}
    decided = str(value.get("champion_version", "none"))
    kind = value.get("champion_kind", "none")
    out = {
        "champion_version": decided,
        "champion_kind": kind,
        "champion_name": value.get("champion_name", "none"),
        "registry_champion": registry_champion or "none",
        "decision": value.get("decision", ""),
        "best_baseline": value.get("best_baseline", ""),
        "best_baseline_mae": value.get("best_baseline_mae"),
    }
    if registry_champion != decided:
        return (
            False,
            (
                f"the registry's champion is v{registry_champion} but usage_model decided on v{decided}: "
                "the alias was moved outside the pipeline"
            ),
            out,
        )
    if kind == "baseline":
        return True, f"the naive baseline {out['champion_name']} serves (no trained model beats it)", out
    mae, best = value.get("champion_backtest_mae"), value.get("best_baseline_mae")
    if mae is None or best is None or (isinstance(best, float) and math.isnan(best)):
        return False, "usage_model's materialization has no backtest scores for its champion", out
    out["champion_backtest_mae"] = mae
    out["skill_vs_best_baseline"] = round(1 - mae / best, 4) if best else 0.0
    if not mae < best:
        return False, f"champion v{decided} backtest MAE {mae:.1f} Wh is not below the best baseline's {best:.1f}", out
    return True, f"champion v{decided} backtest MAE {mae:.1f} Wh beats the best baseline's {best:.1f}", out


@dg.asset_check(asset=MODEL_KEY, name=CHECK_NAME, blocking=True, required_resource_keys={"model_registry"})
def check_champion_beats_naive_baselines(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """The champion is the version usage_model decided on, and beats the best naive baseline on the latest
    backtest (or is that baseline)."""
    event = context.instance.get_latest_materialization_event(MODEL_KEY)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, description="usage_model was never materialized")
    found = context.resources.model_registry.champion_version()
    passed, description, metadata = judge_champion(
        event.asset_materialization.metadata, str(found.version) if found else None
    )
    return dg.AssetCheckResult(passed=passed, description=description, metadata=metadata)


FEEDBACK_KEY = dg.AssetKey(PREDICTION_FEEDBACK)


@dg.asset_check(
    asset=FEEDBACK_KEY,
    name="check_live_accuracy_holds",
    blocking=False,
    required_resource_keys={"warehouse"},
    pool="duckdb",
)
def check_live_accuracy_holds(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Live MAE within SMART_HOME_DECAY_MARGIN of the predicting version's backtest MAE: fails (a warning that
    requests a retrain and raises an alert, smart_home_assets/lib/decay.py) after SMART_HOME_DECAY_DAYS days above."""
    from smart_home_assets.lib import decay
    from smart_home_assets.lib.tables import PREDICTION_FEEDBACK

    warehouse = context.resources.warehouse
    rows = (
        warehouse.query(
            f"SELECT partition_date, model_version, live_mae, backtest_mae FROM {PREDICTION_FEEDBACK} "
            f"WHERE source = 'batch' AND partition_date >= (SELECT max(partition_date) FROM {PREDICTION_FEEDBACK}) "
            f"- INTERVAL {decay.LOOKBACK_DAYS} DAY"
        )
        if warehouse.table_exists(PREDICTION_FEEDBACK)
        else None
    )
    margin, days = decay.margin(), decay.days()
    if rows is None or rows.is_empty():
        verdict = decay.Verdict(False, "nothing scored yet")
    else:
        verdict = decay.accuracy_verdict(rows, margin=margin, days=days)
    metadata: dict[str, Any] = {
        decay.EPISODE_KEY: verdict.episode,
        "margin": margin,
        "days": days,
        "days_over": verdict.days_over,
        "model_version": verdict.version or "-",
        "first_day": verdict.first_day or "-",
        "last_day": verdict.last_day or "-",
    }
    if verdict.worst_ratio is not None:
        metadata["worst_ratio_live_to_backtest"] = round(verdict.worst_ratio, 3)
    return dg.AssetCheckResult(
        passed=not verdict.decayed, description=verdict.reason, metadata=metadata, severity=dg.AssetCheckSeverity.WARN
    )
