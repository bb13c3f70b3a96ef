"""The warehouse interface every asset, check and sensor is typed against. Two backends implement it: the
DuckDB file (``resources.warehouse.DuckDBWarehouse``, the embedded default) and Delta Lake tables, local or on
an object store (``resources.delta_warehouse.DeltaWarehouse``); ``resources.backend`` picks one from the
environment. Assets take it as ``warehouse: dg.ResourceParam[Warehouse]``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class Warehouse(Protocol):
    """Partitioned tables (every row carries ``partition_date``) whose partitions are replaced atomically."""

    def replace_partitions(self, tables: Mapping[str, pl.DataFrame], partition_keys: Sequence[str]) -> None:
        """Replace ``partition_keys`` of every table in ``tables`` with the given frames, all or nothing."""
        ...

    def replace_partition_in_batches(
        self, partition_key: str, tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """One partition of ``tables`` replaced by the rows of all ``batches``, all or nothing."""
        ...

    def replace_partitions_in_batches(
        self, partition_keys: Sequence[str], tables: Sequence[str], batches: Iterable[Mapping[str, pl.DataFrame]]
    ) -> None:
        """``partition_keys`` of ``tables`` replaced by the rows of all ``batches``, in one transaction."""
        ...

    def table_exists(self, table: str) -> bool: ...

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        """One read query (DuckDB SQL naming the tables) as a polars frame."""
        ...

    def read_partitions(
        self,
        table: str,
        partition_keys: Sequence[str],
        columns: Sequence[str] | None = None,
        where: Mapping[str, Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``partition_keys`` of ``table``; an empty frame when the table does not exist yet."""
        ...

    def read_only_table(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The whole table (or some columns), never blocking a writer; empty when it does not exist yet."""
        ...

    def read_only_query(self, table: str, sql: str) -> pl.DataFrame:
        """``sql`` (a read of ``table``), never blocking a writer; an empty frame when ``table`` does not exist."""
        ...
