"""The landing zone on S3 (moto's server on loopback): the same listing, the same parser and the same sensor
decisions (new file, re-upload, late file) as a local folder."""

import datetime as dt
import gzip
import json

import dagster as dg
import pytest

from resources import LandingZone
from resources.delta_warehouse import DeltaWarehouse
from smart_home_assets.sensors import landing_zone_sensor
from tests.conftest import event, ingest_day, write_upload
from tests.moto_s3 import moto_server
from tests.sensor_ticks import NOTHING_NEW, Tick, evaluate

DAY, LATE = "2026-02-10", "2026-02-01"
NOW = dt.datetime(2026, 2, 11, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3.new_bucket("landing")


def upload(s3, bucket, day, hub, lines):
    """One hub's upload, gzipped as a hub sends it, written straight to the bucket."""
    text = "".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines)
    s3.put(f"{bucket}/landing/{day}/{hub}.jsonl.gz", gzip.compress(text.encode(), mtime=0))


def zone(bucket):
    return LandingZone(path=f"s3://{bucket}/landing")


def awkward_landing(root):
    """Every kind of entry the naming contract knows, in a local folder."""
    write_upload(root, DAY, "hub-0001", [event(DAY, i) for i in range(3)])
    write_upload(root, DAY, "hub-0002", [event(DAY, 0, hub="hub-0002"), "not json", ""], gz=False)
    (root / DAY / "notes.txt").write_text("not an upload\n")  # bad_file_name
    (root / DAY / ".hub-0003.jsonl.gz").write_bytes(b"in progress")  # an upload in progress: ignored
    (root / DAY / "sub").mkdir()
    (root / DAY / "sub" / "hub-0004.jsonl").write_text("{}\n")  # a subfolder: ignored
    (root / DAY / "hub-0005.jsonl.gz").write_bytes(gzip.compress(b'{"event_id": "a"}\n{"event_id": "b')[:-12])
    (root / DAY / "hub-0006.jsonl.gz").write_bytes(b"plain text, not gzip\n")
    write_upload(root, LATE, "hub-0001", [event(LATE, 0)])
    (root / "2026-02-30").mkdir()  # not a real date
    (root / "2026-02-30" / "hub-0001.jsonl").write_text("{}\n")
    (root / "README").write_text("top-level file\n")


def listing(landing_zone):
    return {day: [(f.name, f.hub_id, f.problem, f.size) for f in files] for day, files in landing_zone.scan().items()}


def test_listing_and_parsing_match_a_local_folder(tmp_path, s3, bucket):
    awkward_landing(tmp_path)
    assert s3.upload_tree(tmp_path, f"{bucket}/landing") == 10
    local, remote = LandingZone(path=str(tmp_path)), zone(bucket)
    assert listing(remote) == listing(local)
    assert sorted(listing(remote)) == [LATE, DAY]
    assert remote.invalid_day_folders() == local.invalid_day_folders() == ["2026-02-30"]
    assert sorted(remote.day_folders()) == sorted(local.day_folders())
    assert remote.root() == f"s3://{bucket}/landing" and remote.exists()
    for day in (DAY, LATE):
        raw_local, manifest_local = ingest_day(day, local.files_for_day(day), NOW)
        raw_remote, manifest_remote = ingest_day(day, remote.files_for_day(day), NOW)
        assert raw_remote.equals(raw_local)  # same bytes through the same parser: every line, every error
        assert manifest_remote.drop("mtime_ns").equals(manifest_local.drop("mtime_ns"))
    problems = dict(manifest_remote_for(remote).select("source_file", "problem").iter_rows())
    assert problems[f"{DAY}/hub-0005.jsonl.gz"] == "truncated_gzip"
    assert problems[f"{DAY}/hub-0006.jsonl.gz"] == "not_gzip"
    assert problems[f"{DAY}/notes.txt"] == "bad_file_name"


def manifest_remote_for(remote):
    return ingest_day(DAY, remote.files_for_day(DAY), NOW)[1]


def tick(bucket, tmp_path, cursor=None) -> Tick:
    resources = {"landing": zone(bucket), "warehouse": DeltaWarehouse(uri=str(tmp_path / "delta"))}
    return evaluate(landing_zone_sensor, dg.build_sensor_context(cursor=cursor, resources=resources))


def test_sensor_new_changed_and_late_files_on_s3(tmp_path, s3, bucket):
    upload(s3, bucket, DAY, "hub-0001", [event(DAY, 0)])
    upload(s3, bucket, LATE, "hub-0001", [event(LATE, 0)])
    first = tick(bucket, tmp_path)
    assert first.skip is None
    assert sorted(day for day, _ in first.requests) == [LATE, DAY]

    cursor = first.cursor
    for _ in range(2):  # nothing changed: nothing requested
        again = tick(bucket, tmp_path, cursor)
        assert again.requests == []
        assert again.skip == NOTHING_NEW  # unchanged, not an unreadable bucket
        cursor = again.cursor

    # a re-upload with other content (a different size: S3's Last-Modified has whole seconds only)
    upload(s3, bucket, DAY, "hub-0001", [event(DAY, 0), event(DAY, 1)])
    changed = tick(bucket, tmp_path, cursor)
    assert changed.skip is None
    assert [day for day, _ in changed.requests] == [DAY]
    assert changed.requests[0][1] != dict(first.requests)[DAY]  # a new run key: Dagster drops a repeated one

    # a late file for an old day re-runs that day only
    upload(s3, bucket, LATE, "hub-0002", [event(LATE, 0, hub="hub-0002")])
    late = tick(bucket, tmp_path, changed.cursor)
    assert late.skip is None
    assert [day for day, _ in late.requests] == [LATE]
    assert late.requests[0][1] != dict(first.requests)[LATE]

    # an upload in progress (dot-name) is not a change; its rename is
    s3.put(f"{bucket}/landing/{DAY}/.hub-0003.jsonl.gz", gzip.compress(b"{}\n"))
    in_progress = tick(bucket, tmp_path, late.cursor)
    assert in_progress.requests == []
    assert in_progress.skip == NOTHING_NEW
    s3.put(f"{bucket}/landing/{DAY}/hub-0003.jsonl.gz", gzip.compress(b"{}\n"))  # the finished upload
    finished = tick(bucket, tmp_path, in_progress.cursor)
    assert finished.skip is None
    assert [day for day, _ in finished.requests] == [DAY]


def test_first_tick_without_cursor_skips_what_raw_usage_already_ingested(tmp_path, s3, bucket):
    upload(s3, bucket, DAY, "hub-0001", [event(DAY, 0)])
    upload(s3, bucket, LATE, "hub-0001", [event(LATE, 0)])
    warehouse = DeltaWarehouse(uri=str(tmp_path / "delta"))
    raw, manifest = ingest_day(DAY, zone(bucket).files_for_day(DAY), NOW)
    warehouse.replace_partitions({"raw_usage": raw, "raw_usage_files": manifest}, [DAY])
    fresh = tick(bucket, tmp_path)
    assert fresh.skip is None  # the Delta manifest was read: not "cannot read what raw_usage already ingested"
    assert [day for day, _ in fresh.requests] == [LATE]


def test_a_missing_bucket_is_reported_and_skipped(tmp_path, s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    missing = tick("no-such-bucket-here", tmp_path)
    assert missing.requests == [] and "does not exist" in missing.skip
