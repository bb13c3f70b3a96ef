"""Tests for the per-device daily features: silent days, lags, rolling statistics, history, hub totals, calendar."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from smart_home_assets.lib.features import (
    DAILY_USAGE_SCHEMA,
    FEATURES_SCHEMA,
    LOOKBACK_DAYS,
    MIN_HISTORY_DAYS,
    YEAR_DAYS,
    build_features,
    daily_device_usage,
    daily_usage_sql,
    history_ranges,
)
from smart_home_tools import simulate as sim

D = dt.date(2026, 3, 13)  # a Friday, so the predicted day D+1 is a Saturday


def ago(k: int) -> dt.date:
    return D - dt.timedelta(days=k)


def daily(rows: list[tuple[str, str, str, dt.date, float]]) -> pl.DataFrame:
    """Daily usage rows from (device_id, hub_id, device_type, day, energy_wh); active_s = 2 * energy."""
    return pl.DataFrame(
        {
            "partition_date": [r[3] for r in rows],
            "device_id": [r[0] for r in rows],
            "hub_id": [r[1] for r in rows],
            "device_type": [r[2] for r in rows],
            "energy_wh": [float(r[4]) for r in rows],
            "active_s": [2.0 * r[4] for r in rows],
            "event_count": [3 for _ in rows],
        },
        schema=DAILY_USAGE_SCHEMA,
    )


# A: used D-9..D-1 with 10*k Wh on D-k, silent on D.        B: first seen D-2 (500), silent D-1, 300 on D.
# C: seen only on D-28, the window's first day.              E: seen only on D-29, outside the window.
# F: first seen on D (50).                                    G: first seen on D-6 (exactly MIN_HISTORY_DAYS).
ROWS = (
    [("A", "hub-1", "fridge", ago(k), 10.0 * k) for k in range(1, 10)]
    + [("A", "hub-1", "fridge", D + dt.timedelta(days=1), 9999.0)]  # after D: must be ignored
    + [("B", "hub-1", "heating", ago(2), 500.0), ("B", "hub-1", "heating", D, 300.0)]
    + [("C", "hub-2", "lighting", ago(LOOKBACK_DAYS), 40.0)]
    + [("E", "hub-2", "oven", ago(LOOKBACK_DAYS + 1), 70.0)]
    + [("F", "hub-2", "television", D, 50.0)]
    + [("G", "hub-3", "dishwasher", ago(6), 5.0), ("G", "hub-3", "dishwasher", D, 7.0)]
)


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return build_features(daily(ROWS), D)


def row(features: pl.DataFrame, device: str) -> dict:
    rows = features.filter(pl.col("device_id") == device).to_dicts()
    assert len(rows) == 1, f"{device}: {len(rows)} rows"
    return rows[0]


def test_one_row_per_device_seen_in_the_window(features):
    assert features.schema == pl.Schema(FEATURES_SCHEMA)
    assert features["device_id"].to_list() == ["A", "B", "C", "F", "G"]  # not E (D-29), sorted
    assert features["partition_date"].unique().to_list() == [D]
    assert row(features, "B")["hub_id"] == "hub-1" and row(features, "B")["device_type"] == "heating"


def test_silent_day_is_zero_usage_not_missing(features):
    a = row(features, "A")
    assert (a["energy_wh"], a["active_s"], a["event_count"]) == (0.0, 0.0, 0)
    assert row(features, "B")["energy_lag_1"] == 0.0  # known since D-2, silent on D-1
    c = row(features, "C")
    assert c["energy_wh"] == 0.0 and c["energy_lag_7"] == 0.0 and c["energy_roll28_mean"] == 0.0


def test_lag_values_are_exact(features):
    a = row(features, "A")
    assert [a[f"energy_lag_{k}"] for k in (1, 2, 6, 7)] == [10.0, 20.0, 60.0, 70.0]
    b = row(features, "B")
    assert b["energy_wh"] == 300.0 and b["active_s"] == 600.0 and b["event_count"] == 3
    assert b["energy_lag_2"] == 500.0


def test_lags_before_first_appearance_are_null(features):
    b = row(features, "B")
    assert b["energy_lag_6"] is None and b["energy_lag_7"] is None
    f = row(features, "F")
    assert all(f[f"energy_lag_{k}"] is None for k in (1, 2, 6, 7))
    g = row(features, "G")  # first seen exactly 6 days ago: lag 6 known, lag 7 not
    assert g["energy_lag_6"] == 5.0 and g["energy_lag_7"] is None


def test_rolling_statistics_are_exact(features):
    a = row(features, "A")
    week = [60, 50, 40, 30, 20, 10, 0]  # D-6..D, silent D counted as 0
    assert a["energy_roll7_mean"] == pytest.approx(np.mean(week))
    assert a["energy_roll7_std"] == pytest.approx(np.std(week, ddof=1))
    since_first = [10.0 * k for k in range(1, 10)] + [0.0]  # only the 10 days since the first appearance
    assert a["energy_roll28_mean"] == pytest.approx(np.mean(since_first))
    assert a["energy_roll28_std"] == pytest.approx(np.std(since_first, ddof=1))

    b = row(features, "B")
    assert b["energy_roll7_mean"] == pytest.approx(800 / 3)
    assert b["energy_roll7_std"] == pytest.approx(np.std([500, 0, 300], ddof=1))
    f = row(features, "F")  # a single day: the mean is that day, the std is undefined (null, not NaN)
    assert f["energy_roll7_mean"] == 50.0 and f["energy_roll7_std"] is None and f["energy_roll28_std"] is None
    c = row(features, "C")  # D-28 is outside the 28-day window D-27..D: mean over 28 silent days
    assert c["energy_roll28_mean"] == 0.0 and c["energy_roll28_std"] == 0.0
    floats = [c for c, t in FEATURES_SCHEMA.items() if t == pl.Float64]
    assert not any(features[c].is_nan().any() for c in floats)  # undefined is null, never NaN


def test_history_days_and_enough_history_flag(features):
    history = dict(zip(features["device_id"], features["history_days"], strict=True))
    assert history == {"A": 10, "B": 3, "C": LOOKBACK_DAYS + 1, "F": 1, "G": 7}
    enough = dict(zip(features["device_id"], features["has_enough_history"], strict=True))
    assert MIN_HISTORY_DAYS == 7
    assert enough == {"A": True, "B": False, "C": True, "F": False, "G": True}


def test_hub_total_is_over_all_devices_of_the_hub(features):
    hub = dict(zip(features["device_id"], features["hub_energy_wh"], strict=True))
    assert hub == {"A": 300.0, "B": 300.0, "C": 50.0, "F": 50.0, "G": 7.0}


def test_calendar_of_the_day_and_of_the_predicted_day(features):
    f = row(features, "A")
    assert (f["day_of_week"], f["is_weekend"], f["month"]) == (4, False, 3)  # Friday in March
    assert (f["target_day_of_week"], f["target_is_weekend"]) == (5, True)  # Saturday
    sunday = build_features(daily(ROWS), D + dt.timedelta(days=2)).row(0, named=True)
    calendar = ("day_of_week", "is_weekend", "target_day_of_week", "target_is_weekend")
    assert tuple(sunday[c] for c in calendar) == (6, True, 0, False)


def test_empty_window_gives_an_empty_frame_with_the_schema():
    out = build_features(daily(ROWS), D + dt.timedelta(days=60))
    assert out.height == 0 and out.schema == pl.Schema(FEATURES_SCHEMA)


def test_duplicate_daily_rows_are_refused():
    with pytest.raises(ValueError, match="more than one row"):
        build_features(daily(ROWS + [("B", "hub-1", "heating", D, 1.0)]), D)


def test_daily_device_usage_sums_events_per_device_and_day():
    ts = dt.datetime(2026, 3, 13, 8, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "partition_date": [D, D, D, ago(1)],
            "event_id": ["e1", "e2", "e3", "e4"],
            "hub_id": ["hub-1"] * 4,
            "device_id": ["A", "A", "B", "A"],
            "device_type": ["fridge", "fridge", "oven", "fridge"],
            "event_timestamp": [ts, ts + dt.timedelta(hours=1), ts, ts - dt.timedelta(days=1)],
            "duration_s": [10.0, 20.0, 5.0, 1.0],
            "energy_wh": [1.5, 2.5, 7.0, 3.0],
        }
    )
    out = daily_device_usage(events)
    assert out.schema == pl.Schema(DAILY_USAGE_SCHEMA)
    assert out.rows() == [
        (ago(1), "A", "hub-1", "fridge", 3.0, 1.0, 1),
        (D, "A", "hub-1", "fridge", 4.0, 30.0, 2),
        (D, "B", "hub-1", "oven", 7.0, 5.0, 1),
    ]


def test_daily_usage_sql_matches_the_polars_aggregation():
    import duckdb

    seed, start = 2, dt.date(2026, 5, 1)
    fleet = sim.build_fleet(seed, 3)
    events = pl.concat(
        [
            sim.simulate_hub_day(hub, start + dt.timedelta(days=k), seed=seed, events_per_hub=100)
            .to_frame()
            .with_columns(partition_date=pl.lit(start + dt.timedelta(days=k)))
            for k in range(4)
            for hub in fleet
        ]
    )
    with duckdb.connect() as conn:
        conn.register("device_usage", events.to_arrow())
        first, last = start + dt.timedelta(days=1), start + dt.timedelta(days=2)
        got = conn.execute(daily_usage_sql("device_usage"), [first, last]).pl()
    expected = daily_device_usage(events).filter(pl.col("partition_date").is_between(first, last))
    assert got.schema == pl.Schema(DAILY_USAGE_SCHEMA)
    assert got.drop("energy_wh", "active_s").equals(expected.drop("energy_wh", "active_s"))
    assert np.allclose(got["energy_wh"].to_numpy(), expected["energy_wh"].to_numpy())
    assert np.allclose(got["active_s"].to_numpy(), expected["active_s"].to_numpy())
    with pytest.raises(ValueError):
        daily_usage_sql("device_usage; DROP TABLE x")


def test_features_agree_with_simulated_events_and_previous_days():
    """On simulated data: energy_wh is the day's event sum, lag_k equals energy_wh of the row of D-k."""
    seed, start, days = 5, dt.date(2026, 2, 1), 12
    fleet = sim.build_fleet(seed, 3)
    frames = [
        sim.simulate_hub_day(hub, start + dt.timedelta(days=k), seed=seed, events_per_hub=150)
        .to_frame()
        .with_columns(partition_date=pl.lit(start + dt.timedelta(days=k)))
        for k in range(days)
        for hub in fleet
    ]
    events = pl.concat(frames)
    usage = daily_device_usage(events)
    all_days = [start + dt.timedelta(days=k) for k in range(days)]
    feats = pl.concat([build_features(usage, d) for d in all_days])

    last = all_days[-1]
    expected = events.filter(pl.col("partition_date") == last).group_by("device_id").agg(pl.col("energy_wh").sum())
    got = feats.filter(pl.col("partition_date") == last).join(expected, on="device_id", how="left", suffix="_events")
    assert (got["energy_wh"] - got["energy_wh_events"].fill_null(0.0)).abs().max() < 1e-6
    assert got.height == sum(len(h.device_ids) for h in fleet)  # every device of the fleet has a row

    for k in (1, 2, 6, 7):
        earlier = feats.select(
            "device_id", partition_date=pl.col("partition_date") + pl.duration(days=k), earlier=pl.col("energy_wh")
        )
        joined = feats.join(earlier, on=["device_id", "partition_date"], how="left")
        known = joined.filter(pl.col("earlier").is_not_null())
        assert known.height > 0
        assert (known[f"energy_lag_{k}"] == known["earlier"]).all()
        assert joined.filter(pl.col("earlier").is_null())[f"energy_lag_{k}"].is_null().all()


def test_ten_thousand_devices_get_one_row_each():
    """Scale sanity (timings are measured in bench/, never asserted in tests)."""
    rng = np.random.default_rng(0)
    n, days = 10_000, LOOKBACK_DAYS + 1
    frame = pl.DataFrame(
        {
            "partition_date": pl.date_range(ago(days - 1), D, eager=True).to_numpy().repeat(n),
            "device_id": np.tile(np.array([f"hub-{i // 10:05d}-dev-{i}" for i in range(n)]), days),
            "hub_id": np.tile(np.array([f"hub-{i // 10:05d}" for i in range(n)]), days),
            "device_type": np.tile(np.array(["fridge", "heating"]), n * days // 2),
            "energy_wh": rng.gamma(2.0, 500.0, n * days),
            "active_s": rng.gamma(2.0, 500.0, n * days),
            "event_count": rng.integers(1, 50, n * days),
        },
        schema=DAILY_USAGE_SCHEMA,
    ).filter(pl.Series(rng.random(n * days) < 0.7))
    out = build_features(frame, D)
    assert out.height == n
    assert not math.isnan(out["energy_roll28_mean"].mean())


# --- context and longer memory --------------------------------------------------------------------------


def test_prev7_mean_and_the_fleet_and_hub_ratios_are_exact():
    # Two fridges seen for 10 days: X uses 100 a day, Y 300; on D both double. A newcomer Z (first seen D-2)
    # is left out of the fleet's reference. Another hub's heating is steady.
    rows = (
        [("X", "hub-1", "fridge", ago(k), 100.0) for k in range(1, 10)]
        + [("X", "hub-1", "fridge", D, 200.0)]
        + [("Y", "hub-2", "fridge", ago(k), 300.0) for k in range(1, 10)]
        + [("Y", "hub-2", "fridge", D, 600.0)]
        + [("Z", "hub-2", "fridge", ago(2), 5000.0), ("Z", "hub-2", "fridge", D, 5000.0)]
        + [("H", "hub-3", "heating", ago(k), 1000.0) for k in range(0, 10)]
    )
    f = build_features(daily(rows), D)
    x, y, z, h = (row(f, d) for d in "XYZH")
    assert x["energy_prev7_mean"] == 100.0 and y["energy_prev7_mean"] == 300.0
    assert z["energy_prev7_mean"] == pytest.approx(5000.0 / 2)  # D-2 and a silent D-1
    assert x["fleet_type_ratio"] == y["fleet_type_ratio"] == z["fleet_type_ratio"] == pytest.approx(2.0)
    assert x["fleet_type_ratio_lag_1"] == pytest.approx(1.0)
    assert h["fleet_type_ratio"] == pytest.approx(1.0)  # per device type
    assert x["hub_energy_ratio"] == pytest.approx(2.0)
    assert y["hub_energy_ratio"] == pytest.approx((600.0 + 5000.0) / (300.0 + 2500.0))
    assert x["energy_same_weekday_mean4"] == 100.0  # D-6 only: D-13.. are before the first appearance
    assert x["target_day_of_year"] == (D + dt.timedelta(days=1)).timetuple().tm_yday


def test_a_device_first_seen_on_d_has_no_reference_week():
    f = build_features(daily([("F", "hub-1", "oven", D, 50.0)]), D)
    assert row(f, "F")["energy_prev7_mean"] is None and row(f, "F")["fleet_type_ratio"] is None


def test_last_years_values_come_from_a_narrow_window_one_year_back():
    target_last_year = D + dt.timedelta(days=1 - YEAR_DAYS)
    rows = (
        [("A", "hub-1", "heating", ago(k), 10.0) for k in range(0, 8)]
        + [("A", "hub-1", "heating", target_last_year + dt.timedelta(days=k), 100.0 + k) for k in range(-7, 7)]
        + [("B", "hub-1", "heating", ago(k), 20.0) for k in range(0, 8)]
    )
    f = build_features(daily(rows), D)
    a, b = row(f, "A"), row(f, "B")
    assert a["energy_last_year"] == 100.0
    assert a["energy_last_year_mean7"] == pytest.approx(sum(100.0 + k for k in range(-3, 4)) / 7)
    after, before = sum(100.0 + k for k in range(0, 7)), sum(100.0 + k for k in range(-7, 0))
    assert a["fleet_type_last_year_trend"] == b["fleet_type_last_year_trend"] == pytest.approx(after / before)
    assert b["energy_last_year"] is None  # B did not exist a year ago
    # Without a year of history: all null.
    short = build_features(daily([r for r in rows if r[3] > ago(30)]), D)
    assert short["energy_last_year"].null_count() == short["fleet_type_last_year_trend"].null_count() == short.height


def test_a_day_reads_the_lookback_and_fourteen_days_a_year_back_not_the_year_between():
    assert history_ranges(D, D) == [
        (D - dt.timedelta(days=370), D - dt.timedelta(days=357)),
        (D - dt.timedelta(days=LOOKBACK_DAYS), D),
    ]
    # A backfill of a year or more reads one contiguous range.
    first = D - dt.timedelta(days=400)
    assert history_ranges(first, D) == [(first - dt.timedelta(days=370), D)]


def test_no_feature_of_day_d_uses_anything_after_d():
    """Leakage: the features of D built from history that ends on D equal those built from history that
    goes on past D, whatever happens after D (here: a simulated fleet whose later days are scrambled)."""
    fleet = sim.build_fleet(5, 6)
    start = dt.date(2025, 11, 1)
    days = [start + dt.timedelta(days=k) for k in range(400)]
    frames = []
    for d in days:
        w = sim.weather_anomaly(5, d)
        for hub in fleet:
            energy, _ = sim._daily_energy(hub, d, w, sim._rng(5, 2, hub.index, d.toordinal()))
            frames.append(
                pl.DataFrame(
                    {
                        "partition_date": [d] * len(energy),
                        "device_id": hub.device_ids,
                        "hub_id": [hub.hub_id] * len(energy),
                        "device_type": hub.device_types,
                        "energy_wh": energy,
                        "active_s": energy,
                        "event_count": [1] * len(energy),
                    }
                )
            )
    history = pl.concat(frames).filter(pl.col("energy_wh") > 0).cast(DAILY_USAGE_SCHEMA)
    for day in (days[30], days[380]):
        upto = history.filter(pl.col("partition_date") <= day)
        future = history.filter(pl.col("partition_date") > day).with_columns(
            energy_wh=pl.col("energy_wh") * 7 + 1, active_s=pl.col("active_s") * 3, event_count=pl.lit(9, pl.Int64)
        )
        extra = future.head(1).with_columns(
            device_id=pl.lit("new-device"), partition_date=pl.lit(day + dt.timedelta(days=1))
        )
        assert build_features(upto, day).equals(build_features(pl.concat([upto, future, extra]), day)), day
    assert (
        build_features(history, days[380])["energy_last_year"].null_count() < build_features(history, days[380]).height
    )
