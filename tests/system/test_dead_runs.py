"""A run whose process is gone never blocks a later run: no daemon, no manual step.

A real ``dagster asset materialize`` is SIGKILLed while its step holds the ``duckdb`` pool's only slot (read from
the instance, not guessed from a sleep). A second plain CLI run of another day then starts: before the project's
executor existed it waited for the slot for ever ("Step still blocked by limit for pool duckdb"). Now it marks
the dead run failed, frees its slot and succeeds.
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_home_assets.lib.tables import INGEST_SELECTION
from smart_home_tools.simulate import simulate_fleet

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAY_A, DAY_B = dt.date(2026, 6, 1), dt.date(2026, 6, 2)
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def materialize(day: dt.date) -> list[str]:
    return [
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "smart_home_assets.definitions",
        "--select",
        INGEST_SELECTION,
        "--partition",
        str(day),
    ]


@pytest.fixture
def env(tmp_path):
    (tmp_path / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    # day A big enough that its step holds the slot for seconds; day B small
    simulate_fleet(
        tmp_path / "data" / "landing", hubs=150, days=1, start=DAY_A, fault_rate=0.0, seed=4, events_per_hub=2000
    )
    simulate_fleet(
        tmp_path / "data" / "landing", hubs=5, days=1, start=DAY_B, fault_rate=0.0, seed=4, events_per_hub=50
    )
    return env


def instance_of(env):
    """The CLI runs' instance, opened from its folder (this process's DAGSTER_HOME is left alone)."""
    import dagster as dg

    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


@pytest.fixture(autouse=True)
def instance_created_first(env):
    """Create the instance's storage before any CLI run starts: two processes creating a fresh SQLite instance
    at once race on its schema."""
    with instance_of(env):
        pass


def test_a_killed_cli_run_does_not_block_the_next_one(env):
    import dagster as dg

    victim = subprocess.Popen(
        materialize(DAY_A),
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with instance_of(env) as instance:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and victim.poll() is None:
                with_slot = instance.event_log_storage.get_concurrency_info("duckdb").active_run_ids
                if with_slot:
                    break
                time.sleep(0.1)
            assert victim.poll() is None and with_slot, "the first run never held the duckdb slot"
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            (dead_run,) = with_slot
            assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED  # nobody cleaned up

            # The next plain CLI run, no daemon: bounded here only to fail with its output instead of hanging.
            started = time.monotonic()
            nxt = subprocess.run(
                materialize(DAY_B), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
            )
            waited = time.monotonic() - started
            assert nxt.returncode == 0, (nxt.stdout + nxt.stderr)[-3000:]
            dead = instance.get_run_by_id(dead_run)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            failure = [
                e.message for e in instance.all_logs(dead_run) if "is gone: recovered by run" in (e.message or "")
            ]
            assert failure, "the dead run was not marked failed by the next run"
            assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
            print(f"the next run finished {waited:.0f} s after it started")
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)


def test_a_step_waiting_for_a_pool_slot_sleeps_until_its_next_claim():
    """Dagster 1.13.27's wait is ``min([0, ...])``, never positive: a blocked step re-claimed in a busy loop (a
    core at 100 %). The project's executor module replaces it; the wait is the time to the next claim."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    import smart_home_assets.executors as executors

    probe = InstanceConcurrencyContext.__new__(InstanceConcurrencyContext)
    probe._pending_claims, probe._pending_timeouts = {"step"}, {"step": time.time() + 3.0}
    assert 2.0 < probe.interval_to_next_pending_claim_check() <= 3.0
    probe._pending_timeouts = {"step": time.time() + 600.0}
    assert probe.interval_to_next_pending_claim_check() == executors.MAX_CLAIM_WAIT_S
    probe._pending_timeouts = {"step": time.time() - 1.0}
    assert probe.interval_to_next_pending_claim_check() == 0.0
    assert not executors._claim_wait_spins()


def test_sigterm_ends_a_run_that_waits_for_a_slot_and_releases_its_claim(env):
    """A live run holds the only slot; a second CLI run waits for it. SIGTERM ends the waiting run at once (it
    used to ignore SIGTERM and SIGINT until SIGKILL): the run is marked failed and its pending claim is gone."""
    import dagster as dg

    with instance_of(env) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("duckdb")
        assert storage.claim_concurrency_slot("duckdb", "a-live-holder", "its-step", 0).is_claimed
        waiting = subprocess.Popen(
            materialize(DAY_B),
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not any(
                p.run_id != "a-live-holder" for p in storage.get_concurrency_info("duckdb").pending_steps
            ):
                time.sleep(0.2)
            (blocked,) = [
                p.run_id for p in storage.get_concurrency_info("duckdb").pending_steps if p.run_id != "a-live-holder"
            ]
            time.sleep(2)  # well inside the wait
            waiting.send_signal(signal.SIGTERM)
            output, _ = waiting.communicate(timeout=60)  # a bound to fail with its output, not a timing
        finally:
            if waiting.poll() is None:
                os.killpg(waiting.pid, signal.SIGKILL)
        assert waiting.returncode != 0
        assert "received SIGTERM" in output, output[-3000:]
        assert instance.get_run_by_id(blocked).status == dg.DagsterRunStatus.FAILURE
        info = storage.get_concurrency_info("duckdb")
        assert {s.run_id for s in info.claimed_slots} == {"a-live-holder"}
        assert blocked not in {p.run_id for p in info.pending_steps}


def test_sigterm_ends_a_run_while_its_step_holds_the_slot_and_frees_it(env):
    """SIGTERM in the middle of a step that holds the slot: the run is marked failed, the slot is free at once
    (no recovery needed), and the next run succeeds."""
    import dagster as dg

    victim = subprocess.Popen(
        materialize(DAY_A),
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with instance_of(env) as instance:
            storage = instance.event_log_storage
            deadline = time.monotonic() + 240
            holders: set = set()
            while time.monotonic() < deadline and victim.poll() is None and not holders:
                holders = storage.get_concurrency_info("duckdb").active_run_ids
                time.sleep(0.1)
            assert holders and victim.poll() is None, (
                "the run never held the slot",
                victim.stdout.read()[-2000:] if victim.poll() is not None else "",
            )
            victim.send_signal(signal.SIGTERM)
            output, _ = victim.communicate(timeout=60)
            (run_id,) = holders
            # inside a step Dagster's own handler raises its execution interrupt; between steps, ours does
            assert victim.returncode != 0 and "DagsterExecutionInterruptedError" in output, output[-3000:]
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            assert storage.get_concurrency_info("duckdb").active_slot_count == 0
            nxt = subprocess.run(
                materialize(DAY_B), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
            )
            assert nxt.returncode == 0, (nxt.stdout + nxt.stderr)[-3000:]
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
