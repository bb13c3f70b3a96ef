"""The code location: every asset, check, sensor and resource of smart-home-assets, assembled in one place.

Heavy libraries (lightgbm, mlflow) are imported inside the functions that use them, never here: the code
server, every run and every step import this module.
"""

import dagster as dg

from asset_checks import ALL_ASSET_CHECKS
from asset_checks.freshness_checks import freshness_checks_sensor
from resources import LandingZone
from resources.backend import warehouse_from_environment
from resources.online_store import OnlineStoreResource
from resources.privacy import key_from_environment
from resources.tracking import ModelRegistry, mlflow_tracking
from smart_home_assets.alerts import alerts_sensor
from smart_home_assets.assets.features import usage_features
from smart_home_assets.assets.metadata import with_owners
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.online import online_predictions, online_predictions_job, online_predictions_sensor
from smart_home_assets.assets.predictions import prediction_feedback, usage_predictions
from smart_home_assets.assets.usage import device_usage, raw_usage
from smart_home_assets.automation import automation_sensor
from smart_home_assets.executors import executor_from_environment
from smart_home_assets.lib.tables import DEVICE_USAGE, DEVICE_USAGE_QUARANTINE, RAW_USAGE
from smart_home_assets.metrics import metrics_sensor
from smart_home_assets.partitions import daily_partitions
from smart_home_assets.sensors import ingest_job, landing_zone_sensor

# Ingest and clean days in one run per partition, from the UI's launchpad, `dagster job backfill` or the
# GraphQL API (tests/system/test_ui.py launches it the way an external scheduler would).
ingest_and_clean_job = dg.define_asset_job(
    "ingest_and_clean",
    selection=dg.AssetSelection.assets(RAW_USAGE, DEVICE_USAGE, DEVICE_USAGE_QUARANTINE),
    partitions_def=daily_partitions,
    description="raw_usage, device_usage and device_usage_quarantine (with its checks) for the selected days.",
)


def build_resources() -> dict:
    """Resources from the environment (embedded defaults when unset): see README 'Configuration'."""
    return {
        "landing": LandingZone(),
        "warehouse": warehouse_from_environment(),  # DuckDB file or Delta tables: docs/deployment.md
        "pseudonym_key": key_from_environment(),
        "model_registry": ModelRegistry(),
        "mlflow": mlflow_tracking,
        "online_store": OnlineStoreResource(),  # the prediction service's answers (SMART_HOME_ONLINE_STORE)
    }


defs = dg.Definitions(
    assets=with_owners(
        [
            raw_usage,
            device_usage,
            usage_features,
            usage_model,
            usage_predictions,
            online_predictions,
            prediction_feedback,
        ]
    ),
    asset_checks=ALL_ASSET_CHECKS,
    jobs=[ingest_job, ingest_and_clean_job, online_predictions_job],
    sensors=[
        landing_zone_sensor,
        automation_sensor,
        online_predictions_sensor,
        alerts_sensor,
        freshness_checks_sensor,
        metrics_sensor,
    ],
    resources=build_resources(),
    # One process per run by default; SMART_HOME_EXECUTOR=dask puts steps on a Dask cluster (executors.py).
    executor=executor_from_environment(),
)
