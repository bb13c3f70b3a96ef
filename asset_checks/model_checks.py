"""Checks on usage_model: the newest version must beat the best naive baseline (blocking predictions)."""

import dagster as dg

MODEL_KEY = dg.AssetKey("usage_model")


def beats_best_baseline(metadata: dict) -> tuple[bool, dict]:
    mae = float(metadata["holdout_mae"].value)
    baseline = float(metadata["best_baseline_mae"].value)
    return mae < baseline, {
        "holdout_mae": mae, "best_baseline": metadata["best_baseline"].value, "best_baseline_mae": baseline,
        "model_version": metadata["model_version"].value,
        "improvement_vs_baseline": dg.MetadataValue.float(round(1 - mae / baseline, 4) if baseline else 0.0),
    }


@dg.asset_check(asset=MODEL_KEY, blocking=True)
def check_model_beats_naive_baselines(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """The newest model version's holdout MAE is below the best naive baseline's on the same holdout."""
    event = context.instance.get_latest_materialization_event(MODEL_KEY)
    if event is None or event.asset_materialization is None:
        return dg.AssetCheckResult(passed=False, description="usage_model was never materialized")
    passed, metadata = beats_best_baseline(event.asset_materialization.metadata)
    return dg.AssetCheckResult(passed=passed, metadata=metadata)
