"""The landing-zone sensor: new, changed and late files request their day once; unchanged files never."""

import os
import shutil

import dagster as dg

import datetime as dt

from resources import LandingZone, Warehouse
from smart_home_assets.ingest import ingest_day
from smart_home_assets.sensors import landing_zone_sensor
from tests.conftest import event, write_upload

DAY, LATE = "2026-02-10", "2026-02-01"


def resources(landing):
    return {"landing": LandingZone(path=str(landing)),
            "warehouse": Warehouse(database=str(landing.parent / "sensor-test.duckdb"))}


def tick(landing, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources=resources(landing))
    result = landing_zone_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor
    return [(r.partition_key, r.run_key) for r in result.run_requests], result.cursor


def test_a_new_file_requests_its_day(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    requests, _ = tick(tmp_path)
    assert [day for day, _ in requests] == [DAY]


def test_an_unchanged_file_never_triggers_again(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    _, cursor = tick(tmp_path)
    for _ in range(3):
        requests, cursor = tick(tmp_path, cursor)
        assert requests == []


def test_a_re_uploaded_file_requests_its_day_with_a_new_run_key(tmp_path):
    path = write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    first, cursor = tick(tmp_path)
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0), event(DAY, 1)])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second, _ = tick(tmp_path, cursor)
    assert [d for d, _ in second] == [DAY]
    assert second[0][1] != first[0][1]  # Dagster drops a repeated run key silently


def test_a_late_file_for_an_old_day_re_runs_that_day_only(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    write_upload(tmp_path, LATE, "hub-0001", [event(LATE, 0)])
    _, cursor = tick(tmp_path)
    write_upload(tmp_path, LATE, "hub-0002", [event(LATE, 0, hub="hub-0002")])
    requests, _ = tick(tmp_path, cursor)
    assert [d for d, _ in requests] == [LATE]


def test_folders_that_are_not_real_dates_are_ignored(tmp_path):
    (tmp_path / "2026-02-30").mkdir()
    (tmp_path / "2026-02-30" / "hub-0001.jsonl").write_text("{}\n")
    (tmp_path / "not-a-day").mkdir()
    requests, _ = tick(tmp_path)
    assert requests == []


def test_a_missing_landing_zone_is_reported_and_skipped(tmp_path):
    write_upload(tmp_path / "landing", DAY, "hub-0001", [event(DAY, 0)])
    _, cursor = tick(tmp_path / "landing")
    shutil.rmtree(tmp_path / "landing")
    context = dg.build_sensor_context(cursor=cursor, resources=resources(tmp_path / "landing"))
    result = landing_zone_sensor(context)
    assert isinstance(result, dg.SkipReason) and "does not exist" in result.skip_message


def test_a_fresh_sensor_skips_days_raw_usage_already_ingested(tmp_path):
    """After a CLI backfill, starting the daemon must not re-ingest every day: the manifest says what is in."""
    landing = tmp_path / "landing"
    write_upload(landing, LATE, "hub-0001", [event(LATE, 0)])
    write_upload(landing, DAY, "hub-0001", [event(DAY, 0)])
    res = resources(landing)
    raw, manifest = ingest_day(LATE, res["landing"].files_for_day(LATE), dt.datetime.now(dt.timezone.utc))
    res["warehouse"].replace_partitions({"raw_usage": raw, "raw_usage_files": manifest}, [LATE])
    requests, _ = tick(landing)
    assert [d for d, _ in requests] == [DAY]
