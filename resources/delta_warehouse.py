"""The warehouse as Delta Lake tables (delta-rs, the ``deltalake`` package), on a local folder or ``s3://``.

The interface ``resources.warehouse_api.Warehouse``, like ``resources.warehouse.DuckDBWarehouse``
(``replace_partitions``, ``query``, ``table_exists``, ``read_partitions``, ``read_only_table``), so the assets do
not change when
``SMART_HOME_WAREHOUSE_BACKEND=delta`` selects it (``smart_home_assets/definitions.py``).

- Every table is ``<uri>/<table>``, partitioned by ``partition_date``.
- A table is created by an empty commit of its schema (``DeltaTable.create``) before any data is written, and
  data is only ever written as an overwrite restricted to the partitions being replaced. No writer creates a
  table by writing data: two writers that both "create" a table with an unrestricted overwrite can lose one's
  partition. Concurrent creation is tolerated (the loser of the version-0 commit reopens the table).
- ``replace_partitions`` is one Delta commit per table (atomic per table: readers see the old or the new
  partition, never a mix). Across the tables of one call it is NOT atomic: the tables are committed in the
  order given, after every frame has been checked against its table, so a crash can only fall between two
  complete table commits. The assets list the table that completes a step last (``raw_usage_files`` after
  ``raw_usage``); re-running the partition replaces both and converges. See docs/deployment.md.
- ``query`` runs DuckDB SQL in an in-memory DuckDB over the Delta tables the query names, each registered as
  the Arrow dataset of its current snapshot (``DeltaTable.to_pyarrow_dataset()``: the files the
  transaction log lists, read through a native pyarrow file system). Never read a Delta table by globbing its
  parquet files: files of removed (replaced) partitions stay on storage until vacuumed, and a glob would count
  them again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from dagster import ConfigurableResource
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from pydantic import Field

from resources.objectstore import delta_storage_options, is_object_store, s3_filesystem, split_s3
from resources.settings import default_delta_uri
from resources.warehouse import (
    PARTITION_COLUMN,
    WarehouseError,
    checked_partition_dates,
    identifier,
    partition_dates,
)

COMMIT_ATTEMPTS = 5  # a commit that conflicts with a concurrent writer of the same partition is retried


def _frame(table) -> pl.DataFrame:
    """``pl.from_arrow`` of an Arrow table: always a DataFrame (only an Arrow array gives a Series)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


class DeltaWarehouse(ConfigurableResource):
    """Delta Lake tables under ``uri``: a local folder or ``s3://bucket/prefix``.

    ``uri`` defaults to ``$SMART_HOME_DELTA_URI`` or ``<data>/delta``. For S3 the credentials and endpoint come
    from the standard ``AWS_*`` variables (``resources.objectstore``); ``storage_options`` adds or overrides
    delta-rs options.
    """

    uri: str = Field(default="", description="Root of the Delta tables (local folder or s3://bucket/prefix).")
    storage_options: dict[str, str] = Field(default_factory=dict, description="Extra delta-rs storage options.")

    # -- locations -------------------------------------------------------------------------------------------
    def root_uri(self) -> str:
        if not self.uri:
            return default_delta_uri()
        return self.uri.rstrip("/") if is_object_store(self.uri) else os.path.abspath(self.uri)

    def table_uri(self, table: str) -> str:
        identifier(table)
        return f"{self.root_uri()}/{table}"

    def options(self) -> dict[str, str]:
        base = delta_storage_options() if is_object_store(self.root_uri()) else {}
        return {**base, **self.storage_options}

    def __repr__(self) -> str:  # never show credentials passed in storage_options
        return f"DeltaWarehouse(uri={self.root_uri()!r})"

    __str__ = __repr__

    def _open(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri(table), storage_options=self.options())
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise WarehouseError(f"cannot open Delta table {self.table_uri(table)}: {exc}") from exc

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A native pyarrow file system and the root's path in it."""
        root = self.root_uri()
        if is_object_store(root):
            bucket, prefix = split_s3(root)
            return s3_filesystem(self.options()), f"{bucket}/{prefix}".rstrip("/")
        return pafs.LocalFileSystem(), root

    def _dataset(self, table: str, delta: DeltaTable) -> ds.Dataset:
        """The current snapshot's files (from the transaction log) as an Arrow dataset, read through a native
        pyarrow file system: deltalake's default Python file-system handler makes the process abort at exit
        now and then ("terminate called without an active exception", delta-rs #2184, polars #24169)."""
        fs, base = self._filesystem()
        return delta.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(f"{base}/{table}", fs))

    def table_names(self) -> set[str]:
        """Names of the folders under the root (candidate tables; ``_open`` decides whether each is one)."""
        root = self.root_uri()
        fs, base = self._filesystem()
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as exc:
            raise WarehouseError(f"cannot list Delta warehouse {root}: {exc}") from exc
        return {i.base_name for i in infos if i.type == pafs.FileType.Directory}

    # -- writes ----------------------------------------------------------------------------------------------
    def create_table(self, table: str, schema: Mapping[str, pl.DataType]) -> DeltaTable:
        """Create ``table`` (empty, partitioned by ``partition_date``) unless it exists; safe when several
        writers do it at once: exactly one version-0 commit wins, the others reopen the table."""
        existing = self._open(table)
        if existing is not None:
            return existing
        arrow_schema = pl.DataFrame(schema=dict(schema)).to_arrow().schema
        try:
            DeltaTable.create(
                self.table_uri(table),
                schema=arrow_schema,
                partition_by=[PARTITION_COLUMN],
                mode="ignore",
                storage_options=self.options(),
            )
        except (DeltaError, CommitFailedError) as exc:
            if self._open(table) is None:  # not lost to a concurrent creator: a real failure
                raise WarehouseError(f"cannot create Delta table {self.table_uri(table)}: {exc}") from exc
        created = self._open(table)
        if created is None:
            raise WarehouseError(f"Delta table {self.table_uri(table)} does not exist after creating it")
        return created

    def replace_partitions(self, tables: Mapping[str, pl.DataFrame], partition_keys: Sequence[str]) -> None:
        """Replace ``partition_keys`` of every table with the given frames: one Delta commit per table, in the
        order given, after every frame has been checked (see the module docstring for what is atomic)."""
        dates = checked_partition_dates(tables, partition_keys)
        aligned = {}
        for table, frame in tables.items():  # every check before the first commit
            aligned[table] = self._aligned(table, frame, self._schema(table, self.create_table(table, frame.schema)))
        predicate = f"{PARTITION_COLUMN} IN ({', '.join(repr(d.isoformat()) for d in dates)})"
        for table, frame in aligned.items():
            self._overwrite(table, frame.to_arrow, predicate)

    def replace_partition_in_batches(
        self, partition_key: str, tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """:meth:`replace_partitions_in_batches` of one partition."""
        self.replace_partitions_in_batches([partition_key], tables, batches)

    def replace_partitions_in_batches(
        self, partition_keys: Sequence[str], tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """``replace_partitions`` of the concatenated batches: one Delta commit per table, as there, with memory
        bounded by one batch. Each batch is checked and staged as a local Parquet file per table; then each
        table's staged files are streamed into ``write_deltalake`` as a ``RecordBatchReader``, so neither the
        batches nor the partitions are ever gathered in memory."""
        import tempfile

        import pyarrow as pa

        dates = partition_dates(partition_keys)
        with tempfile.TemporaryDirectory(prefix="smart-home-delta-staging-") as staging:
            staged: dict[str, list[str]] = {table: [] for table in tables}
            targets: dict[str, dict[str, pl.DataType]] = {}
            for number, batch in enumerate(batches):
                checked_partition_dates(batch, partition_keys)
                for table in tables:
                    frame = batch[table]
                    if table not in targets:
                        targets[table] = self._schema(table, self.create_table(table, frame.schema))
                    identifier(table)  # a plain name: safe in a file name too
                    path = os.path.join(staging, f"{table}-{number:06d}.parquet")
                    self._aligned(table, frame, targets[table]).write_parquet(path, statistics=False)
                    staged[table].append(path)
            missing = [t for t in tables if not staged[t]]
            if missing:
                raise WarehouseError(f"no rows or schema given for {sorted(missing)}")
            predicate = f"{PARTITION_COLUMN} IN ({', '.join(repr(d.isoformat()) for d in dates)})"
            for table in tables:
                schema = pl.DataFrame(schema=targets[table]).to_arrow().schema

                def stream(files=staged[table], schema=schema):
                    for path in files:
                        yield from ds.dataset(path, format="parquet").to_batches()

                self._overwrite(table, lambda s=schema, f=stream: pa.RecordBatchReader.from_batches(s, f()), predicate)

    @staticmethod
    def _aligned(table: str, frame: pl.DataFrame, target: Mapping[str, pl.DataType]) -> pl.DataFrame:
        """``frame`` in the column order and types of the table (a column the table lacks is an error)."""
        missing = [c for c in frame.columns if c not in target]
        if missing:
            raise WarehouseError(
                f"table {table} has no column(s) {missing}: the schema changed; migrate or drop the table"
            )
        return frame.select(
            [(pl.col(c) if c in frame.columns else pl.lit(None)).cast(dtype).alias(c) for c, dtype in target.items()]
        )

    def _overwrite(self, table: str, data, predicate: str) -> None:
        """One overwrite commit of the rows ``data()`` gives (an Arrow table or a RecordBatchReader: called
        again for each attempt, as a stream is read once), retried when a concurrent writer conflicts."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                write_deltalake(
                    self.table_uri(table),
                    data(),
                    mode="overwrite",
                    predicate=predicate,
                    partition_by=[PARTITION_COLUMN],
                    storage_options=self.options(),
                )
                return
            except CommitFailedError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise WarehouseError(
                        f"writing {table} to {self.table_uri(table)} kept conflicting with concurrent writers: {exc}"
                    ) from exc
            except (DeltaError, OSError) as exc:
                raise WarehouseError(
                    f"writing {table} to {self.table_uri(table)} failed; the table is as it was "
                    f"before this write: {exc}"
                ) from exc

    def _schema(self, table: str, delta: DeltaTable) -> dict[str, pl.DataType]:
        return dict(_frame(self._dataset(table, delta).schema.empty_table()).schema)  # reads no file

    # -- reads -----------------------------------------------------------------------------------------------
    def table_exists(self, table: str) -> bool:
        return self._open(table) is not None

    def read_partitions(
        self,
        table: str,
        partition_keys: Sequence[str],
        columns: Sequence[str] | None = None,
        where: Mapping[str, Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``partition_keys`` of ``table`` (only those whose column ``c`` is one of ``where[c]``, for each
        column in ``where``); an empty frame when the table does not exist yet."""
        for column in [*(columns or ()), *(where or {})]:
            identifier(column)
        delta = self._open(table)
        if delta is None:
            return pl.DataFrame()
        dates = partition_dates(partition_keys)
        condition = pc.field(PARTITION_COLUMN).isin(dates)
        for column, values in (where or {}).items():
            condition = condition & pc.field(column).isin(list(values))
        rows = self._dataset(table, delta).to_table(columns=list(columns) if columns else None, filter=condition)
        return _frame(rows)

    def read_only_table(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The whole table (or some columns); an empty frame when it does not exist. Reads never block writers."""
        for column in columns or ():
            identifier(column)
        delta = self._open(table)
        if delta is None:
            return pl.DataFrame()
        return _frame(self._dataset(table, delta).to_table(columns=list(columns) if columns else None))

    def read_only_query(self, table: str, sql: str) -> pl.DataFrame:
        """``sql`` (a read of ``table``) over the tables' current snapshots; an empty frame when ``table`` does not
        exist yet. Reads never block writers."""
        if not self.table_exists(table):
            return pl.DataFrame()
        return self.query(sql)

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        """DuckDB SQL over the Delta tables that ``sql`` names, each the Arrow dataset of its current snapshot."""
        words = set(re.findall(r"[a-z_][a-z0-9_]*", sql.lower()))
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            for name in sorted(words & self.table_names()):
                delta = self._open(name)
                if delta is not None:
                    con.register(name, self._dataset(name, delta))
            return con.execute(sql, params or []).pl()
        finally:
            con.close()
