"""The warehouse contract on every backend: the DuckDB file, Delta tables on a local folder, Delta tables on S3
(moto's server on loopback). Then what only Delta has to prove: per-table commits in a stated order, tables
created before concurrent writers, and reads that follow the transaction log rather than the files on storage."""

import datetime as dt
import threading

import polars as pl
import pytest

import resources.delta_warehouse as delta_module
from resources import DuckDBWarehouse, WarehouseError
from resources.delta_warehouse import DeltaWarehouse
from tests.moto_s3 import moto_server

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture(params=["duckdb", "delta_local", "delta_s3"])
def warehouse(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        return DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    if request.param == "delta_local":
        return DeltaWarehouse(uri=str(tmp_path / "delta"))
    server = request.getfixturevalue("s3")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return DeltaWarehouse(uri=f"s3://{server.new_bucket()}/warehouse")


@pytest.fixture(params=["delta_local", "delta_s3"])
def delta(request, tmp_path, monkeypatch):
    if request.param == "delta_local":
        return DeltaWarehouse(uri=str(tmp_path / "delta"))
    server = request.getfixturevalue("s3")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return DeltaWarehouse(uri=f"s3://{server.new_bucket()}/warehouse")


def frame(day, n, value=1.0):
    return pl.DataFrame({"partition_date": [day] * n, "id": list(range(n)), "value": [value] * n})


def rows(wh, table="t"):
    return wh.query(
        f"SELECT partition_date, count(*) AS n, sum(value) AS s FROM {table} GROUP BY ALL ORDER BY ALL"
    ).rows()


# -- the contract, on every backend ------------------------------------------------------------------------------


def test_replacing_a_partition_twice_keeps_one_copy_and_other_partitions(warehouse):
    warehouse.replace_partitions({"t": frame(D1, 3)}, ["2026-01-01"])
    warehouse.replace_partitions({"t": frame(D2, 2)}, ["2026-01-02"])
    warehouse.replace_partitions({"t": frame(D1, 3, 2.0)}, ["2026-01-01"])
    assert rows(warehouse) == [(D1, 3, 6.0), (D2, 2, 2.0)]


def test_a_range_is_replaced_and_an_empty_frame_clears_its_partitions(warehouse):
    warehouse.replace_partitions(
        {"t": pl.concat([frame(D1, 1), frame(D2, 2), frame(D3, 3)])}, ["2026-01-01", "2026-01-02", "2026-01-03"]
    )
    warehouse.replace_partitions({"t": pl.concat([frame(D2, 4, 3.0)])}, ["2026-01-02", "2026-01-03"])
    assert rows(warehouse) == [(D1, 1, 1.0), (D2, 4, 12.0)]
    warehouse.replace_partitions({"t": frame(D2, 0)}, ["2026-01-02"])
    assert rows(warehouse) == [(D1, 1, 1.0)]


def test_partitions_replaced_in_batches_spanning_days_in_one_write(warehouse):
    """A range run's step: batches that span days and split them, two tables, one write per table; a partition
    with no rows in any batch is emptied, partitions outside the range are kept, and a batch that fails midway
    leaves every table as it was (Delta streams the staged batches into write_deltalake)."""
    keys = ["2026-01-02", "2026-01-03"]
    warehouse.replace_partitions(
        {"t": pl.concat([frame(D1, 1), frame(D2, 5), frame(D3, 5)]), "u": frame(D2, 1)}, ["2026-01-01", *keys]
    )
    batches = [
        {"t": pl.concat([frame(D2, 2, 2.0)]), "u": frame(D2, 2, 2.0)},
        {"t": pl.concat([frame(D2, 1, 3.0)]), "u": frame(D2, 0)},
    ]

    def failing():
        yield {"t": frame(D2, 9, 9.0), "u": frame(D2, 9, 9.0)}
        raise RuntimeError("the run died between batches")

    with pytest.raises(RuntimeError):
        warehouse.replace_partitions_in_batches(keys, ["t", "u"], failing())
    assert rows(warehouse) == [(D1, 1, 1.0), (D2, 5, 5.0), (D3, 5, 5.0)]
    warehouse.replace_partitions_in_batches(keys, ["t", "u"], iter(batches))
    assert rows(warehouse) == [(D1, 1, 1.0), (D2, 3, 7.0)]  # D3 had no rows in any batch: emptied
    assert rows(warehouse, "u") == [(D2, 2, 4.0)]
    with pytest.raises(WarehouseError):  # a row outside the range is refused before anything is written
        warehouse.replace_partitions_in_batches(keys, ["t", "u"], iter([{"t": frame(D1, 1), "u": frame(D2, 1)}]))
    assert rows(warehouse) == [(D1, 1, 1.0), (D2, 3, 7.0)]


def test_columns_are_matched_by_name_and_missing_ones_are_null(warehouse):
    warehouse.replace_partitions({"t": frame(D1, 1)}, ["2026-01-01"])
    warehouse.replace_partitions({"t": frame(D2, 1, 5.0).select("value", "id", "partition_date")}, ["2026-01-02"])
    warehouse.replace_partitions({"t": frame(D3, 1).select("partition_date", "id")}, ["2026-01-03"])
    assert warehouse.query("SELECT partition_date, value FROM t ORDER BY 1").rows() == [
        (D1, 1.0),
        (D2, 5.0),
        (D3, None),
    ]


def test_a_schema_change_fails_before_any_table_is_written(warehouse):
    warehouse.replace_partitions({"t": frame(D1, 3), "u": frame(D1, 1)}, ["2026-01-01"])
    broken = frame(D1, 5).with_columns(unexpected=pl.lit(1))  # u has no such column
    with pytest.raises(WarehouseError, match="no column"):
        warehouse.replace_partitions({"t": frame(D1, 7), "u": broken}, ["2026-01-01"])
    assert rows(warehouse, "t") == [(D1, 3, 3.0)] and rows(warehouse, "u") == [(D1, 1, 1.0)]


def test_reads_partitions_columns_and_existence(warehouse):
    assert not warehouse.table_exists("t")
    assert warehouse.read_partitions("t", ["2026-01-01"]).is_empty()
    assert warehouse.read_only_table("t").is_empty()
    warehouse.replace_partitions({"t": pl.concat([frame(D1, 2), frame(D2, 3, 2.0)])}, ["2026-01-01", "2026-01-02"])
    assert warehouse.table_exists("t")
    got = warehouse.read_partitions("t", ["2026-01-02"], columns=["id", "value"])
    assert got.columns == ["id", "value"] and sorted(got.rows()) == [(0, 2.0), (1, 2.0), (2, 2.0)]
    assert warehouse.read_only_table("t", ["partition_date"]).height == 5
    # parameters, a date cast and a scalar subquery: the shapes the assets and checks use
    assert (
        warehouse.query(
            "SELECT count(*) AS n FROM t WHERE partition_date = ?::DATE AND value > ?", ["2026-01-02", 1.5]
        ).item()
        == 3
    )
    assert warehouse.query("SELECT (SELECT max(partition_date) FROM t) - ?::INTEGER AS d", [1]).item() == D1


@pytest.mark.parametrize("table", ["t; DROP TABLE x", "T", "../t", ""])
def test_unsafe_identifiers_are_refused(warehouse, table):
    with pytest.raises(WarehouseError, match="identifier"):
        warehouse.replace_partitions({table: frame(D1, 1)}, ["2026-01-01"])


@pytest.mark.parametrize("key", ["2026-02-30", "2026-01-01' OR 1=1 --"])
def test_invalid_partition_keys_and_rows_outside_are_refused(warehouse, key):
    with pytest.raises(WarehouseError, match="partition key"):
        warehouse.replace_partitions({"t": frame(D1, 1)}, [key])
    with pytest.raises(WarehouseError, match="outside"):
        warehouse.replace_partitions({"t": frame(D2, 1)}, ["2026-01-01"])


# -- what Delta adds ----------------------------------------------------------------------------------------------


def test_a_crash_between_table_commits_leaves_whole_tables_and_a_rerun_converges(delta, monkeypatch):
    delta.replace_partitions({"t": frame(D1, 3), "u": frame(D1, 1)}, ["2026-01-01"])
    real_write, calls = delta_module.write_deltalake, []

    def crash_on_second_table(uri, *args, **kwargs):
        calls.append(uri)
        if len(calls) == 2:
            raise SystemExit("killed between the two commits")
        return real_write(uri, *args, **kwargs)

    monkeypatch.setattr(delta_module, "write_deltalake", crash_on_second_table)
    with pytest.raises(SystemExit):
        delta.replace_partitions({"t": frame(D1, 7, 2.0), "u": frame(D1, 4, 2.0)}, ["2026-01-01"])
    # the first table is wholly new, the second wholly old: never a partial partition
    assert rows(delta, "t") == [(D1, 7, 14.0)] and rows(delta, "u") == [(D1, 1, 1.0)]
    monkeypatch.setattr(delta_module, "write_deltalake", real_write)
    delta.replace_partitions({"t": frame(D1, 7, 2.0), "u": frame(D1, 4, 2.0)}, ["2026-01-01"])
    assert rows(delta, "t") == [(D1, 7, 14.0)] and rows(delta, "u") == [(D1, 4, 8.0)]


def test_concurrent_writers_of_a_new_table_lose_no_partition(delta):
    days = [D1 + dt.timedelta(days=i) for i in range(6)]
    barrier, errors = threading.Barrier(len(days)), []

    def write(day):
        try:
            barrier.wait()
            delta.replace_partitions({"t": frame(day, 2)}, [day.isoformat()])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rows(delta) == [(day, 2, 2.0) for day in days]


def test_reads_follow_the_log_not_the_files_on_storage(tmp_path):
    """Replaced partitions' files stay until vacuumed: a glob over the parquet files counts them again."""
    import duckdb

    wh = DeltaWarehouse(uri=str(tmp_path / "delta"))
    for value in (1.0, 2.0, 3.0):
        wh.replace_partitions({"t": frame(D1, 4, value)}, ["2026-01-01"])
    assert rows(wh) == [(D1, 4, 12.0)]
    globbed = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/delta/t/**/*.parquet')").fetchone()[0]
    assert globbed == 12  # three generations of the same partition
