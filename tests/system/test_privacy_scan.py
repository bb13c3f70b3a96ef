"""Where clear-text user ids and the pseudonymization key end up after a real run: nowhere but raw_usage.

A simulated fleet goes through the README's CLI commands (one backfill of raw_usage -> usage_features over 18
days, usage_model trained and logged to a SQLite MLflow store, then usage_predictions for the last 4 days and
prediction_feedback for the 3 of them whose actuals landed) with a random production key. Then every
place the run wrote to is scanned: every warehouse table but the restricted raw_usage/raw_usage_files, every
run, event and snapshot of the Dagster instance and every file under DAGSTER_HOME (compute logs included), the
CLI output, and MLflow (runs, logged models, registry, downloaded artifacts, the store's files). Positive
controls show each scan reads what it claims: raw_usage holds every user id, the key's fingerprint is in
device_usage's metadata, the artifacts and compute logs were found and read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.events import DagsterEventType
from dagster._serdes import serialize_value

from resources.privacy import key_fingerprint
from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION
from smart_home_tools.simulate import build_fleet, simulate_fleet

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
SEED, HUBS, DAYS, FIRST = 5, 30, 18, dt.date(2026, 3, 1)
LAST = FIRST + dt.timedelta(days=DAYS - 1)
RESTRICTED = {"raw_usage", "raw_usage_files"}
PREDICTED_FIRST = LAST - dt.timedelta(days=3)  # usage_predictions for 4 days, prediction_feedback for the first 3
# Trains on 18 days of 30 hubs (11 labeled days: 7 to train, one backtest fold of 4) and beats the naive baselines.
MODEL_CONFIG = {
    "ops": {
        "usage_model": {
            "config": {
                "backtest_folds": 1,
                "fold_days": 4,
                "n_estimators": 60,
                "num_leaves": 4,
                "min_child_samples": 30,
                "learning_rate": 0.1,
            }
        }
    }
}
ANY_USER_ID = re.compile(rb"user-[0-9a-f]{12}")  # the simulator's user id format, any user


class Needles:
    """What must not leak: the fleet's user ids (also without their ``user-`` prefix) and the key (also any
    16-character piece of it)."""

    def __init__(self, user_ids: list[str], key: str):
        self.user_ids = [u.encode() for u in user_ids]
        self.user_hex = [u.removeprefix("user-").encode() for u in user_ids]
        self.key = key.encode()
        self.key_pieces = [self.key[i : i + 16] for i in range(len(self.key) - 15)]

    def users_in(self, data: bytes) -> list[str]:
        found = {m.decode() for m in ANY_USER_ID.findall(data)}
        found |= {u.decode() for u, h in zip(self.user_ids, self.user_hex, strict=True) if h in data}
        return sorted(found)

    def key_in(self, data: bytes) -> bool:
        return any(piece in data for piece in self.key_pieces)

    def leaks(self, where: str, data: bytes | str, *, key_only: bool = False) -> list[str]:
        data = data.encode() if isinstance(data, str) else data
        leaks = [] if key_only else [f"{where}: user id {u}" for u in self.users_in(data)]
        if self.key_in(data):
            leaks.append(f"{where}: the pseudonymization key")
        return leaks


def run_cli(args: list[str], env: dict, outputs: list[str], allowed_failure: str | None = None) -> None:
    result = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "smart_home_assets.definitions", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_ROOT,
    )
    outputs += [result.stdout, result.stderr]
    assert result.returncode == 0 or (allowed_failure and allowed_failure in result.stderr), (
        result.stdout[-3000:] + result.stderr[-3000:]
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    home, data = root / "dagster_home", root / "data"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    key = secrets.token_hex(32)
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "SMART_HOME_PSEUDONYM_KEY": key,
        "SMART_HOME_ENV": "production",
    }
    for var in (
        "SMART_HOME_LANDING_DIR",
        "SMART_HOME_WAREHOUSE",
        "SMART_HOME_DEVICE_CATALOG",
        "SMART_HOME_PARTITIONS_START",
    ):
        env.pop(var, None)
    simulate_fleet(data / "landing", hubs=HUBS, days=DAYS, start=FIRST, fault_rate=0.02, seed=SEED, events_per_hub=60)
    outputs: list[str] = []
    run_cli(["--select", INGEST_AND_FEATURES_SELECTION, "--partition-range", f"{FIRST}...{LAST}"], env, outputs)
    # Should the champion check ever fail, it fails the run after the model was trained, logged and registered:
    # still everything this test scans.
    run_cli(
        ["--select", "usage_model", "--config-json", json.dumps(MODEL_CONFIG)],
        env,
        outputs,
        allowed_failure="check_champion_beats_naive_baselines",
    )
    run_cli(["--select", "usage_predictions", "--partition-range", f"{PREDICTED_FIRST}...{LAST}"], env, outputs)
    run_cli(
        ["--select", "prediction_feedback", "--partition-range", f"{PREDICTED_FIRST}...{LAST - dt.timedelta(days=1)}"],
        env,
        outputs,
    )
    needles = Needles([hub.user_id for hub in build_fleet(SEED, HUBS)], key)
    return {
        "root": root,
        "home": home,
        "data": data,
        "key": key,
        "needles": needles,
        "outputs": outputs,
        "tracking_uri": env["MLFLOW_TRACKING_URI"],
    }


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def contents(path: Path) -> list[tuple[str, bytes]]:
    """The file's bytes, and for a zip archive each member's uncompressed bytes too."""
    parts = [(str(path), path.read_bytes())]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            parts += [(f"{path}!{name}", archive.read(name)) for name in archive.namelist()]
    return parts


def test_warehouse_holds_clear_user_ids_only_in_the_restricted_zone(pipeline):
    needles: Needles = pipeline["needles"]
    with duckdb.connect(str(pipeline["data"] / "warehouse.duckdb"), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]

        def as_text(table: str) -> bytes:
            rows = con.execute(f'SELECT CAST(COLUMNS(*) AS VARCHAR) FROM "{table}"').fetchall()
            return "\n".join("\t".join("" if v is None else v for v in row) for row in rows).encode()

        leaks, scanned = [], {}
        for table in tables:
            if table in RESTRICTED:
                continue
            text = as_text(table)
            scanned[table] = len(text)
            leaks += needles.leaks(f"table {table}", text)
        raw = as_text("raw_usage")
        scored_days = {
            t: sorted(str(d) for (d,) in con.execute(f"SELECT DISTINCT partition_date FROM {t} ORDER BY 1").fetchall())
            for t in ("usage_predictions", "prediction_feedback")
        }
    assert {
        "device_usage",
        "device_usage_quarantine",
        "usage_features",
        "usage_predictions",
        "prediction_feedback",
    } <= set(scanned), tables
    # the scoring tables were scanned with every day the fixture materialized
    predicted = [str(PREDICTED_FIRST + dt.timedelta(days=d)) for d in range(4)]
    assert scored_days == {"usage_predictions": predicted, "prediction_feedback": predicted[:3]}
    assert all(size > 0 for size in scanned.values()), scanned
    assert leaks == []
    # The positive control: the restricted zone does hold every user of the fleet in clear text.
    assert needles.users_in(raw) == sorted(u.decode() for u in needles.user_ids)
    assert not needles.key_in(raw)


def test_dagster_instance_events_metadata_and_snapshots_carry_no_user_id_nor_key(pipeline):
    needles: Needles = pipeline["needles"]
    leaks, kinds = [], {}
    metadata_text = []
    with dg.DagsterInstance.from_config(str(pipeline["home"])) as instance:
        runs = instance.get_runs()
        assert len(runs) == 4
        for run in runs:
            leaks += needles.leaks(f"run {run.run_id}", serialize_value(run))
            if run.job_snapshot_id:
                leaks += needles.leaks(
                    f"job snapshot of {run.run_id}", serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
                )
            if run.execution_plan_snapshot_id:
                leaks += needles.leaks(
                    f"plan snapshot of {run.run_id}",
                    serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)),
                )
            for record in instance.all_logs(run.run_id):
                text = serialize_value(record)
                leaks += needles.leaks(f"event {record.dagster_event_type or 'log'} of {run.run_id}", text)
                leaks += needles.leaks("event message", record.message) + needles.leaks("event str", str(record))
                kind = record.dagster_event_type
                kinds[kind] = kinds.get(kind, 0) + 1
                if kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION):
                    metadata_text.append(text)
    assert leaks == []
    # The scan read materializations (one per partition of each partitioned asset, plus the model, the 4 days of
    # predictions and the 3 of feedback) and checks.
    assert kinds[DagsterEventType.ASSET_MATERIALIZATION] >= 4 * DAYS + 1 + 4 + 3, kinds
    assert kinds[DagsterEventType.ASSET_CHECK_EVALUATION] >= DAYS, kinds
    # The key's fingerprint is the one key-derived value allowed in metadata; it is not the key.
    fingerprint = key_fingerprint(pipeline["key"].encode())
    assert any(fingerprint in text for text in metadata_text)
    assert fingerprint not in pipeline["key"]


def test_cli_output_and_every_file_under_dagster_home_carry_no_user_id_nor_key(pipeline):
    needles: Needles = pipeline["needles"]
    leaks = []
    for i, output in enumerate(pipeline["outputs"]):
        leaks += needles.leaks(f"CLI output {i}", output)
    files = files_under(pipeline["home"])
    for path in files:
        leaks += needles.leaks(str(path.relative_to(pipeline["home"])), path.read_bytes())
    assert leaks == []
    compute_logs = [p for p in files if p.is_relative_to(pipeline["home"] / "storage") and p.suffix in (".out", ".err")]
    assert compute_logs and any(p.stat().st_size > 0 for p in compute_logs), [str(p) for p in files][:50]
    assert sum(len(o) for o in pipeline["outputs"]) > 10_000  # the CLI did talk: there was something to scan


def test_mlflow_runs_models_registry_and_artifacts_carry_no_user_id_nor_key(pipeline, tmp_path, monkeypatch):
    import mlflow

    needles: Needles = pipeline["needles"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline["tracking_uri"])  # nothing may fall back to ./mlflow.db
    client = mlflow.MlflowClient(tracking_uri=pipeline["tracking_uri"], registry_uri=pipeline["tracking_uri"])
    experiments = client.search_experiments()
    experiment_ids = [e.experiment_id for e in experiments]
    leaks = needles.leaks("experiments", repr([(e.name, e.tags, e.artifact_location) for e in experiments]))

    runs = client.search_runs(experiment_ids)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    downloaded = []
    for run in runs:
        fields = {
            "params": run.data.params,
            "metric names": sorted(run.data.metrics),
            "tags": run.data.tags,
            "name": run.info.run_name,
        }
        leaks += needles.leaks(f"run {run.info.run_id}", json.dumps(fields))
        target = tmp_path / "runs" / run.info.run_id
        target.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(target), tracking_uri=pipeline["tracking_uri"]
        )
        downloaded += files_under(target)
    for model in client.search_logged_models(experiment_ids):
        leaks += needles.leaks(
            f"logged model {model.model_id}",
            json.dumps(
                {
                    "params": model.params,
                    "tags": model.tags,
                    "name": model.name,
                    "metrics": [m.key for m in model.metrics or []],
                }
            ),
        )
    for registered in client.search_registered_models():
        leaks += needles.leaks(
            f"registered model {registered.name}",
            json.dumps({"tags": registered.tags, "aliases": registered.aliases, "description": registered.description}),
        )
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            leaks += needles.leaks(
                f"{registered.name} v{version.version}",
                json.dumps(
                    {
                        "tags": version.tags,
                        "aliases": version.aliases,
                        "description": version.description,
                        "source": version.source,
                        "run_link": version.run_link,
                    }
                ),
            )
            target = tmp_path / "versions" / str(version.version)
            target.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(registered.name, version.version),
                dst_path=str(target),
                tracking_uri=pipeline["tracking_uri"],
            )
            downloaded += files_under(target)
    # What the APIs hand out, then the store itself and every artifact file on disk, listed or not.
    scanned = [part for path in downloaded for part in contents(path)]
    scanned += [
        part
        for path in [pipeline["root"] / "mlflow.db", *files_under(pipeline["data"] / "mlartifacts")]
        for part in contents(path)
    ]
    for where, data in scanned:
        leaks += needles.leaks(where, data)
    assert leaks == []

    names = {p.name for p in downloaded}
    assert {
        "feature_importance.png",
        "predicted_vs_actual.png",
        "MLmodel",
        "input_example.json",
        "serving_input_example.json",
    } <= names, names
    # the model (a pickled forecaster holding the LightGBM booster as text) was scanned in clear, not compressed
    assert any(where.endswith("python_model.pkl") and b"Tree=" in data for where, data in scanned)
    version = client.get_model_version("smart_home_usage", "1")
    assert version.tags["promoted"] in ("True", "False") and version.tags["decision_reason"]


def test_the_key_is_in_no_file_under_the_data_directory(pipeline):
    """The key never reaches disk: not the warehouse file (raw_usage included), not the artifacts."""
    needles: Needles = pipeline["needles"]
    leaks = []
    for path in files_under(pipeline["data"]):
        leaks += needles.leaks(str(path.relative_to(pipeline["data"])), path.read_bytes(), key_only=True)
    assert leaks == []


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    """The scans above pass because nothing leaked, not because they cannot see: a seeded leak is found."""
    key = secrets.token_hex(32)
    user = build_fleet(SEED, 1)[0].user_id
    needles = Needles([user], key)
    assert needles.leaks("x", json.dumps({"detail": f"line from {user}"})) == [f"x: user id {user}"]
    assert needles.leaks("x", f"id {user.removeprefix('user-')} without prefix") == [f"x: user id {user}"]
    assert needles.leaks("x", "another user-0123456789ab") == ["x: user id user-0123456789ab"]
    assert needles.leaks("x", f"...{key[20:40]}...") == ["x: the pseudonymization key"]
    assert needles.leaks("x", key_fingerprint(key.encode())) == []
    archive = tmp_path / "model.skops"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("schema.json", json.dumps({"user": user}) * 50)
    assert [w for w, data in contents(archive) if needles.users_in(data)] == [f"{archive}!schema.json"]
