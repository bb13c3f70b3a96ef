"""Many runs at once against the one DuckDB file, through the real daemon and run queue: sensor-triggered
partitions, a CLI backfill, a manual materialization of an overlapping partition and a retrain. No lock failures,
no lost or duplicated rows, and the final state equals running them one after another.

Automation has ended when the instance says so: no run queued or in progress, and the automation sensor's ticks
since the last run ended (at least two) all requested nothing.
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION
from smart_home_tools.simulate import simulate_fleet
from tests.system.test_crash_safety import snapshot_tables

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIRST, DAYS = dt.date(2026, 6, 1), 21
LAST = FIRST + dt.timedelta(days=DAYS - 1)
INGEST = INGEST_AND_FEATURES_SELECTION
# usage_features reads 28 days back: a run that builds day D's features before another run rewrites an earlier
# day leaves stale lags, until automation (the lookback is in the lineage) refreshes D. All four must match.
COMPARED = ("raw_usage", "device_usage", "device_usage_quarantine", "usage_features")
SETTLED_TICKS = 2  # automation ticks after the last run ended that requested nothing: nothing is left to refresh
SETTLE_TIMEOUT_S = 1500  # generous: a loaded 2-core machine; CI takes a few minutes
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "smart_home_assets.definitions"]


def environment(root: Path) -> dict[str, str]:
    (root / "home").mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'data' / 'mlflow.db'}",
    }
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    simulate_fleet(
        root / "data" / "landing", hubs=20, days=DAYS, start=FIRST, fault_rate=0.02, seed=4, events_per_hub=60
    )
    return env


def sensor_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == "landing_zone_sensor"]


def automation_settled(instance: dg.DagsterInstance) -> tuple[bool, str]:
    """Whether automation has nothing left to do, per the instance (see the module docstring), and why not."""
    records = instance.get_run_records()
    busy = [r.dagster_run for r in records if not r.dagster_run.is_finished]
    if busy:
        return False, (
            f"{len(records)} runs, unfinished "
            f"{[(r.run_id[:8], r.status.value, r.tags.get('dagster/partition')) for r in busy]}"
        )
    last_end = max(
        (r.end_time if r.end_time is not None else r.update_timestamp.timestamp() for r in records), default=0.0
    )
    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.instigator_name == "automation_sensor"
    ]
    if not states:
        return False, "the automation sensor has no state in the instance: it never ticked"
    (state,) = states
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=last_end)
    seen = [(t.status.value, len(t.run_ids)) for t in ticks]
    settled = len(ticks) >= SETTLED_TICKS and all(t.status == TickStatus.SKIPPED and not t.run_ids for t in ticks)
    return settled, f"{len(records)} runs, all finished; automation ticks since the last ended: {seen}"


def check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_concurrent_runs_through_the_daemon_equal_a_sequential_run(tmp_path):
    # the sequential reference: one backfill of every day, nothing else running
    sequential = environment(tmp_path / "sequential")
    check(
        subprocess.run(
            MATERIALIZE + ["--select", INGEST, "--partition-range", f"{FIRST}...{LAST}"],
            env=sequential,
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    expected = snapshot_tables(tmp_path / "sequential" / "data" / "warehouse.duckdb", COMPARED)

    env = environment(tmp_path / "concurrent")
    # A new DAGSTER_HOME's SQLite storages are created by the first process that opens them; processes starting at
    # the same moment race to stamp the schema (UNIQUE constraint failed: alembic_version). A deployment creates
    # its instance storage once before it starts workers; so does this test.
    check(
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"], env=env, capture_output=True, text=True, timeout=300
        )
    )
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env={**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}"},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    environ = pytest.MonkeyPatch()  # this process's instance is the test's until the finally restores make's
    environ.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    try:
        # The sensor's first tick reads what raw_usage already holds, so a CLI run that ingests a day first would
        # take that day from the sensor (a race that depended on machine load). Let the sensor queue every day
        # first; the daemon then runs those queued runs while the CLI runs below go at once in their own processes.
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 300
            while len(sensor_runs(instance)) < DAYS:
                assert time.monotonic() < deadline, f"the sensor queued {len(sensor_runs(instance))} of {DAYS} days"
                time.sleep(1)
        cli = [
            subprocess.Popen(
                MATERIALIZE + ["--select", INGEST, "--partition-range", f"{FIRST}...{LAST}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            subprocess.Popen(
                MATERIALIZE + ["--select", INGEST, "--partition", str(FIRST + dt.timedelta(days=3))],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            subprocess.Popen(
                MATERIALIZE + ["--select", INGEST, "--partition-range", f"{FIRST + dt.timedelta(days=10)}...{LAST}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        ]
        outputs = [p.communicate(timeout=900)[0] for p in cli]
        for process, output in zip(cli, outputs, strict=True):
            assert process.returncode == 0, output[-3000:]
        # a retrain on top, while the daemon's sensor and automation runs may still be going
        check(
            subprocess.run(
                MATERIALIZE + ["--select", "usage_model"], env=env, capture_output=True, text=True, timeout=600
            )
        )
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        with dg.DagsterInstance.get() as instance:
            while True:
                settled, state = automation_settled(instance)
                if settled:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"automation not settled after {SETTLE_TIMEOUT_S} s: {state}")
                time.sleep(5)
            runs = instance.get_runs()
            assert len(sensor_runs(instance)) == DAYS  # one per day: none repeated by a later tick
    finally:
        environ.undo()
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    failed = [(r.run_id[:8], r.status.value, dict(r.tags)) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
    assert failed == [], failed  # no lock errors, no failed steps
    assert len(runs) >= 4 + DAYS  # 21 sensor runs, 3 CLI runs and a retrain, besides automation's
    assert snapshot_tables(tmp_path / "concurrent" / "data" / "warehouse.duckdb", COMPARED) == expected
