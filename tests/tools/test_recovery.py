"""recover_dead_runs on a real Dagster instance (the project's dagster.yaml, SQLite): a run whose process is gone
is marked failed and its pool slot freed; a live run, another host's run and the excluded run keep theirs.
``smart-home recover`` does it by hand. (tests/system/test_dead_runs.py proves it on SIGKILLed CLI runs.)"""

import os
import socket
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.test_utils import create_run_for_test

from smart_home_assets.lib.tables import DUCKDB_POOL
from smart_home_assets.recovery import RUN_HOST_TAG, recover_dead_runs
from smart_home_tools import cli

HERE, ELSEWHERE = socket.gethostname(), "another-host"


def dead_pid() -> int:
    """The pid of a process that has exited (the kernel does not hand it out again within a test)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def started_run(instance: dg.DagsterInstance, pid: int, host: str) -> str:
    """A STARTED run whose RUN_START event names ``pid``, holding a slot of the duckdb pool."""
    run = create_run_for_test(
        instance, job_name="ingest", status=dg.DagsterRunStatus.STARTING, tags={RUN_HOST_TAG: host}
    )
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name="ingest", message="started", pid=pid), run_id=run.run_id
    )
    assert instance.event_log_storage.claim_concurrency_slot(DUCKDB_POOL, run.run_id, "raw_usage", 0).is_claimed
    return run.run_id


@pytest.fixture
def instance(project_env):
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(DUCKDB_POOL, 10)
        yield instance


def slot_holders(instance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots}


def status(instance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_dead_runs_of_the_host_are_failed_and_freed_and_the_others_keep_their_slots(instance):
    dead = started_run(instance, dead_pid(), HERE)
    alive = started_run(instance, os.getpid(), HERE)
    dead_elsewhere = started_run(instance, dead_pid(), ELSEWHERE)
    me = started_run(instance, dead_pid(), HERE)  # the run doing the recovery (its pid is never judged)
    assert {status(instance, r) for r in (dead, alive, dead_elsewhere, me)} == {dg.DagsterRunStatus.STARTED}

    assert recover_dead_runs(instance, host=HERE, exclude=me, by="run 12345678") == [dead]
    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert dead not in slot_holders(instance)
    assert slot_holders(instance) == {alive, dead_elsewhere, me}
    assert {status(instance, r) for r in (alive, dead_elsewhere, me)} == {dg.DagsterRunStatus.STARTED}
    (failure,) = [e for e in instance.all_logs(dead, of_type=DagsterEventType.RUN_FAILURE)]
    assert "is gone: recovered by run 12345678" in failure.message
    assert recover_dead_runs(instance, host=HERE, exclude=me) == []  # nothing left to do: it does not repeat


def test_smart_home_recover_fails_and_frees_the_dead_runs(instance, capsys):
    dead = [started_run(instance, dead_pid(), HERE) for _ in range(2)]
    alive = started_run(instance, os.getpid(), HERE)
    # another machine's run on a shared instance: its pid means nothing here, whatever this host runs
    remote = started_run(instance, dead_pid(), ELSEWHERE)
    assert cli.main(["recover"]) == 0
    out = capsys.readouterr().out
    assert "2 dead run(s) recovered" in out and all(f"recovered run {r[:8]}" in out for r in dead)
    assert {status(instance, r) for r in dead} == {dg.DagsterRunStatus.FAILURE}
    assert slot_holders(instance) == {alive, remote}
    assert {status(instance, r) for r in (alive, remote)} == {dg.DagsterRunStatus.STARTED}
