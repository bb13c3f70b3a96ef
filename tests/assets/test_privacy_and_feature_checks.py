"""The pseudonymization key's rules, and the usage_features checks (Pandera rows, PSI drift)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from asset_checks.feature_checks import features_schema, population_stability_index
from asset_checks.schemas import failure_cases
from resources.privacy import DEVELOPMENT_KEY, PseudonymizationKey, PseudonymizationKeyError, resolve_key
from smart_home_assets.lib.features import build_features, daily_device_usage
from smart_home_tools.simulate import build_fleet, simulate_hub_day


def test_production_refuses_the_development_key(monkeypatch):
    monkeypatch.setenv("SMART_HOME_ENV", "production")
    monkeypatch.delenv("SMART_HOME_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymizationKeyError, match="production"):
        resolve_key()
    monkeypatch.setenv("SMART_HOME_PSEUDONYM_KEY", DEVELOPMENT_KEY)
    with pytest.raises(PseudonymizationKeyError, match="production"):
        resolve_key()
    monkeypatch.setenv("SMART_HOME_PSEUDONYM_KEY", "a-real-secret-of-enough-length-0123456789")
    assert resolve_key() == b"a-real-secret-of-enough-length-0123456789"


def test_short_keys_are_refused_and_the_key_never_shows_in_repr(monkeypatch):
    monkeypatch.delenv("SMART_HOME_ENV", raising=False)
    with pytest.raises(PseudonymizationKeyError, match="too short"):
        resolve_key("short")
    resource = PseudonymizationKey(key="a-real-secret-of-enough-length-0123456789")
    assert "a-real-secret" not in repr(resource) and "a-real-secret" not in resource.fingerprint()


@pytest.fixture(scope="module")
def features():
    fleet = build_fleet(5, 6)
    start = dt.date(2026, 2, 1)
    events = pl.concat(
        [
            simulate_hub_day(h, start + dt.timedelta(days=d), seed=5, events_per_hub=40).to_frame()
            for d in range(10)
            for h in fleet
        ]
    )
    daily = daily_device_usage(events.with_columns(partition_date=pl.col("event_timestamp").dt.date()))
    return build_features(daily, start + dt.timedelta(days=9))


def test_feature_rows_pass_and_each_fault_fails(features):
    assert failure_cases(features_schema(), features).height == 0
    negative = features.with_columns(
        energy_lag_1=pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("energy_lag_1"))
    )
    assert set(failure_cases(features_schema(), negative)["column"]) == {"energy_lag_1"}
    missing = features.with_columns(hub_energy_wh=pl.lit(None, pl.Float64))
    assert "hub_energy_wh" in set(failure_cases(features_schema(), missing)["column"])
    doubled = pl.concat([features, features.head(1)])
    assert "multiple_fields_uniqueness" in set(failure_cases(features_schema(), doubled)["check"])


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.gamma(2.0, 500.0, 5000)
    assert population_stability_index(reference, rng.gamma(2.0, 500.0, 5000)) < 0.05
    assert population_stability_index(reference, rng.gamma(2.0, 500.0, 5000) * 3) > 0.2
