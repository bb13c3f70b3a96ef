"""The one daily partitions definition shared by every partitioned asset and check.

Partition key = the UTC day a hub's upload folder is named for. ``end_offset=1`` makes today's key
exist, so today's uploads are accepted as they arrive.
"""

from __future__ import annotations

import os

import dagster as dg

PARTITIONS_START_ENV_VAR = "SMART_HOME_PARTITIONS_START"
DEFAULT_PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get(PARTITIONS_START_ENV_VAR) or DEFAULT_PARTITIONS_START,
    end_offset=1,
    timezone="UTC",
)
