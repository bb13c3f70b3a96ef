"""The whole pipeline on real recorded data (a slice of tracebase): import, CLI backfill, training.

Reads ../shared/data/tracebase/sessions.csv (ODbL; never copied into the repository) and skips with a
clear message where it is absent; `make test` then fails, since the docs say these tests run (tests/required_tests.txt).
"""

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SESSIONS = PROJECT_ROOT.parent / "shared" / "data" / "tracebase" / "sessions.csv"
FIRST, LAST = dt.date(2011, 11, 1), dt.date(2012, 1, 31)  # Darmstadt, up to 73 metered devices
BIN = Path(sys.executable).parent


def run(command, env):
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, " ".join(map(str, command)) + "\n" + result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tracebase(tmp_path_factory):
    if not SESSIONS.exists():
        pytest.skip(f"real data not found at {SESSIONS} (see shared/data/tracebase/README.md)")
    root = tmp_path_factory.mktemp("tracebase")
    rows = pl.read_csv(SESSIONS, infer_schema=False).filter(
        (pl.col("hub_id") == "tracebase-darmstadt")
        & pl.col("event_timestamp").str.slice(0, 10).is_between(pl.lit(str(FIRST)), pl.lit(str(LAST)))
    )
    rows.write_csv(root / "slice.csv")
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "SMART_HOME_DEVICE_CATALOG": str(PROJECT_ROOT / "smart_home_assets" / "lib" / "catalogs" / "tracebase.json"),
        "SMART_HOME_PARTITIONS_START": "2011-08-01",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'data' / 'mlflow.db'}",
    }
    for var in ("SMART_HOME_PSEUDONYM_KEY", "SMART_HOME_ENV", "SMART_HOME_LANDING_DIR", "SMART_HOME_WAREHOUSE"):
        env.pop(var, None)
    (root / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    run([BIN / "smart-home", "import-csv", root / "slice.csv", "--timezone", "Europe/Berlin"], env)
    # the import turns local Berlin time into UTC days: the first hour of FIRST can land on the day before
    first = FIRST - dt.timedelta(days=1)
    dagster = [BIN / "dagster", "asset", "materialize", "-m", "smart_home_assets.definitions"]
    run(dagster + ["--select", INGEST_AND_FEATURES_SELECTION, "--partition-range", f"{first}...{LAST}"], env)
    # as `make tracebase` does: plugs are not metered every day, so a silent next day is unknown, not zero
    model_config = '{"ops": {"usage_model": {"config": {"silent_next_day_is_unknown": true}}}}'
    model = subprocess.run(
        dagster + ["--select", "usage_model", "--config-json", model_config],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # the model's own blocking check may fail on real data (then the run exits non-zero): that is a finding,
    # asserted on below through the registry, not a crash
    assert "usage_model - STEP_SUCCESS" in model.stdout + model.stderr, model.stdout[-3000:] + model.stderr[-3000:]
    return {"root": root, "rows": rows.height, "env": env}


def test_every_imported_line_is_accounted_for_in_every_partition(tracebase):
    with duckdb.connect(str(tracebase["root"] / "data" / "warehouse.duckdb"), read_only=True) as con:
        per_day = con.execute("""
            SELECT r.partition_date, r.n, coalesce(c.n, 0) + coalesce(q.n, 0)
            FROM (SELECT partition_date, count(*) n FROM raw_usage GROUP BY ALL) r
            LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage GROUP BY ALL) c USING (partition_date)
            LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage_quarantine GROUP BY ALL) q
              USING (partition_date)""").fetchall()
        total = con.execute("SELECT count(*) FROM raw_usage").fetchone()[0]
        unknown = con.execute(
            "SELECT count(*) FROM device_usage_quarantine WHERE reason = 'unknown_device_type'"
        ).fetchone()[0]
    assert total == tracebase["rows"]
    assert all(raw == accounted for _, raw, accounted in per_day)
    assert unknown == 0  # the tracebase catalog knows every appliance class


def test_blocking_checks_pass_on_real_data(tracebase):
    import dagster as dg
    from dagster._core.events import DagsterEventType

    # the CLI runs' instance, opened from its folder: this process's DAGSTER_HOME (what `make test` exported) stays
    with dg.DagsterInstance.from_config(tracebase["env"]["DAGSTER_HOME"]) as instance:
        evaluations = [
            r.dagster_event.event_specific_data
            for run in instance.get_runs()
            for r in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
    assert evaluations
    failed_blocking = {
        (e.check_name, e.partition)
        for e in evaluations
        if e.blocking and not e.passed and e.check_name != "check_champion_beats_naive_baselines"
    }
    assert failed_blocking == set()


def test_model_and_baselines_were_scored_on_the_same_backtest_folds(tracebase):
    import mlflow

    from smart_home_assets.lib import training

    mlflow.set_tracking_uri(tracebase["env"]["MLFLOW_TRACKING_URI"])
    run = mlflow.search_runs(experiment_names=["smart_home_usage"], output_format="list")[0]
    with duckdb.connect(str(tracebase["root"] / "data" / "warehouse.duckdb"), read_only=True) as con:
        features = con.execute("SELECT * FROM usage_features").pl()
    labeled = training.attach_labels(features, silent_next_day_is_unknown=True)
    folds = training.fold_windows(labeled["partition_date"].unique().to_list())
    assert run.info.status == "FINISHED"
    assert int(run.data.metrics["backtest_folds"]) == len(folds)
    # baselines recomputed here on those folds give the numbers the run logged next to the model's
    oof = training.backtest(folds, lambda f: labeled.filter(pl.col("partition_date").is_between(f.first, f.last)), {})
    scores = training.backtest_scores(oof)
    for name in training.BASELINE_NAMES:
        assert run.data.metrics[f"backtest_mae_{name}"] == pytest.approx(scores.mae[name])
        for k, fold in enumerate(folds):
            assert run.data.metrics[f"fold{fold.index}_mae_{name}"] == pytest.approx(scores.fold_mae[name][k])
    assert run.data.params["silent_next_day_is_unknown"] == "True"
    # the promotion decision is consistent with the numbers it logged
    best = min(run.data.metrics[f"backtest_mae_{name}"] for name in training.BASELINE_NAMES)
    lost = sum(
        run.data.metrics[f"fold{f.index}_mae"] >= run.data.metrics[f"fold{f.index}_mae_{scores.best_baseline()}"]
        for f in folds
    )
    assert (run.data.tags["promoted"] == "True") == (
        run.data.metrics["backtest_mae"] < best and lost <= len(folds) // 2
    )
    assert run.data.metrics["backtest_skill"] == pytest.approx(1 - run.data.metrics["backtest_mae"] / best)
