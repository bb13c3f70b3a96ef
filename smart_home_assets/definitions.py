"""The code location: every asset, check, sensor and resource of smart-home-assets, assembled in one place.

Heavy libraries (lightgbm, mlflow) are imported inside the functions that use them, never here: the code
server, every run and every step import this module.
"""

from __future__ import annotations

import dagster as dg

from asset_checks import ALL_ASSET_CHECKS
from resources import LandingZone, Warehouse
from resources.privacy import key_from_environment
from smart_home_assets.assets.usage import device_usage, raw_usage
from smart_home_assets.automation import automation_sensor
from smart_home_assets.sensors import ingest_job, landing_zone_sensor


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment (embedded defaults when unset): see README 'Configuration'."""
    return {
        "landing": LandingZone(),
        "warehouse": Warehouse(),
        "pseudonym_key": key_from_environment(),
    }


defs = dg.Definitions(
    assets=[raw_usage, device_usage],
    asset_checks=ALL_ASSET_CHECKS,
    jobs=[ingest_job],
    sensors=[landing_zone_sensor, automation_sensor],
    resources=build_resources(),
    # One process per run: every step would otherwise re-import the stack (seconds each), and DuckDB
    # serializes the steps anyway (see dagster_home/dagster.yaml).
    executor=dg.in_process_executor,
)
