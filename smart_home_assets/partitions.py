"""The one daily partitions definition shared by every partitioned asset and check.

Partition key = the UTC day a hub's upload folder is named for. ``end_offset=1`` makes today's key
exist, so today's uploads are accepted as they arrive. ``SMART_HOME_PARTITIONS_END`` (a YYYY-MM-DD key)
pins the last key instead, whatever the clock says: the tests set it, so that their fixed dates mean the
same on any day.
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

PARTITIONS_START_ENV_VAR = "SMART_HOME_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2025-01-01"
PARTITIONS_END_ENV_VAR = "SMART_HOME_PARTITIONS_END"


def build_daily_partitions(
    start: str, end: str | None = None, *, today: dt.date | None = None
) -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from ``start`` up to today (UTC), or up to ``end`` (included) on any clock.

    Dagster ends time partitions at the earlier of ``end_date`` and now plus ``end_offset``: ``end_date``
    holds a later clock back, and an ``end_offset`` counted from ``today`` reaches ``end`` from an earlier one.
    """
    if not end:
        return dg.DailyPartitionsDefinition(start_date=start, end_offset=1, timezone="UTC")
    try:
        last = dt.date.fromisoformat(end)
    except ValueError:
        raise ValueError(f"{PARTITIONS_END_ENV_VAR}={end!r} is not a YYYY-MM-DD date") from None
    if last < dt.date.fromisoformat(start):
        raise ValueError(f"{PARTITIONS_END_ENV_VAR}={end} is before the first partition {start}")
    today = today or dt.datetime.now(dt.UTC).date()
    return dg.DailyPartitionsDefinition(
        start_date=start,
        end_date=(last + dt.timedelta(days=1)).isoformat(),
        end_offset=max(1, (last - today).days + 1),
        timezone="UTC",
    )


daily_partitions = build_daily_partitions(
    os.environ.get(PARTITIONS_START_ENV_VAR) or DEFAULT_PARTITIONS_START, os.environ.get(PARTITIONS_END_ENV_VAR) or None
)
