"""Where the embedded defaults live. One environment variable, ``SMART_HOME_DATA_DIR``, moves them all."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV_VAR = "SMART_HOME_DATA_DIR"


def data_dir() -> Path:
    """The data directory: ``$SMART_HOME_DATA_DIR`` or ``<project>/data``. Always absolute."""
    return Path(os.environ.get(DATA_DIR_ENV_VAR) or PROJECT_ROOT / "data").resolve()


def default_landing_dir() -> Path:
    return Path(os.environ.get("SMART_HOME_LANDING_DIR") or data_dir() / "landing").resolve()


def default_warehouse_path() -> Path:
    return Path(os.environ.get("SMART_HOME_WAREHOUSE") or data_dir() / "warehouse.duckdb").resolve()


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, else the project's ``dagster_home/`` that ships the instance configuration."""
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / "dagster_home").resolve()
