"""raw_usage parsing: every line kept, each broken line with the right parse error."""

import datetime as dt
import gzip
import json

import polars as pl

from resources import LandingZone
from smart_home_assets.lib.ingest import decode_upload
from tests.conftest import event, ingest_day, write_upload

NOW = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
DAY = "2026-03-01"


def ingest(landing, day=DAY):
    files = LandingZone(path=str(landing)).files_for_day(day)
    return ingest_day(day, files, NOW)


def test_valid_lines_parse_into_contract_fields(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, i) for i in range(3)])
    raw, manifest = ingest(tmp_path)
    assert raw.height == 3 and raw["parse_error"].null_count() == 3
    assert raw["line_number"].to_list() == [1, 2, 3]
    assert raw["energy_wh"].to_list() == [25.0, 26.0, 27.0]
    assert raw["source_file"].unique().to_list() == [f"{DAY}/hub-0001.jsonl.gz"]
    assert manifest.row(0, named=True)["lines"] == 3


def test_each_broken_line_is_kept_with_its_parse_error(tmp_path):
    good = event(DAY, 0)
    missing = {k: v for k, v in event(DAY, 1).items() if k != "device_id"}
    lines = [
        good,
        '{"event_id": "x',
        "[1, 2]",
        "",
        missing,
        event(DAY, 2, energy_wh="abc"),
        event(DAY, 3, duration_s={"a": 1}),
        event(DAY, 4, user_id=None),
        event(DAY, 5, energy_wh="12.5"),
    ]
    write_upload(tmp_path, DAY, "hub-0001", lines)
    raw, _ = ingest(tmp_path)
    assert raw.height == len(lines)
    got = raw.select("parse_error", "parse_error_detail").rows()
    assert got == [
        (None, None),
        ("not_json", None),
        ("not_object", "JSON array"),
        ("empty_line", None),
        ("missing_field", "device_id"),
        ("wrong_type", "energy_wh"),
        ("wrong_type", "duration_s"),
        (None, None),  # a null user_id parses; cleaning quarantines it
        ("wrong_type", "energy_wh"),  # numbers as strings are not numbers
    ]


def test_truncated_gzip_keeps_complete_lines_and_records_the_tail(tmp_path):
    path = write_upload(tmp_path, DAY, "hub-0001", [event(DAY, i) for i in range(200)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    raw, manifest = ingest(tmp_path)
    assert manifest["problem"].to_list() == ["truncated_gzip"]
    assert raw["parse_error"].drop_nulls().to_list() == ["truncated_gzip"]
    assert raw.filter(pl.col("parse_error").is_null()).height == raw.height - 1 > 0


def test_zero_byte_and_non_gzip_files_are_recorded_not_skipped(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    (folder / "hub-0001.jsonl.gz").write_bytes(b"")
    (folder / "hub-0002.jsonl.gz").write_bytes(b"this is not gzip")
    raw, manifest = ingest(tmp_path)
    assert sorted(manifest["problem"].to_list()) == ["not_gzip", "truncated_gzip"]
    assert sorted(raw["parse_error"].to_list()) == ["not_gzip", "truncated_gzip"]


def test_bom_crlf_and_plain_jsonl_are_accepted(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    text = "\ufeff" + "\r\n".join(json.dumps(event(DAY, i, hub="hub-0002")) for i in range(2)) + "\r\n"
    (folder / "hub-0002.jsonl").write_text(text, encoding="utf-8")
    raw, _ = ingest(tmp_path)
    assert raw.height == 2 and raw["parse_error"].null_count() == 2


def test_non_utf8_bytes_mark_only_the_affected_line(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    lines = [json.dumps(event(DAY, 0)).encode(), b'{"event_id": "\xff\xfe"}', json.dumps(event(DAY, 1)).encode()]
    with gzip.open(folder / "hub-0001.jsonl.gz", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    raw, _ = ingest(tmp_path)
    assert raw["parse_error"].to_list() == [None, "not_utf8", None]


def test_files_breaking_the_naming_contract_are_recorded(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    (tmp_path / DAY / "bad name.jsonl").write_text("{}\n")
    (tmp_path / DAY / ".hub-0003.jsonl.gz").write_bytes(b"partial upload in progress")
    outside = tmp_path.parent / "secret.jsonl"
    outside.write_text('{"x": 1}\n')
    (tmp_path / DAY / "hub-0004.jsonl").symlink_to(outside)
    (tmp_path / DAY / "hub-0005.jsonl").symlink_to(tmp_path / DAY / "gone.jsonl")
    raw, manifest = ingest(tmp_path)
    problems = dict(zip(manifest["source_file"], manifest["problem"], strict=True))
    assert problems == {
        f"{DAY}/bad name.jsonl": "bad_file_name",
        f"{DAY}/hub-0001.jsonl.gz": None,
        f"{DAY}/hub-0004.jsonl": "symlink_outside_landing",
        f"{DAY}/hub-0005.jsonl": "broken_symlink",
    }
    assert '{"x": 1}' not in raw["raw_line"].to_list()  # the target outside the landing zone is never read


def test_decode_upload_reports_truncation_without_raising():
    data = gzip.compress(b'{"a": 1}\n{"b": 2}\n' * 1000)
    read = decode_upload(data[:-20], gzipped=True)
    assert read.problem == "truncated_gzip" and read.text.count("\n") > 0
