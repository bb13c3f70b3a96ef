"""`smart-home demo` (what `make run` runs) end to end on a small fleet, daemon phase included, judged by what
the instance, the warehouse and the MLflow registry hold afterwards, not only by its output.

20 hubs x 21 days ending 2026-06-30: enough labeled days for one backtest fold, so a LightGBM version is
trained both times. About 4 minutes on the 2-core machine.
"""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from smart_home_tools.report import partition_accounting
from tests.conftest import COMMAND_ENV_OVERRIDES

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HUBS, DAYS, END = 20, 21, dt.date(2026, 6, 30)
FIRST, NEW_DAY = END - dt.timedelta(days=DAYS - 1), END + dt.timedelta(days=1)
INGEST = ["device_usage", "device_usage_quarantine", "raw_usage", "usage_features"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data, home = root / "data", root / "dagster_home"
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
    }
    for var in COMMAND_ENV_OVERRIDES:
        env.pop(var, None)
    command = [
        str(Path(sys.executable).with_name("smart-home")),
        "demo",
        "--hubs",
        str(HUBS),
        "--days",
        str(DAYS),
        "--end",
        END.isoformat(),
        "--events-per-hub",
        "60",
        "--daemon-timeout",
        "400",
    ]
    # a bound to fail with the output instead of hanging; the demo ends its daemon itself
    result = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    return {
        "result": result,
        "output": result.stdout + result.stderr,
        "data": data,
        "home": home,
        "tracking_uri": env["MLFLOW_TRACKING_URI"],
    }


def test_the_demo_exits_zero_and_says_the_daemon_retrained(demo):
    assert demo["result"].returncode == 0, demo["output"][-4000:]
    out = demo["output"]
    assert "conservation: every partition adds up" in out
    assert f"landing the next day ({NEW_DAY})" in out and "usage_model rematerialized by automation" in out
    assert "runs launched by the daemon:" in out
    # the demo points the alert receiver at a local log and prints what the daemon sent to it
    assert "alerts the daemon would have sent ($SMART_HOME_ALERT_WEBHOOK_URL unset: written to " in out


def test_every_run_succeeded_and_the_daemon_ingested_the_new_day_and_retrained(demo):
    with dg.DagsterInstance.from_config(str(demo["home"])) as instance:
        runs = list(reversed(instance.get_runs()))  # oldest first
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}, [(r.run_id, r.status) for r in runs]

        def selected(run):
            return sorted(k.to_user_string() for k in run.asset_selection or [])

        cli = [r for r in runs if "dagster/sensor_name" not in r.tags]
        assert [selected(r) for r in cli] == [
            INGEST,
            ["usage_model"],
            ["online_predictions", "usage_predictions"],
            ["prediction_feedback"],
        ]
        by_daemon = [
            (r.tags["dagster/sensor_name"], tuple(selected(r)), r.tags.get("dagster/partition"))
            for r in runs
            if "dagster/sensor_name" in r.tags
        ]
        # the landing sensor's run (ingest_uploads job) for the new day, then automation down to the model
        assert ("landing_zone_sensor", (), str(NEW_DAY)) in by_daemon
        for launched in [("device_usage", "device_usage_quarantine"), ("usage_features",)]:
            assert ("automation_sensor", launched, str(NEW_DAY)) in by_daemon, by_daemon
        assert ("automation_sensor", ("usage_model",), None) in by_daemon, by_daemon
        (landed,) = [r for r in runs if r.tags.get("dagster/sensor_name") == "landing_zone_sensor"]
        raw = [e for e in instance.all_logs(landed.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)]
        assert [e.dagster_event.event_specific_data.materialization.partition for e in raw] == [str(NEW_DAY)]

        # usage_model: materialized twice, the second time by automation, on more rows and one more labeled day
        records = instance.fetch_materializations(dg.AssetKey("usage_model"), limit=10).records
        assert len(records) == 2
        retrain, first = records  # newest first
        retrain_run = instance.get_run_by_id(retrain.run_id)
        assert retrain_run.tags.get("dagster/sensor_name") == "automation_sensor"
        before = {k: v.value for k, v in first.asset_materialization.metadata.items()}
        after = {k: v.value for k, v in retrain.asset_materialization.metadata.items()}
        assert after["training_rows"] > before["training_rows"]
        assert after["backtest_days"].endswith(str(END))
        assert before["backtest_days"].endswith(str(END - dt.timedelta(days=1)))
        checks = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(retrain.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        # the champion check, and the model's freshness check (it was just retrained: fresh)
        assert {(c.check_name, c.passed) for c in checks} <= {
            ("check_champion_beats_naive_baselines", True),
            ("freshness_check", True),
        }
        assert ("check_champion_beats_naive_baselines", True) in {(c.check_name, c.passed) for c in checks}


def test_every_partition_adds_up_the_new_day_included(demo, monkeypatch):
    monkeypatch.setenv("SMART_HOME_DATA_DIR", str(demo["data"]))
    monkeypatch.delenv("SMART_HOME_WAREHOUSE_BACKEND", raising=False)
    accounting = partition_accounting(demo["data"] / "warehouse.duckdb")
    days = [str(d) for d in accounting["partition_date"]]
    assert days == [str(FIRST + dt.timedelta(days=d)) for d in range(DAYS + 1)]  # the new day is the last
    assert accounting["conserved"].all() and (accounting["raw_lines"] > 0).all()
    import duckdb

    with duckdb.connect(str(demo["data"] / "warehouse.duckdb"), read_only=True) as con:
        features = dict(con.execute("SELECT partition_date, count(*) FROM usage_features GROUP BY 1").fetchall())
        predicted = sorted(
            d for (d,) in con.execute("SELECT DISTINCT partition_date FROM usage_predictions").fetchall()
        )
    assert len(features) == DAYS + 1 and features[NEW_DAY] > 0
    assert predicted == [END - dt.timedelta(days=7 - d) for d in range(8)]  # the demo predicts the last 8 days


def test_a_champion_exists_and_the_retrain_registered_a_version_trained_on_the_new_actuals(demo):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=demo["tracking_uri"], registry_uri=demo["tracking_uri"])
    champion = client.get_model_version_by_alias("smart_home_usage", "champion")
    versions = {v.tags["dagster_run_id"]: v for v in client.search_model_versions("name = 'smart_home_usage'")}
    with dg.DagsterInstance.from_config(str(demo["home"])) as instance:
        retrain, first = instance.fetch_materializations(dg.AssetKey("usage_model"), limit=2).records
        decided = retrain.asset_materialization.metadata["champion_version"].value
    assert str(champion.version) == decided  # what the daemon's retrain decided is what the registry serves
    # a version per training, each tagged with its Dagster run; the retrain's includes END's actuals (NEW_DAY)
    assert set(versions) == {first.run_id, retrain.run_id}
    assert versions[retrain.run_id].tags["trained_through"] == str(END)
    assert versions[first.run_id].tags["trained_through"] == str(END - dt.timedelta(days=1))
    assert int(versions[retrain.run_id].version) > int(versions[first.run_id].version)
    run = client.get_run(versions[retrain.run_id].run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dagster_run_id"] == retrain.run_id
