"""Pandera schemas and the Dagster asset checks that run them."""

from asset_checks.device_usage_checks import device_usage_checks

ALL_ASSET_CHECKS = [device_usage_checks]
