"""Where a run's steps execute, chosen by configuration (``SMART_HOME_EXECUTOR``, resources/settings.py).

The embedded default runs every step of a run in its one process: each step process would otherwise re-import
the stack (seconds), and the DuckDB file serializes the steps anyway. On the production profile (Delta Lake
warehouse) steps can go to a Dask cluster's workers, which may sit on other machines (docs/deployment.md).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG, _core_in_process_executor_creation
from dagster._core.events import EngineEventData
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.executor.in_process import InProcessExecutor

from resources.settings import dask_cluster, executor_kind

# How often a running run looks for dead runs that hold pool slots (the guarantee: blocked at most this + a tick).
RECOVERY_INTERVAL_S = 15.0
# The longest a step waiting for a pool slot sleeps between two claims.
MAX_CLAIM_WAIT_S = 5.0


def _wait_until_next_claim(self) -> float:
    """Seconds until a pending pool claim is due again (0 when one is due), at most MAX_CLAIM_WAIT_S."""
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    now = time.time()
    return min(MAX_CLAIM_WAIT_S, max(0.0, min(ready_at - now for ready_at in self._pending_timeouts.values())))


def _claim_wait_spins() -> bool:
    """True while Dagster's ``interval_to_next_pending_claim_check`` returns ``min([0, ...])``, i.e. never a
    positive wait: a step blocked on a pool then re-claims in a busy loop, a core at 100 % for as long as it waits
    (dagster 1.13.27; seen: "Step still blocked by limit for pool duckdb" for 15 minutes at about 90 % CPU)."""
    probe = InstanceConcurrencyContext.__new__(InstanceConcurrencyContext)
    probe._pending_claims, probe._pending_timeouts = {"probe"}, defaultdict(float, {"probe": time.time() + 60.0})
    return InstanceConcurrencyContext.interval_to_next_pending_claim_check(probe) <= 0


if _claim_wait_spins():  # fixed here until it is upstream; tests/system/test_dead_runs.py measures the waiting CPU
    # a deliberate patch of Dagster's method
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (  # type: ignore[method-assign]
        _wait_until_next_claim
    )


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
                plan_context,
                f"marked dead runs failed and freed their pool slots: {', '.join(recovered)}",
                event_specific_data=EngineEventData(),
            )
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(RECOVERY_INTERVAL_S):
                try:
                    recover_dead_runs(instance, host=host, exclude=run_id, by=by)
                except Exception:  # a busy store: the next tick tries again
                    continue

        watcher = threading.Thread(target=watch, name="smart-home-dead-run-recovery", daemon=True)
        watcher.start()
        restore = _end_on_sigterm()
        try:
            for event in super().execute(plan_context, execution_plan):
                yield event
                # Dagster's execution loop (capture_interrupts) maps SIGTERM and SIGINT to a flag that the
                # in-process loop never reads: a waiting run would ignore both. Take them back after each event.
                _end_on_sigterm()
        finally:
            stop.set()
            restore()


def _end_on_sigterm():
    """While a run executes in this (main) thread, SIGTERM and Ctrl-C end it at once, wherever it is, waiting for
    a pool slot included: the interrupt is raised as Dagster's execution interrupt, so the step fails, its pool
    claims are released and the run is marked failed. Every write is one transaction, so an interrupted write
    leaves its partition as it was. Returns what restores the previous handlers."""
    import signal

    from dagster._core.errors import DagsterExecutionInterruptedError

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signo, _frame):
        raise DagsterExecutionInterruptedError(f"the run received {signal.Signals(signo).name}: it stops here")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


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
