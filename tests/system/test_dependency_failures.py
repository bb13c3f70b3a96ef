"""When a dependency fails: MLflow unreachable or stopped mid-run, a warehouse that cannot be written (read-only
data directory, a path that cannot exist, a full disk), a landing zone that disappears. Each fails fast with a
message naming what failed, and leaves what was there before as it was (the champion, the warehouse partitions).

Real components only: usage_model materialized in-process against SQLite and a real `mlflow server`, DuckDB on a
read-only bind mount and on a tiny tmpfs (mounting needs root; those cases skip with a message otherwise).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from resources import DuckDBWarehouse, LandingZone, PseudonymizationKey
from resources.tracking import ModelRegistry, ensure_experiment, mlflow_tracking
from smart_home_assets.assets.model import usage_model
from smart_home_assets.assets.predictions import usage_predictions
from smart_home_assets.assets.usage import raw_usage
from smart_home_assets.lib.tables import RAW_USAGE, RAW_USAGE_FILES, USAGE_FEATURES
from smart_home_assets.sensors import landing_zone_sensor
from smart_home_tools.simulate import simulate_fleet
from tests.conftest import FLEET_DAYS, FLEET_START, event, write_upload
from tests.sensor_ticks import NOTHING_NEW, Tick, evaluate

START, DAYS = FLEET_START, FLEET_DAYS  # the `features` fixture's fleet (tests/conftest.py)
LAST = START + dt.timedelta(days=DAYS - 1)
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
# mlflow retries an HTTP request 7 times with exponential backoff (minutes) by default: fail fast in tests.
FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def top_failure_message(result: dg.ExecuteInProcessResult) -> str:
    """What a reader sees first: the message of the first error (a step's or a resource's), unwrapped from
    Dagster's own wrapper errors."""
    error = next(
        error
        for e in result.all_events
        if e.is_failure and (error := getattr(e.event_specific_data, "error", None)) is not None
    )
    while error.cause is not None and error.cls_name and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message


# --- MLflow -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, features):
    """A warehouse with features and a SQLite MLflow store whose champion is version 1 (trained once: the
    tests below only fail to train, so the champion must stay version 1 throughout), and an ``mlflow server``
    over that store, started first so that it boots while the champion trains."""
    root = tmp_path_factory.mktemp("mlflow-failures")
    data, home = root / "data", root / "dagster_home"
    data.mkdir()
    home.mkdir()
    store = data / "mlflow.db"
    sqlite_uri = f"sqlite:///{store}"
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as stack:
        mp.setenv("SMART_HOME_DATA_DIR", str(data))
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
        for name, value in FAST_HTTP.items():
            mp.setenv(name, value)
        ensure_experiment(sqlite_uri)  # the schema exists before the server opens the store: no racing migrations
        port = free_port()
        server = stack.enter_context(mlflow_server(store, port))
        warehouse = DuckDBWarehouse(database=str(data / "warehouse.duckdb"))
        warehouse.replace_partitions(
            {USAGE_FEATURES: features}, [str(START + dt.timedelta(days=d)) for d in range(DAYS)]
        )
        resources = {
            "warehouse": warehouse,
            "model_registry": ModelRegistry(),
            "mlflow": mlflow_tracking,
            "landing": LandingZone(),
            "pseudonym_key": PseudonymizationKey(),
        }
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            first = dg.materialize([usage_model], resources=resources, instance=instance, selection=[usage_model.key])
            assert first.success
            sqlite_registry = ModelRegistry(tracking_uri=sqlite_uri)
            assert str(sqlite_registry.champion_version().version) == "1"
            yield {
                "resources": resources,
                "instance": instance,
                "sqlite_uri": sqlite_uri,
                "sqlite_registry": sqlite_registry,
                "store": store,
                "server": server,
                "port": port,
            }
    import mlflow

    mlflow.set_tracking_uri(sqlite_uri)  # leave no dead server as mlflow's process-wide tracking URI


def materialize_model(env) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [usage_model],
        resources=env["resources"],
        instance=env["instance"],
        selection=[usage_model.key],
        raise_on_error=False,
    )


def registry_state(env) -> tuple[str, list[str]]:
    """The champion and the registered versions, read from the SQLite store itself."""
    client = env["sqlite_registry"].client()
    versions = sorted(v.version for v in client.search_model_versions("name = 'smart_home_usage'"))
    return str(env["sqlite_registry"].champion_version().version), versions


def test_mlflow_unreachable_fails_naming_the_uri_and_keeps_the_champion(trained, monkeypatch):
    before = registry_state(trained)
    dead = f"http://127.0.0.1:{next(p for p in iter(free_port, None) if p != trained['port'])}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    result = materialize_model(trained)
    assert not result.success
    message = top_failure_message(result)
    assert dead in message and "unreachable" in message, message
    assert registry_state(trained) == before  # champion v1, no new version

    # Scoring against the dead server fails the same way instead of waiting on retries.
    scored = dg.materialize(
        [usage_predictions],
        partition_key=str(LAST),
        resources=trained["resources"],
        instance=trained["instance"],
        selection=[usage_predictions.key],
        raise_on_error=False,
    )
    assert not scored.success
    message = top_failure_message(scored)
    assert dead in message and "unreachable" in message, message


def test_an_unreachable_server_fails_at_the_reachability_check_even_with_mlflows_default_retries(tmp_path):
    """Without the fast-fail settings mlflow retries each request 7 times with backoff (minutes); the
    tracking resource and the registry check the server's port first.

    In a subprocess with a deadline, so a regression costs 60 s, not the minutes of mlflow's backoff.
    """
    dead = f"http://someone:s3cret-token@127.0.0.1:{free_port()}"
    code = (
        "import dagster as dg\n"
        "from resources.tracking import ModelRegistry, mlflow_tracking\n"
        "try:\n"
        "    with dg.build_resources({'mlflow': mlflow_tracking}):\n"
        "        pass\n"
        "except Exception as exc:\n"
        "    print('TRACKING FAILED:', exc.__cause__ or exc)\n"
        "try:\n"
        "    ModelRegistry().champion_version()\n"
        "except Exception as exc:\n"
        "    print('REGISTRY FAILED:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_")}
    env.update(MLFLOW_TRACKING_URI=dead, SMART_HOME_DATA_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    for what in ("TRACKING", "REGISTRY"):
        assert f"{what} FAILED:" in out.stdout, out.stdout + out.stderr[-2000:]
        failure = out.stdout.split(f"{what} FAILED:", 1)[1].splitlines()[0]
        assert "unreachable" in failure and "127.0.0.1" in failure, failure
    assert "s3cret-token" not in out.stdout + out.stderr  # credentials in the URI are not echoed


@contextlib.contextmanager
def mlflow_server(store: Path, port: int):
    """``mlflow server`` on loopback over an existing SQLite store, in its own process group; not waited for
    (see :func:`wait_until_listening`)."""
    with open(store.parent / "mlflow-server.log", "wb") as log:
        proc = subprocess.Popen(
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                f"sqlite:///{store}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc)


def wait_until_listening(proc: subprocess.Popen, port: int, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server and its uvicorn worker: the group we started
        proc.wait(timeout=30)


def count(store: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as con:
        return con.execute(sql).fetchone()[0]


TRAINING_STARTED = "SELECT count(*) FROM params WHERE key = 'labeled_days'"  # logged once features are read


def test_mlflow_server_stopped_mid_run_fails_clearly_and_keeps_the_champion(trained, monkeypatch):
    before = registry_state(trained)
    started_before = count(trained["store"], TRAINING_STARTED)
    server, port = trained["server"], trained["port"]
    uri = f"http://127.0.0.1:{port}"
    wait_until_listening(server, port, trained["store"].parent / "mlflow-server.log")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    killed = threading.Event()

    def kill_once_the_run_has_started():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed.is_set():
            with contextlib.suppress(sqlite3.OperationalError):
                if count(trained["store"], TRAINING_STARTED) > started_before:  # the asset is training now
                    stop(server)
                    killed.set()
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_once_the_run_has_started, daemon=True)
    watcher.start()
    result = materialize_model(trained)
    watcher.join(timeout=5)
    assert killed.is_set(), "the MLflow run never started on the server"
    assert not result.success
    message = top_failure_message(result)
    assert f"127.0.0.1:{port}" in message, message
    # The error shown is the one that stopped training, not the follow-up failure to mark the MLflow run FAILED,
    # which is a warning of its own (the run stays RUNNING in the store: nobody can end it while it is down).
    warnings = [
        e.message for e in trained["instance"].all_logs(result.run_id) if "could not mark MLflow run" in e.message
    ]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0], warnings
    assert registry_state(trained)[0] == before[0]  # the alias never moved
    status = count(
        trained["store"],
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE "
        f"t.key = 'dagster_run_id' AND t.value = '{result.run_id}' AND r.status = 'FINISHED'",
    )
    assert status == 0  # never recorded as a success


# --- warehouse --------------------------------------------------------------------------------------------


DAY_A, DAY_B = "2026-03-02", "2026-03-03"


def ingest(day: str, **resource_overrides) -> dg.ExecuteInProcessResult:
    resources = {"landing": LandingZone(), "warehouse": DuckDBWarehouse(), **resource_overrides}
    return dg.materialize([raw_usage], partition_key=day, resources=resources, raise_on_error=False)


def raw_rows(path: Path, day: str) -> dict[str, list]:
    with contextlib.closing(duckdb.connect(str(path), read_only=True)) as con:
        return {
            t: con.execute(
                f"SELECT * EXCLUDE (ingested_at) FROM {t} WHERE partition_date = ?::DATE ORDER BY ALL", [day]
            ).fetchall()
            for t in (RAW_USAGE, RAW_USAGE_FILES)
        }


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root and mount permission): {done.stderr.strip()}")


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_data_directory_fails_fast_naming_the_warehouse_and_keeps_its_partitions(project_env):
    write_upload(project_env["landing"], DAY_A, "hub-0001", [event(DAY_A, n) for n in range(5)])
    write_upload(project_env["landing"], DAY_B, "hub-0001", [event(DAY_B, n) for n in range(5)])
    assert ingest(DAY_A).success
    before = raw_rows(project_env["warehouse"], DAY_A)
    assert before[RAW_USAGE]
    data = project_env["data"]
    mount("--bind", str(data), str(data))  # chmod does not stop root: a read-only bind mount does
    try:
        mount("-o", "remount,bind,ro", str(data))
        result = ingest(DAY_B)
    finally:
        unmount(data)
    assert not result.success
    message = top_failure_message(result)
    assert str(project_env["warehouse"]) in message and "Read-only file system" in message, message
    assert raw_rows(project_env["warehouse"], DAY_A) == before
    assert raw_rows(project_env["warehouse"], DAY_B) == {RAW_USAGE: [], RAW_USAGE_FILES: []}
    assert ingest(DAY_B).success  # writable again: the day goes in


def test_a_warehouse_locked_by_another_process_is_waited_for_not_failed(project_env, caplog):
    """Only a lock conflict is retried (DuckDB allows one writer per file; an analyst's session may hold it).
    The retries are asserted from the warning each one logs: a write that found the file free proves nothing."""
    write_upload(project_env["landing"], DAY_A, "hub-0001", [event(DAY_A, n) for n in range(5)])
    assert ingest(DAY_A).success
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({str(project_env['warehouse'])!r}, read_only=True)\n"
            "print('locked', flush=True)\ntime.sleep(3)\ncon.close()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with caplog.at_level(logging.WARNING, logger="resources.warehouse"):
            result = ingest(DAY_A)
    finally:
        holder.wait(timeout=30)
    assert result.success
    retries = [
        r.getMessage()
        for r in caplog.records
        if r.name == "resources.warehouse" and "is locked by another process: retry" in r.getMessage()
    ]
    # the holder kept the file locked for 3 s: the write had to wait, and got through only by retrying
    assert retries and all(str(project_env["warehouse"]) in m for m in retries), caplog.text


def test_a_warehouse_path_that_cannot_exist_fails_naming_it(project_env, monkeypatch):
    write_upload(project_env["landing"], DAY_A, "hub-0001", [event(DAY_A, 0)])
    blocker = project_env["data"] / "not-a-folder"
    blocker.write_text("a regular file where the warehouse folder should be\n")
    target = blocker / "warehouse.duckdb"
    monkeypatch.setenv("SMART_HOME_WAREHOUSE", str(target))
    result = ingest(DAY_A)
    assert not result.success
    message = top_failure_message(result)
    assert str(target) in message, message
    assert blocker.read_text().startswith("a regular file")  # untouched


def test_disk_full_fails_clearly_and_keeps_the_previous_partitions(project_env, monkeypatch):
    """The warehouse on a 3 MB tmpfs: a small day fits, a large day runs out of space mid-write."""
    disk = project_env["data"] / "small-disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk))
    try:
        warehouse = disk / "warehouse.duckdb"
        monkeypatch.setenv("SMART_HOME_WAREHOUSE", str(warehouse))
        write_upload(project_env["landing"], DAY_A, "hub-0001", [event(DAY_A, n) for n in range(5)])
        simulate_fleet(
            project_env["landing"], hubs=40, days=1, start=dt.date.fromisoformat(DAY_B), seed=2, events_per_hub=1500
        )  # about 60,000 lines: far more than 3 MB in DuckDB
        assert ingest(DAY_A).success
        before = raw_rows(warehouse, DAY_A)
        result = ingest(DAY_B)
        assert not result.success
        message = top_failure_message(result)
        assert "No space left on device" in message and str(warehouse) in message, message
        assert raw_rows(warehouse, DAY_A) == before  # the failed transaction left nothing behind
        assert raw_rows(warehouse, DAY_B) == {RAW_USAGE: [], RAW_USAGE_FILES: []}
        mount("-o", "remount,size=64m", str(disk))  # space freed: the same day now goes in
        assert ingest(DAY_B).success
        assert raw_rows(warehouse, DAY_A) == before
        assert len(raw_rows(warehouse, DAY_B)[RAW_USAGE]) > 50_000
    finally:
        unmount(disk)


# --- landing zone -------------------------------------------------------------------------------------------


def sensor_tick(landing: Path, cursor: str | None = None) -> Tick:
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={
            "landing": LandingZone(path=str(landing)),
            "warehouse": DuckDBWarehouse(database=str(landing.parent / "w.duckdb")),
        },
    )
    return evaluate(landing_zone_sensor, context)


@pytest.mark.parametrize("replacement", ["nothing", "a file", "a dangling symlink"])
def test_landing_zone_that_disappears_is_a_skip_reason_and_the_cursor_survives(tmp_path, replacement):
    landing = tmp_path / "landing"
    write_upload(landing, DAY_A, "hub-0001", [event(DAY_A, 0)])
    write_upload(landing, DAY_B, "hub-0002", [event(DAY_B, 0, hub="hub-0002")])
    first = sensor_tick(landing)
    assert first.skip is None
    assert [day for day, _ in first.requests] == [DAY_A, DAY_B]

    parked = tmp_path / "parked"
    landing.rename(parked)  # unmounted, moved away, deleted: gone from its path
    if replacement == "a file":
        landing.write_text("not a folder\n")
    elif replacement == "a dangling symlink":
        landing.symlink_to(tmp_path / "nowhere")
    gone = sensor_tick(landing, first.cursor)  # must not raise
    assert gone.requests == [] and gone.cursor == first.cursor, gone  # a bare SkipReason: the cursor survives
    assert "landing zone" in gone.skip and str(landing.resolve()) in gone.skip, gone.skip

    landing.unlink() if landing.is_symlink() or landing.is_file() else None
    parked.rename(landing)  # back, unchanged: nothing new to ingest
    back = sensor_tick(landing, first.cursor)
    assert back.requests == []
    assert back.skip == NOTHING_NEW


def test_a_landing_zone_that_comes_back_empty_then_full_does_not_re_ingest(tmp_path):
    """An empty mount point (share not mounted yet) forgets the days in the cursor; when the share returns, the
    requests carry the run keys already issued, which Dagster drops: no day is ingested twice."""
    landing = tmp_path / "landing"
    write_upload(landing, DAY_A, "hub-0001", [event(DAY_A, 0)])
    first = sensor_tick(landing)
    assert first.skip is None and [day for day, _ in first.requests] == [DAY_A]
    parked = tmp_path / "parked"
    landing.rename(parked)
    landing.mkdir()
    empty = sensor_tick(landing, first.cursor)
    assert not empty.requests
    assert empty.skip == NOTHING_NEW and empty.cursor == "{}"  # an empty folder, not an unreadable one
    landing.rmdir()
    parked.rename(landing)
    back = sensor_tick(landing, empty.cursor)
    assert back.skip is None
    assert back.requests == first.requests  # same run keys: deduplicated by Dagster


def test_a_file_named_like_a_day_folder_is_ignored_not_an_error(tmp_path):
    landing = tmp_path / "landing"
    write_upload(landing, DAY_A, "hub-0001", [event(DAY_A, 0)])
    day = landing / DAY_B
    day.write_text("a file named like a day folder\n")  # not a folder: ignored, not an error
    result = sensor_tick(landing)
    assert result.skip is None
    assert [d for d, _ in result.requests] == [DAY_A]
