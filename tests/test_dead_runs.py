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

from smart_home_assets.simulate import simulate_fleet

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY_A, DAY_B = dt.date(2026, 6, 1), dt.date(2026, 6, 2)
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def materialize(day: dt.date) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "smart_home_assets.definitions", "--select",
            "raw_usage,device_usage,device_usage_quarantine", "--partition", str(day)]


@pytest.fixture
def env(tmp_path):
    (tmp_path / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    # day A big enough that its step holds the slot for seconds; day B small
    simulate_fleet(tmp_path / "data" / "landing", hubs=150, days=1, start=DAY_A, fault_rate=0.0, seed=4,
                   events_per_hub=2000)
    simulate_fleet(tmp_path / "data" / "landing", hubs=5, days=1, start=DAY_B, fault_rate=0.0, seed=4,
                   events_per_hub=50)
    return env


def instance_of(env):
    import dagster as dg

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    return dg.DagsterInstance.get()


def test_a_killed_cli_run_does_not_block_the_next_one(env):
    import dagster as dg

    previous_home = os.environ.get("DAGSTER_HOME")
    victim = subprocess.Popen(materialize(DAY_A), env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
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
            nxt = subprocess.run(materialize(DAY_B), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                 timeout=300)
            waited = time.monotonic() - started
            assert nxt.returncode == 0, (nxt.stdout + nxt.stderr)[-3000:]
            dead = instance.get_run_by_id(dead_run)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            failure = [e.message for e in instance.all_logs(dead_run) if "is gone: recovered by run" in (e.message or "")]
            assert failure, "the dead run was not marked failed by the next run"
            assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
            print(f"the next run finished {waited:.0f} s after it started")
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        if previous_home is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous_home
