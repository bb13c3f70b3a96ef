"""Where a run's steps execute, chosen by configuration (``SMART_HOME_EXECUTOR``, resources/settings.py).

The embedded default runs every step of a run in its one process: each step process would otherwise re-import
the stack (seconds), and the DuckDB file serializes the steps anyway. On the production profile (Delta Lake
warehouse) steps can go to a Dask cluster's workers, which may sit on other machines (docs/deployment.md).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG, _core_in_process_executor_creation
from dagster._core.events import EngineEventData
from dagster._core.executor.in_process import InProcessExecutor

from resources.settings import dask_cluster, executor_kind

# How often a running run looks for dead runs that hold pool slots (the guarantee: blocked at most this + a tick).
RECOVERY_INTERVAL_S = 15.0


class RecoveringInProcessExecutor(InProcessExecutor):
    """Dagster's in-process executor, plus: a run whose process died (SIGKILL, power loss) never blocks this one.

    Pool slots (``duckdb``) are held in the instance; a killed ``dagster asset materialize`` never gives its slot
    back, and without the daemon's run monitoring every later run would wait for it for ever. So every run tags
    itself with its host, and while it executes it marks the runs of the same host whose process is gone as
    failed and frees their slots (``recovery.recover_dead_runs``), at its start and every
    :data:`RECOVERY_INTERVAL_S` seconds. Runs of other hosts are left to the daemon's run monitoring.
    """

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        from smart_home_assets.recovery import RUN_HOST_TAG, recover_dead_runs

        instance, run_id, host = plan_context.instance, plan_context.run_id, socket.gethostname()
        instance.add_run_tags(run_id, {RUN_HOST_TAG: host})
        by = f"run {run_id[:8]}"
        recovered = recover_dead_runs(instance, host=host, exclude=run_id, by=by)
        if recovered:
            yield dg.DagsterEvent.engine_event(
                plan_context, f"marked dead runs failed and freed their pool slots: {', '.join(recovered)}",
                event_specific_data=EngineEventData())
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(RECOVERY_INTERVAL_S):
                try:
                    recover_dead_runs(instance, host=host, exclude=run_id, by=by)
                except Exception:  # a busy store: the next tick tries again
                    continue

        watcher = threading.Thread(target=watch, name="smart-home-dead-run-recovery", daemon=True)
        watcher.start()
        try:
            yield from super().execute(plan_context, execution_plan)
        finally:
            stop.set()


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def recovering_in_process_executor(init_context) -> RecoveringInProcessExecutor:
    """``in_process`` with dead-run recovery (:class:`RecoveringInProcessExecutor`); the same config."""
    base = _core_in_process_executor_creation(init_context.executor_config)
    return RecoveringInProcessExecutor(retries=base.retries, step_dependency_config=base.step_dependency_config)


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
    return recovering_in_process_executor
