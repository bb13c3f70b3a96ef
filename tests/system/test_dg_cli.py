"""The `dg` CLI on the project ([tool.dg] in pyproject.toml), as real subprocesses against a temporary instance and
data directory: `dg check defs`, `dg list defs` and the README's `dg launch ... --partition-range` backfill."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from smart_home_assets.definitions import defs
from smart_home_tools.cli import dagster_env
from tests.conftest import PROJECT_ROOT, event, latest_run_check_evaluations, write_upload

pytestmark = pytest.mark.slow

DG = str(Path(sys.executable).with_name("dg"))
DAYS = ("2026-03-01", "2026-03-02")
ASSETS = "raw_usage,device_usage,device_usage_quarantine"
# The warning dg prints when VIRTUAL_ENV is not .venv; [tool.dg.cli] suppresses it for .venv/bin/dg.
VENV_MISMATCH = "active virtual environment does not match"


def run_dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([DG, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert VENV_MISMATCH not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """dagster_env() on a temporary DAGSTER_HOME (with the project's dagster.yaml) and data dir."""
    root = tmp_path_factory.mktemp("dg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "home"))
        mp.setenv("SMART_HOME_DATA_DIR", str(root / "data"))
        for var in (
            "SMART_HOME_PSEUDONYM_KEY",
            "SMART_HOME_ENV",
            "SMART_HOME_LANDING_DIR",
            "SMART_HOME_WAREHOUSE",
            "SMART_HOME_DEVICE_CATALOG",
        ):
            mp.delenv(var, raising=False)
        return dagster_env()


@pytest.fixture(scope="module")
def launched(env) -> dict[str, str]:
    """Uploads for both days (day 1: 3 valid events and a line that is not JSON; day 2: two hubs, 2 events each),
    then the README's `dg launch` over the two days."""
    landing = Path(env["SMART_HOME_DATA_DIR"]) / "landing"
    write_upload(landing, DAYS[0], "hub-0001", [*(event(DAYS[0], n) for n in range(3)), '{"event_id": "cut'])
    for hub in ("hub-0001", "hub-0002"):
        write_upload(landing, DAYS[1], hub, [event(DAYS[1], n, hub=hub) for n in range(2)])
    run_dg("launch", "--assets", ASSETS, "--partition-range", f"{DAYS[0]}...{DAYS[1]}", env=env)
    return env


def test_check_defs_loads_the_code_location(env):
    result = run_dg("check", "defs", env=env)
    assert "All definitions loaded successfully." in result.stdout


def test_list_defs_lists_the_assets_and_checks(env):
    listed = json.loads(run_dg("list", "defs", "--json", env=env).stdout)
    graph = defs.resolve_asset_graph()
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "raw_usage",
        "device_usage",
        "device_usage_quarantine",
        "usage_features",
        "usage_model",
        "usage_predictions",
        "prediction_feedback",
    } <= assets
    checks = {c["key"] for c in listed["asset_checks"]}
    assert checks == {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert {"device_usage:check_rows_conserved", "usage_model:check_champion_beats_naive_baselines"} <= checks
    assert "landing_zone_sensor" in {s["name"] for s in listed["sensors"]}


def test_launch_materializes_both_days_in_one_run(launched, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", launched["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == DAYS
        for asset in ASSETS.split(","):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS), asset
    conserved = {
        e.partition
        for e in latest_run_check_evaluations(launched["DAGSTER_HOME"])
        if e.check_name == "check_rows_conserved" and e.passed
    }
    assert conserved == set(DAYS)


def test_launch_writes_both_days_rows_to_the_warehouse(launched):
    def counts(con, table):
        return dict(
            con.execute(f"SELECT strftime(partition_date, '%Y-%m-%d'), count(*) FROM {table} GROUP BY 1").fetchall()
        )

    with duckdb.connect(str(Path(launched["SMART_HOME_DATA_DIR"]) / "warehouse.duckdb"), read_only=True) as con:
        assert counts(con, "raw_usage") == {DAYS[0]: 4, DAYS[1]: 4}
        assert counts(con, "device_usage") == {DAYS[0]: 3, DAYS[1]: 4}
        assert con.execute(
            "SELECT strftime(partition_date, '%Y-%m-%d'), reason FROM device_usage_quarantine"
        ).fetchall() == [(DAYS[0], "not_json")]
