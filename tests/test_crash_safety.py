"""SIGKILL at random moments of raw_usage -> device_usage -> usage_features runs: every partition of every table
is afterwards exactly its previous complete version or the new one (never empty, never partial), and a re-run
converges to the rows of a clean run.
"""

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from smart_home_assets.simulate import simulate_fleet

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIRST, DAYS = dt.date(2026, 5, 1), 4
LAST = FIRST + dt.timedelta(days=DAYS - 1)
TABLES = ("raw_usage", "raw_usage_files", "device_usage", "device_usage_quarantine", "usage_features")
TRIALS = int(os.environ.get("CRASH_TRIALS", "20"))
COMMAND = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
           "smart_home_assets.definitions", "--select",
           "raw_usage,device_usage,device_usage_quarantine,usage_features", "--partition-range", f"{FIRST}...{LAST}"]


def environment(root: Path) -> dict[str, str]:
    (root / "home").mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home")}
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    return env


def snapshot_tables(warehouse: Path, tables=TABLES) -> dict[tuple[str, str], list]:
    """Rows per (table, partition), without ingestion times (they differ between runs by design)."""
    # read-write: opening replays the write-ahead log of committed transactions, as any next run would
    with duckdb.connect(str(warehouse)) as con:
        out = {}
        for table in tables:
            columns = [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()
                       if c[0] not in ("ingested_at", "mtime_ns")]
            for (key,) in con.execute(f"SELECT DISTINCT partition_date::VARCHAR FROM {table}").fetchall():
                out[(table, key)] = con.execute(
                    f"SELECT {', '.join(columns)} FROM {table} WHERE partition_date = ?::DATE ORDER BY ALL", [key]
                ).fetchall()
        return out


def snapshot(warehouse: Path) -> dict[tuple[str, str], list]:
    state = snapshot_tables(warehouse)
    return {(t, str(FIRST + dt.timedelta(days=d))): state.get((t, str(FIRST + dt.timedelta(days=d))), [])
            for t in TABLES for d in range(DAYS)}


def recover(env) -> None:
    """What `smart-home recover` does after a crash with no daemon: dead runs give their pool slot back."""
    result = subprocess.run([str(Path(sys.executable).with_name("smart-home")), "recover"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def run(env):
    result = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """The old complete version (first upload), the new one (every hub re-uploaded), and a run's duration."""
    root = tmp_path_factory.mktemp("crash")
    env = environment(root)
    simulate_fleet(root / "data" / "landing", hubs=25, days=DAYS, start=FIRST, fault_rate=0.02, seed=1,
                   events_per_hub=120)
    run(env)
    old = snapshot(root / "data" / "warehouse.duckdb")
    shutil.copytree(root / "data" / "landing", root / "landing-old")
    shutil.rmtree(root / "data" / "landing")
    simulate_fleet(root / "landing-new", hubs=25, days=DAYS, start=FIRST, fault_rate=0.02, seed=2,
                   events_per_hub=120)
    clean = tmp_path_factory.mktemp("clean")
    shutil.copytree(root / "landing-new", clean / "data" / "landing")
    started = time.monotonic()
    run(environment(clean))
    duration = time.monotonic() - started
    new = snapshot(clean / "data" / "warehouse.duckdb")
    assert all(old[k] != new[k] for k in old if k[0] in ("raw_usage", "device_usage")), "versions must differ"
    return {"root": root, "env": env, "old": old, "new": new, "duration": duration}


def test_sigkill_at_random_moments_leaves_each_partition_old_or_new_and_a_rerun_converges(versions):
    root, env, old, new = versions["root"], versions["env"], versions["old"], versions["new"]
    rng = random.Random(20261125)
    outcomes = {"old": 0, "new": 0}
    for trial in range(TRIALS):
        # every hub re-uploads every day, alternately the new and the old version: each trial rewrites data
        upload = "landing-new" if trial % 2 == 0 else "landing-old"
        shutil.rmtree(root / "data" / "landing", ignore_errors=True)
        shutil.copytree(root / upload, root / "data" / "landing")
        delay = rng.uniform(2.0, versions["duration"])
        process = subprocess.Popen(COMMAND, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        recover(env)
        state = snapshot(root / "data" / "warehouse.duckdb")
        for key, rows in state.items():
            assert rows in (old[key], new[key]), f"trial {trial} (killed after {delay:.1f}s): {key} is partial"
            outcomes["new" if rows == new[key] else "old"] += 1
        # device_usage and its quarantine are written in one transaction: never one new and one old
        for day in range(DAYS):
            key = str(FIRST + dt.timedelta(days=day))
            pair = [state[(t, key)] == new[(t, key)] for t in ("device_usage", "device_usage_quarantine")]
            assert pair[0] == pair[1], f"trial {trial}: device_usage and quarantine of {key} disagree"
        assert all(state[k] == old[k] or state[k] == new[k] for k in state)
    shutil.rmtree(root / "data" / "landing")
    shutil.copytree(root / "landing-new", root / "data" / "landing")
    run(env)
    assert snapshot(root / "data" / "warehouse.duckdb") == new
    print(f"{TRIALS} SIGKILL trials: partitions seen old {outcomes['old']}x, new {outcomes['new']}x, partial 0x")
