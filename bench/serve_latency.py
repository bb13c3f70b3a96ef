"""Latency of the served champion: ``mlflow models serve`` over loopback, one feature row per request.

    python -m bench.serve_latency [--requests 500] [--max-seconds 120] [--keep]

In a temporary directory: an SQLite MLflow store, a LightGBM model (the asset's default parameters)
trained on a small simulated fleet, logged by :func:`forecast_model.log_forecaster` (the call the
``usage_model`` asset makes), registered as ``smart_home_usage`` with the ``champion`` alias; then

    mlflow models serve -m models:/smart_home_usage@champion --env-manager local --host 127.0.0.1 --port <free>

in its own process group, and N sequential single-row ``/invocations`` requests on one keep-alive
connection (``--fresh-connections``: a new TCP connection per request). The first ``--warmup`` requests
are not counted; for scale, the same rows scored in-process (the forecaster, no HTTP, no MLflow) are
timed too. A request is one stored feature row (``training.SOURCE_COLUMNS``, device_type by name); the answer
holds prediction_wh, p10_wh and p90_wh. It stops by itself after N requests or ``--max-seconds``, and always stops
the server.

The setup helpers are shared with tests/tools/test_serving.py, which exercises the same path once.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from resources.tracking import CHAMPION_ALIAS, EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from smart_home_assets.lib import training

HOST = "127.0.0.1"  # loopback only
CHAMPION_URI = f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}"
STARTUP_TIMEOUT_S = 90.0
MAX_REQUESTS = 10_000


# --- setup: features, model, registry -------------------------------------------------------------------


def simulated_features(
    seed: int = 0, hubs: int = 10, days: int = 30, events_per_hub: int = 80, start: dt.date = dt.date(2026, 1, 5)
) -> pl.DataFrame:
    """Feature rows of a small simulated fleet (as the pipeline computes them from clean events)."""
    from smart_home_assets.lib.features import build_features, daily_device_usage
    from smart_home_tools.simulate import build_fleet, simulate_hub_day

    fleet = build_fleet(seed, hubs)
    events = pl.concat(
        [
            simulate_hub_day(hub, start + dt.timedelta(days=d), seed=seed, events_per_hub=events_per_hub).to_frame()
            for d in range(days)
            for hub in fleet
        ]
    )
    daily = daily_device_usage(events.with_columns(partition_date=pl.col("event_timestamp").dt.date()))
    return pl.concat([build_features(daily, start + dt.timedelta(days=d)) for d in range(days)])


@dataclass
class Champion:
    model: Any  # the training.LightGBMForecaster, as trained (not reloaded)
    train: pl.DataFrame
    holdout: pl.DataFrame
    version: str
    tracking_uri: str


def tracking_uri_in(directory: Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / 'mlflow.db'}"


def register_champion(directory: Path, features: pl.DataFrame, n_estimators: int | None = None) -> Champion:
    """Train on ``features`` (:data:`training.DEFAULT_PARAMS`, as the asset; ``n_estimators`` to make it
    smaller; the interval from the holdout's errors), log with :func:`forecast_model.log_forecaster` into an MLflow
    store in ``directory`` (artifacts there too), register and point ``champion`` at the version.

    Uses ``$MLFLOW_TRACKING_URI`` only through the explicit URI: the caller decides the environment.
    """
    import mlflow

    directory = Path(directory).resolve()
    uri = tracking_uri_in(directory)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=(directory / "mlartifacts").as_uri())
    )
    train, holdout = training.split_holdout(training.attach_labels(features))
    from smart_home_assets.lib.forecast_model import log_forecaster

    fitted = training.train_model(train, params={"n_estimators": n_estimators} if n_estimators else None, seed=0)
    interval = training.IntervalCalibration.fit(holdout, training.predict(fitted, holdout))
    model = training.LightGBMForecaster(fitted, interval)
    with mlflow.start_run(experiment_id=experiment_id, run_name="serving"):
        info = log_forecaster(model, holdout, registered_model_name=REGISTERED_MODEL_NAME)
    version = str(info.registered_model_version)
    mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
    return Champion(model=model, train=train, holdout=holdout, version=version, tracking_uri=uri)


# --- the server -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve_command(port: int, model_uri: str = CHAMPION_URI) -> list[str]:
    """The CLI of this interpreter's environment (the venv's bin/), else the one on PATH."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        mlflow_bin = Path(shutil.which("mlflow") or "mlflow")
    return [
        str(mlflow_bin),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        HOST,
        "--port",
        str(port),
    ]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the mlflow CLI and the uvicorn it runs), SIGKILL to whatever
    is left of the group after 15 s; returns once the CLI is reaped and the group is gone (bounded)."""
    pgid = proc.pid  # start_new_session: the CLI leads its own group
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        with suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)
    proc.poll()


@contextmanager
def serving(
    tracking_uri: str,
    log_path: Path,
    port: int | None = None,
    model_uri: str = CHAMPION_URI,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` on loopback, ready (``/ping`` is 200); yields its base URL.

    The server runs in its own process group with this interpreter's bin/ first on PATH (the CLI execs
    ``uvicorn``) and its output in ``log_path``; the group is always stopped on exit.
    """
    port = port or free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    url = f"http://{HOST}:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            serve_command(port, model_uri),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/ping not ready after {startup_timeout_s:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no server log)"


# --- requests ---------------------------------------------------------------------------------------------


def request_body(rows: pl.DataFrame) -> bytes:
    """``{"dataframe_split": ...}`` of stored feature rows (the served model's input columns); nulls as null."""
    x = rows.select(training.SOURCE_COLUMNS)
    data = [[None if (isinstance(v, float) and math.isnan(v)) else v for v in row] for row in x.iter_rows()]
    return json.dumps({"dataframe_split": {"columns": x.columns, "data": data}}, allow_nan=False).encode()


def invoke(conn: http.client.HTTPConnection, body: bytes) -> np.ndarray:
    """POST /invocations on ``conn``; the answered prediction_wh per row as an array."""
    return invoke_rows(conn, body)["prediction_wh"]


def invoke_rows(conn: http.client.HTTPConnection, body: bytes) -> dict[str, np.ndarray]:
    """POST /invocations on ``conn``; every answered column (prediction_wh, p10_wh, p90_wh) as an array."""
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"/invocations answered {resp.status}: {payload[:2000]!r}")
    records = json.loads(payload)["predictions"]
    return {k: np.asarray([r[k] for r in records], dtype=float) for k in training.FORECAST_SCHEMA}


def connect(url: str, timeout_s: float = 30.0) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    assert host == HOST, host
    return http.client.HTTPConnection(host, int(port), timeout=timeout_s)


# --- the benchmark ----------------------------------------------------------------------------------------


def measure(
    url: str, bodies: list[bytes], requests: int, warmup: int, max_seconds: float, fresh_connections: bool = False
) -> np.ndarray:
    """Seconds per request of ``requests`` sequential requests (after ``warmup`` uncounted ones),
    cycling through ``bodies``; stops early after ``max_seconds``."""
    conn = connect(url)
    timings: list[float] = []
    deadline = time.monotonic() + max_seconds
    try:
        for i in range(warmup + requests):
            if time.monotonic() > deadline:
                break
            if fresh_connections:
                conn.close()
                conn = connect(url)
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            invoke(conn, body)
            elapsed = time.perf_counter() - t0
            if i >= warmup:
                timings.append(elapsed)
    finally:
        conn.close()
    return np.asarray(timings)


def machine_note() -> str:
    cpus = os.cpu_count()
    affinity: int | None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = cpus
    import lightgbm
    import mlflow

    return (
        f"{platform.system()} {platform.machine()}, {affinity} usable CPU cores (os.cpu_count={cpus}), "
        f"Python {platform.python_version()}, mlflow {mlflow.__version__}, lightgbm {lightgbm.__version__}, "
        f"1 uvicorn worker, client and server on the same machine"
    )


@dataclass
class LatencyResult:
    seconds: np.ndarray  # one entry per counted request
    in_process_seconds: np.ndarray  # model.predict of one row, no HTTP
    version: str
    trees: int
    ready_s: float  # server start until /ping answers
    command: str


def measure_latency(
    requests: int = 500,
    warmup: int = 20,
    max_seconds: float = 120.0,
    fresh_connections: bool = False,
    keep: bool = False,
) -> LatencyResult:
    """Train and register a champion in a temporary store, serve it, and time ``requests`` single-row calls."""
    tmp = Path(tempfile.mkdtemp(prefix="serve_latency_"))
    try:
        print(f"setup in {tmp}: simulated features, training, logging, registering ...", flush=True)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri_in(tmp)
        champion = register_champion(tmp, simulated_features())
        rows = champion.holdout.head(50)
        bodies = [request_body(rows.slice(i, 1)) for i in range(rows.height)]
        expected = training.predict(champion.model, rows)
        port = free_port()
        command = shlex.join(["mlflow", *serve_command(port)[1:]])
        print(f"serving: {command}", flush=True)
        t0 = time.monotonic()
        with serving(champion.tracking_uri, tmp / "serve.log", port=port) as url:
            ready_s = time.monotonic() - t0
            print(f"ready after {ready_s:.1f} s", flush=True)
            conn = connect(url)
            try:  # the served model is the one trained here
                served = invoke(conn, request_body(rows))
            finally:
                conn.close()
            if not np.allclose(served, expected):
                raise SystemExit("served predictions differ from training.predict")
            seconds = measure(url, bodies, requests, warmup, max_seconds, fresh_connections)
        in_process = []
        for i in range(min(requests, 200)):
            one = rows.slice(i % rows.height, 1)
            t0 = time.perf_counter()
            champion.model.forecast(one)
            in_process.append(time.perf_counter() - t0)
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return LatencyResult(
        seconds, np.asarray(in_process), champion.version, champion.model.model.booster_.num_trees(), ready_s, command
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="counted requests (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests first (default 20)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop measuring after this (default 120)")
    parser.add_argument("--fresh-connections", action="store_true", help="a new TCP connection per request")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (MLflow store, log)")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or args.warmup < 0 or args.max_seconds <= 0:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}, --warmup >= 0, --max-seconds > 0")
    result = measure_latency(args.requests, args.warmup, args.max_seconds, args.fresh_connections, args.keep)
    seconds = result.seconds
    if seconds.size == 0:
        print("no request measured")
        return 1
    ms = seconds * 1000.0
    connection = "a new TCP connection per request" if args.fresh_connections else "one keep-alive connection"
    print(
        f"\nmodel {CHAMPION_URI} (version {result.version}, {result.trees} trees); {seconds.size} sequential "
        f"single-row POST /invocations (dataframe_split, 18 features) on {connection}, after {args.warmup} warm-up"
    )
    print(
        f"latency ms: p50 {np.percentile(ms, 50):.2f}  p99 {np.percentile(ms, 99):.2f}  "
        f"mean {ms.mean():.2f}  min {ms.min():.2f}  max {ms.max():.2f}"
    )
    local = result.in_process_seconds * 1000.0
    print(
        f"in-process model.predict of one row ({local.size} calls), ms: p50 {np.percentile(local, 50):.2f}  "
        f"p99 {np.percentile(local, 99):.2f}"
    )
    print(f"machine: {machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
