"""Pandera schemas and the Dagster asset checks that run them."""

from asset_checks.device_usage_checks import device_usage_checks
from asset_checks.feature_checks import usage_features_checks
from asset_checks.freshness_checks import FRESHNESS_CHECKS
from asset_checks.model_checks import check_champion_beats_naive_baselines, check_live_accuracy_holds

ALL_ASSET_CHECKS = [
    device_usage_checks,
    usage_features_checks,
    check_champion_beats_naive_baselines,
    check_live_accuracy_holds,
    *FRESHNESS_CHECKS,
]
