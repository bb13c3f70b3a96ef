"""dagster-deltalake-polars' IO manager with its time-window partition filter fixed.

The project's assets do not use an IO manager: they write through the warehouse resource (several tables per
step, schema checks, one place for SQL; see docs/deployment.md). This module is for assets that do use
``DeltaLakePolarsIOManager``, and the test that shows the upstream bug (tests/test_delta_io_manager.py).

The bug (dagster-deltalake 0.29.27, ``handler._time_window_partition_dnf``): a time-window partition becomes
the filter ``partition_expr = window.start``. Every window wider than one partition is cut to its first one:

- an unpartitioned asset downstream of daily partitions loads only the first day;
- a single-run backfill of several days works only while the table does not exist; once it does, the
  overwrite predicate names the first day and the rows of the other days fail its check, so the run fails.

The fix is at that depth, in the type handler: the window becomes ``start <= partition_expr < end`` for reads
and for the overwrite predicate. A table is also created empty before its first write, so two writers that
create it at once cannot replace each other's partition with an unrestricted overwrite.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence

import pyarrow.dataset as ds
import pyarrow.fs as pafs
from dagster import InputContext, OutputContext
from dagster._core.definitions.partitions.utils import TimeWindow
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_deltalake.handler import DeltaLakePyArrowTypeHandler
from dagster_deltalake.io_manager import TableConnection
from dagster_deltalake_polars import DeltaLakePolarsIOManager, DeltaLakePolarsTypeHandler
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError


def _literal(value: dt.datetime, field_type: str) -> str:
    value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d") if field_type == "date" else value.strftime("%Y-%m-%d %H:%M:%S")


def _field_types(table: DeltaTable) -> dict[str, str]:
    return {f.name: getattr(f.type, "type", str(f.type)) for f in table.schema().fields}


def _window_dimensions(table_slice: TableSlice) -> list[tuple[str, TimeWindow]] | None:
    """(column, window) per dimension when every dimension is a time window; None otherwise."""
    dims = table_slice.partition_dimensions or []
    if not dims or not all(isinstance(d.partitions, TimeWindow) for d in dims):
        return None
    return [(d.partition_expr, d.partitions) for d in dims]


def window_predicate(table_slice: TableSlice, field_types: dict[str, str]) -> str | None:
    """``start <= column < end`` for each time-window dimension (SQL text for delta-rs), None if not all are."""
    dims = _window_dimensions(table_slice)
    if dims is None:
        return None
    return " AND ".join(
        f"{col} >= '{_literal(w.start, field_types[col])}' AND {col} < '{_literal(w.end, field_types[col])}'"
        for col, w in dims)


def window_filter(table_slice: TableSlice, field_types: dict[str, str]) -> ds.Expression | None:
    dims = _window_dimensions(table_slice)
    if dims is None:
        return None
    expression = None
    for col, window in dims:
        start, end = (t.astimezone(dt.timezone.utc).replace(tzinfo=None) for t in (window.start, window.end))
        if field_types[col] == "date":
            start, end = start.date(), end.date()
        part = (ds.field(col) >= start) & (ds.field(col) < end)
        expression = part if expression is None else expression & part
    return expression


def _dataset(table: DeltaTable, table_uri: str) -> ds.Dataset:
    """A local table is read through pyarrow's native file system: deltalake's default Python file-system
    handler can abort the process at exit (see resources/delta_warehouse.py)."""
    if "://" in table_uri and not table_uri.startswith("file://"):
        return table.to_pyarrow_dataset()
    path = os.path.abspath(table_uri.removeprefix("file://"))
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(path, pafs.LocalFileSystem()))


class WindowedDeltaLakePolarsTypeHandler(DeltaLakePolarsTypeHandler):
    def load_input(self, context: InputContext, table_slice: TableSlice, connection: TableConnection):
        table = DeltaTable(connection.table_uri, storage_options=connection.storage_options)
        expression = window_filter(table_slice, _field_types(table))
        if expression is None:  # unpartitioned or static partitions: upstream's handling is correct
            return super().load_input(context, table_slice, connection)
        dataset = _dataset(table, connection.table_uri).filter(expression)
        if table_slice.columns is not None:
            return self.from_arrow(dataset.scanner(columns=table_slice.columns).to_reader(),
                                   context.dagster_type.typing_type)
        return self.from_arrow(dataset, context.dagster_type.typing_type)

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj, connection: TableConnection):
        if _window_dimensions(table_slice) is None or obj is None:
            return super().handle_output(context, table_slice, obj, connection)
        reader, _ = self.to_arrow(obj=obj)
        data = reader.read_all()
        columns = [d.partition_expr for d in table_slice.partition_dimensions]
        try:
            table = DeltaTable(connection.table_uri, storage_options=connection.storage_options)
        except TableNotFoundError:  # create it empty first: the data write below never creates a table
            DeltaTable.create(connection.table_uri, schema=data.schema, partition_by=columns, mode="ignore",
                              storage_options=connection.storage_options)
            table = DeltaTable(connection.table_uri, storage_options=connection.storage_options)
        predicate = window_predicate(table_slice, _field_types(table))
        write_deltalake(connection.table_uri, data, mode="overwrite", predicate=predicate, partition_by=columns,
                        storage_options=connection.storage_options)
        context.add_output_metadata({"dagster/row_count": data.num_rows, "table_uri": connection.table_uri,
                                     "overwrite_predicate": predicate})


class WindowedDeltaLakePolarsIOManager(DeltaLakePolarsIOManager):
    """``DeltaLakePolarsIOManager`` whose time-window partitions cover the whole window (reads and writes)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [WindowedDeltaLakePolarsTypeHandler(), DeltaLakePyArrowTypeHandler()]
