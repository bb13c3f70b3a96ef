"""Tests for labels, the time-based holdout, baselines, metrics, the promotion rule and the LightGBM model.

The end-to-end test is the project's central claim: on simulated fleet data, the model forecasts next-day
device energy better (holdout MAE) than every naive baseline.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest

from smart_home_assets import simulate as sim
from smart_home_assets import training as tr
from smart_home_assets.catalog import load_device_catalog
from smart_home_assets.features import build_features, daily_device_usage

DAY0 = dt.date(2026, 3, 1)


def day(k: int) -> dt.date:
    return DAY0 + dt.timedelta(days=k)


def feature_rows(rows: list[tuple[str, int, float, bool]]) -> pl.DataFrame:
    """Minimal feature rows (device_id, day index, energy_wh, has_enough_history) for the label logic."""
    return pl.DataFrame(
        {
            "partition_date": [day(r[1]) for r in rows],
            "device_id": [r[0] for r in rows],
            "energy_wh": [r[2] for r in rows],
            "has_enough_history": [r[3] for r in rows],
        }
    )


# --- labels and split --------------------------------------------------------------------------------


def test_labels_come_from_the_next_days_row():
    features = feature_rows([
        ("a", 0, 1.0, True), ("a", 1, 2.0, True), ("a", 2, 0.0, True), ("a", 3, 4.0, True),
        ("b", 0, 10.0, False), ("b", 1, 20.0, True),  # b's day 0 lacks history; day 1 has no day 2 row
        ("c", 2, 5.0, True), ("c", 4, 6.0, True),  # c's day 3 is missing: day 2 is unlabeled
    ])
    labeled = tr.attach_labels(features)
    got = {(r["device_id"], r["partition_date"]): r[tr.LABEL] for r in labeled.to_dicts()}
    assert got == {("a", day(0)): 2.0, ("a", day(1)): 0.0, ("a", day(2)): 4.0}
    assert day(3) not in labeled["partition_date"].to_list()  # a's last day: nothing to learn from yet


def test_unmetered_next_days_can_be_left_unlabeled_instead_of_zero():
    features = feature_rows([("a", 0, 1.0, True), ("a", 1, 0.0, True), ("a", 2, 3.0, True)]).with_columns(
        event_count=pl.when(pl.col("energy_wh") > 0).then(5).otherwise(0))
    fleet = tr.attach_labels(features)
    sparse = tr.attach_labels(features, silent_next_day_is_unknown=True)
    assert fleet[tr.LABEL].to_list() == [0.0, 3.0]  # the fleet contract: a silent day used nothing
    assert sparse[tr.LABEL].to_list() == [3.0]  # sparse metering: a silent day was not measured


def test_holdout_is_the_last_days_and_never_trained_on():
    labeled = feature_rows([(d, k, float(k), True) for k in range(20) for d in ("a", "b")]).with_columns(
        pl.col("energy_wh").alias(tr.LABEL))
    train, holdout = tr.split_holdout(labeled, holdout_days=7)
    assert holdout["partition_date"].unique().sort().to_list() == [day(k) for k in range(13, 20)]
    assert train["partition_date"].max() < holdout["partition_date"].min()
    assert train.height + holdout.height == labeled.height
    assert train.height == 26 and holdout.height == 14


def test_not_enough_days_is_a_clear_error():
    labeled = feature_rows([("a", k, 1.0, True) for k in range(10)])
    with pytest.raises(ValueError, match=r"need 14 \(7 to train \+ 7 holdout\), got 10"):
        tr.split_holdout(labeled, holdout_days=7)


# --- metrics and baselines -----------------------------------------------------------------------------


def test_regression_metrics_are_exact():
    m = tr.regression_metrics([0.0, 10.0, 20.0], [1.0, 10.0, 17.0])
    assert m["mae"] == pytest.approx(4 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(10 / 3))
    assert m["wape"] == pytest.approx(4 / 30)
    assert tr.regression_metrics([0.0, 0.0], [0.0, 0.0])["wape"] == 0.0
    assert tr.regression_metrics([0.0, 0.0], [1.0, 0.0])["wape"] == math.inf
    with pytest.raises(ValueError):
        tr.regression_metrics([], [])


def test_baselines_are_exact_and_fill_nulls_with_the_latest_actual():
    frame = pl.DataFrame({
        "energy_wh": [5.0, 0.0, 7.0],
        "energy_lag_6": [3.0, None, 1.0],
        "energy_roll7_mean": [4.0, 2.0, None],
        tr.LABEL: [6.0, 1.0, 7.0],
    })
    preds = tr.baseline_predictions(frame)
    assert set(preds) == {"same_as_yesterday", "same_weekday_last_week", "mean_last_7_days"}
    assert preds["same_as_yesterday"].tolist() == [5.0, 0.0, 7.0]
    assert preds["same_weekday_last_week"].tolist() == [3.0, 0.0, 1.0]
    assert preds["mean_last_7_days"].tolist() == [4.0, 2.0, 7.0]

    metrics = tr.baseline_metrics(frame)
    assert metrics["same_as_yesterday"]["mae"] == pytest.approx(2 / 3)
    assert metrics["same_weekday_last_week"]["mae"] == pytest.approx(10 / 3)
    assert metrics["mean_last_7_days"]["mae"] == pytest.approx(3 / 3)
    assert tr.best_baseline(metrics) == ("same_as_yesterday", metrics["same_as_yesterday"])


# --- promotion ---------------------------------------------------------------------------------------


def test_first_model_is_promoted_only_if_it_beats_the_baselines():
    ok = tr.decide_promotion(800.0, None, 900.0, best_baseline_name="mean_last_7_days")
    assert ok.promote and "800.0" in ok.reason and "900.0" in ok.reason and "mean_last_7_days" in ok.reason
    worse = tr.decide_promotion(950.0, None, 900.0, best_baseline_name="mean_last_7_days")
    assert not worse.promote and "950.0" in worse.reason and "900.0" in worse.reason


def test_not_promoted_when_worse_than_the_champion():
    d = tr.decide_promotion(850.0, 845.0, 901.2, best_baseline_name="mean_last_7_days", champion_version=3)
    assert not d.promote
    assert "850.0" in d.reason and "champion v3 (845.0)" in d.reason
    better = tr.decide_promotion(812.3, 845.0, 901.2, best_baseline_name="mean_last_7_days", champion_version=3)
    assert better.promote
    assert better.reason == "MAE 812.3 Wh beats champion v3 (845.0) and best baseline mean_last_7_days (901.2)"


def test_ties_do_not_promote():
    assert not tr.decide_promotion(845.0, 845.0, 900.0).promote
    assert not tr.decide_promotion(900.0, None, 900.0).promote
    # A candidate that beats the champion but not the baselines is not promoted either.
    assert not tr.decide_promotion(800.0, 850.0, 790.0).promote


# --- model -------------------------------------------------------------------------------------------


def simulated_daily_usage(seed: int, hubs: int, start: dt.date, days: int, events_per_hub: int = 200) -> pl.DataFrame:
    fleet = sim.build_fleet(seed, hubs)
    frames = []
    for k in range(days):
        d = start + dt.timedelta(days=k)
        weather = sim.weather_anomaly(seed, d)
        frames += [
            sim.simulate_hub_day(hub, d, seed=seed, events_per_hub=events_per_hub, weather=weather)
            .to_frame().with_columns(partition_date=pl.lit(d))
            for hub in fleet
        ]
    return daily_device_usage(pl.concat(frames))


@pytest.fixture(scope="module")
def simulated() -> dict:
    """40 hubs x 75 winter days -> features -> labels -> 7-day holdout -> trained model."""
    usage = simulated_daily_usage(seed=0, hubs=40, start=dt.date(2026, 1, 5), days=75)
    days = usage["partition_date"].unique().sort().to_list()
    features = pl.concat([build_features(usage, d) for d in days])
    train, holdout = tr.split_holdout(tr.attach_labels(features), holdout_days=7)
    return {"train": train, "holdout": holdout, "model": tr.train_model(train, seed=0)}


def test_model_beats_every_naive_baseline_on_the_holdout(simulated):
    holdout = simulated["holdout"]
    model_metrics = tr.evaluate(simulated["model"], holdout)
    baselines = tr.baseline_metrics(holdout)
    name, best = tr.best_baseline(baselines)
    report = {"model": round(model_metrics["mae"], 1), **{k: round(v["mae"], 1) for k, v in baselines.items()}}
    print("holdout MAE (Wh):", report)
    assert holdout["partition_date"].n_unique() == 7 and holdout.height > 1000
    assert model_metrics["mae"] < best["mae"], report
    decision = tr.decide_promotion(model_metrics["mae"], None, best["mae"], best_baseline_name=name)
    assert decision.promote, decision.reason


def test_training_is_deterministic_and_predictions_non_negative(simulated):
    train, holdout = simulated["train"], simulated["holdout"]
    again = tr.train_model(train, seed=0)
    first = tr.predict(simulated["model"], holdout)
    assert np.array_equal(first, tr.predict(again, holdout))
    assert first.shape == (holdout.height,) and first.min() >= 0.0


def test_model_input_is_numeric_with_device_type_codes_from_the_models_list(simulated):
    model, holdout = simulated["model"], simulated["holdout"]
    types = sorted(load_device_catalog().device_types)
    assert tr.model_device_types(model) == types  # the simulator only uses catalog types
    x = tr.model_input(model, holdout)
    assert list(x.columns) == tr.FEATURE_COLUMNS
    assert all(str(x[c].dtype) == "float64" for c in tr.FEATURE_COLUMNS)  # nothing for pyfunc to re-type
    assert tr.LABEL not in x.columns and "has_enough_history" not in x.columns
    expected = [float(types.index(t)) for t in holdout["device_type"].to_list()]
    assert x["device_type"].tolist() == expected
    assert tr.model_input(model, holdout).equals(tr.to_model_input(holdout, types))
    # A pure function of (row, list): the codes of a row do not depend on the other rows of the batch.
    assert tr.model_input(model, holdout.tail(3))["device_type"].tolist() == expected[-3:]
    # LightGBM knows device_type as categorical, with no pandas categories to match at scoring time.
    assert model.booster_.pandas_categorical == []
    assert model.booster_.dump_model()["feature_infos"]["device_type"]["values"]  # categorical: a value list


def test_unknown_or_null_types_are_missing():
    codes = tr.encode_device_types(["oven", "sauna", None, "fridge"], ["fridge", "oven"])
    assert codes[0] == 1.0 and codes[3] == 0.0 and np.isnan(codes[1]) and np.isnan(codes[2])
    with pytest.raises(ValueError, match="duplicates"):
        tr.encode_device_types(["oven"], ["oven", "oven"])


def test_scoring_a_frame_with_an_unseen_type_keeps_other_rows_consistent(simulated):
    model, rows = simulated["model"], simulated["holdout"].head(50)
    before = tr.predict(model, rows)
    odd = rows.head(1).with_columns(device_type=pl.lit("sauna"))
    after = tr.predict(model, pl.concat([rows, odd]))
    assert np.allclose(after[:50], before)
    assert np.isfinite(after[50]) and after[50] >= 0.0
    # An unseen type scores exactly like a missing one (LightGBM's missing branch of every type split).
    null_type = rows.head(1).with_columns(device_type=pl.lit(None, dtype=pl.String))
    assert tr.predict(model, null_type)[0] == after[50]
    # So does a negative code, which a client of the served model may send instead of null.
    x = tr.model_input(model, null_type).assign(device_type=-1.0)
    assert np.clip(model.predict(x), 0.0, None)[0] == after[50]
    # Only a subset of the types: same predictions as in the full frame.
    fridges = rows.filter(pl.col("device_type") == "fridge")
    assert np.allclose(tr.predict(model, fridges), before[(rows["device_type"] == "fridge").to_numpy()])


def test_a_catalog_change_after_training_does_not_shift_the_models_codes(simulated, tmp_path, monkeypatch):
    model, rows = simulated["model"], simulated["holdout"].head(200)
    before = tr.predict(model, rows)
    # A new type that sorts first would shift every code if scoring re-derived the list from the catalog.
    catalog = tmp_path / "catalog.json"
    types = ["aquarium", *load_device_catalog().device_types]
    catalog.write_text(json.dumps({"name": "test", "version": "2", "device_types": types}))
    monkeypatch.setenv("SMART_HOME_DEVICE_CATALOG", str(catalog))
    assert tr.device_type_categories() == sorted(types)
    assert not tr.to_model_input(rows).equals(tr.model_input(model, rows))  # the catalog's codes differ...
    assert np.array_equal(tr.predict(model, rows), before)  # ...but predict uses the model's own list
    # A model trained now takes the new list (catalog + seen types).
    retrained = tr.train_model(simulated["train"].head(500), params={"n_estimators": 5})
    assert tr.model_device_types(retrained) == sorted(types)


def test_models_trained_on_a_pandas_categorical_still_score(simulated):
    """Versions trained before the numeric codes (device_type as a pandas Categorical) may still be champion."""
    import lightgbm as lgb
    import pandas as pd

    train, rows = simulated["train"].head(3000), simulated["holdout"].head(100)
    types = sorted(load_device_catalog().device_types)

    def categorical_input(frame):
        x = tr.to_model_input(frame, types)
        x["device_type"] = pd.Categorical(frame["device_type"].to_numpy(), categories=types)
        return x

    legacy = lgb.LGBMRegressor(n_estimators=20, verbose=-1, n_jobs=1)
    legacy.fit(categorical_input(train), train[tr.LABEL].to_numpy(), categorical_feature=tr.CATEGORICAL_COLUMNS)
    expected = np.clip(legacy.predict(categorical_input(rows)), 0.0, None)
    assert np.array_equal(tr.predict(legacy, rows), expected)


def test_the_device_type_list_survives_mlflow_save_and_load(simulated, tmp_path):
    """mlflow.lightgbm stores an LGBMRegressor with skops (default) keeping its attributes; pyfunc, what
    ``mlflow models serve`` runs, scores the numeric frame with nulls in the optional columns."""
    import mlflow

    model, rows = simulated["model"], simulated["holdout"].head(30)
    path = tmp_path / "model"
    mlflow.lightgbm.save_model(model, str(path), signature=tr.model_signature(model, simulated["holdout"]),
                               input_example=tr.model_input(model, rows.head(3)),
                               metadata=tr.serving_metadata(model), pip_requirements=[])
    loaded = mlflow.lightgbm.load_model(str(path))
    assert tr.model_device_types(loaded) == tr.model_device_types(model)
    assert np.array_equal(tr.predict(loaded, rows), tr.predict(model, rows))

    pyfunc = mlflow.pyfunc.load_model(str(path))
    assert pyfunc.metadata.metadata["device_type_categories"] == tr.model_device_types(model)
    inputs = {c.name: c for c in pyfunc.metadata.get_input_schema().inputs}
    assert [n for n, c in inputs.items() if not c.required] == tr.NULLABLE_COLUMNS
    assert {c.type.name for c in inputs.values()} == {"double"}
    with_nulls = rows.with_columns(energy_lag_7=pl.lit(None, dtype=pl.Float64),
                                   energy_roll7_std=pl.when(pl.int_range(pl.len()) % 2 == 0).then(None)
                                   .otherwise(pl.col("energy_roll7_std")),
                                   device_type=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("sauna"))
                                   .otherwise(pl.col("device_type")))
    x = tr.model_input(model, with_nulls)
    assert x["energy_lag_7"].isna().all() and np.isnan(x["device_type"][0])
    assert np.allclose(np.clip(np.asarray(pyfunc.predict(x)), 0.0, None), tr.predict(model, with_nulls))


def test_feature_importance_and_plots(simulated, tmp_path):
    model, holdout = simulated["model"], simulated["holdout"]
    imp = tr.feature_importance(model)
    assert sorted(imp["feature"].to_list()) == sorted(tr.FEATURE_COLUMNS)
    assert imp["importance_gain"].is_sorted(descending=True) and imp["importance_gain"].max() > 0
    png = b"\x89PNG\r\n\x1a\n"
    p1 = tr.importance_plot_png(model, tmp_path / "importance.png")
    p2 = tr.predicted_vs_actual_png(holdout[tr.LABEL], tr.predict(model, holdout), tmp_path / "pred_vs_actual.png")
    assert p1.read_bytes()[:8] == png and p2.read_bytes()[:8] == png
