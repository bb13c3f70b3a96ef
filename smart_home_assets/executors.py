"""Where a run's steps execute, chosen by configuration (``SMART_HOME_EXECUTOR``, resources/settings.py).

The embedded default runs every step of a run in its one process: each step process would otherwise re-import
the stack (seconds), and the DuckDB file serializes the steps anyway. On the production profile (Delta Lake
warehouse) steps can go to a Dask cluster's workers, which may sit on other machines (docs/deployment.md).
"""

from __future__ import annotations

import dagster as dg

from resources.settings import dask_cluster, executor_kind


def executor_from_environment() -> dg.ExecutorDefinition:
    kind = executor_kind()
    if kind == "multiprocess":
        return dg.multiprocess_executor
    if kind == "dask":
        # only where it is used: it imports dask.distributed
        from smart_home_assets.dask_execution import record_safe_dask_executor

        return record_safe_dask_executor.configured({"cluster": dask_cluster()}, name="dask")
    if kind == "k8s_job":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.in_process_executor
