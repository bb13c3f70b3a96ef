"""The production warehouse and landing zone, switched by configuration only: a CLI backfill of raw_usage ->
device_usage -> usage_features reads uploads from S3 and writes Delta tables on S3 (moto's server on loopback),
and yields the same rows as the DuckDB file fed from a local folder. The analyst queries of
docs/deployment.md run against the result."""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from resources.delta_warehouse import DeltaWarehouse
from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION
from smart_home_tools.simulate import simulate_fleet
from tests.conftest import latest_run_check_evaluations
from tests.moto_s3 import moto_server

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIRST, DAYS = dt.date(2026, 4, 1), 3
RANGE = f"{FIRST}...{FIRST + dt.timedelta(days=DAYS - 1)}"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
SELECTION = INGEST_AND_FEATURES_SELECTION
# table -> columns that legitimately differ between two ingestions (time of ingestion, S3's Last-Modified)
TABLES = {
    "raw_usage": ["ingested_at"],
    "raw_usage_files": ["ingested_at", "mtime_ns"],
    "device_usage": [],
    "device_usage_quarantine": [],
    "usage_features": [],
}


def backfill(env):
    command = [
        DAGSTER,
        "asset",
        "materialize",
        "-m",
        "smart_home_assets.definitions",
        "--select",
        SELECTION,
        "--partition-range",
        RANGE,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def base_env(root: Path, name: str) -> dict[str, str]:
    home = root / f"home-{name}"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(root / f"data-{name}"), "DAGSTER_HOME": str(home)}
    for var in (
        "SMART_HOME_PSEUDONYM_KEY",
        "SMART_HOME_ENV",
        "SMART_HOME_LANDING_DIR",
        "SMART_HOME_WAREHOUSE",
        "SMART_HOME_WAREHOUSE_BACKEND",
        "SMART_HOME_DELTA_URI",
    ):
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def both(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("delta-cli")
    landing = root / "landing"
    simulate_fleet(landing, hubs=20, days=DAYS, start=FIRST, fault_rate=0.03, seed=11, events_per_hub=40)
    bucket = s3.new_bucket("fleet")
    assert s3.upload_tree(landing, f"{bucket}/landing") > 0

    duck_env = {**base_env(root, "duckdb"), "SMART_HOME_LANDING_DIR": str(landing)}
    backfill(duck_env)

    delta_env = {
        **base_env(root, "delta"),
        **s3.env(),
        "SMART_HOME_WAREHOUSE_BACKEND": "delta",
        "SMART_HOME_DELTA_URI": f"s3://{bucket}/warehouse",
        "SMART_HOME_LANDING_DIR": f"s3://{bucket}/landing",
    }
    backfill(delta_env)
    return {"duckdb": root / "data-duckdb" / "warehouse.duckdb", "delta_env": delta_env, "bucket": bucket, "root": root}


def delta_warehouse(both, s3):
    options = {**s3.env(), "AWS_ALLOW_HTTP": "true"}
    return DeltaWarehouse(uri=f"s3://{both['bucket']}/warehouse", storage_options=options)


def ordered(sql_table: str, exclude: list[str]) -> str:
    columns = f"* EXCLUDE ({', '.join(exclude)})" if exclude else "*"
    return f"SELECT {columns} FROM {sql_table} ORDER BY ALL"


def test_delta_on_s3_holds_the_same_rows_as_the_duckdb_file(both, s3):
    delta = delta_warehouse(both, s3)
    with duckdb.connect(str(both["duckdb"]), read_only=True) as con:
        for table, exclude in TABLES.items():
            expected = con.execute(ordered(table, exclude)).pl()
            got = delta.query(ordered(table, exclude))
            assert expected.height > 0, table
            assert got.columns == expected.columns, table
            assert got.rows() == expected.rows(), table
    # nothing local: the Delta run wrote no DuckDB file and read no local landing folder
    assert not (both["root"] / "data-delta" / "warehouse.duckdb").exists()
    assert not (both["root"] / "data-delta" / "landing").exists()


def test_every_partition_is_conserved_and_checks_passed_on_delta(both, s3):
    counts = delta_warehouse(both, s3).query("""
        SELECT r.partition_date, r.n, coalesce(c.n, 0) AS clean, coalesce(q.n, 0) AS quarantined
        FROM (SELECT partition_date, count(*) n FROM raw_usage GROUP BY ALL) r
        LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage GROUP BY ALL) c USING (partition_date)
        LEFT JOIN (SELECT partition_date, count(*) n FROM device_usage_quarantine GROUP BY ALL) q
          USING (partition_date) ORDER BY 1""")
    assert counts.height == DAYS
    for day, raw, clean, quarantined in counts.rows():
        assert raw == clean + quarantined > 0, day

    evaluations = latest_run_check_evaluations(both["delta_env"]["DAGSTER_HOME"])
    conserved = {e.partition for e in evaluations if e.check_name == "check_rows_conserved" and e.passed}
    assert conserved == {str(FIRST + dt.timedelta(days=i)) for i in range(DAYS)}
    assert [e for e in evaluations if not e.passed and e.blocking] == []


def test_a_second_backfill_converges_to_the_same_rows(both, s3):
    delta = delta_warehouse(both, s3)
    before = {t: delta.query(ordered(t, ex)).rows() for t, ex in TABLES.items()}
    backfill(both["delta_env"])
    assert {t: delta.query(ordered(t, ex)).rows() for t, ex in TABLES.items()} == before


def test_the_pipeline_summary_reads_the_delta_tables(both, s3, monkeypatch):
    from smart_home_tools.report import partition_accounting, quarantine_reasons

    duck = partition_accounting(both["duckdb"]), quarantine_reasons(both["duckdb"])
    for name in ("SMART_HOME_WAREHOUSE_BACKEND", "SMART_HOME_DELTA_URI", *s3.env()):
        monkeypatch.setenv(name, both["delta_env"][name])
    delta = partition_accounting(Path("/nonexistent.duckdb")), quarantine_reasons(Path("/nonexistent.duckdb"))
    assert delta[0].rows() == duck[0].rows() and delta[0]["conserved"].all() and delta[0].height == DAYS
    assert sorted(delta[1].rows()) == sorted(duck[1].rows())


def documented_snippets() -> list[str]:
    text = (PROJECT_ROOT / "docs" / "deployment.md").read_text()
    section = text.split("## Query the Delta tables with SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_documented_analyst_queries_work_on_s3(both, s3):
    snippets = documented_snippets()
    assert len(snippets) == 2
    with duckdb.connect(str(both["duckdb"]), read_only=True) as con:
        expected = con.execute("""
            SELECT device_type, count(*) AS events, round(sum(energy_wh) / 1000, 3) AS kwh FROM device_usage
            WHERE partition_date BETWEEN '2026-04-01' AND '2026-04-30' GROUP BY device_type ORDER BY device_type
            """).fetchall()
    assert len(expected) > 3
    for snippet in snippets:  # each in a fresh interpreter, the way an analyst runs it; exit code checked too
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                snippet + "\nimport json\nprint('ROWS=' + json.dumps([list(r) for r in result.rows()]))",
            ],
            env=both["delta_env"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=PROJECT_ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows = next(line for line in result.stdout.splitlines() if line.startswith("ROWS="))
        got = [tuple(r) for r in __import__("json").loads(rows.removeprefix("ROWS="))]
        assert [(t, n) for t, n, _ in got] == [(t, n) for t, n, _ in expected]
        assert [k for _, _, k in got] == pytest.approx([k for _, _, k in expected], abs=1e-3)
