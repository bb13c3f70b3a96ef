"""The daily partitions end today, or at SMART_HOME_PARTITIONS_END on any clock (the tests pin it)."""

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pytest

from smart_home_assets.partitions import PARTITIONS_END_ENV_VAR, build_daily_partitions, daily_partitions
from tests import PARTITIONS_END

START, END = "2025-01-01", "2026-12-31"


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "clock",
    [
        dt.date(2024, 6, 1),
        dt.date(2026, 1, 3),
        dt.date(2026, 12, 30),
        dt.date(2026, 12, 31),
        dt.date(2027, 1, 1),
        dt.date(2031, 6, 1),
    ],
)
def test_a_pinned_end_is_the_last_key_whatever_the_clock(clock):
    """Before the end, on it and years after: the same 730 keys, for as long as the process runs."""
    partitions = build_daily_partitions(START, END, today=clock)
    for now in (at(clock, 0), at(clock, 23), at(clock + dt.timedelta(days=3))):
        with dg.partition_loading_context(effective_dt=now):
            keys = partitions.get_partition_keys()
            assert (keys[0], keys[-1], len(keys)) == (START, END, 730)
            assert partitions.get_last_partition_key() == END
            assert not partitions.has_partition_key("2027-01-01")


def test_without_an_end_the_last_key_is_today():
    partitions = build_daily_partitions(START)
    for today in (dt.date(2026, 3, 1), dt.date(2031, 6, 1)):
        with dg.partition_loading_context(effective_dt=at(today, 0)):
            assert partitions.get_last_partition_key() == today.isoformat()  # today's uploads are accepted


@pytest.mark.parametrize(
    ("end", "message"), [("2026-02-30", "is not a YYYY-MM-DD date"), ("2024-12-31", "is before the first partition")]
)
def test_a_bad_end_is_refused_naming_the_variable(end, message):
    with pytest.raises(ValueError, match=f"{PARTITIONS_END_ENV_VAR}='?{end}'? {message}"):
        build_daily_partitions(START, end)


def test_the_tests_run_with_the_pinned_end():
    """tests/__init__.py pins the end before any project module loads, and processes the tests start see it."""
    assert daily_partitions.get_last_partition_key() == PARTITIONS_END
    code = "from smart_home_assets.partitions import daily_partitions as p; print(p.get_last_partition_key())"
    out = subprocess.run([sys.executable, "-c", code], env=os.environ, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == PARTITIONS_END
