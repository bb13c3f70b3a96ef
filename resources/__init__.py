"""Resources of the smart-home-assets code location: where data lives and the secrets that protect it.

Every resource has an embedded default (a DuckDB file, a local landing folder, a development key) and is
configured from the environment, so the same code runs against a real deployment.
"""

from resources.landing import LandingFile, LandingZone, LandingZoneError
from resources.privacy import PseudonymizationKey
from resources.settings import data_dir, default_landing_dir, default_warehouse_path
from resources.warehouse import DuckDBWarehouse, WarehouseError
from resources.warehouse_api import Warehouse

__all__ = [
    "DuckDBWarehouse",
    "LandingFile",
    "LandingZone",
    "LandingZoneError",
    "PseudonymizationKey",
    "Warehouse",
    "WarehouseError",
    "data_dir",
    "default_landing_dir",
    "default_warehouse_path",
]
