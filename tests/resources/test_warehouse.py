"""The warehouse replaces partitions in one transaction, by column name, with checked identifiers."""

import datetime as dt

import polars as pl
import pytest

from resources import DuckDBWarehouse, WarehouseError

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


def frame(day, n, value=1.0):
    return pl.DataFrame({"partition_date": [day] * n, "id": list(range(n)), "value": [value] * n})


def rows(wh, table="t"):
    return wh.query(
        f"SELECT partition_date, count(*) AS n, sum(value) AS s FROM {table} GROUP BY ALL ORDER BY ALL"
    ).rows()


def test_replacing_a_partition_twice_keeps_one_copy_and_other_partitions(tmp_path):
    wh = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    wh.replace_partitions({"t": frame(D1, 3)}, ["2026-01-01"])
    wh.replace_partitions({"t": frame(D2, 2)}, ["2026-01-02"])
    wh.replace_partitions({"t": frame(D1, 3, 2.0)}, ["2026-01-01"])
    assert rows(wh) == [(D1, 3, 6.0), (D2, 2, 2.0)]


def test_a_failure_mid_write_leaves_every_table_as_it_was(tmp_path):
    wh = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    wh.replace_partitions({"t": frame(D1, 3), "u": frame(D1, 1)}, ["2026-01-01"])
    broken = frame(D1, 5).with_columns(unexpected=pl.lit(1))  # u has no such column: fails after t is replaced
    with pytest.raises(WarehouseError, match="no column"):
        wh.replace_partitions({"t": frame(D1, 7), "u": broken}, ["2026-01-01"])
    assert rows(wh, "t") == [(D1, 3, 3.0)] and rows(wh, "u") == [(D1, 1, 1.0)]


def test_columns_are_matched_by_name_not_position(tmp_path):
    wh = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    wh.replace_partitions({"t": frame(D1, 1)}, ["2026-01-01"])
    wh.replace_partitions({"t": frame(D2, 1, 5.0).select("value", "id", "partition_date")}, ["2026-01-02"])
    assert wh.query("SELECT value FROM t WHERE partition_date = '2026-01-02'").item() == 5.0


@pytest.mark.parametrize("table", ["t; DROP TABLE x", "T", "../t", ""])
def test_unsafe_identifiers_are_refused(tmp_path, table):
    with pytest.raises(WarehouseError, match="identifier"):
        DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).replace_partitions({table: frame(D1, 1)}, ["2026-01-01"])


@pytest.mark.parametrize("key", ["2026-02-30", "2026-01-01' OR 1=1 --", "../etc"])
def test_invalid_partition_keys_are_refused(tmp_path, key):
    with pytest.raises(WarehouseError, match="partition key"):
        DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).replace_partitions({"t": frame(D1, 1)}, [key])


def test_rows_outside_the_partitions_being_replaced_are_refused(tmp_path):
    with pytest.raises(WarehouseError, match="outside"):
        DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).replace_partitions({"t": frame(D2, 1)}, ["2026-01-01"])
