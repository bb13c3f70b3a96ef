"""The prediction service: ``smart-home serve`` over loopback, under an open-loop load, with a champion swap.

Setup, untimed, in a scratch data directory: features of a simulated fleet (full: 50 hubs x 30 days, quick:
5 hubs) written to its DuckDB warehouse as ``usage_features``; two LightGBM versions registered in its MLflow
store by :func:`bench.serve_latency.register_champion` (the asset's defaults, 300 trees; and 150 trees), the
``champion`` alias put back on the first. Then

    smart-home serve --host 127.0.0.1 --port <free>

in its own process group (the default poll of the alias, every 10 s), ready when ``GET /health`` is 200, and per
repeat:

* **single requests**: ``POST /predict`` of a random device of the features' latest day, at a fixed offered rate
  (100 requests/s; full: 3,000 requests, quick: 300) from 4 threads, each with its own keep-alive connection.
  Open loop: request ``i`` is due at ``start + i / rate`` and is sent then (or as soon as a thread is free), so a
  slow answer does not lower the offered rate; latency is measured from the due time ("from schedule", what a
  client of a steady stream sees) and from the actual send ("from send").
* **batches**: 20 sequential ``POST /predict/batch`` of 1,000 random devices on one connection (after one
  uncounted).
* **a champion swap under load**: the same load, open-ended; after 3 s the alias moves to the other version, and
  the load goes on until an answer carries it, then 5 s more. Counted: non-200 answers, seconds from the alias
  move to the first answer of the new version, old-version answers after it (per connection, and any request
  sent after that first answer), and whether every answered request is in the service's store (read back with
  ``online_store(...).read_day``, with the version each answer named).

Every request carries its own ``X-Request-ID``; a bounded number of requests and a hard deadline stop each load,
and the server's group is always stopped. Afterwards, with the server stopped, the pieces of one request and of
one batch are timed in this process on the same model and features (request validation, the device lookup, the
polars frame, the forecast, the store's append with its fdatasync, the answer's serialization).
"""

from __future__ import annotations

import datetime as dt
import gc
import http.client
import itertools
import json
import os
import random
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench import serve_latency
from bench.harness import BIN, PROJECT_ROOT, RESULTS_DIR, Scale, isolated_env, median, remove, scratch_dir
from bench.serve_latency import HOST, _stop, _tail, free_port, register_champion

FULL_HUBS, DAYS, EVENTS_PER_HUB = 50, 30, 80
RATE = 100.0  # requests per second offered
FULL_REQUESTS = 3000
THREADS = 4
BATCH_ROWS, BATCHES = 1000, 20
SECOND_TREES = 150
SWAP_LEAD_S, SWAP_TAIL_S, SWAP_MAX_S = 3.0, 5.0, 90.0
STARTUP_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 30.0
PIECE_CALLS = 300


# --- the server ---------------------------------------------------------------------------------------------


def serve_command(port: int) -> list[str]:
    return [str(BIN / "smart-home"), "serve", "--host", HOST, "--port", str(port)]


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def start_server(env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """``smart-home serve`` in its own process group; returns once /health is 200 (the caller stops it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            serve_command(port),
            env=env,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = started + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"smart-home serve exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if get_json(f"http://{HOST}:{port}/health", timeout_s=2)[0] == 200:
                    return proc, time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"/health not 200 after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
    except BaseException:
        _stop(proc)
        raise


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# --- the load -----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    index: int
    connection: int
    request_id: str
    planned: float  # perf_counter: when it was due
    sent: float
    done: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    version: str | None
    error: str = ""


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "X-Request-ID": request_id})
    resp = conn.getresponse()
    return resp.status, resp.read()


def open_loop(
    port: int,
    bodies: list[bytes],
    prefix: str,
    requests: int,
    rate: float = RATE,
    max_seconds: float | None = None,
    stop: threading.Event | None = None,
    threads: int = THREADS,
    sink: list | None = None,
) -> tuple[list[Answer], float]:
    """``requests`` single ``POST /predict`` due at ``rate`` per second from ``threads`` keep-alive connections;
    stops early at ``stop`` or when a request would be due after ``max_seconds``. Returns the answers (by index)
    and the perf_counter of the first due time; ``sink`` receives each answer as it arrives."""
    max_seconds = max_seconds if max_seconds is not None else requests / rate + 30.0
    # The generator's own full garbage collections (it holds the features and every answer) would stall all its
    # threads at once and show as the server's latency: collect and freeze what exists before the load.
    gc.collect()
    gc.freeze()
    start = time.perf_counter() + 0.1
    hard = start + max_seconds
    counter, lock = itertools.count(), threading.Lock()
    answers: list[Answer] = sink if sink is not None else []

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=CLIENT_TIMEOUT_S)
        try:
            while True:
                with lock:
                    i = next(counter)
                planned = start + i / rate
                if i >= requests or planned > hard or (stop is not None and stop.is_set()):
                    return
                wait = planned - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                request_id = f"{prefix}-{i}"
                sent = time.perf_counter()
                status, version, error = 0, None, ""
                try:
                    status, payload = _post(conn, "/predict", bodies[i % len(bodies)], request_id)
                    if status == 200:
                        answer = json.loads(payload)
                        version = answer["model"]["version"]
                        if answer["request_id"] != request_id:
                            error = f"answered request_id {answer['request_id']!r}"
                    else:
                        error = payload[:300].decode(errors="replace")
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=CLIENT_TIMEOUT_S)
                answers.append(Answer(i, k, request_id, planned, sent, time.perf_counter(), status, version, error))
        finally:
            conn.close()

    workers = [threading.Thread(target=worker, args=(k,), daemon=True, name=f"load-{k}") for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:  # bounded: nothing is due after `hard`, and each request times out
        w.join(timeout=max(0.0, hard - time.perf_counter()) + CLIENT_TIMEOUT_S + 5.0)
    return sorted(answers, key=lambda a: a.index), start


def _ms(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def load_summary(answers: list[Answer], start: float) -> dict:
    ok = [a for a in answers if a.status == 200 and not a.error]
    span = (max(a.done for a in answers) - start) if answers else float("nan")
    errors = [a for a in answers if a not in ok]
    return {
        "requests": len(answers),
        "answered": len(ok),
        "errors": len(errors),
        "error_examples": sorted({f"{a.status}: {a.error}"[:200] for a in errors})[:5],
        "seconds": span,
        "throughput_rps": len(ok) / span if span > 0 else None,
        "from_schedule": _ms([a.done - a.planned for a in ok]),
        "from_send": _ms([a.done - a.sent for a in ok]),
        "send_lag": _ms([a.sent - a.planned for a in answers]),  # the generator's own delay (a thread busy)
    }


# --- the phases ---------------------------------------------------------------------------------------------


def device_bodies(latest: pl.DataFrame, n: int, seed: int) -> list[dict]:
    devices = latest.select("device_id", "hub_id").rows()
    rng = random.Random(seed)
    return [{"device_id": d, "hub_id": h} for d, h in (rng.choice(devices) for _ in range(n))]


def batches(port: int, latest: pl.DataFrame, prefix: str, seed: int) -> tuple[dict, list[tuple[str, str, int]]]:
    """BATCHES sequential batches of BATCH_ROWS random devices after one uncounted; (summary, answered ids)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=CLIENT_TIMEOUT_S)
    seconds, answered, errors = [], [], []
    try:
        for i in range(BATCHES + 1):
            body = json.dumps({"rows": device_bodies(latest, BATCH_ROWS, seed * 1000 + i)}).encode()
            request_id = f"{prefix}-{i}"
            t0 = time.perf_counter()
            status, payload = _post(conn, "/predict/batch", body, request_id)
            elapsed = time.perf_counter() - t0
            if status != 200:
                errors.append(f"{status}: {payload[:200]!r}")
                continue
            answer = json.loads(payload)
            if len(answer["predictions"]) != BATCH_ROWS or answer["request_id"] != request_id:
                errors.append(f"{len(answer['predictions'])} predictions, request_id {answer['request_id']!r}")
                continue
            answered.append((request_id, answer["model"]["version"], BATCH_ROWS))
            if i:
                seconds.append(elapsed)
    finally:
        conn.close()
    ms = [s * 1000.0 for s in seconds]
    return (
        {
            "rows": BATCH_ROWS,
            "batches": len(ms),
            "errors": len(errors),
            "error_examples": errors[:3],
            "median_ms": median(ms),
            "max_ms": max(ms) if ms else None,
            "all_ms": ms,
        },
        answered,
    )


def swap(
    port: int, bodies: list[bytes], prefix: str, move_alias: Callable[[], None], old: str, new: str, rate: float = RATE
) -> tuple[dict, list[Answer]]:
    """Load at ``rate``; after SWAP_LEAD_S ``move_alias()``; on until an answer carries ``new``, then SWAP_TAIL_S."""
    stop = threading.Event()
    box: dict = {}
    live: list[Answer] = []  # appended by the load's threads as answers arrive
    loader = threading.Thread(
        target=lambda: box.update(
            result=open_loop(
                port,
                bodies,
                prefix,
                requests=int(rate * SWAP_MAX_S),
                rate=rate,
                max_seconds=SWAP_MAX_S,
                stop=stop,
                sink=live,
            )
        ),
        daemon=True,
        name="swap-load",
    )
    _, health = get_json(f"http://{HOST}:{port}/health")
    swaps_before = health.get("swaps")
    loader.start()
    time.sleep(SWAP_LEAD_S)
    move_alias()
    moved = time.perf_counter()  # the alias is committed in the registry
    deadline = moved + SWAP_MAX_S - SWAP_LEAD_S - SWAP_TAIL_S
    first_new = None
    seen = 0
    while time.perf_counter() < deadline and loader.is_alive():
        time.sleep(0.05)
        arrived = len(live)
        if any(a.version == new for a in live[seen:arrived]):
            break
        seen = arrived
    time.sleep(SWAP_TAIL_S)
    stop.set()
    loader.join(timeout=SWAP_MAX_S + CLIENT_TIMEOUT_S + 10.0)
    answers, start = box.get("result", ([], time.perf_counter()))
    _, health = get_json(f"http://{HOST}:{port}/health")
    ok = [a for a in answers if a.status == 200 and not a.error]
    news = [a for a in ok if a.version == new]
    if news:
        first_new = min(news, key=lambda a: a.done)
    per_connection_violations = 0
    for k in {a.connection for a in ok}:
        seen_new = False
        for a in sorted((a for a in ok if a.connection == k), key=lambda a: a.index):
            seen_new |= a.version == new
            per_connection_violations += seen_new and a.version != new
    after_first = [a for a in ok if first_new and a.sent > first_new.done and a.version != new]
    summary = load_summary(answers, start)
    summary.update(
        {
            "old_version": old,
            "new_version": new,
            "swap_s": (first_new.done - moved) if first_new else None,
            "old_answers": sum(a.version == old for a in ok),
            "new_answers": len(news),
            "other_versions": sorted({a.version for a in ok} - {old, new}),
            "non_200": sum(a.status != 200 for a in answers),
            "per_connection_old_after_new": per_connection_violations,
            "old_sent_after_first_new": len(after_first),
            "monotonic": bool(news) and per_connection_violations == 0 and not after_first,
            "health_version_after": (health.get("model") or {}).get("version"),
            "health_swaps": [swaps_before, health.get("swaps")],
        }
    )
    return summary, answers


@dataclass
class Stored:
    by_id: dict[str, tuple[int, list[str]]]  # request id -> (rows, model versions)
    rows: int
    torn: int


def read_store(store_location: Path, since: dt.date) -> Stored:
    """The store's records of every UTC day from ``since`` to today, by request id."""
    from resources.online_store import online_store

    store = online_store(str(store_location))
    frames, torn = [], 0
    day = since
    while day <= dt.datetime.now(dt.UTC).date():
        frame, cut = store.read_day(day.isoformat())
        frames.append(frame)
        torn += cut
        day += dt.timedelta(days=1)
    store.close()
    records = pl.concat(frames)
    stored = records.group_by("request_id").agg(rows=pl.len(), versions=pl.col("model_version").unique())
    return Stored(
        {r["request_id"]: (r["rows"], r["versions"]) for r in stored.iter_rows(named=True)}, records.height, torn
    )


def store_check(stored: Stored, answered: dict[str, tuple[str | None, int]], everything: bool = True) -> dict:
    """Every answered request id (with its version and row count) against the stored records; ``everything``:
    ``answered`` is every request of the run (so stored ids beyond it were never answered)."""
    by_id = stored.by_id
    missing = [rid for rid in answered if rid not in by_id]
    wrong = [
        rid
        for rid, (version, rows) in answered.items()
        if rid in by_id and (by_id[rid][0] != rows or by_id[rid][1] != [version])
    ]
    out = {
        "answered_ids": len(answered),
        "answered_rows": sum(rows for _, rows in answered.values()),
        "missing": len(missing),
        "missing_examples": missing[:5],
        "version_or_rows_mismatch": len(wrong),
    }
    if everything:
        out.update(
            {
                "stored_ids": len(by_id),
                "stored_rows": stored.rows,
                "torn_lines": stored.torn,
                "stored_not_answered": len(set(by_id) - set(answered)),
                "stored_not_answered_examples": sorted(set(by_id) - set(answered))[:5],
            }
        )
    return out


# --- in-process pieces --------------------------------------------------------------------------------------


def _time(named: dict[str, Callable[[], object]], calls: int, rounds: int = 3) -> dict[str, float]:
    """Median milliseconds of each of ``named``'s functions over ``calls`` calls, in ``rounds`` interleaved rounds
    (A B C A B C: a burst of other work on the machine does not fall on one piece only), after 3 uncounted each."""
    samples: dict[str, list[float]] = {name: [] for name in named}
    for fn in named.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in named.items():
            for _ in range(max(1, calls // rounds)):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1000.0 for name, v in samples.items()}


WHOLE_FORECAST = "forecast (whole, as the endpoint calls it)"


def frame_of_rows(rows: list[dict]) -> pl.DataFrame:
    """The request frame of resolved rows, as ``/predict`` builds it."""
    from smart_home_assets.lib.forecast_model import request_frame
    from smart_home_tools.service import app as service

    inputs = [r["input"] for r in rows]
    return request_frame(pl.DataFrame(inputs, schema_overrides=service._INPUT_OVERRIDES, infer_schema_length=None))


def pieces(data: Path, tracking_uri: str, version: str, latest: pl.DataFrame) -> dict:
    """Median ms of each piece of one ``/predict`` and of one 1,000-row batch, in this process (what the
    endpoint calls, in its order; no HTTP, no thread pool). The forecast is also timed in its parts (the point
    forecast as training.predict makes it, of which the model input matrix; the interval) and, for
    reference, LightGBM's booster alone with 1 thread and with the model's own thread count."""
    from pydantic import TypeAdapter

    from resources import DuckDBWarehouse
    from resources.online_store import LocalLogStore
    from resources.tracking import ModelRegistry
    from smart_home_assets.lib import training
    from smart_home_tools.service import app as service
    from smart_home_tools.service.state import ServingState

    state = ServingState(None, DuckDBWarehouse(database=str(data / "warehouse.duckdb")), poll_s=3600)
    state.refresh_features()
    forecaster = ModelRegistry(tracking_uri=tracking_uri).load_forecaster(version)
    # the champion registered above: a LightGBM version with its interval
    assert isinstance(forecaster, training.LightGBMForecaster) and forecaster.interval is not None
    interval = forecaster.interval
    booster = forecaster.model
    threads = booster.get_params().get("n_jobs")
    store = LocalLogStore(data / "pieces_store")
    today = dt.datetime.now(dt.UTC).date()
    single = TypeAdapter(service.PredictRequest)
    batch = TypeAdapter(service.BatchRequest)
    answer_one, answer_batch = TypeAdapter(service.Prediction), TypeAdapter(service.BatchPrediction)
    info = {"name": "smart_home_usage", "version": version, "kind": forecaster.kind, "forecaster": forecaster.name}
    answer_one_adapter: TypeAdapter[Any] = answer_one  # serializes whichever answer the piece built
    answer_batch_adapter: TypeAdapter[Any] = answer_batch

    def time_pieces(bodies: list[dict], n: int) -> dict[str, float]:
        """Median ms of each piece for requests of ``n`` rows (``bodies``): one function per request size, so
        the timed closures read its own values."""
        calls = PIECE_CALLS if n == 1 else max(15, PIECE_CALLS // 10)
        raw = json.dumps(bodies[0] if n == 1 else {"rows": bodies}).encode()
        validate: Callable[[], object]
        if n == 1:
            parsed = [single.validate_python(json.loads(raw))]
            validate = lambda: single.validate_python(json.loads(raw))  # noqa: E731
        else:
            parsed = batch.validate_python(json.loads(raw)).rows
            validate = lambda: batch.validate_python(json.loads(raw))  # noqa: E731
        rows = service.resolve_rows(parsed, state, today, batch=n > 1)

        make_frame = partial(frame_of_rows, rows)
        frame = make_frame()
        x = training.model_input_frame(frame, training.model_device_types(booster)).to_numpy().astype(np.float64)
        point = forecaster.point_forecast(frame)
        forecast = forecaster.forecast(frame)
        now = dt.datetime.now(dt.UTC)

        def records():
            return [
                {
                    "request_id": "pieces",
                    "row": i,
                    "requested_at": now,
                    "endpoint": "predict",
                    "device_id": row["device_id"],
                    "hub_id": row["hub_id"],
                    "device_type": row["input"]["device_type"],
                    "source": row["source"],
                    "features_date": row["features_date"],
                    "for_day": row["for_day"],
                    "input_json": json.dumps(row["input"], default=str, allow_nan=False),
                    "prediction_wh": p,
                    "p10_wh": lo,
                    "p90_wh": hi,
                    "model_name": "lightgbm",
                    "model_kind": "lightgbm",
                    "model_version": version,
                }
                for i, (row, (p, lo, hi)) in enumerate(zip(rows, forecast.iter_rows(), strict=True))
            ]

        built = records()
        answers = [
            {
                "device_id": r["device_id"],
                "for_day": r["for_day"].isoformat(),
                "prediction_wh": p,
                "p10_wh": lo,
                "p90_wh": hi,
                "request_id": "pieces",
            }
            for r, (p, lo, hi) in zip(rows, forecast.iter_rows(), strict=True)
        ]
        response = (
            {**answers[0], "model": info}
            if n == 1
            else {"request_id": "pieces", "model": info, "predictions": [{**a, "model": info} for a in answers]}
        )
        adapter = answer_one_adapter if n == 1 else answer_batch_adapter
        return _time(
            {
                "parse and validate the request (json.loads, pydantic)": validate,
                "look up the devices' latest features": lambda: service.resolve_rows(parsed, state, today, n > 1),
                "build the polars frame (request_frame)": make_frame,
                "forecast: point (training.predict: model input, LightGBM, level)": lambda: forecaster.point_forecast(
                    frame
                ),
                "forecast: of which the model input (one polars select to a float matrix)": lambda: (
                    training.model_input_frame(frame, training.model_device_types(booster)).to_numpy()
                ),
                "forecast: interval bounds": lambda: interval.bounds(frame, point),
                WHOLE_FORECAST: lambda: forecaster.forecast(frame),
                "build the store records": records,
                "store append (JSON lines, write, fdatasync)": lambda: store.append(built),
                "serialize the answer (JSON)": lambda: json.dumps(
                    adapter.dump_python(adapter.validate_python(response), mode="json")
                ),
                "_LightGBM's booster on the float matrix, 1 thread": lambda: booster.booster_.predict(x, num_threads=1),
                f"_LightGBM's booster on the float matrix, {threads} threads": lambda: booster.booster_.predict(
                    x, num_threads=threads or 0
                ),
            },
            calls,
        )

    out, reference = {}, {}
    for label, bodies, n in (
        ("one request", device_bodies(latest, 1, 7), 1),
        (f"a batch of {BATCH_ROWS:,} rows", device_bodies(latest, BATCH_ROWS, 8), BATCH_ROWS),
    ):
        timed = time_pieces(bodies, n)
        reference[label] = {k[1:]: timed.pop(k) for k in list(timed) if k.startswith("_")}
        out[label] = timed
    store.close()
    fd = os.open(data / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:

        def write_sync():
            os.write(fd, b"x" * 600 + b"\n")
            os.fdatasync(fd)

        fsync_ms = _time({"fdatasync": write_sync}, PIECE_CALLS)["fdatasync"]
    finally:
        os.close(fd)
    return {
        "pieces_ms": out,
        "reference_ms": reference,
        "lightgbm_threads": threads,
        "fdatasync_600_bytes_ms": fsync_ms,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


# --- the family ---------------------------------------------------------------------------------------------


def run(scale: Scale) -> dict:
    from mlflow import MlflowClient

    from resources import DuckDBWarehouse
    from resources.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
    from smart_home_assets.lib.tables import USAGE_FEATURES
    from smart_home_tools.service.state import DEFAULT_POLL_S

    hubs = scale.hubs(FULL_HUBS, minimum=5)
    requests = max(300, round(FULL_REQUESTS * scale.factor))
    root = scratch_dir("service")
    try:
        env = isolated_env(root, migrate=False)
        data = Path(env["SMART_HOME_DATA_DIR"])
        store_location = data / "online_predictions"
        for name in ("SMART_HOME_ONLINE_STORE", "SMART_HOME_SERVE_POLL_SECONDS"):
            env.pop(name, None)
        env.update(
            {"SMART_HOME_ONLINE_STORE": str(store_location), "SMART_HOME_SERVE_POLL_SECONDS": str(DEFAULT_POLL_S)}
        )

        t0 = time.perf_counter()
        features = serve_latency.simulated_features(seed=0, hubs=hubs, days=DAYS, events_per_hub=EVENTS_PER_HUB)
        DuckDBWarehouse(database=str(data / "warehouse.duckdb")).replace_partitions(
            {USAGE_FEATURES: features}, sorted({str(d) for d in features["partition_date"].unique().to_list()})
        )
        latest = features.filter(
            (pl.col("partition_date") == pl.col("partition_date").max()) & pl.col("has_enough_history")
        )
        first = register_champion(data, features)  # the asset's defaults
        second = register_champion(data, features, n_estimators=SECOND_TREES)
        client = MlflowClient(tracking_uri=first.tracking_uri)
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, first.version)
        assert env["MLFLOW_TRACKING_URI"] == first.tracking_uri, (env["MLFLOW_TRACKING_URI"], first.tracking_uri)
        setup_s = time.perf_counter() - t0
        print(
            f"  setup {setup_s:.1f} s: {features.height} feature rows of {hubs} hubs x {DAYS} days, "
            f"{latest.height} devices on {latest['partition_date'].max()!s}; versions {first.version} "
            f"({first.model.model.booster_.num_trees()} trees) and {second.version} "
            f"({second.model.model.booster_.num_trees()} trees)",
            flush=True,
        )

        bodies = [json.dumps(b).encode() for b in device_bodies(latest, 5000, seed=1)]
        port = free_port()
        since = dt.datetime.now(dt.UTC).date()
        answered: dict[str, tuple[str | None, int]] = {}
        singles, batch_runs, swaps = [], [], []
        log = RESULTS_DIR / "logs" / "service-serve.log"
        proc, ready_s = start_server(env, port, log)
        try:
            print(f"  serving on {HOST}:{port}, /health 200 after {ready_s:.1f} s", flush=True)
            # uncounted warm-up: the first requests after start (their own connections)
            warm, _ = open_loop(port, bodies, "warmup", requests=50, rate=RATE)
            answered.update({a.request_id: (a.version, 1) for a in warm if a.status == 200 and not a.error})
            versions = [first.version, second.version]
            for i in range(scale.repeats):
                load = round(os.getloadavg()[0], 2)
                server_cpu, client_cpu = cpu_seconds(proc.pid), own_cpu_seconds()
                answers, start = open_loop(port, bodies, f"single{i}", requests=requests, rate=RATE)
                s = load_summary(answers, start)
                s["load_before"] = load
                # CPU per answered request: the server's (all its threads) and this client's
                s["server_cpu_ms"] = (cpu_seconds(proc.pid) - server_cpu) * 1000.0 / max(1, s["answered"])
                s["client_cpu_ms"] = (own_cpu_seconds() - client_cpu) * 1000.0 / max(1, s["answered"])
                singles.append(s)
                answered.update({a.request_id: (a.version, 1) for a in answers if a.status == 200 and not a.error})
                print(
                    f"    single #{i + 1}: {s['answered']}/{s['requests']} at {s['throughput_rps']:.1f} rps; from "
                    f"schedule p50 {s['from_schedule']['p50_ms']:.2f} p99 {s['from_schedule']['p99_ms']:.2f} max "
                    f"{s['from_schedule']['max_ms']:.1f} ms; from send p99 {s['from_send']['p99_ms']:.2f} ms; "
                    f"errors {s['errors']}",
                    flush=True,
                )

                server_cpu = cpu_seconds(proc.pid)
                b, ids = batches(port, latest, f"batch{i}", seed=i)
                b["server_cpu_ms"] = (cpu_seconds(proc.pid) - server_cpu) * 1000.0 / max(1, len(ids))
                batch_runs.append(b)
                answered.update({rid: (version, rows) for rid, version, rows in ids})
                print(
                    f"    batches #{i + 1}: {b['batches']} x {BATCH_ROWS} rows, median {b['median_ms']:.1f} ms, "
                    f"max {b['max_ms']:.1f} ms, errors {b['errors']}",
                    flush=True,
                )

                old, new = versions[i % 2], versions[(i + 1) % 2]
                load = round(os.getloadavg()[0], 2)
                w, answers = swap(
                    port,
                    bodies,
                    f"swap{i}",
                    partial(client.set_registered_model_alias, REGISTERED_MODEL_NAME, CHAMPION_ALIAS, new),
                    old,
                    new,
                )
                answered.update({a.request_id: (a.version, 1) for a in answers if a.status == 200 and not a.error})
                w["load_before"] = load
                w["request_ids"] = [a.request_id for a in answers if a.status == 200 and not a.error]
                swaps.append(w)
                print(
                    f"    swap #{i + 1} {old} -> {new}: first new answer {w['swap_s']} s after the alias move; "
                    f"{w['answered']}/{w['requests']} answered, non-200 {w['non_200']}, monotonic {w['monotonic']}, "
                    f"from schedule p99 {w['from_schedule']['p99_ms']:.1f} max {w['from_schedule']['max_ms']:.1f} ms",
                    flush=True,
                )
        finally:
            _stop(proc)
        stored = read_store(store_location, since)
        store = store_check(stored, answered)
        for w in swaps:
            ids = w.pop("request_ids")
            w["store"] = store_check(stored, {r: answered[r] for r in ids}, everything=False)
            w["lost"] = w["store"]["missing"] + w["store"]["version_or_rows_mismatch"]
        print(
            f"  store: {store['answered_ids']} answered ids, {store['missing']} missing, "
            f"{store['stored_not_answered']} stored but not answered, {store['version_or_rows_mismatch']} mismatched",
            flush=True,
        )
        parts = pieces(data, first.tracking_uri, first.version, latest)
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        remove(root)

    def med(runs: list[dict], *path: str) -> float | None:
        values = [_dig(r, path) for r in runs]
        values = [v for v in values if v is not None]
        return median(values) if values else None

    return {
        "hubs": hubs,
        "days": DAYS,
        "feature_rows": features.height,
        "devices": latest.height,
        "latest_day": str(latest["partition_date"].max()),
        "setup_s": setup_s,
        "ready_s": ready_s,
        "command": "smart-home serve --host 127.0.0.1 --port <free port>",
        "poll_s": DEFAULT_POLL_S,
        "rate_rps": RATE,
        "requests": requests,
        "threads": THREADS,
        "versions": {
            first.version: first.model.model.booster_.num_trees(),
            second.version: second.model.model.booster_.num_trees(),
        },
        "single": {
            "runs": singles,
            **{
                f"{k}_{m}": med(singles, k, m)
                for k in ("from_schedule", "from_send")
                for m in ("p50_ms", "p99_ms", "max_ms")
            },
            "throughput_rps": med(singles, "throughput_rps"),
            "server_cpu_ms": med(singles, "server_cpu_ms"),
            "client_cpu_ms": med(singles, "client_cpu_ms"),
            "errors": sum(s["errors"] for s in singles),
        },
        "batch": {
            "runs": batch_runs,
            "rows": BATCH_ROWS,
            "median_ms": med(batch_runs, "median_ms"),
            "server_cpu_ms": med(batch_runs, "server_cpu_ms"),
            "max_ms": max((b["max_ms"] for b in batch_runs if b["max_ms"] is not None), default=None),
            "errors": sum(b["errors"] for b in batch_runs),
        },
        "swap": {
            "runs": swaps,
            "swap_s": med(swaps, "swap_s"),
            "non_200": sum(w["non_200"] for w in swaps),
            "lost": sum(w["lost"] for w in swaps),
            "monotonic": all(w["monotonic"] for w in swaps),
            "swapped": all(w["health_version_after"] == w["new_version"] for w in swaps),
        },
        "store": store,
        "pieces": parts,
        "load_end": load_after,
    }


def _dig(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d
