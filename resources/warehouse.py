"""The warehouse: an embedded DuckDB file, written through ``dagster_duckdb.DuckDBResource``.

Why not the stock DuckDB IO manager: it replaces a partition with separately autocommitted DELETE and
INSERT statements (a crash between them leaves the partition empty) and inserts columns by position.
Here a partition of one or more tables is replaced in a single transaction, columns are matched by
name, and table/column names are checked identifiers, never text taken from data.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

from resources.settings import default_warehouse_path

log = logging.getLogger(__name__)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PARTITION_COLUMN = "partition_date"
# DuckDB's memory while a staged partition is inserted (replace_partition_in_batches); beyond it DuckDB spills.
STAGED_INSERT_MEMORY_LIMIT = "1GB"


class WarehouseError(RuntimeError):
    pass


def identifier(name: str) -> str:
    """``name`` quoted for SQL, after checking it is a plain lower-case identifier."""
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"refusing SQL identifier {name!r}: only [a-z_][a-z0-9_]* is allowed")
    return f'"{name}"'


def partition_dates(keys: Sequence[str]) -> list[dt.date]:
    """Partition keys as dates; a key that is not a real date is an error, never SQL text."""
    try:
        return [dt.date.fromisoformat(k) for k in keys]
    except (TypeError, ValueError) as exc:
        raise WarehouseError(f"invalid partition key in {list(keys)!r}: {exc}") from exc


def checked_partition_dates(tables: Mapping[str, pl.DataFrame], partition_keys: Sequence[str]) -> list[dt.date]:
    """The dates of ``partition_keys``, once every table name and column is a safe identifier and every frame
    holds only rows of those partitions (checked before anything is written, by every warehouse backend)."""
    dates = partition_dates(partition_keys)
    for table, frame in tables.items():
        identifier(table)
        if PARTITION_COLUMN not in frame.columns:
            raise WarehouseError(f"frame for {table} has no {PARTITION_COLUMN} column")
        for column in frame.columns:
            identifier(column)
        outside = frame.filter(~pl.col(PARTITION_COLUMN).is_in(dates)).height
        if outside:
            raise WarehouseError(f"{outside} rows for {table} fall outside partitions {list(partition_keys)}")
    return dates


def table_exists_in(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` exists in the DuckDB database of ``conn`` (read-only or read-write)."""
    row = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()
    return bool(row and row[0])  # count(*) always returns a row


class DuckDBWarehouse(DuckDBResource):
    """The DuckDB warehouse (implements ``resources.warehouse_api.Warehouse``). ``database`` defaults to
    ``$SMART_HOME_WAREHOUSE`` or ``<data>/warehouse.duckdb``."""

    database: str = Field(default="", description="Path of the DuckDB file; empty means the default.")

    def path(self) -> Path:
        return Path(self.database).resolve() if self.database else default_warehouse_path()

    @contextmanager
    def connect(self):
        """A read-write connection, retried with backoff (about 100 s) only while another process holds the
        file lock (each retry logged as a warning); any other error (read-only file system, no such folder, no
        space) fails at once, naming the file. (DuckDBResource.get_connection retries every IOException for 100 s.)"""
        path = self.path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(f"cannot create the folder of warehouse {path}: {exc}") from exc
        conn = _connect_read_write(path, {"custom_user_agent": "dagster", **self.connection_config})
        try:
            conn.execute("SET TimeZone = 'UTC'")
            yield conn
        finally:
            conn.close()

    def replace_partitions(self, tables: Mapping[str, pl.DataFrame], partition_keys: Sequence[str]) -> None:
        """Replace ``partition_keys`` of every table in ``tables`` with the given frames, in one transaction.

        Readers see either all of the old partitions or all of the new ones; a crash at any moment rolls back.
        Every frame must carry the ``partition_date`` column, and only rows of ``partition_keys``.
        """
        dates = checked_partition_dates(tables, partition_keys)
        with self._transaction(list(tables)) as conn:
            for table, frame in tables.items():
                self._replace_in_transaction(conn, table, frame, dates)

    def replace_partition_in_batches(
        self, partition_key: str, tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """:meth:`replace_partitions_in_batches` of one partition."""
        self.replace_partitions_in_batches([partition_key], tables, batches)

    def replace_partitions_in_batches(
        self, partition_keys: Sequence[str], tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """Replace ``partition_keys`` of every table in ``tables`` with the concatenation of ``batches`` (each a
        frame per table, holding rows of any of those partitions), in one transaction: readers see the old or the
        new partitions, never a part. A partition or table that gets no rows is emptied.

        Memory is bounded by one batch, not by the partitions: each batch is staged as Parquet files in a folder
        beside the warehouse, then one transaction deletes the partitions and inserts the staged files, with
        DuckDB's memory limited to ``STAGED_INSERT_MEMORY_LIMIT`` (DuckDB spills to disk beyond it). Inserting
        the batches from Arrow inside one transaction instead keeps about 1.2 KB per raw line in memory until
        the commit, outside DuckDB's memory limit (measured in bench/findings.md). A run of many small
        partitions (a history backfill) is one staging folder and one transaction, not one per partition."""
        dates = partition_dates(partition_keys)
        remove_abandoned_staging(self.path().parent)
        staging = self.path().parent / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        described = (
            "partition " + partition_keys[0]
            if len(partition_keys) == 1
            else f"partitions {partition_keys[0]}...{partition_keys[-1]}"
            if partition_keys
            else "no partitions"
        )
        try:
            staged: dict[str, list[str]] = {table: [] for table in tables}
            for number, batch in enumerate(batches):
                checked_partition_dates(batch, partition_keys)
                for table in tables:
                    identifier(table)  # a plain name: safe in a file name too
                    path = staging / f"{table}-{number:06d}.parquet"
                    try:
                        staging.mkdir(parents=True, exist_ok=True)
                        batch[table].write_parquet(path, compression="lz4", statistics=False)
                    except (OSError, pl.exceptions.PolarsError) as exc:
                        raise WarehouseError(
                            f"staging {described} of {list(tables)} for warehouse "
                            f"{self.path()} in {staging} failed, nothing was changed: {exc}"
                        ) from exc
                    staged[table].append(str(path))
            with self._transaction(list(tables)) as conn:
                conn.execute(f"SET memory_limit = '{STAGED_INSERT_MEMORY_LIMIT}'")
                for table in tables:
                    name = identifier(table)
                    if staged[table]:
                        conn.execute(
                            f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM read_parquet(?) LIMIT 0",
                            [staged[table][:1]],
                        )
                        incoming = conn.execute("DESCRIBE SELECT * FROM read_parquet(?)", [staged[table][:1]])
                        self._check_columns(conn, table, [row[0] for row in incoming.fetchall()])
                    elif not self._exists(conn, table):
                        continue
                    conn.execute(f"DELETE FROM {name} WHERE {PARTITION_COLUMN} IN (SELECT UNNEST(?::DATE[]))", [dates])
                    if staged[table]:
                        conn.execute(f"INSERT INTO {name} BY NAME SELECT * FROM read_parquet(?)", [staged[table]])
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @contextmanager
    def _transaction(self, tables: list[str]):
        """A connection inside one transaction: committed when the block ends, rolled back on any error."""
        with self.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # a failed COMMIT (e.g. no space left) has already ended the transaction
                with suppress(duckdb.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise WarehouseError(
                        f"writing {tables} to warehouse {self.path()} failed, nothing was changed: {exc}"
                    ) from exc
                raise

    @staticmethod
    def _exists(conn, table: str) -> bool:
        return table_exists_in(conn, table)

    @staticmethod
    def _replace_in_transaction(conn, table: str, frame: pl.DataFrame, dates: list[dt.date]) -> None:
        name = identifier(table)
        conn.register("incoming_frame", frame)
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM incoming_frame LIMIT 0")
            DuckDBWarehouse._check_columns(conn, table, frame.columns)
            conn.execute(f"DELETE FROM {name} WHERE {PARTITION_COLUMN} IN (SELECT UNNEST(?::DATE[]))", [dates])
            conn.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming_frame")
        finally:
            conn.unregister("incoming_frame")

    @staticmethod
    def _check_columns(conn, table: str, columns: Sequence[str]) -> None:
        existing = {row[0] for row in conn.execute(f"DESCRIBE {identifier(table)}").fetchall()}
        missing = [c for c in columns if c not in existing]
        if missing:
            raise WarehouseError(
                f"table {table} has no column(s) {missing}: the schema changed; migrate or drop the table"
            )

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        """Run one read query and return a polars frame (via Arrow)."""
        with self.connect() as conn:
            return conn.execute(sql, params or []).pl()

    def table_exists(self, table: str) -> bool:
        identifier(table)
        with self.connect() as conn:
            return table_exists_in(conn, table)

    def read_partitions(
        self,
        table: str,
        partition_keys: Sequence[str],
        columns: Sequence[str] | None = None,
        where: Mapping[str, Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``partition_keys`` of ``table`` (only those whose column ``c`` is one of ``where[c]``, for each
        column in ``where``); an empty frame when the table does not exist yet."""
        select = ", ".join(identifier(c) for c in columns) if columns else "*"
        name = identifier(table)
        # The BETWEEN of each list's bounds lets DuckDB skip row groups by their min/max (an IN list alone scans
        # the whole partition: 7x slower for one batch of a 10M-row day); the IN keeps the result exact.
        filters = ""
        params: list[Any] = [partition_dates(partition_keys)]
        for column, values in (where or {}).items():
            values = [v for v in values if v is not None]
            quoted = identifier(column)
            filters += f" AND {quoted} BETWEEN ? AND ? AND {quoted} IN (SELECT UNNEST(?::VARCHAR[]))"
            params += [min(values, default=""), max(values, default=""), values]
        with self.connect() as conn:  # one connection for both statements: connecting costs more than reading
            if not self._exists(conn, table):
                return pl.DataFrame()
            return conn.execute(
                f"SELECT {select} FROM {name} WHERE {PARTITION_COLUMN} IN (SELECT UNNEST(?::DATE[])){filters}",
                params,
            ).pl()

    def read_only_table(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The whole table (or some columns) through a read-only connection, which never takes the write lock;
        an empty frame when the file or the table does not exist yet."""
        select = ", ".join(identifier(c) for c in columns) if columns else "*"
        return self.read_only_query(table, f"SELECT {select} FROM {identifier(table)}")

    def read_only_query(self, table: str, sql: str) -> pl.DataFrame:
        """``sql`` (a read of ``table``) through a read-only connection; an empty frame when the file or the
        table does not exist yet. It never takes the write lock, and fails while a writer holds the file."""
        identifier(table)
        if not self.path().exists():
            return pl.DataFrame()
        with open_read_only(self.path()) as conn:
            if not table_exists_in(conn, table):
                return pl.DataFrame()
            return conn.execute(sql).pl()


STAGING_PREFIX = ".staging-"


def remove_abandoned_staging(folder: Path) -> None:
    """Remove the staging folders (``.staging-<pid>-<id>``) of writers that died before cleaning up (a killed
    run), so they do not pile up beside the warehouse. A folder whose process still runs is left alone."""
    for path in folder.glob(f"{STAGING_PREFIX}*"):
        pid = path.name.removeprefix(STAGING_PREFIX).split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


LOCK_RETRY_DELAYS_S = tuple(0.1 * 2**i for i in range(10))  # 0.1 s .. 51.2 s, about 100 s in all


def _connect_read_write(path: Path, config: dict) -> duckdb.DuckDBPyConnection:
    for retry, delay in enumerate((*LOCK_RETRY_DELAYS_S, None), start=1):
        try:
            return duckdb.connect(str(path), read_only=False, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise WarehouseError(f"cannot open warehouse {path} for writing: {exc}") from exc
            if delay is None:
                raise WarehouseError(
                    f"warehouse {path} stayed locked by another process for about "
                    f"{sum(LOCK_RETRY_DELAYS_S):.0f} s: {exc}"
                ) from exc
            log.warning(
                "warehouse %s is locked by another process: retry %d of %d in %.1f s",
                path,
                retry,
                len(LOCK_RETRY_DELAYS_S),
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection for analysts and reports; fails clearly when the warehouse does not exist."""
    path = Path(path)
    if not path.exists():
        raise WarehouseError(f"warehouse {path} does not exist yet: run the pipeline first (README)")
    conn = duckdb.connect(str(path), read_only=True)
    conn.execute("SET TimeZone = 'UTC'")
    return conn
