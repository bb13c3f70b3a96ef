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


EXECUTORS = ("in_process", "multiprocess", "dask", "k8s_job")


def executor_kind() -> str:
    """``$SMART_HOME_EXECUTOR``: where a run's steps execute. ``in_process`` (default: one process per run),
    ``multiprocess`` (one process per step), ``dask`` (steps on a Dask cluster's workers) or ``k8s_job`` (a
    Kubernetes Job per step, dagster-k8s; its settings are run config: deploy/k8s/step-executor.yaml)."""
    kind = (os.environ.get("SMART_HOME_EXECUTOR") or "in_process").strip().lower().replace("-", "_")
    if kind not in EXECUTORS:
        raise ValueError(f"SMART_HOME_EXECUTOR={kind!r}: expected one of {', '.join(EXECUTORS)}")
    return kind


def dask_cluster() -> dict:
    """The dagster-dask ``cluster`` config: ``$SMART_HOME_DASK_SCHEDULER`` (``tcp://host:8786``) joins an existing
    cluster; unset, each run starts a local one with ``$SMART_HOME_DASK_WORKERS`` (default 2) worker processes."""
    address = (os.environ.get("SMART_HOME_DASK_SCHEDULER") or "").strip()
    if address:
        return {"existing": {"address": address}}
    workers = int(os.environ.get("SMART_HOME_DASK_WORKERS") or 2)
    if workers < 1:
        raise ValueError(f"SMART_HOME_DASK_WORKERS={workers}: at least 1")
    return {"local": {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}}


DEFAULT_BATCH_ROWS = 250_000


def batch_rows() -> int:
    """``$SMART_HOME_BATCH_ROWS``: about how many rows a step holds in memory at once while it ingests, cleans or
    checks one day (whole files and hubs per batch; docs/benchmarks.md measures the peak memory it gives)."""
    value = int(os.environ.get("SMART_HOME_BATCH_ROWS") or DEFAULT_BATCH_ROWS)
    if value < 1:
        raise ValueError(f"SMART_HOME_BATCH_ROWS={value}: at least 1")
    return value
