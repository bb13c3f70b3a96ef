"""feedback_for_day's fields that tests/lib/test_scoring.py leaves unchecked: the dates, version, WAPE and backtest
columns, which devices count, the baseline tie-break, and the cases where a field has no value (None)."""

import datetime as dt

import polars as pl
import pytest

from smart_home_assets.lib.scoring import FEEDBACK_SCHEMA, NOMINAL_COVERAGE, feedback_for_day

D = dt.date(2026, 3, 10)


def predictions(devices, predicted, p10=None, p90=None, versions=None) -> pl.DataFrame:
    n = len(devices)
    return pl.DataFrame(
        {
            "partition_date": [D] * n,
            "target_date": [D + dt.timedelta(days=1)] * n,
            "device_id": devices,
            "predicted_energy_wh": predicted,
            "p10_wh": p10 or [None] * n,
            "p90_wh": p90 or [None] * n,
            "model_version": versions or ["2"] * n,
        },
        schema_overrides={"p10_wh": pl.Float64, "p90_wh": pl.Float64},
    )


def features(devices, energy, lag6, roll7) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": devices,
            "device_type": ["fridge"] * len(devices),
            "energy_wh": energy,
            "energy_lag_6": lag6,
            "energy_roll7_mean": roll7,
        }
    )


def actuals(devices, energy) -> pl.DataFrame:
    return pl.DataFrame({"device_id": devices, "energy_wh": energy})


def test_only_devices_with_a_prediction_features_and_an_actual_count_and_every_field_is_exact():
    # d3 has no actual (it sent nothing on D+1), d4 no features row, "late" an actual but no prediction
    preds = predictions(
        ["d0", "d1", "d2", "d3", "d4"],
        [10.0, 20.0, 30.0, 99.0, 99.0],
        p10=[5.0, 15.0, 29.0, 0.0, 0.0],
        p90=[15.0, 25.0, 31.0, 200.0, 200.0],
    )
    feats = features(["d0", "d1", "d2", "d3"], [11.0, 22.0, 33.0, 5.0], [12.0, 20.0, 40.0, 5.0], [8.0, 8.0, 8.0, 5.0])
    frame = feedback_for_day(
        preds, feats, actuals(["d0", "d1", "d2", "d4", "late"], [12.0, 26.0, 30.0, 1.0, 7.0]), backtest_mae=4.0
    )
    assert frame.schema == pl.Schema(FEEDBACK_SCHEMA) and frame.height == 1
    row = frame.row(0, named=True)
    assert row["partition_date"] == D and row["target_date"] == D + dt.timedelta(days=1)
    assert row["model_version"] == "2" and row["devices"] == 3
    assert row["live_mae"] == pytest.approx(8 / 3)  # |10-12| + |20-26| + |30-30|
    assert row["live_wape"] == pytest.approx(8 / 68)  # over the actuals 12 + 26 + 30
    assert row["interval_coverage"] == pytest.approx(2 / 3) and row["nominal_coverage"] == NOMINAL_COVERAGE
    # same_as_yesterday |11-12| + |22-26| + |33-30| = 8, same_weekday_last_week 16, mean_last_7_days 44
    assert row["best_baseline"] == "same_as_yesterday" and row["best_baseline_live_mae"] == pytest.approx(8 / 3)
    assert row["live_skill"] == pytest.approx(0.0)
    assert row["backtest_mae"] == 4.0 and row["mae_ratio_live_to_backtest"] == pytest.approx((8 / 3) / 4.0)


def test_a_baseline_champion_without_interval_nor_backtest_leaves_those_fields_empty():
    preds = predictions(["d0", "d1"], [10.0, 20.0])  # p10/p90 null: an unregistered baseline has no interval
    row = feedback_for_day(
        preds,
        features(["d0", "d1"], [10.0, 20.0], [1.0, 1.0], [1.0, 1.0]),
        actuals(["d0", "d1"], [12.0, 24.0]),
        backtest_mae=None,
    ).row(0, named=True)
    assert row["interval_coverage"] is None
    assert row["backtest_mae"] is None and row["mae_ratio_live_to_backtest"] is None
    assert row["live_mae"] == pytest.approx(3.0) and row["best_baseline"] == "same_as_yesterday"


def test_a_perfect_baseline_leaves_the_skill_empty_and_ties_go_to_the_first_name():
    # every baseline is exact (actual = energy on D = lag 6 = 7-day mean): no skill can be computed
    preds = predictions(["d0", "d1"], [11.0, 19.0], versions=["3", "1"])
    row = feedback_for_day(
        preds,
        features(["d0", "d1"], [10.0, 20.0], [10.0, 20.0], [10.0, 20.0]),
        actuals(["d0", "d1"], [10.0, 20.0]),
        backtest_mae=0.0,
    ).row(0, named=True)
    assert row["best_baseline_live_mae"] == 0.0 and row["live_skill"] is None
    assert row["best_baseline"] == "mean_last_7_days"  # the three tie at 0; sorted by (MAE, name)
    assert row["mae_ratio_live_to_backtest"] is None  # a backtest MAE of 0 gives no ratio
    assert row["model_version"] == "1,3"  # the day mixes versions: all are named, sorted
