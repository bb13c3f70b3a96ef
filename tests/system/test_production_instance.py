"""The production profile's instance (deploy/production/dagster.yaml) on a real PostgreSQL on loopback: CLI
backfills, training and predictions record their runs and events in PostgreSQL, and the daemon's sensor,
automation and run queue carry a new upload through to a retrained model with no clicks."""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION
from smart_home_tools.simulate import simulate_fleet
from tests.servers import postgres_server

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIRST, DAYS = dt.date(2026, 5, 1), 24
LAST = FIRST + dt.timedelta(days=DAYS - 1)
LATE_DAY = LAST + dt.timedelta(days=1)
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "smart_home_assets.definitions"]
INGEST = INGEST_AND_FEATURES_SELECTION


def check(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    root = tmp_path_factory.mktemp("production")
    home = root / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "production" / "dagster.yaml", home / "dagster.yaml")
    with postgres_server() as pg:
        env = {
            **os.environ,
            **pg.env(),
            "DAGSTER_HOME": str(home),
            "SMART_HOME_DATA_DIR": str(root / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'data' / 'mlflow.db'}",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
            env.pop(var, None)
        simulate_fleet(
            root / "data" / "landing", hubs=12, days=DAYS, start=FIRST, fault_rate=0.02, seed=8, events_per_hub=50
        )
        check([str(BIN / "dagster"), "instance", "migrate"], env)
        # this profile's warehouse here is the DuckDB file: one writer, so its pool gets one slot
        check([str(BIN / "dagster"), "instance", "concurrency", "set", "duckdb", "1"], env)
        yield root, env, pg


def rows(pg, sql: str, *params) -> list[tuple]:
    with pg.connect() as con, con.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def test_cli_backfill_training_and_predictions_are_recorded_in_postgresql(production):
    root, env, pg = production
    check(MATERIALIZE + ["--select", INGEST, "--partition-range", f"{FIRST}...{LAST}"], env)
    check(MATERIALIZE + ["--select", "usage_model"], env)
    check(MATERIALIZE + ["--select", "usage_predictions", "--partition", str(LAST)], env)

    statuses = rows(pg, "SELECT status, count(*) FROM runs GROUP BY status")
    assert dict(statuses) == {"SUCCESS": 3}
    materialized = dict(
        rows(
            pg,
            "SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = "
            "'ASSET_MATERIALIZATION' GROUP BY asset_key",
        )
    )
    assert materialized['["device_usage"]'] == DAYS
    assert materialized['["usage_features"]'] == DAYS
    assert materialized['["usage_model"]'] == 1
    checks = rows(pg, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'")
    assert checks[0][0] >= 8 * DAYS  # the eight device_usage checks, per partition
    assert rows(pg, 'SELECT concurrency_key, "limit" FROM concurrency_limits') == [("duckdb", 1)]
    # nothing of the instance went to local SQLite files
    assert not list((root / "home").rglob("*.db"))


def test_the_daemon_ingests_a_new_upload_and_retrains_through_the_postgresql_run_queue(production):
    root, env, pg = production
    if not rows(pg, "SELECT 1 FROM event_logs WHERE asset_key = '[\"usage_model\"]' LIMIT 1"):
        pytest.fail("needs the backfill of the test above (run the module, not this test alone)")
    simulate_fleet(
        root / "data" / "landing", hubs=12, days=1, start=LATE_DAY, fault_rate=0.0, seed=9, events_per_hub=50
    )
    started = time.time()
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        retrained = False
        while time.monotonic() < deadline and not retrained:
            time.sleep(5)
            assert daemon.poll() is None, "the daemon exited"
            retrained = bool(
                rows(
                    pg,
                    "SELECT 1 FROM event_logs WHERE asset_key = '[\"usage_model\"]' AND "
                    "dagster_event_type = 'ASSET_MATERIALIZATION' AND timestamp > to_timestamp(%s) "
                    "AT TIME ZONE 'UTC'",
                    started,
                )
            )
        assert retrained, "usage_model was not retrained within 10 minutes"
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()

    # the sensor's run for the new day went through the queue and succeeded, and so did automation's
    runs = rows(
        pg,
        "SELECT run_id, status, run_body FROM runs WHERE create_timestamp > to_timestamp(%s) AT TIME ZONE 'UTC'",
        started,
    )
    queued = {r[0] for r in rows(pg, "SELECT run_id FROM event_logs WHERE dagster_event_type = 'PIPELINE_ENQUEUED'")}
    sensor = [r for r in runs if '"landing_zone_sensor"' in r[2]]
    assert sensor and all(r[1] == "SUCCESS" and r[0] in queued for r in sensor)
    assert any("automation_sensor" in r[2] for r in runs)
    assert [r[1] for r in runs if r[1] == "FAILURE"] == []
