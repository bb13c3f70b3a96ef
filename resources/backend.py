"""One setting selects the warehouse: ``SMART_HOME_WAREHOUSE_BACKEND=duckdb`` (default) or ``delta``."""

from __future__ import annotations

from resources.settings import warehouse_backend
from resources.warehouse import DuckDBWarehouse
from resources.warehouse_api import Warehouse


def warehouse_from_environment(duckdb_path: str | None = None) -> Warehouse:
    """The DuckDB warehouse (at ``duckdb_path``, default ``$SMART_HOME_WAREHOUSE``) or, with
    ``SMART_HOME_WAREHOUSE_BACKEND=delta``, a ``DeltaWarehouse`` at ``$SMART_HOME_DELTA_URI``: the same interface,
    so the assets do not change (docs/deployment.md)."""
    if warehouse_backend() == "delta":
        from resources.delta_warehouse import DeltaWarehouse  # deltalake is imported only when it is used

        return DeltaWarehouse()
    return DuckDBWarehouse(database=duckdb_path or "")
