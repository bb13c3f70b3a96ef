"""The landing-zone sensor: new, changed and late files request their day once; unchanged files never."""

import datetime as dt
import json
import logging
import os
import shutil

import dagster as dg

from smart_home_assets import sensors
from smart_home_assets.partitions import build_daily_partitions, daily_partitions
from smart_home_assets.sensors import landing_zone_sensor
from tests.conftest import event, ingest_day, pipeline_resources, write_upload
from tests.sensor_ticks import NOTHING_NEW, Tick, evaluate

DAY, LATE = "2026-02-10", "2026-02-01"


def resources(landing):
    return pipeline_resources(landing, landing.parent / "sensor-test.duckdb")


class _Messages(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        self.into.append(record.getMessage())


def tick(landing, cursor=None, warnings: list[str] | None = None) -> Tick:
    """One sensor tick; the warnings it logs are appended to ``warnings``."""
    context = dg.build_sensor_context(cursor=cursor, resources=resources(landing))
    if warnings is not None:
        context.log.addHandler(_Messages(warnings))
    return evaluate(landing_zone_sensor, context)


def days(t: Tick) -> list[str | None]:
    return [day for day, _ in t.requests]


def test_a_new_file_requests_its_day(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    first = tick(tmp_path)
    assert first.skip is None
    assert days(first) == [DAY]


def test_an_unchanged_file_never_triggers_again(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    first = tick(tmp_path)
    assert days(first) == [DAY] and first.skip is None
    cursor = first.cursor
    for _ in range(3):
        again = tick(tmp_path, cursor)
        assert again.requests == []
        assert again.skip == NOTHING_NEW  # skipped as unchanged, not because of an error
        cursor = again.cursor


def test_a_re_uploaded_file_requests_its_day_with_a_new_run_key(tmp_path):
    path = write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    first = tick(tmp_path)
    assert first.skip is None
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0), event(DAY, 1)])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = tick(tmp_path, first.cursor)
    assert second.skip is None
    assert days(second) == [DAY]
    assert second.requests[0][1] != first.requests[0][1]  # Dagster drops a repeated run key silently


def test_a_late_file_for_an_old_day_re_runs_that_day_only(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    write_upload(tmp_path, LATE, "hub-0001", [event(LATE, 0)])
    first = tick(tmp_path)
    assert first.skip is None and days(first) == [LATE, DAY]
    write_upload(tmp_path, LATE, "hub-0002", [event(LATE, 0, hub="hub-0002")])
    late = tick(tmp_path, first.cursor)
    assert late.skip is None
    assert days(late) == [LATE]


def test_folders_that_are_not_real_dates_are_ignored(tmp_path):
    (tmp_path / "2026-02-30").mkdir()
    (tmp_path / "2026-02-30" / "hub-0001.jsonl").write_text("{}\n")
    (tmp_path / "not-a-day").mkdir()
    warnings: list[str] = []
    result = tick(tmp_path, warnings=warnings)
    assert result.requests == []
    assert result.skip == NOTHING_NEW
    assert any("'2026-02-30' is not a YYYY-MM-DD date" in w for w in warnings), warnings


def test_a_missing_landing_zone_is_reported_and_skipped(tmp_path):
    write_upload(tmp_path / "landing", DAY, "hub-0001", [event(DAY, 0)])
    first = tick(tmp_path / "landing")
    assert first.skip is None and days(first) == [DAY]
    shutil.rmtree(tmp_path / "landing")
    context = dg.build_sensor_context(cursor=first.cursor, resources=resources(tmp_path / "landing"))
    result = landing_zone_sensor(context)
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def test_a_fresh_sensor_skips_days_raw_usage_already_ingested(tmp_path):
    """After a CLI backfill, starting the daemon must not re-ingest every day: the manifest says what is in."""
    landing = tmp_path / "landing"
    write_upload(landing, LATE, "hub-0001", [event(LATE, 0)])
    write_upload(landing, DAY, "hub-0001", [event(DAY, 0)])
    res = resources(landing)
    raw, manifest = ingest_day(LATE, res["landing"].files_for_day(LATE), dt.datetime.now(dt.UTC))
    res["warehouse"].replace_partitions({"raw_usage": raw, "raw_usage_files": manifest}, [LATE])
    fresh = tick(landing)
    assert fresh.skip is None  # the manifest was read: not "cannot read what raw_usage already ingested"
    assert days(fresh) == [DAY]


def test_a_day_outside_the_partitions_window_waits_until_the_window_covers_it(tmp_path, monkeypatch):
    """A folder after the last partition (a hub's clock ahead) or before the first is not requested, is logged,
    and stays out of the cursor: once the window covers it (tomorrow), it is requested."""
    first_key, last_key = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    ahead = (dt.date.fromisoformat(last_key) + dt.timedelta(days=1)).isoformat()
    before = (dt.date.fromisoformat(first_key) - dt.timedelta(days=1)).isoformat()
    for day in (before, DAY, ahead):
        write_upload(tmp_path, day, "hub-0001", [event(day, 0)])
    warnings: list[str] = []
    first = tick(tmp_path, warnings=warnings)
    assert first.skip is None and days(first) == [DAY]
    for day in (before, ahead):
        assert f"landing folder {day} is outside the partitions window" in "\n".join(warnings), warnings
    assert sorted(json.loads(first.cursor)) == [DAY]

    still = tick(tmp_path, first.cursor)  # the window has not moved: nothing to request, nothing lost
    assert still.requests == [] and still.skip == NOTHING_NEW
    assert sorted(json.loads(still.cursor)) == [DAY]

    monkeypatch.setattr(sensors, "daily_partitions", build_daily_partitions(first_key, ahead))  # a day later
    covered = tick(tmp_path, still.cursor)
    assert covered.skip is None
    assert days(covered) == [ahead]
    assert sorted(json.loads(covered.cursor)) == [DAY, ahead]
