"""check_feature_drift_psi, the real multi-asset check run by Dagster on a real DuckDB warehouse: a day whose
energy readings triple warns (without blocking), an ordinary day of the same fleet passes."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from asset_checks.feature_checks import DRIFT, PSI_WARN_ABOVE, ROWS, usage_features_checks
from resources import DuckDBWarehouse
from smart_home_assets.assets.features import usage_features
from smart_home_assets.lib.features import build_features, daily_device_usage
from smart_home_assets.lib.tables import USAGE_FEATURES
from smart_home_tools.simulate import build_fleet, simulate_hub_day

# January: seasonal change over the 28-day reference is small. (In spring the same fleet's ordinary days
# reach a PSI above 0.2 on energy_wh: the seasonal trend alone warns.)
START, DAYS = dt.date(2026, 1, 1), 29
LAST = START + dt.timedelta(days=DAYS - 1)
KEYS = [str(START + dt.timedelta(days=d)) for d in range(DAYS)]


@pytest.fixture(scope="module")
def fleet_features() -> dict[str, pl.DataFrame]:
    """usage_features of 25 simulated hubs over 29 days, and the last day again with every event's energy x3
    (a firmware update that reports in the wrong unit): the same devices, event counts and durations."""
    events = pl.concat(
        [
            simulate_hub_day(hub, START + dt.timedelta(days=d), seed=3, events_per_hub=80).to_frame()
            for d in range(DAYS)
            for hub in build_fleet(3, 25)
        ]
    )
    events = events.with_columns(partition_date=pl.col("event_timestamp").dt.date())
    daily = daily_device_usage(events)
    normal = pl.concat([build_features(daily, START + dt.timedelta(days=d)) for d in range(DAYS)])
    tripled = events.with_columns(
        energy_wh=pl.when(pl.col("partition_date") == LAST).then(pl.col("energy_wh") * 3).otherwise(pl.col("energy_wh"))
    )
    return {"normal": normal, "shifted_last_day": build_features(daily_device_usage(tripled), LAST)}


def run_feature_checks(warehouse: DuckDBWarehouse, instance: dg.DagsterInstance, first: str, last: str):
    """The check step alone (as in a backfill run after the features were written), over first..last."""
    result = dg.materialize(
        [usage_features, usage_features_checks],
        resources={"warehouse": warehouse},
        instance=instance,
        selection=dg.AssetSelection.checks_for_assets(usage_features),
        raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    return result, {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}


def test_a_shifted_day_warns_and_an_ordinary_day_passes(project_env, fleet_features):
    warehouse = DuckDBWarehouse(database=str(project_env["warehouse"]))
    normal, shifted = fleet_features["normal"], fleet_features["shifted_last_day"]
    warehouse.replace_partitions({USAGE_FEATURES: normal.filter(pl.col("partition_date") < LAST)}, KEYS[:-1])
    warehouse.replace_partitions({USAGE_FEATURES: shifted}, [KEYS[-1]])
    day_before = KEYS[-2]
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        result, evaluations = run_feature_checks(warehouse, instance, day_before, KEYS[-1])
        assert result.success  # the drift check warns; it does not block
        assert set(evaluations) == {(c, k) for c in (ROWS, DRIFT) for k in (day_before, KEYS[-1])}
        assert evaluations[(ROWS, KEYS[-1])].passed and evaluations[(ROWS, day_before)].passed

        ordinary = evaluations[(DRIFT, day_before)]
        meta = {k: v.value for k, v in ordinary.metadata.items()}
        assert ordinary.passed and meta["max_psi"] <= PSI_WARN_ABOVE
        assert meta["reference_rows"] == normal.filter(pl.col("partition_date") < START + dt.timedelta(days=27)).height

        drifted = evaluations[(DRIFT, KEYS[-1])]
        meta = {k: v.value for k, v in drifted.metadata.items()}
        assert not drifted.passed and drifted.severity == dg.AssetCheckSeverity.WARN
        assert meta["max_psi"] > PSI_WARN_ABOVE and meta["psi"]["energy_wh"] == meta["max_psi"]
        # event counts and durations did not change, and the check says so
        assert meta["psi"]["event_count"] <= PSI_WARN_ABOVE and meta["psi"]["active_s"] <= PSI_WARN_ABOVE

        # The same day with its ordinary readings passes: the warning came from the shift, not from the day.
        warehouse.replace_partitions({USAGE_FEATURES: normal.filter(pl.col("partition_date") == LAST)}, [KEYS[-1]])
        result, evaluations = run_feature_checks(warehouse, instance, KEYS[-1], KEYS[-1])
        assert result.success
        rerun = evaluations[(DRIFT, KEYS[-1])]
        assert rerun.passed and {k: v.value for k, v in rerun.metadata.items()}["max_psi"] <= PSI_WARN_ABOVE


def test_a_day_without_history_before_it_passes_with_no_reference(project_env, fleet_features):
    """The first day of a fleet has nothing to drift from: no PSI, passed, and the check says it had 0 rows."""
    warehouse = DuckDBWarehouse(database=str(project_env["warehouse"]))
    first = fleet_features["normal"].filter(pl.col("partition_date") == START)
    warehouse.replace_partitions({USAGE_FEATURES: first}, [KEYS[0]])
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        result, evaluations = run_feature_checks(warehouse, instance, KEYS[0], KEYS[0])
    meta = {k: v.value for k, v in evaluations[(DRIFT, KEYS[0])].metadata.items()}
    assert result.success and evaluations[(DRIFT, KEYS[0])].passed
    assert meta["reference_rows"] == 0 and meta["psi"] == {} and meta["max_psi"] == 0.0
