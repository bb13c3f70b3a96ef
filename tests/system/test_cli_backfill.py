"""The README's CLI backfill, as a subprocess against a real instance: conservation, faults, idempotency."""

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from smart_home_tools.simulate import FAULT_KINDS, simulate_fleet
from tests.conftest import latest_run_check_evaluations

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIRST, DAYS = dt.date(2026, 4, 1), 3
RANGE = f"{FIRST}...{FIRST + dt.timedelta(days=DAYS - 1)}"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def readme_backfill_command() -> list[str]:
    """The backfill command exactly as the README gives it, with this test's partition range."""
    line = next(
        line
        for line in (PROJECT_ROOT / "README.md").read_text().splitlines()
        if "dagster asset materialize" in line and "--partition-range" in line
    )
    command = line.split()
    assert command[0] == ".venv/bin/dagster", line
    command[0] = DAGSTER
    command[command.index("--partition-range") + 1] = RANGE
    return command


def backfill(env):
    command = readme_backfill_command()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def snapshot(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: con.execute(f"SELECT * EXCLUDE (ingested_at) FROM {t} ORDER BY ALL").fetchall()
            if t.startswith("raw")
            else con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("raw_usage", "device_usage", "device_usage_quarantine", "usage_features")
        }


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home")}
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    (root / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    summary = simulate_fleet(
        root / "data" / "landing", hubs=40, days=DAYS, start=FIRST, fault_rate=0.03, seed=11, events_per_hub=60
    )
    backfill(env)
    return root, env, summary


def test_every_partition_is_conserved(backfilled):
    root, _, _ = backfilled
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("""
            SELECT r.partition_date, r.n, coalesce(c.n, 0), coalesce(q.n, 0)
            FROM (SELECT partition_date, count(*) n FROM raw_usage GROUP BY ALL) r
            LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage GROUP BY ALL) c USING (partition_date)
            LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage_quarantine GROUP BY ALL) q
              USING (partition_date) ORDER BY 1""").fetchall()
    assert len(rows) == DAYS
    for day, raw, clean, quarantined in rows:
        assert raw == clean + quarantined > 0, day


def test_every_injected_fault_kind_is_quarantined_under_its_reason(backfilled):
    root, _, summary = backfilled
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        reasons = dict(con.execute("SELECT reason, count(*) FROM device_usage_quarantine GROUP BY ALL").fetchall())
    for kind in FAULT_KINDS:
        assert summary.faults[kind] > 0, kind
        assert reasons.get(kind, 0) > 0, f"{kind} injected {summary.faults[kind]}x but not in quarantine: {reasons}"
    # line-level faults are exact: each injected line is quarantined under its own reason
    for kind in FAULT_KINDS:
        if kind != "truncated_gzip":
            assert reasons[kind] == summary.faults[kind], kind
    assert reasons["truncated_gzip"] == summary.faults["truncated_gzip"]  # one tail row per truncated file


def test_checks_are_recorded_per_partition(backfilled):
    root, env, _ = backfilled
    evaluations = latest_run_check_evaluations(env["DAGSTER_HOME"])
    conserved = {e.partition for e in evaluations if e.check_name == "check_rows_conserved" and e.passed}
    assert conserved == {str(FIRST + dt.timedelta(days=i)) for i in range(DAYS)}
    blocking_failures = [e for e in evaluations if not e.passed and e.blocking]
    assert blocking_failures == []


def test_a_second_backfill_yields_the_same_rows(backfilled):
    root, env, _ = backfilled
    before = snapshot(root / "data" / "warehouse.duckdb")
    backfill(env)
    assert snapshot(root / "data" / "warehouse.duckdb") == before
