"""A day is ingested, cleaned and checked in batches of whole files and hubs, so memory is bounded by the batch
(SMART_HOME_BATCH_ROWS), not by the day; the tables and check results are exactly those of one batch per day, and
the partition is still replaced in one transaction."""

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from asset_checks import device_usage_checks
from resources import DuckDBWarehouse, LandingZone, PseudonymizationKey
from smart_home_assets.assets.usage import device_usage, raw_usage
from smart_home_assets.lib.batching import grouped_batches
from smart_home_assets.lib.ingest import ingest_partitions_in_batches
from smart_home_tools.simulate import simulate_fleet
from tests.conftest import event, ingest_day, pipeline_resources, write_upload

DAY = "2026-03-02"
NOW = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
TABLES = {
    "raw_usage": ["source_file", "line_number"],
    "raw_usage_files": ["source_file"],
    "device_usage": ["source_file", "line_number"],
    "device_usage_quarantine": ["source_file", "line_number"],
}

# The counts a device_usage check's metadata carries: equal whatever the batch size.
COUNT_METADATA = (
    "rows_checked",
    "failures",
    "raw_lines",
    "device_usage_rows",
    "quarantined_rows",
    "duplicates",
    "unaccounted",
)


def sizes(rows: list[tuple[str, str | None, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"item": pl.String, "group": pl.String, "rows": pl.Int64}, orient="row")


def test_batches_close_at_the_row_budget_and_keep_each_group_whole():
    frame = sizes(
        [
            ("a.gz", "h1", 3),
            ("a.jsonl", "h1", 3),
            ("b", "h2", 2),
            ("c", "h3", 5),
            ("d", None, 1),
            ("e", None, 1),
            ("f", "h4", 1),
        ]
    )
    assert grouped_batches(frame, 4) == [["a.gz", "a.jsonl"], ["b", "c"], ["d", "e", "f"]]
    assert grouped_batches(frame, 1) == [["a.gz", "a.jsonl"], ["b"], ["c"], ["d"], ["e"], ["f"]]
    assert grouped_batches(frame, 10**6) == [["a.gz", "a.jsonl", "b", "c", "d", "e", "f"]]
    # members of one group are batched together even when they are not next to each other
    assert grouped_batches(sizes([("x1", "h1", 1), ("y", "h2", 1), ("x2", "h1", 1)]), 2) == [["x1", "x2"], ["y"]]
    assert grouped_batches(sizes([]), 5) == []


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    simulate_fleet(root, hubs=12, days=1, start=dt.date.fromisoformat(DAY), fault_rate=0.05, seed=11, events_per_hub=40)
    # one hub uploads the day twice, as .jsonl.gz and .jsonl: two files of one hub, kept in one batch (every
    # line of both is conflicting_upload)
    write_upload(root, DAY, "hub-dup", [event(DAY, i, hub="hub-dup") for i in range(6)], gz=True)
    write_upload(root, DAY, "hub-dup", [event(DAY, i, hub="hub-dup") for i in range(3, 9)], gz=False)
    return root


def test_ingesting_in_batches_yields_the_days_rows_in_pieces_of_whole_files(landing):
    files = LandingZone(path=str(landing)).files_for_day(DAY)
    whole_raw, whole_manifest = ingest_day(DAY, files, NOW)
    batches = list(ingest_partitions_in_batches([(DAY, files)], NOW, batch_rows=100))
    assert len(batches) > 3
    assert_frame_equal(pl.concat([raw for raw, _ in batches]), whole_raw)
    assert_frame_equal(pl.concat([manifest for _, manifest in batches]), whole_manifest)
    for raw, manifest in batches:  # no file is split between batches
        assert set(raw["source_file"]) == set(manifest["source_file"])
    for size in (1, 100):  # nor a hub: hub-dup's two files are in one batch even when each hub closes one
        hubs = [
            set(raw["file_hub_id"].drop_nulls()) for raw, _ in ingest_partitions_in_batches([(DAY, files)], NOW, size)
        ]
        assert sum(len(h) for h in hubs) == len(set().union(*hubs))
    empty = list(ingest_partitions_in_batches([(DAY, [])], NOW, batch_rows=100))
    assert len(empty) == 1 and empty[0][0].is_empty()


def materialize_day(landing, data, monkeypatch, batch_rows: int) -> tuple[dict[str, pl.DataFrame], dict]:
    monkeypatch.setenv("SMART_HOME_BATCH_ROWS", str(batch_rows))
    resources = pipeline_resources(landing, data / "warehouse.duckdb")
    warehouse = resources["warehouse"]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_usage, device_usage, device_usage_checks], partition_key=DAY, resources=resources, instance=instance
        )
        assert result.success
        evaluations = {
            e.check_name: (
                e.passed,
                {k: v.value for k, v in e.metadata.items() if k in COUNT_METADATA},
            )
            for e in result.get_asset_check_evaluations()
        }
    tables = {
        t: warehouse.query(f"SELECT * FROM {t}").drop("ingested_at", strict=False).sort(order)
        for t, order in TABLES.items()
    }
    return tables, evaluations


def test_assets_and_checks_in_small_batches_equal_one_batch_per_day(landing, tmp_path, monkeypatch):
    whole_tables, whole_checks = materialize_day(landing, tmp_path / "whole", monkeypatch, 10**9)
    batched_tables, batched_checks = materialize_day(landing, tmp_path / "batched", monkeypatch, 60)
    for table in TABLES:
        assert_frame_equal(batched_tables[table], whole_tables[table])
    assert batched_checks == whole_checks
    assert all(passed for name, (passed, _) in batched_checks.items() if name != "check_quality_score")
    quarantine = batched_tables["device_usage_quarantine"]
    assert quarantine.filter(pl.col("hub_id") == "hub-dup")["reason"].to_list() == ["conflicting_upload"] * 12
    assert whole_checks["check_rows_conserved"][1]["raw_lines"] == batched_tables["raw_usage"].height


class Interrupted(Exception):
    pass


def test_a_failure_between_batches_leaves_the_partition_as_it_was(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    date = dt.date.fromisoformat(DAY)

    def frame(values):
        return pl.DataFrame({"partition_date": [date] * len(values), "v": values})

    warehouse.replace_partitions({"t": frame([1, 2, 3])}, [DAY])

    def failing():
        yield {"t": frame([10])}
        yield {"t": frame([11])}
        raise Interrupted

    with pytest.raises(Interrupted):
        warehouse.replace_partition_in_batches(DAY, ["t"], failing())
    assert sorted(warehouse.query("SELECT v FROM t")["v"]) == [1, 2, 3]
    warehouse.replace_partition_in_batches(DAY, ["t"], iter([{"t": frame([10])}, {"t": frame([11])}]))
    assert sorted(warehouse.query("SELECT v FROM t")["v"]) == [10, 11]
    warehouse.replace_partition_in_batches(DAY, ["t"], iter([]))  # no batch: the partition is emptied
    assert warehouse.query("SELECT v FROM t").is_empty()


def test_staging_left_by_a_killed_writer_is_removed_and_a_live_ones_kept(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".staging-{dead.pid}-0123"
    live = tmp_path / f".staging-{os.getpid()}-4567"
    for folder in (abandoned, live):
        folder.mkdir()
        (folder / "raw_usage-000000.parquet").write_bytes(b"partial")
    date = dt.date.fromisoformat(DAY)
    warehouse.replace_partition_in_batches(DAY, ["t"], iter([{"t": pl.DataFrame({"partition_date": [date]})}]))
    assert not abandoned.exists() and live.exists()
    assert [p.name for p in tmp_path.glob(".staging-*")] == [live.name]  # its own folder is gone too


def test_reading_a_batch_returns_exactly_its_files_even_when_others_sort_between_them(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    date = dt.date.fromisoformat(DAY)
    names = ["a", "b", "c", "d"]
    warehouse.replace_partitions({"t": pl.DataFrame({"partition_date": [date] * 4, "f": names})}, [DAY])
    assert sorted(warehouse.read_partitions("t", [DAY], where={"f": ["a", "c"]})["f"]) == ["a", "c"]
    assert warehouse.read_partitions("t", [DAY], where={"f": []}).is_empty()


RANGE = [str(dt.date(2026, 4, 1) + dt.timedelta(days=i)) for i in range(4)]
RANGE_TABLES = {**TABLES, "usage_features": ["device_id"]}


@pytest.fixture
def history(tmp_path):
    """Four small days (3 hubs, one a day late with an empty day in between): a history backfill's shape."""
    root = tmp_path / "history"
    simulate_fleet(
        root, hubs=3, days=4, start=dt.date.fromisoformat(RANGE[0]), fault_rate=0.05, seed=5, events_per_hub=30
    )
    for day_folder in (root / RANGE[2]).iterdir():  # day 3 has no upload at all
        day_folder.unlink()
    # the same event id on two days is two events (duplicates are judged per day), and a repeat within a day is one
    write_upload(root, RANGE[1], "hub-x", [event(RANGE[1], 1, hub="hub-x"), event(RANGE[1], 1, hub="hub-x")])
    write_upload(root, RANGE[3], "hub-x", [event(RANGE[3], 1, hub="hub-x")])
    return root


def materialize(landing, data, monkeypatch, batch_rows: int, days: list[list[str]]):
    """The ingest-to-features assets with their checks, one run per entry of ``days`` (a range run each)."""
    from asset_checks import usage_features_checks
    from smart_home_assets.assets.features import usage_features

    monkeypatch.setenv("SMART_HOME_BATCH_ROWS", str(batch_rows))
    resources = pipeline_resources(landing, data / "warehouse.duckdb")
    warehouse = resources["warehouse"]
    evaluations = {}
    with dg.instance_for_test() as instance:
        for keys in days:
            tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
            result = dg.materialize(
                [raw_usage, device_usage, device_usage_checks, usage_features, usage_features_checks],
                tags=tags,
                resources=resources,
                instance=instance,
            )
            assert result.success
            for e in result.get_asset_check_evaluations():
                evaluations[(e.check_name, e.partition)] = (
                    e.passed,
                    {
                        k: v.value
                        for k, v in e.metadata.items()
                        if k
                        in (
                            *COUNT_METADATA,
                            "placeholder_user_rows",
                            "unknown_types_in_quarantine",
                            "max_psi",
                            "reference_rows",
                        )
                    },
                )
    tables = {
        t: warehouse.query(f"SELECT * FROM {t}").drop("ingested_at", strict=False).sort("partition_date", *o)
        for t, o in RANGE_TABLES.items()
    }
    return tables, evaluations, warehouse


def test_a_range_run_equals_one_run_per_day(history, tmp_path, monkeypatch):
    """Batches that span days (a history backfill) and batches that split a day give the rows and the
    per-partition check results of one run per day."""
    daily_tables, daily_checks, _ = materialize(history, tmp_path / "daily", monkeypatch, 10**9, [[d] for d in RANGE])
    for batch_rows in (10**9, 50):  # all days in one batch; a day split by hubs and days sharing batches
        tables, checks, _ = materialize(history, tmp_path / f"range-{batch_rows}", monkeypatch, batch_rows, [RANGE])
        for table in RANGE_TABLES:
            assert_frame_equal(tables[table], daily_tables[table])
        assert checks == daily_checks
    assert len(daily_checks) == 10 * len(RANGE)  # every check of every day
    assert daily_checks[("check_rows_conserved", RANGE[2])] == (
        True,
        {"raw_lines": 0, "device_usage_rows": 0, "quarantined_rows": 0, "duplicates": 0, "unaccounted": 0},
    )
    assert daily_checks[("check_rows_conserved", RANGE[1])][1]["duplicates"] >= 1


def test_a_range_runs_check_failure_is_the_failing_days_alone(history, tmp_path, monkeypatch):
    """One day's bad row fails that day's checks in a range run; the other days pass."""
    _, _, warehouse = materialize(history, tmp_path / "range", monkeypatch, 50, [RANGE])
    with warehouse.connect() as conn:  # a copy of one row of day 2 and an out-of-window timestamp on day 4
        conn.execute("INSERT INTO device_usage SELECT * FROM device_usage WHERE partition_date = ? LIMIT 1", [RANGE[1]])
        conn.execute(
            "UPDATE device_usage SET event_timestamp = event_timestamp + INTERVAL 2 DAY WHERE rowid = "
            "(SELECT min(rowid) FROM device_usage WHERE partition_date = ?)",
            [RANGE[3]],
        )
    resources = {
        "landing": LandingZone(path=str(history)),
        "warehouse": warehouse,
        "pseudonym_key": PseudonymizationKey(),
    }
    job = dg.define_asset_job(
        "checks_only",
        selection=dg.AssetSelection.checks(device_usage_checks),
        partitions_def=device_usage.partitions_def,
    )
    definitions = dg.Definitions(
        assets=[raw_usage, device_usage], asset_checks=[device_usage_checks], jobs=[job], resources=resources
    )
    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def("checks_only").execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": RANGE[0], "dagster/asset_partition_range_end": RANGE[-1]},
        )
    failed = {
        (e.check_name, e.partition)
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.check_name != "check_quality_score"
    }  # the score only warns
    assert failed == {
        ("check_event_id_unique", RANGE[1]),
        ("check_rows_conserved", RANGE[1]),
        ("check_event_timestamp_in_partition_window", RANGE[3]),
    }
    assert len(result.get_asset_check_evaluations()) == 8 * len(RANGE)
