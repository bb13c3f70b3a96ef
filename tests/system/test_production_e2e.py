"""The production profile end to end on loopback, switched by configuration only: a PostgreSQL instance, the
landing zone and Delta Lake tables on an S3 API (moto), steps on a Dask cluster with 2 workers, and a 30-day
backfill as one run per day with several runs at once. Simulate → ingest → clean → features → train → promote
→ predict; every partition equals the embedded profile's."""

import contextlib
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

from resources.delta_warehouse import DeltaWarehouse
from smart_home_assets.lib.tables import INGEST_SELECTION
from smart_home_tools.simulate import simulate_fleet
from tests.moto_s3 import moto_server
from tests.servers import free_port, postgres_server

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FIRST, DAYS = dt.date(2026, 3, 1), 30
LAST = FIRST + dt.timedelta(days=DAYS - 1)
MODULE = ["-m", "smart_home_assets.definitions"]
INGEST = INGEST_SELECTION
COMPARED = ("device_usage", "device_usage_quarantine", "usage_features")
CLEAR = (
    "SMART_HOME_PSEUDONYM_KEY",
    "SMART_HOME_ENV",
    "SMART_HOME_LANDING_DIR",
    "SMART_HOME_WAREHOUSE",
    "SMART_HOME_WAREHOUSE_BACKEND",
    "SMART_HOME_DELTA_URI",
    "SMART_HOME_EXECUTOR",
    "SMART_HOME_DASK_SCHEDULER",
)


def run(command: list[str], env: dict[str, str], timeout: float = 900) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
    assert result.returncode == 0, f"{' '.join(command[:6])}…\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    import socket

    for _ in range(600):
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-3000:]}")


def max_overlap(runs) -> int:
    """The most runs that were executing at the same moment."""
    moments = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs])
    current = best = 0
    for _, step in moments:
        current += step
        best = max(best, current)
    return best


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("prod-e2e")
    simulate_fleet(root / "landing", hubs=20, days=DAYS, start=FIRST, fault_rate=0.03, seed=21, events_per_hub=40)
    return root


@pytest.fixture(scope="module")
def embedded(fleet):
    """The reference: the embedded profile (SQLite instance, DuckDB file, in-process) on the same uploads."""
    home = fleet / "embedded-home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **{k: v for k, v in os.environ.items() if k not in CLEAR},
        "DAGSTER_HOME": str(home),
        "SMART_HOME_DATA_DIR": str(fleet / "embedded-data"),
        "SMART_HOME_LANDING_DIR": str(fleet / "landing"),
    }
    run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            *MODULE,
            "--select",
            INGEST + ",usage_features",
            "--partition-range",
            f"{FIRST}...{LAST}",
        ],
        env,
    )
    return fleet / "embedded-data" / "warehouse.duckdb"


def test_production_profile_end_to_end(fleet, embedded):
    with postgres_server() as pg, moto_server() as s3:
        bucket = s3.new_bucket("fleet")
        assert s3.upload_tree(fleet / "landing", f"{bucket}/landing") > DAYS
        home = fleet / "production-home"
        home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy" / "production" / "dagster.yaml", home / "dagster.yaml")
        scheduler_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in CLEAR},
            **pg.env(),
            **s3.env(),
            "DAGSTER_HOME": str(home),
            "SMART_HOME_DATA_DIR": str(fleet / "production-data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{fleet / 'production-data' / 'mlflow.db'}",
            "SMART_HOME_LANDING_DIR": f"s3://{bucket}/landing",
            "SMART_HOME_WAREHOUSE_BACKEND": "delta",
            "SMART_HOME_DELTA_URI": f"s3://{bucket}/warehouse",
            "SMART_HOME_EXECUTOR": "dask",
            "SMART_HOME_DASK_SCHEDULER": f"tcp://127.0.0.1:{scheduler_port}",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        (fleet / "production-data").mkdir()
        run([str(BIN / "dagster"), "instance", "migrate"], env)
        workspace = ["-w", str(PROJECT_ROOT / "workspace.yaml")]
        # the backfill below is the only source of ingest runs in this test
        for sensor in ("landing_zone_sensor", "automation_sensor"):
            run([str(BIN / "dagster"), "sensor", "stop", *workspace, sensor], env)

        logs = fleet / "logs"
        logs.mkdir()
        scheduler = start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port), "--no-dashboard"],
            env,
            logs / "scheduler.log",
        )
        processes = [scheduler]
        environ = pytest.MonkeyPatch()
        try:
            wait_for_port(scheduler_port, scheduler, logs / "scheduler.log")
            for n in range(2):
                processes.append(
                    start(
                        [
                            str(BIN / "dask"),
                            "worker",
                            f"tcp://127.0.0.1:{scheduler_port}",
                            "--nthreads",
                            "1",
                            "--no-dashboard",
                            "--name",
                            f"worker-{n}",
                        ],
                        env,
                        logs / f"worker-{n}.log",
                    )
                )
            processes.append(start([str(BIN / "dagster-daemon"), "run", *workspace], env, logs / "daemon.log"))

            # 1. ingest and clean: one run per day, queued, several at once (Delta takes parallel writers)
            run(
                [
                    str(BIN / "dagster"),
                    "job",
                    "backfill",
                    *workspace,
                    "-j",
                    "ingest_and_clean",
                    "--from",
                    str(FIRST),
                    "--to",
                    str(LAST),
                    "--noprompt",
                ],
                env,
            )
            for key in (*pg.env(), "DAGSTER_HOME"):  # this process's instance: the production one, until the finally
                environ.setenv(key, env[key])
            with dg.DagsterInstance.get() as instance:
                deadline = time.monotonic() + 1500
                while time.monotonic() < deadline:
                    runs = instance.get_run_records(dg.RunsFilter(job_name="ingest_and_clean"))
                    if len(runs) == DAYS and all(r.dagster_run.is_finished for r in runs):
                        break
                    time.sleep(5)
                runs = instance.get_run_records(dg.RunsFilter(job_name="ingest_and_clean"))
                assert len(runs) == DAYS, f"{len(runs)} runs after 25 min"
                assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
                assert max_overlap(runs) >= 2, "the day runs did not run in parallel"
                assert {r.dagster_run.tags["dagster/partition"] for r in runs} == {
                    str(FIRST + dt.timedelta(days=d)) for d in range(DAYS)
                }

                # 2. features for the 30 days (one run), train and promote, predict the last day
                run(
                    [
                        str(BIN / "dagster"),
                        "asset",
                        "materialize",
                        *MODULE,
                        "--select",
                        "usage_features",
                        "--partition-range",
                        f"{FIRST}...{LAST}",
                    ],
                    env,
                )
                run([str(BIN / "dagster"), "asset", "materialize", *MODULE, "--select", "usage_model"], env)
                run(
                    [
                        str(BIN / "dagster"),
                        "asset",
                        "materialize",
                        *MODULE,
                        "--select",
                        "usage_predictions",
                        "--partition",
                        str(LAST),
                    ],
                    env,
                )

                # steps ran on the Dask workers, not in the run processes
                step_pids, run_pids = set(), set()
                for record in instance.get_run_records():
                    events = [e.dagster_event for e in instance.all_logs(record.dagster_run.run_id) if e.dagster_event]
                    print(
                        record.dagster_run.job_name,
                        record.dagster_run.tags.get("dagster/partition"),
                        " ".join(sorted({f"{e.event_type_value}:{e.pid}" for e in events})),
                    )
                    step_pids |= {e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
                    run_pids |= {e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START}
                assert step_pids and run_pids and not step_pids & run_pids, (step_pids, run_pids)

                model = instance.get_latest_materialization_event(dg.AssetKey("usage_model"))
                metadata = model.asset_materialization.metadata
                assert metadata["model_version"].value == "1"
                assert metadata["promoted"].value is True  # the first model beats the naive baselines here
                evaluations = [
                    e.dagster_event.event_specific_data
                    for r in runs
                    for e in instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                ]
                conserved = {e.partition for e in evaluations if e.check_name == "check_rows_conserved" and e.passed}
                assert len(conserved) == DAYS
                assert [e for e in evaluations if not e.passed and e.blocking] == []
        finally:
            stop(processes)
            environ.undo()  # back to what `make test` exported

        # 3. every partition equals the embedded profile's
        warehouse = DeltaWarehouse(
            uri=f"s3://{bucket}/warehouse", storage_options={**s3.env(), "AWS_ALLOW_HTTP": "true"}
        )
        import duckdb

        with duckdb.connect(str(embedded), read_only=True) as con:
            for table in COMPARED:
                expected = con.execute(f"SELECT * FROM {table} ORDER BY ALL").pl()
                got = warehouse.query(f"SELECT * FROM {table} ORDER BY ALL")
                assert expected.height > 0, table
                assert got.columns == expected.columns, table
                assert got.rows() == expected.rows(), table
        predictions = warehouse.query("SELECT count(*) AS n, min(model_version) AS v FROM usage_predictions").row(0)
        assert predictions[0] > 0 and predictions[1] == "1"
