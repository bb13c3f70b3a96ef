"""The code location loads, and its graph is what the docs say (a change must show up here as a diff)."""

import subprocess
import sys

import dagster as dg

from smart_home_assets.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_shape():
    graph = defs.resolve_asset_graph()
    shape = {
        key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert shape == {
        "raw_usage": [],
        "device_usage": ["raw_usage"],
        "device_usage_quarantine": ["raw_usage"],
        "usage_features": ["device_usage"],
        "usage_model": ["usage_features"],
        "usage_predictions": ["usage_features", "usage_model"],
        "online_predictions": [],  # the prediction service's store, outside Dagster
        "prediction_feedback": ["online_predictions", "usage_features", "usage_predictions"],
    }
    unpartitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is None}
    assert unpartitioned == {"usage_model"}
    labels = {
        k.to_user_string(): graph.get(k).automation_condition.get_label()
        for k in graph.get_all_asset_keys()
        if graph.get(k).automation_condition
    }
    assert labels == {
        "device_usage": "follows_upstream_partitions",
        "device_usage_quarantine": "follows_upstream_partitions",
        "usage_features": "follows_history_window",
        "usage_model": "retrain_when_features_land_or_decay",
        "usage_predictions": "predict_latest_days",
        "prediction_feedback": "score_when_actuals_land",
    }
    checks = sorted(k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("device_usage"))
    assert checks == sorted(
        [
            "check_user_id_not_null",
            "check_event_timestamp_in_partition_window",
            "check_device_type_in_catalog",
            "check_event_id_unique",
            "check_energy_and_duration_plausible",
            "check_required_fields_present",
            "check_rows_conserved",
            "check_quality_score",
            "freshness_check",
        ]
    )
    freshness = {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "freshness_check"}
    assert freshness == {"device_usage", "usage_model"}
    assert not any(graph.get_check_spec(k).blocking for k in graph.asset_check_keys if k.name == "freshness_check")
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking >= {"check_rows_conserved", "check_features_valid", "check_champion_beats_naive_baselines"}
    assert not blocking & {"check_quality_score", "check_feature_drift_psi"}


def test_sensors_run_by_default():
    for sensor in defs.sensors:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name


def test_definitions_module_does_not_import_heavy_libraries():
    code = (
        "import sys, smart_home_assets.definitions; "
        "print(','.join(m for m in ('lightgbm', 'mlflow', 'sklearn', 'pandera', 'pandas', 'pyarrow', 'deltalake') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_features_lineage_holds_their_28_day_lookback():
    """usage_features D reads device_usage D-28..D, and the lineage says so (late days re-run what they feed)."""
    from smart_home_assets.assets.features import usage_features
    from smart_home_assets.partitions import daily_partitions

    mapping = usage_features.get_partition_mapping(dg.AssetKey("device_usage"))
    day = daily_partitions.subset_with_partition_keys(["2026-03-01"])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        day, daily_partitions, daily_partitions
    ).partitions_subset.get_partition_keys()
    assert (min(upstream), max(upstream), len(upstream)) == ("2026-02-01", "2026-03-01", 29)
