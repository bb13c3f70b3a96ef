"""The code location: every asset, check, sensor and resource of smart-home-assets, assembled in one place.

Heavy libraries (lightgbm, mlflow) are imported inside the functions that use them, never here: the code
server, every run and every step import this module.
"""

import dagster as dg

from asset_checks import ALL_ASSET_CHECKS
from resources import LandingZone, Warehouse
from resources.privacy import key_from_environment
from resources.tracking import ModelRegistry, mlflow_tracking
from smart_home_assets.assets.features import usage_features
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.predictions import prediction_feedback, usage_predictions
from smart_home_assets.assets.usage import device_usage, raw_usage
from smart_home_assets.automation import automation_sensor
from smart_home_assets.sensors import ingest_job, landing_zone_sensor


def build_resources() -> dict:
    """Resources from the environment (embedded defaults when unset): see README 'Configuration'."""
    return {
        "landing": LandingZone(),
        "warehouse": Warehouse(),
        "pseudonym_key": key_from_environment(),
        "model_registry": ModelRegistry(),
        "mlflow": mlflow_tracking,
    }


defs = dg.Definitions(
    assets=[raw_usage, device_usage, usage_features, usage_model, usage_predictions, prediction_feedback],
    asset_checks=ALL_ASSET_CHECKS,
    jobs=[ingest_job],
    sensors=[landing_zone_sensor, automation_sensor],
    resources=build_resources(),
    # One process per run: every step would otherwise re-import the stack (seconds each), and DuckDB
    # serializes the steps anyway (see dagster_home/dagster.yaml).
    executor=dg.in_process_executor,
)
