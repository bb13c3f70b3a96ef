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


# Set by the project's executor on every run it executes (smart_home_assets/executors.py): the machine the run's
# process lives on, so a run on another machine is never judged by a pid that means nothing here.
RUN_HOST_TAG = "smart_home/host"


def recover_dead_runs(
    instance: dg.DagsterInstance, *, host: str | None = None, exclude: str | None = None, by: str = "smart-home recover"
) -> list[str]:
    """Mark in-progress runs whose process is gone as failed and free their concurrency slots; their ids.

    ``host``: only runs tagged with that host (:data:`RUN_HOST_TAG`); ``exclude``: a run id never to touch.
    """
    recovered = []
    filters = dg.RunsFilter(statuses=IN_PROGRESS, tags={RUN_HOST_TAG: host} if host else {})
    for run in instance.get_runs(filters=filters):
        if run.run_id == exclude:
            continue
        pid = run_pid(instance, run.run_id)
        if pid is None or _alive(pid):
            continue
        instance.report_run_failed(run, f"the run's process (pid {pid}) is gone: recovered by {by}")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered
