"""Nothing lost: every raw line is a device_usage row, a quarantined row or a duplicate. The conservation check
(asset_checks/device_usage_checks.py) and the run report (smart_home_tools/report.py) both count with this."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from smart_home_assets.lib.reasons import DUPLICATE_EVENT_ID

Count = TypeVar("Count")  # an int, or a polars expression over count columns


def unaccounted(raw_lines: Count, clean_rows: Count, quarantined: Count, duplicates: Count) -> Count:
    """Raw lines that are none of the three (0 when the partition is conserved)."""
    return raw_lines - clean_rows - quarantined - duplicates  # type: ignore[operator]


def quarantined_and_duplicates(reasons: Mapping[str, int]) -> tuple[int, int]:
    """(quarantined rows, duplicates) of a partition's quarantine counts by reason: a duplicate event is
    quarantined under ``duplicate_event_id`` but counted apart, as a copy of a row that was kept."""
    duplicates = reasons.get(DUPLICATE_EVENT_ID, 0)
    return sum(reasons.values()) - duplicates, duplicates
