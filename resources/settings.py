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
    value = os.environ.get("SMART_HOME_LANDING_DIR") or ""
    if value.startswith("s3://"):
        raise ValueError(f"SMART_HOME_LANDING_DIR={value} is an object store, not a local folder")
    return Path(value or data_dir() / "landing").resolve()


def default_warehouse_path() -> Path:
    return Path(os.environ.get("SMART_HOME_WAREHOUSE") or data_dir() / "warehouse.duckdb").resolve()


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, else the project's ``dagster_home/`` that ships the instance configuration."""
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / "dagster_home").resolve()


def landing_location() -> str:
    """``$SMART_HOME_LANDING_DIR`` as given when it is an ``s3://bucket/prefix`` URI, else the local folder."""
    value = os.environ.get("SMART_HOME_LANDING_DIR") or ""
    return value.rstrip("/") if value.startswith("s3://") else str(default_landing_dir())


WAREHOUSE_BACKENDS = ("duckdb", "delta")


def warehouse_backend() -> str:
    """``$SMART_HOME_WAREHOUSE_BACKEND``: ``duckdb`` (the embedded file, default) or ``delta`` (Delta Lake tables)."""
    backend = (os.environ.get("SMART_HOME_WAREHOUSE_BACKEND") or "duckdb").strip().lower()
    if backend not in WAREHOUSE_BACKENDS:
        raise ValueError(f"SMART_HOME_WAREHOUSE_BACKEND={backend!r}: expected one of {', '.join(WAREHOUSE_BACKENDS)}")
    return backend


def default_delta_uri() -> str:
    """``$SMART_HOME_DELTA_URI`` (a local folder or ``s3://bucket/prefix``), else ``<data>/delta``."""
    value = os.environ.get("SMART_HOME_DELTA_URI") or ""
    if value.startswith("s3://"):
        return value.rstrip("/")
    return str(Path(value).resolve() if value else data_dir() / "delta")
