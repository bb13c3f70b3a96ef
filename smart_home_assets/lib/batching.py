"""Splitting one day into batches that bound memory without changing any result.

Cleaning judges duplicates per (hub, event id), and a valid row always carries its file's hub (a line naming
another hub is quarantined as ``hub_mismatch``), so batches of whole hubs clean exactly as the whole day does.
The device_usage checks are per row or per (hub, event id) too.
"""

from __future__ import annotations

import polars as pl


def grouped_batches(sizes: pl.DataFrame, max_rows: int) -> list[list[str]]:
    """Batches of ``item`` values (in the order given), keeping every item of one ``group`` in one batch; a batch
    is closed once it holds ``max_rows`` rows or more. ``sizes`` has the columns ``item`` (never null), ``group``
    (null: the item is a group of its own) and ``rows``. A group larger than ``max_rows`` is one batch."""
    batches: list[list[str]] = []
    current: list[str] = []
    held = 0
    groups = sizes.with_columns(group=pl.coalesce(pl.col("group"), pl.lit("\0") + pl.col("item")))
    for _, members in groups.group_by("group", maintain_order=True):
        current.extend(members["item"].to_list())
        held += int(members["rows"].sum())
        if held >= max_rows:
            batches.append(current)
            current, held = [], 0
    if current:
        batches.append(current)
    return batches


def partitions_file_batches(
    warehouse,
    table: str,
    hub_column: str,
    partitions: list[str],
    max_rows: int,
) -> list[tuple[list[str], list[str]]]:
    """The source files of several partitions of ``table`` in batches of whole hubs of a day, as (the batch's
    partition keys, its files): small days share a batch, a big day is split by hubs. A file belongs to one
    partition (its path starts with the day). One query for all the partitions; none when the table does not
    exist yet."""
    if not warehouse.table_exists(table) or not partitions:
        return []
    sizes = warehouse.query(
        f"SELECT source_file AS item, strftime(partition_date, '%Y-%m-%d') || '/' || {hub_column} AS \"group\", "
        f"count(*) AS rows, strftime(partition_date, '%Y-%m-%d') AS day FROM {table}"
        " WHERE partition_date IN (SELECT UNNEST(?::DATE[])) GROUP BY ALL ORDER BY day, item",
        [list(partitions)],
    )
    day_of = dict(zip(sizes["item"].to_list(), sizes["day"].to_list(), strict=True))
    return [
        (sorted({day_of[f] for f in files}), files)
        for files in grouped_batches(sizes.select("item", "group", "rows"), max_rows)
    ]
