"""The pure pieces around the champion: its check's judgement, one day's predictions and their feedback."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from asset_checks.model_checks import judge_champion
from smart_home_assets.lib import training
from smart_home_assets.lib.scoring import feedback_for_day, predictions_for_day

D = dt.date(2026, 3, 10)


def metadata(**values) -> dict:
    return {k: dg.MetadataValue.text(v) if isinstance(v, str) else dg.MetadataValue.float(v) for k, v in values.items()}


def test_the_champion_check_passes_a_baseline_or_a_winner_and_fails_a_loser_or_a_moved_alias():
    winner = metadata(
        champion_version="3",
        champion_kind="lightgbm",
        champion_name="lightgbm",
        decision="candidate",
        best_baseline="mean_last_7_days",
        best_baseline_mae=100.0,
        champion_backtest_mae=80.0,
    )
    passed, description, out = judge_champion(winner, "3")
    assert passed and "beats" in description and out["skill_vs_best_baseline"] == pytest.approx(0.2)
    baseline = metadata(
        champion_version="4",
        champion_kind="baseline",
        champion_name="mean_last_7_days",
        best_baseline="mean_last_7_days",
        best_baseline_mae=100.0,
    )
    assert judge_champion(baseline, "4")[0]
    loser = metadata(
        champion_version="3", champion_kind="lightgbm", best_baseline_mae=100.0, champion_backtest_mae=100.0
    )
    passed, description, _ = judge_champion(loser, "3")
    assert not passed and "not below" in description
    passed, description, _ = judge_champion(winner, "2")  # the alias was moved by hand since
    assert not passed and "moved outside the pipeline" in description
    assert not judge_champion(metadata(champion_version="3", champion_kind="lightgbm"), "3")[0]  # no scores


def rows(**columns) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "partition_date": [D] * n,
        "device_id": [f"d{i}" for i in range(n)],
        "hub_id": ["h"] * n,
        "device_type": ["fridge"] * n,
        "has_enough_history": [True] * n,
    }
    return pl.DataFrame(base | columns)


def test_predictions_skip_devices_with_too_little_history_and_name_their_model():
    features = rows(
        energy_wh=[10.0, 20.0, 30.0],
        energy_lag_6=[1.0, 2.0, 3.0],
        energy_roll7_mean=[12.0, 18.0, 33.0],
        has_enough_history=[True, False, True],
    )
    forecaster = training.BaselineForecaster("mean_last_7_days", training.IntervalCalibration(-0.5, 0.25))
    now = dt.datetime(2026, 3, 11, tzinfo=dt.UTC)
    out = predictions_for_day(features, forecaster, "7", now)
    assert out["device_id"].to_list() == ["d0", "d2"]  # d1 is skipped: too little history
    assert out["predicted_energy_wh"].to_list() == [12.0, 33.0]
    assert out["p10_wh"].to_list() == [6.0, 16.5] and out["p90_wh"].to_list() == [15.0, 41.25]
    assert set(out["model_kind"]) == {"baseline"} and set(out["model_name"]) == {"mean_last_7_days"}
    assert set(out["model_version"]) == {"7"} and (out["target_date"] == D + dt.timedelta(days=1)).all()


def test_feedback_scores_live_error_coverage_and_skill_against_the_baselines():
    predictions = pl.DataFrame(
        {
            "partition_date": [D] * 3,
            "target_date": [D + dt.timedelta(days=1)] * 3,
            "device_id": ["d0", "d1", "d2"],
            "predicted_energy_wh": [10.0, 20.0, 30.0],
            "p10_wh": [5.0, 15.0, 29.0],
            "p90_wh": [15.0, 25.0, 31.0],
            "model_version": ["2"] * 3,
        }
    )
    features = rows(energy_wh=[0.0, 0.0, 0.0], energy_lag_6=[12.0, 20.0, 40.0], energy_roll7_mean=[8.0, 8.0, 8.0])
    actuals = pl.DataFrame({"device_id": ["d0", "d1", "d2", "elsewhere"], "energy_wh": [12.0, 26.0, 30.0, 5.0]})
    row = feedback_for_day(predictions, features, actuals, backtest_mae=4.0).row(0, named=True)
    assert row["devices"] == 3
    assert row["live_mae"] == pytest.approx((2 + 6 + 0) / 3)
    assert row["interval_coverage"] == pytest.approx(2 / 3)  # 26 is above d1's p90 of 25
    assert row["nominal_coverage"] == 0.8
    # same_weekday_last_week: |12-12| + |20-26| + |40-30| = 16 -> 5.33, the best of the three baselines
    assert row["best_baseline"] == "same_weekday_last_week"
    assert row["best_baseline_live_mae"] == pytest.approx(16 / 3)
    assert row["live_skill"] == pytest.approx(1 - (8 / 3) / (16 / 3))
    assert row["mae_ratio_live_to_backtest"] == pytest.approx((8 / 3) / 4.0)
    assert feedback_for_day(predictions, features, actuals.head(0), 4.0).is_empty()
