"""Shared fixtures: an isolated data directory and Dagster instance per test, and upload file writers; the
session guards of tests/session_guards.py."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import pytest

# Required tests not skipped, the checkout left clean, the exported environment restored: see the module.
from tests.session_guards import pytest_addoption, pytest_configure  # noqa: F401

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Settings a smart-home command run on its own data directory must not inherit from the caller's environment.
COMMAND_ENV_OVERRIDES = (
    "SMART_HOME_LANDING_DIR",
    "SMART_HOME_WAREHOUSE",
    "SMART_HOME_PSEUDONYM_KEY",
    "SMART_HOME_ENV",
    "SMART_HOME_DEVICE_CATALOG",
    "SMART_HOME_PARTITIONS_START",
    "SMART_HOME_WAREHOUSE_BACKEND",
    "SMART_HOME_EXECUTOR",
)


def event(day: str, n: int, *, hub: str = "hub-0001", device_type: str = "fridge", **overrides) -> dict:
    """A valid upload record for ``day`` (the n-th event of the hub that day)."""
    ts = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC) + dt.timedelta(minutes=7 * n)
    record = {
        "event_id": f"{hub}-{day}-{n}",
        "hub_id": hub,
        "user_id": f"user-{hub}",
        "device_id": f"{hub}-{device_type}-0",
        "device_type": device_type,
        "event_timestamp": ts.isoformat(),
        "duration_s": 600.0,
        "energy_wh": 25.0 + n,
    }
    record.update(overrides)
    return record


def write_upload(landing: Path, day: str, hub: str, lines: list[dict | str], *, gz: bool = True) -> Path:
    """Write one hub's upload for ``day``; dict lines are JSON-encoded, str lines written as they are."""
    folder = landing / day
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines)
    path = folder / f"{hub}.jsonl{'.gz' if gz else ''}"
    if gz:
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(text.encode())
    else:
        path.write_text(text)
    return path


@pytest.fixture
def project_env(tmp_path, monkeypatch) -> dict[str, Path]:
    """SMART_HOME_DATA_DIR and DAGSTER_HOME in a temporary folder, with the project's instance config."""
    data = tmp_path / "data"
    home = tmp_path / "dagster_home"
    (data / "landing").mkdir(parents=True)
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("SMART_HOME_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for var in (
        "SMART_HOME_LANDING_DIR",
        "SMART_HOME_WAREHOUSE",
        "SMART_HOME_PSEUDONYM_KEY",
        "SMART_HOME_ENV",
        "SMART_HOME_DEVICE_CATALOG",
    ):
        monkeypatch.delenv(var, raising=False)
    return {"data": data, "landing": data / "landing", "home": home, "warehouse": data / "warehouse.duckdb"}


def pipeline_resources(landing: Path, warehouse: Path) -> dict:
    """The data resources of the ingest-to-features assets, as definitions.py wires them, on ``landing`` and the
    DuckDB file ``warehouse`` (the pseudonym key at its development default)."""
    from resources import DuckDBWarehouse, LandingZone, PseudonymizationKey

    return {
        "landing": LandingZone(path=str(landing)),
        "warehouse": DuckDBWarehouse(database=str(warehouse)),
        "pseudonym_key": PseudonymizationKey(),
    }


@pytest.fixture
def project_resources(project_env) -> dict:
    """:func:`pipeline_resources` on the test's project environment (``project_env``)."""
    return pipeline_resources(project_env["landing"], project_env["warehouse"])


def simulated_features(start: dt.date, days: int, hubs: int = 25, seed: int = 3, events_per_hub: int = 80):
    """usage_features rows of a simulated fleet over ``days`` days from ``start``, built with the pure functions
    (no warehouse): enough history for the first model to beat the naive baselines."""
    import polars as pl

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


# The fleet the model tests train on: 25 simulated hubs over 40 days, enough history for the first model to beat
# the naive baselines and be promoted.
FLEET_START, FLEET_DAYS = dt.date(2026, 1, 5), 40


@pytest.fixture(scope="session")
def features():
    """usage_features rows of the model tests' fleet (:data:`FLEET_START`, :data:`FLEET_DAYS`), computed once per
    session and written per test into a fresh warehouse (:func:`model_resources`). A test module that needs
    another history overrides this fixture."""
    return simulated_features(FLEET_START, FLEET_DAYS)


def model_resources(project_env: dict, features, monkeypatch) -> dict:
    """The resources of a training test: ``features`` written into the test's warehouse, MLflow on SQLite in
    the test's data directory (a real registry), and the rest at their defaults."""
    from resources.tracking import ModelRegistry, mlflow_tracking
    from smart_home_assets.lib.tables import USAGE_FEATURES

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project_env['data'] / 'mlflow.db'}")
    resources = pipeline_resources(project_env["landing"], project_env["warehouse"])
    resources["warehouse"].replace_partitions(
        {USAGE_FEATURES: features}, sorted({str(d) for d in features["partition_date"].unique().to_list()})
    )
    return {**resources, "model_registry": ModelRegistry(), "mlflow": mlflow_tracking}


def latest_run_check_evaluations(dagster_home: str) -> list:
    """The asset check evaluations of the newest run of the instance at ``dagster_home``, which must have
    succeeded (for tests that ran a CLI backfill in a subprocess)."""
    import os

    import dagster as dg
    from dagster._core.events import DagsterEventType

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = dagster_home
    try:
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs(limit=1)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            return [
                r.get_dagster_event().asset_check_evaluation_data
                for r in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            ]
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous


def ingest_day(day: str, files, ingested_at) -> tuple:
    """(raw_usage rows, file manifest) of one day's landing files, as raw_usage computes them
    (``ingest_partitions_in_batches``), in one batch."""
    import polars as pl

    from smart_home_assets.lib.ingest import ingest_partitions_in_batches

    batches = list(ingest_partitions_in_batches([(day, files)], ingested_at, batch_rows=2**62))
    return pl.concat([raw for raw, _ in batches]), pl.concat([manifest for _, manifest in batches])
