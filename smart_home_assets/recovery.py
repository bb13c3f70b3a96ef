"""Recover from runs that died without a trace (SIGKILL, power loss) when no daemon is watching.

A run holds a slot of the ``duckdb`` pool while a step writes; a process killed mid-step never gives it back,
and every later run then waits for the slot forever. The daemon's run monitoring cleans up runs it launched;
runs of ``dagster asset materialize`` (CLI backfills) have no monitor. ``recover_dead_runs`` finds in-progress
runs whose process (recorded in the run's events) no longer exists on this machine, marks them failed and frees
their pool slots. The data needs no repair: every partition write is one DuckDB transaction.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.events import DagsterEventType

IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid that executed the run, from its RUN_START event (None when it never started)."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.RUN_START):
        if record.dagster_event is not None and record.dagster_event.pid:
            return int(record.dagster_event.pid)
    return None


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark in-progress runs whose process is gone as failed and free their concurrency slots; their ids."""
    recovered = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        pid = run_pid(instance, run.run_id)
        if pid is None or _alive(pid):
            continue
        instance.report_run_failed(run, f"the run's process (pid {pid}) is gone: recovered by smart-home recover")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered
