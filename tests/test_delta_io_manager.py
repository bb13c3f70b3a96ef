"""dagster-deltalake-polars cuts a time window to its first partition; resources/delta_io_manager.py fixes it.

The stock tests pin the upstream bug (they fail once upstream fixes it: then drop the subclass)."""

import datetime as dt

import dagster as dg
import polars as pl
import pytest
from dagster_deltalake import LocalConfig
from dagster_deltalake_polars import DeltaLakePolarsIOManager

from resources.delta_io_manager import WindowedDeltaLakePolarsIOManager

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
daily = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-03-04")


@dg.asset(partitions_def=daily, metadata={"partition_expr": "partition_date"},
          backfill_policy=dg.BackfillPolicy.single_run())
def readings(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """Day i (0-based) has i + 2 rows, so every day's share of a total is visible."""
    frames = []
    for key in context.partition_keys:
        n = DAYS.index(key) + 2
        frames.append(pl.DataFrame({"partition_date": [dt.date.fromisoformat(key)] * n, "value": list(range(n))}))
    return pl.concat(frames)


@dg.asset
def readings_total(readings: pl.DataFrame) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": readings.height,
                                          "days": readings["partition_date"].n_unique()})


def io_manager(kind, tmp_path):
    return kind(root_uri=str(tmp_path / "delta"), storage_options=LocalConfig())


def materialize_days_one_by_one(manager):
    for key in DAYS:
        assert dg.materialize([readings], partition_key=key, resources={"io_manager": manager}).success


def downstream_metadata(manager):
    result = dg.materialize([readings, readings_total], selection=[readings_total],
                            resources={"io_manager": manager})
    assert result.success
    (event,) = result.asset_materializations_for_node("readings_total")
    return {k: v.value for k, v in event.metadata.items()}


def table_rows(tmp_path):
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    path = str(tmp_path / "delta" / "public" / "readings")
    table = pl.from_arrow(DeltaTable(path).to_pyarrow_table(
        filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem())))
    return table.group_by("partition_date").len().sort("partition_date").rows()


def materialize_range(manager):
    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
    assert dg.materialize([readings], tags=tags, resources={"io_manager": manager}).success


EXPECTED = [(dt.date(2026, 3, 1), 2), (dt.date(2026, 3, 2), 3), (dt.date(2026, 3, 3), 4)]


def test_stock_io_manager_gives_an_unpartitioned_downstream_only_the_first_partition(tmp_path):
    manager = io_manager(DeltaLakePolarsIOManager, tmp_path)
    materialize_days_one_by_one(manager)
    assert table_rows(tmp_path) == EXPECTED  # all three days are stored ...
    assert downstream_metadata(manager) == {"rows": 2, "days": 1}  # ... but only the first one is loaded


def test_fixed_io_manager_gives_an_unpartitioned_downstream_every_partition(tmp_path):
    manager = io_manager(WindowedDeltaLakePolarsIOManager, tmp_path)
    materialize_days_one_by_one(manager)
    assert downstream_metadata(manager) == {"rows": 9, "days": 3}


def test_stock_io_manager_cannot_rerun_a_range_backfill(tmp_path):
    manager = io_manager(DeltaLakePolarsIOManager, tmp_path)
    materialize_range(manager)  # the table does not exist yet: a plain overwrite
    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
    result = dg.materialize([readings], tags=tags, resources={"io_manager": manager}, raise_on_error=False)
    assert not result.success  # the overwrite predicate names one day, the rows of the others fail its check
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "failed validation check" in str(failure.event_specific_data.error)
    assert table_rows(tmp_path) == EXPECTED


@pytest.mark.parametrize("runs", [1, 2])
def test_fixed_io_manager_replaces_a_whole_range(tmp_path, runs):
    manager = io_manager(WindowedDeltaLakePolarsIOManager, tmp_path)
    for _ in range(runs):
        materialize_range(manager)
    assert table_rows(tmp_path) == EXPECTED
    # a single day re-run in the middle replaces that day only
    assert dg.materialize([readings], partition_key=DAYS[1], resources={"io_manager": manager}).success
    assert table_rows(tmp_path) == EXPECTED
    assert downstream_metadata(manager) == {"rows": 9, "days": 3}
