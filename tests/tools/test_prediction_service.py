"""`smart-home serve` as a client meets it: a real service process on loopback, over a real MLflow registry
(SQLite), a DuckDB warehouse of simulated features and its own store.

It answers in device terms and stores every answer before responding (SIGKILLed under load, the store holds
every 200 the client saw; retried requests keep their id); it follows a promotion without a restart; bad and
unknown inputs get their 4xx naming what is wrong; online_predictions and prediction_feedback take the answers
into the warehouse (through the dagster CLI). Dates are relative to the service's clock, and the CLI runs pin the
partitions window around it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from bench import serve_latency
from resources import DuckDBWarehouse
from resources.online_store import LocalLogStore, PostgresStore, online_store
from smart_home_assets.lib.tables import ONLINE_PREDICTIONS, PREDICTION_FEEDBACK, USAGE_FEATURES

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
STARTUP_S = 120.0


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Features of 8 hubs over the 35 days up to today, in a warehouse; champion v1 in a registry; the env."""
    root = tmp_path_factory.mktemp("service")
    data = root / "data"
    data.mkdir()
    start = today() - dt.timedelta(days=34)
    features = serve_latency.simulated_features(seed=1, hubs=8, days=35, start=start)
    warehouse = DuckDBWarehouse(database=str(data / "warehouse.duckdb"))
    warehouse.replace_partitions(
        {USAGE_FEATURES: features}, sorted({str(d) for d in features["partition_date"].unique().to_list()})
    )
    champion = serve_latency.register_champion(data, features, n_estimators=40)
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": champion.tracking_uri,
        "DAGSTER_HOME": str(root / "home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    for var in (
        "SMART_HOME_WAREHOUSE",
        "SMART_HOME_ONLINE_STORE",
        "SMART_HOME_SERVE_POLL_SECONDS",
        "SMART_HOME_WAREHOUSE_BACKEND",
    ):
        env.pop(var, None)
    (root / "home").mkdir()
    return {"root": root, "data": data, "features": features, "champion": champion, "env": env, "warehouse": warehouse}


@contextlib.contextmanager
def service(env: dict, log: Path, ready: tuple[int, ...] = (200,), **extra_env):
    """``smart-home serve`` on a free loopback port, up (/health answers one of ``ready``); yields (url, process)."""
    port = serve_latency.free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "smart-home"), "serve", "--port", str(port)],
            env={**env, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, f"smart-home serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(url, "/health")[0] in ready:
                    break
            assert time.monotonic() < deadline, f"not ready after {STARTUP_S:.0f} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _conn(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def post(url: str, path: str, body, headers: dict | None = None, conn=None) -> tuple[int, dict, dict]:
    own = conn is None
    conn = conn or _conn(url)
    try:
        conn.request(
            "POST",
            path,
            body if isinstance(body, (bytes, str)) else json.dumps(body),
            {"content-type": "application/json", **(headers or {})},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null"), dict(resp.getheaders())
    finally:
        if own:
            conn.close()


def get(url: str, path: str) -> tuple[int, dict]:
    conn = _conn(url)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def latest_rows(fleet) -> pl.DataFrame:
    features = fleet["features"]
    return features.filter(pl.col("partition_date") == features["partition_date"].max(), pl.col("has_enough_history"))


def feature_row(row: dict, **extra) -> dict:
    from smart_home_assets.lib.training import SOURCE_COLUMNS

    return {"device_id": row["device_id"], "hub_id": row["hub_id"], **{c: row[c] for c in SOURCE_COLUMNS}, **extra}


def stored(store_dir: Path) -> pl.DataFrame:
    store = LocalLogStore(store_dir)
    days = sorted(store.fingerprints())
    return pl.concat([store.read_day(d)[0] for d in days]) if days else pl.DataFrame()


@pytest.fixture(scope="module")
def running(fleet):
    with service(fleet["env"], fleet["root"] / "serve.log") as (url, proc):
        yield url, proc


def test_a_device_is_answered_from_its_latest_feature_row_and_the_answer_is_stored(fleet, running):
    url, _ = running
    rows = latest_rows(fleet)
    device = rows.row(0, named=True)
    status, body, headers = post(
        url,
        "/predict",
        {"device_id": device["device_id"], "hub_id": device["hub_id"]},
        {"X-Request-ID": "client-chosen-1"},
    )
    assert status == 200, body
    assert body["request_id"] == headers["x-request-id"] == "client-chosen-1"
    assert body["device_id"] == device["device_id"]
    assert body["for_day"] == (device["partition_date"] + dt.timedelta(days=1)).isoformat()
    assert body["model"] == {
        "name": "smart_home_usage",
        "version": fleet["champion"].version,
        "kind": "lightgbm",
        "forecaster": "lightgbm",
    }
    expected = fleet["champion"].model.forecast(rows.head(1)).row(0, named=True)
    assert body["prediction_wh"] == pytest.approx(expected["prediction_wh"])
    assert body["p10_wh"] == pytest.approx(expected["p10_wh"]) and body["p90_wh"] == pytest.approx(expected["p90_wh"])
    assert 0 <= body["p10_wh"] <= body["prediction_wh"] <= body["p90_wh"]

    # The same row sent in full (device_type by its name) is the same forecast.
    status, full, _ = post(url, "/predict", feature_row(device))
    assert status == 200 and full["prediction_wh"] == pytest.approx(body["prediction_wh"])
    assert full["for_day"] == body["for_day"]  # from target_day_of_year

    records = stored(fleet["data"] / "online_predictions")
    mine = records.filter(pl.col("request_id") == "client-chosen-1").row(0, named=True)
    assert mine["source"] == "latest_features" and mine["model_version"] == fleet["champion"].version
    assert mine["prediction_wh"] == pytest.approx(body["prediction_wh"])
    assert json.loads(mine["input_json"])["device_type"] == device["device_type"]
    assert records.filter(pl.col("request_id") == full["request_id"])["source"].to_list() == ["request_row"]


def test_a_batch_of_1000_rows_is_answered_by_one_version_and_every_row_is_stored(fleet, running):
    url, _ = running
    rows = latest_rows(fleet)
    batch = [
        {"device_id": r["device_id"], "hub_id": r["hub_id"]} if i % 2 else feature_row(r)
        for i, r in enumerate(rows.sample(1000, with_replacement=True, seed=2).iter_rows(named=True))
    ]
    status, body, _ = post(url, "/predict/batch", {"rows": batch})
    assert status == 200, body
    assert len(body["predictions"]) == 1000
    assert {p["model"]["version"] for p in body["predictions"]} == {body["model"]["version"]}
    assert [p["device_id"] for p in body["predictions"]] == [b["device_id"] for b in batch]
    records = stored(fleet["data"] / "online_predictions").filter(pl.col("request_id") == body["request_id"])
    assert sorted(records["row"].to_list()) == list(range(1000))


@pytest.mark.parametrize(
    "path, body, status, names",
    [
        ("/predict", {"device_id": "hub-00000-fridge-1"}, 422, ["body", "device", "hub_id"]),
        ("/predict", {"device_id": "x", "hub_id": "y", "energy_wh": "lots"}, 422, ["body", "row", "energy_wh"]),
        (
            "/predict",
            {"device_id": "x", "hub_id": "y", "user_id": "alice@example.com"},
            422,
            ["body", "row", "user_id"],
        ),
        (
            "/predict",
            {"device_id": "x", "hub_id": "y", "device_type": "fridge", "energy_wh": 1.0},
            422,
            ["body", "row", "energy_roll7_mean"],
        ),
        ("/predict", {"device_id": "no-such-device", "hub_id": "hub-00000"}, 404, ["no-such-device"]),
        ("/predict", "{not json", 422, ["body"]),
        ("/predict/batch", {"rows": []}, 422, ["body", "rows"]),
        ("/predict/batch", {"rows": [{"device_id": "d", "hub_id": "h"}] * 1001}, 422, ["body", "rows"]),
    ],
)
def test_bad_and_unknown_inputs_get_a_4xx_naming_the_field_or_device(fleet, running, path, body, status, names):
    url, _ = running
    before = stored(fleet["data"] / "online_predictions").height
    got, answer, _ = post(url, path, body)
    assert got == status, answer
    text = json.dumps(answer["detail"])
    for name in names:
        assert name in text, text
    assert stored(fleet["data"] / "online_predictions").height == before  # nothing answered, nothing stored


def test_an_unknown_device_in_a_batch_is_named_with_its_row(fleet, running):
    url, _ = running
    good = latest_rows(fleet).row(0, named=True)
    rows = [{"device_id": good["device_id"], "hub_id": good["hub_id"]}] * 2 + [{"device_id": "ghost", "hub_id": "h1"}]
    status, body, _ = post(url, "/predict/batch", {"rows": rows})
    assert status == 404 and body["detail"]["loc"] == ["body", "rows", 2, "device_id"]
    assert body["detail"]["device_id"] == "ghost"
    status, body, _ = post(url, "/predict", {"device_id": "x", "hub_id": "y"}, {"X-Request-ID": "has spaces"})
    assert status == 422 and "x-request-id" in json.dumps(body)


def test_health_reports_the_model_its_age_the_features_and_a_writable_store(fleet, running):
    url, _ = running
    status, body = get(url, "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["model"]["version"] == fleet["champion"].version and body["model"]["age_seconds"] >= 0
    assert body["features"]["latest_day"] == str(today()) and body["features"]["devices"] > 0
    assert body["store"] == {
        "kind": "local_log",
        "location": str(fleet["data"] / "online_predictions"),
        "writable": True,
        "error": None,
    }
    status, schema = get(url, "/openapi.json")
    assert status == 200 and {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])
    conn = _conn(url)
    conn.request("GET", "/docs")
    assert conn.getresponse().status == 200


def test_a_promotion_is_served_without_a_restart_and_no_request_fails_across_the_swap(fleet, tmp_path):
    """The service polls the alias at its default interval (10 s): once the alias moves, answers switch to the
    new version with no failed request and, on each connection, never back."""
    import mlflow

    from resources.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME

    with service(fleet["env"], tmp_path / "serve.log", SMART_HOME_ONLINE_STORE=str(tmp_path / "store")) as (url, proc):
        device = latest_rows(fleet).row(3, named=True)
        ask = {"device_id": device["device_id"], "hub_id": device["hub_id"]}
        answers: list[list[tuple[int, str | None]]] = [[], []]
        stop = threading.Event()

        def client(out):
            conn = _conn(url)
            while not stop.is_set():
                status, body, _ = post(url, "/predict", ask, conn=conn)
                out.append((status, body.get("model", {}).get("version") if status == 200 else json.dumps(body)))
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(a,)) for a in answers]
        for t in threads:
            t.start()
        try:
            time.sleep(1)
            # v2, trained on the same rows with more trees, registered in the same registry and aliased champion
            mlflow.set_tracking_uri(fleet["champion"].tracking_uri)
            from smart_home_assets.lib import training
            from smart_home_assets.lib.forecast_model import log_forecaster

            champion = fleet["champion"]
            with mlflow.start_run(
                experiment_id=mlflow.get_experiment_by_name(serve_latency.EXPERIMENT_NAME).experiment_id, run_name="v2"
            ):
                model = training.LightGBMForecaster(
                    training.train_model(champion.train, params={"n_estimators": 80}), champion.model.interval
                )
                info = log_forecaster(model, champion.holdout, registered_model_name=REGISTERED_MODEL_NAME)
            new = str(info.registered_model_version)
            mlflow.MlflowClient().set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, new)
            deadline = time.monotonic() + 60  # the default poll is 10 s; the issue allows 30
            while get(url, "/health")[1]["model"]["version"] != new:
                assert time.monotonic() < deadline, "the service never loaded the new champion"
                time.sleep(0.5)
            time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        health = get(url, "/health")[1]
        assert proc.poll() is None and health["swaps"] == 1  # the same process: no restart
        for out in answers:
            assert {s for s, _ in out} == {200}, [o for o in out if o[0] != 200][:3]
            versions = [v for _, v in out]
            first_new = versions.index(new)
            assert set(versions[:first_new]) == {champion.version} and set(versions[first_new:]) == {new}
        records = stored(tmp_path / "store")
        assert records.height == sum(len(a) for a in answers)
        assert set(records["model_version"].to_list()) == {champion.version, new}


def test_every_answered_request_is_stored_when_the_service_is_sigkilled_under_load(fleet, tmp_path):
    """Four clients send single and small batch requests until the service is SIGKILLed at a random moment.
    Every request id the clients got a 200 for is in the store; the store holds at most the in-flight requests
    besides. Restarted, the clients retry their unanswered requests with the same X-Request-ID: online_predictions
    then has exactly one row per request the clients saw answered."""
    from smart_home_assets.assets.online import online_rows_for_day

    store_dir = tmp_path / "store"
    rows = latest_rows(fleet)
    asks = [{"device_id": r["device_id"], "hub_id": r["hub_id"]} for r in rows.iter_rows(named=True)]
    answered: dict[str, int] = {}  # request id -> rows answered
    pending: dict[str, tuple[str, dict]] = {}  # request id -> (path, body), sent and not answered
    lock = threading.Lock()
    rng = random.Random(5)

    def client(n: int, url: str, stop: threading.Event):
        conn, i = _conn(url), 0
        while not stop.is_set():
            i += 1
            request_id = f"c{n}-{i}"
            path, body = (
                ("/predict/batch", {"rows": rng.sample(asks, 3)}) if i % 4 == 0 else ("/predict", rng.choice(asks))
            )
            with lock:
                pending[request_id] = (path, body)
            try:
                status, answer, _ = post(url, path, body, {"X-Request-ID": request_id}, conn=conn)
            except (OSError, http.client.HTTPException):
                return  # the service is gone: this request stays pending
            assert status == 200, answer
            with lock:
                del pending[request_id]
                answered[request_id] = len(answer["predictions"]) if "predictions" in answer else 1

    with service(fleet["env"], tmp_path / "serve.log", SMART_HOME_ONLINE_STORE=str(store_dir)) as (url, proc):
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(n, url, stop)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(2.0, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for t in threads:
            t.join(timeout=60)
    assert len(answered) > 50, "too few requests before the kill to mean anything"
    records = stored(store_dir)
    ids = set(records["request_id"].to_list())
    assert set(answered) <= ids, f"answered but not stored: {sorted(set(answered) - ids)[:5]}"
    assert ids - set(answered) <= set(pending), "stored requests that were never sent"
    assert len(ids - set(answered)) <= 4  # at most one in flight per client

    # Restarted on the same store, each client retries its pending request under the same id.
    with service(fleet["env"], tmp_path / "serve.log", SMART_HOME_ONLINE_STORE=str(store_dir)) as (url, _):
        for request_id, (path, body) in pending.items():
            status, answer, _ = post(url, path, body, {"X-Request-ID": request_id})
            assert status == 200, answer
            answered[request_id] = len(answer["predictions"]) if "predictions" in answer else 1
    store = online_store(str(store_dir))
    ingested = pl.concat([online_rows_for_day(*[store.read_day(d)[0], d])[0] for d in sorted(store.fingerprints())])
    assert ingested.select("request_id", "row").unique().height == ingested.height
    assert ingested.height == sum(answered.values())


def dagster(env: dict, *args: str) -> None:
    result = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "smart_home_assets.definitions", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_online_predictions_and_feedback_take_in_the_services_answers(fleet, tmp_path):
    """Answers for today (full rows of yesterday's features, and a looked-up device) go through
    online_predictions into prediction_feedback, scored against today's actuals beside the batch predictions."""
    store_dir = tmp_path / "store"
    features = fleet["features"]
    day = today()
    yesterday = features.filter(pl.col("partition_date") == day - dt.timedelta(days=1), pl.col("has_enough_history"))
    sent = yesterday.head(20)
    with service(fleet["env"], tmp_path / "serve.log", SMART_HOME_ONLINE_STORE=str(store_dir)) as (url, _):
        status, body, _ = post(
            url, "/predict/batch", {"rows": [feature_row(r, for_day=str(day)) for r in sent.iter_rows(named=True)]}
        )
        assert status == 200, body
    answered_day = stored(store_dir)["requested_at"].dt.date().unique().to_list()
    assert len(answered_day) == 1  # the request's UTC day: the online_predictions partition
    request_day = answered_day[0]
    env = {
        **fleet["env"],
        "SMART_HOME_ONLINE_STORE": str(store_dir),
        "SMART_HOME_PARTITIONS_END": str(max(request_day, day) + dt.timedelta(days=1)),
    }
    dagster(env, "--select", ONLINE_PREDICTIONS, "--partition", str(request_day))
    d = str(day - dt.timedelta(days=1))
    dagster(env, "--select", "usage_predictions", "--partition", d)
    dagster(env, "--select", PREDICTION_FEEDBACK, "--partition", d)

    warehouse = fleet["warehouse"]
    online = warehouse.read_partitions(ONLINE_PREDICTIONS, [str(request_day)])
    assert online.height == 20 and set(online["request_id"].to_list()) == {body["request_id"]}
    feedback = warehouse.read_partitions(PREDICTION_FEEDBACK, [d]).sort("source")
    assert feedback["source"].to_list() == ["batch", "online"]
    row = feedback.row(1, named=True)
    actual = features.filter(pl.col("partition_date") == day).select("device_id", "energy_wh")
    scored = pl.DataFrame(body["predictions"]).join(actual, on="device_id")
    assert row["predictions"] == scored.height == 20
    assert row["live_mae"] == pytest.approx((scored["prediction_wh"] - scored["energy_wh"]).abs().mean())
    assert row["model_version"] == body["model"]["version"]


@pytest.mark.parametrize("backend", ["local_log", "postgresql"])
def test_the_store_keeps_records_in_order_and_leaves_out_a_torn_last_line(tmp_path, backend):
    from tests.servers import postgres_server

    now = dt.datetime.now(dt.UTC)
    record = {
        "request_id": "r1",
        "row": 0,
        "requested_at": now,
        "endpoint": "predict",
        "device_id": "d",
        "hub_id": "h",
        "device_type": "fridge",
        "source": "request_row",
        "features_date": None,
        "for_day": now.date(),
        "input_json": "{}",
        "prediction_wh": 1.5,
        "p10_wh": 1.0,
        "p90_wh": 2.0,
        "model_name": "lightgbm",
        "model_kind": "lightgbm",
        "model_version": "3",
    }
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            pg = stack.enter_context(postgres_server())
            store = PostgresStore(f"postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}/{pg.db}")
            assert pg.password not in store.describe()
        else:
            store = LocalLogStore(tmp_path / "log")
        assert store.writable() == (True, "")
        store.append([record, {**record, "request_id": "r2", "prediction_wh": 2.5}])
        store.append([{**record, "request_id": "r1", "prediction_wh": 9.0}])  # a retry of r1
        if backend == "local_log":
            (path,) = (tmp_path / "log" / str(now.date())).glob("*.jsonl")
            with open(path, "ab") as f:
                f.write(b'{"request_id":"r3","row":0,"requ')  # a kill inside a write
        frame, torn = store.read_day(str(now.date()))
        assert torn == (1 if backend == "local_log" else 0)
        assert frame["request_id"].to_list() == ["r1", "r2", "r1"]
        assert frame["requested_at"][0] == now.replace(microsecond=now.microsecond)
        from smart_home_assets.assets.online import online_rows_for_day

        rows, retried = online_rows_for_day(frame, str(now.date()))
        assert retried == 1 and rows["prediction_wh"].to_list() == [2.5, 9.0]  # the answer the client saw last
        assert list(store.fingerprints()) == [str(now.date())]
        store.close()


def a_record(at: dt.datetime, request_id: str) -> dict:
    return {
        "request_id": request_id,
        "row": 0,
        "requested_at": at,
        "endpoint": "predict",
        "device_id": "d",
        "hub_id": "h",
        "device_type": "fridge",
        "source": "request_row",
        "features_date": None,
        "for_day": at.date(),
        "input_json": "{}",
        "prediction_wh": 1.5,
        "p10_wh": 1.0,
        "p90_wh": 2.0,
        "model_name": "lightgbm",
        "model_kind": "lightgbm",
        "model_version": "1",
    }


def test_the_sensor_requests_an_ended_day_once_and_again_when_its_answers_change(tmp_path):
    """A day that has ended (UTC) is requested; today, still filling, is not; a later append to the ended day
    (another replica, a late flush) requests it again. The day is inside the pinned window on any clock."""
    import dagster as dg

    from resources.online_store import OnlineStoreResource
    from smart_home_assets.assets.online import online_predictions_sensor
    from tests import PARTITIONS_END
    from tests.sensor_ticks import evaluate

    now = dt.datetime.now(dt.UTC)
    ended = min(now - dt.timedelta(days=2), dt.datetime.fromisoformat(f"{PARTITIONS_END}T12:00:00+00:00"))
    store = LocalLogStore(tmp_path / "store")
    store.append([a_record(ended, "old-1"), a_record(now, "today-1")])
    resources = {"online_store": OnlineStoreResource(location=str(tmp_path / "store"))}

    def tick(cursor):
        return evaluate(online_predictions_sensor, dg.build_sensor_context(cursor=cursor, resources=resources))

    first = tick(None)
    assert [key for key, _ in first.requests] == [str(ended.date())] and first.skip is None
    again = tick(first.cursor)
    assert again.requests == [] and again.skip == "no ended day with new answers"
    LocalLogStore(tmp_path / "store").append([a_record(ended, "old-2")])  # another process's file
    late = tick(again.cursor)
    assert [key for key, _ in late.requests] == [str(ended.date())]
    assert late.requests[0][1] != first.requests[0][1]  # a new run key: Dagster would drop a repeated one

    # A store that cannot be read is a skip that says why (not "no new answers"); a misconfigured one fails the
    # tick with the setting's name.
    (tmp_path / "file").write_text("")
    unreadable = {"online_store": OnlineStoreResource(location=str(tmp_path / "file"))}
    skipped = evaluate(online_predictions_sensor, dg.build_sensor_context(resources=unreadable))
    assert skipped.skip.startswith("prediction store unavailable") and str(tmp_path / "file") in skipped.skip
    broken = {"online_store": OnlineStoreResource(location="ftp://nowhere")}
    with pytest.raises(ValueError, match="SMART_HOME_ONLINE_STORE: expected a folder or a postgresql:// URL"):
        online_predictions_sensor(dg.build_sensor_context(resources=broken))


def test_a_store_that_cannot_be_written_means_no_answer_and_an_unhealthy_service(fleet, tmp_path):
    """The answer is only given once stored: with the store's folder impossible (under a regular file), /predict
    is 503 naming the store and /health is 503 with writable false."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    device = latest_rows(fleet).row(0, named=True)
    with service(
        fleet["env"], tmp_path / "serve.log", ready=(503,), SMART_HOME_ONLINE_STORE=str(blocker / "store")
    ) as (url, _):
        status, health = get(url, "/health")
        assert status == 503 and health["store"]["writable"] is False and health["model"] is not None
        status, body, _ = post(url, "/predict", {"device_id": device["device_id"], "hub_id": device["hub_id"]})
        assert status == 503 and "prediction store" in body["detail"] and str(blocker) in body["detail"]


def test_the_production_store_on_postgresql_feeds_online_predictions(fleet, tmp_path):
    """The service on a real PostgreSQL store: answers are rows there (the password appears nowhere in
    /health), and the online_predictions asset (a CLI run) takes them into the warehouse."""
    from tests.servers import postgres_server

    rows = latest_rows(fleet).head(5)
    with postgres_server() as pg:
        url_pg = f"postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}/{pg.db}"
        with service(fleet["env"], tmp_path / "serve.log", SMART_HOME_ONLINE_STORE=url_pg) as (url, _):
            status, health = get(url, "/health")
            assert health["store"]["kind"] == "postgresql" and pg.password not in json.dumps(health)
            ids = []
            for r in rows.iter_rows(named=True):
                status, body, _ = post(url, "/predict", {"device_id": r["device_id"], "hub_id": r["hub_id"]})
                assert status == 200, body
                ids.append(body["request_id"])
        with pg.connect() as con, con.cursor() as cur:
            cur.execute("SELECT day, record->>'request_id' FROM online_prediction_log ORDER BY id")
            stored_rows = cur.fetchall()
        assert [r[1] for r in stored_rows] == ids
        day = str(stored_rows[0][0])
        env = {
            **fleet["env"],
            "SMART_HOME_ONLINE_STORE": url_pg,
            "SMART_HOME_PARTITIONS_END": str(max(dt.date.fromisoformat(day), today()) + dt.timedelta(days=1)),
        }
        dagster(env, "--select", ONLINE_PREDICTIONS, "--partition", day)
    online = fleet["warehouse"].read_partitions(ONLINE_PREDICTIONS, [day])
    assert set(ids) <= set(online["request_id"].to_list())


def test_a_new_feature_day_is_served_without_a_restart(fleet, running):
    """(Last in this module: it adds tomorrow's features to the shared warehouse.) Once a feature day lands in the
    warehouse, the running service answers a device from it within a poll (10 s by default)."""
    url, proc = running
    rows = latest_rows(fleet)
    device = rows.row(0, named=True)
    ask = {"device_id": device["device_id"], "hub_id": device["hub_id"]}
    assert post(url, "/predict", ask)[1]["for_day"] == str(today() + dt.timedelta(days=1))
    tomorrow = today() + dt.timedelta(days=1)
    landed = (
        fleet["features"]
        .filter(pl.col("partition_date") == today())
        .with_columns(partition_date=pl.lit(tomorrow), energy_wh=pl.col("energy_wh") * 2)
    )
    fleet["warehouse"].replace_partitions({USAGE_FEATURES: landed}, [str(tomorrow)])
    deadline = time.monotonic() + 60
    while (answer := post(url, "/predict", ask)[1])["for_day"] != str(tomorrow + dt.timedelta(days=1)):
        assert time.monotonic() < deadline, f"still answering from the old day: {answer}"
        time.sleep(0.5)
    assert get(url, "/health")[1]["features"]["latest_day"] == str(tomorrow) and proc.poll() is None
