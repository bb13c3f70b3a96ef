"""Bad uploads: every one lands, gets a clear outcome, and no line is lost.

Each case writes files into a landing zone and drives the pure path
``LandingZone.files_for_day`` -> ``ingest_day`` -> ``clean_usage``. The outcome is a quarantine reason
(a ``raw_usage.parse_error`` or a cleaning reason) or, for what cannot be a partition at all, an error
naming the folder. For every day: raw lines (the physical lines of the readable files, plus one row per
unreadable file remainder) = device_usage rows + quarantine rows, line by line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import json
import os
import re
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.landing import LandingZone, LandingZoneError
from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import CleanResult, clean_usage
from smart_home_assets.lib.contract import MAX_EVENT_DURATION_S, MAX_EVENT_ENERGY_WH
from tests.conftest import event, ingest_day, write_upload

DAY = "2026-03-01"
NEXT_DAY = "2026-03-02"
NOW = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
KEY = b"k" * 32
CATALOG = load_device_catalog().device_types
PARSE_CODES = {
    "empty_line",
    "not_json",
    "not_strict_json",
    "not_object",
    "duplicate_key",
    "missing_field",
    "wrong_type",
    "not_utf8",
}


def run(landing: Path, day: str = DAY) -> tuple[pl.DataFrame, pl.DataFrame, CleanResult]:
    files = LandingZone(path=str(landing)).files_for_day(day)
    raw, manifest = ingest_day(day, files, NOW)
    return raw, manifest, clean_usage(raw, CATALOG, KEY)


def assert_conserved(raw: pl.DataFrame, result: CleanResult, raw_lines: int) -> None:
    """raw_usage has ``raw_lines`` rows and each lands exactly once, parse errors as their own reason."""
    assert raw.height == raw_lines
    ids = ["source_file", "line_number"]
    raw_keys = Counter(raw.select(ids).rows())
    assert all(n == 1 for n in raw_keys.values())
    landed = Counter(result.device_usage.select(ids).rows()) + Counter(result.quarantine.select(ids).rows())
    assert landed == raw_keys
    assert result.quarantine["reason"].null_count() == 0
    reason_of = dict(zip(result.quarantine.select(ids).rows(), result.quarantine["reason"], strict=True))
    for file, line, error in raw.filter(pl.col("parse_error").is_not_null()).select(*ids, "parse_error").rows():
        assert reason_of[(file, line)] == error


def assert_contract(device_usage: pl.DataFrame, day: str = DAY) -> None:
    """What the blocking checks require of device_usage."""
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    for row in device_usage.iter_rows(named=True):
        assert row["user_pseudonym"] is not None and re.fullmatch(r"[0-9a-f]{64}", row["user_pseudonym"])
        assert start <= row["event_timestamp"] < start + dt.timedelta(days=1)
        assert row["device_type"] in CATALOG
        assert 0 <= row["energy_wh"] <= MAX_EVENT_ENERGY_WH and 0 <= row["duration_s"] <= MAX_EVENT_DURATION_S
        assert row["event_id"] and row["hub_id"] and row["device_id"]
        assert row["source_file"] in (f"{day}/{row['hub_id']}.jsonl.gz", f"{day}/{row['hub_id']}.jsonl")
    assert device_usage.select("hub_id", "event_id").is_unique().all()


def reasons(result: CleanResult) -> list[str]:
    return result.quarantine.sort("source_file", "line_number")["reason"].to_list()


def write_bytes(landing: Path, day: str, name: str | bytes, data: bytes) -> Path:
    folder = landing / day
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
    with open(path, "wb") as f:
        f.write(data)
    return Path(os.fsdecode(path))


def jsonl(records: list[dict | str], newline: str = "\n") -> bytes:
    return "".join((json.dumps(r) if isinstance(r, dict) else r) + newline for r in records).encode()


# -- empty and broken files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,data",
    [
        ("hub-0001.jsonl", b""),
        ("hub-0001.jsonl.gz", gzip.compress(b"", mtime=0)),  # a complete gzip of nothing
    ],
)
def test_empty_file_is_listed_with_no_lines(tmp_path, name, data):
    write_bytes(tmp_path, DAY, name, data)
    raw, manifest, result = run(tmp_path)
    assert manifest.select("source_file", "lines", "problem").rows() == [(f"{DAY}/{name}", 0, None)]
    assert_conserved(raw, result, 0)


def test_zero_byte_gzip_is_one_truncated_gzip_row(tmp_path):
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", b"")
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == ["truncated_gzip"]
    assert_conserved(raw, result, 1)
    assert reasons(result) == ["truncated_gzip"]


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_gzip_keeps_complete_lines_and_quarantines_the_tail(tmp_path, cut):
    path = write_upload(tmp_path, DAY, "hub-0001", [event(DAY, n) for n in range(150)])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    prefix = zlib.decompressobj(wbits=31).decompress(data[: int(len(data) * cut)])
    complete = prefix.count(b"\n")
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, complete + 1)
    assert result.device_usage.height == complete  # every complete line before the cut is judged normally
    assert reasons(result) == ["truncated_gzip"]
    tail = result.quarantine.row(0, named=True)
    assert tail["line_number"] == complete + 1
    tail_text = prefix[prefix.rfind(b"\n") + 1 :].decode()
    assert raw.filter(pl.col("line_number") == complete + 1)["raw_line"].item() == tail_text
    assert_contract(result.device_usage)


def test_gzip_with_appended_members_keeps_every_member(tmp_path):
    """A hub that appends to its .gz adds gzip members; all of them are read (gzip -d reads them too)."""
    data = b"".join(gzip.compress(jsonl([event(DAY, n)]), mtime=0) for n in range(3))
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", data + b"\0" * 8)  # zero padding after the last member is ignored
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == [None]
    assert_conserved(raw, result, 3)
    assert result.device_usage.height == 3


def test_garbage_after_a_gzip_member_keeps_the_member_and_flags_the_rest(tmp_path):
    """E.g. a shorter re-upload written over a longer file without truncating it."""
    data = gzip.compress(jsonl([event(DAY, 0), event(DAY, 1)]), mtime=0) + b"old bytes of a longer file"
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", data)
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == ["not_gzip"]
    assert_conserved(raw, result, 3)
    assert result.device_usage.height == 2 and reasons(result) == ["not_gzip"]


def test_gz_name_with_plain_text_is_not_gzip(tmp_path):
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", jsonl([event(DAY, 0), event(DAY, 1)]))
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 1)
    assert reasons(result) == ["not_gzip"]


def test_non_utf8_bytes_quarantine_only_their_line(tmp_path):
    """A U+FFFD the hub really sent is not mistaken for a replaced byte."""
    lines = [
        json.dumps(event(DAY, 0, device_id="lamp \ufffd 1"), ensure_ascii=False).encode(),
        json.dumps(event(DAY, 1)).encode().replace(b"fridge-0", b"fridge-\xff\xfe"),
        b"\xc3",  # a cut multi-byte character
        json.dumps(event(DAY, 2)).encode(),
    ]
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", gzip.compress(b"\n".join(lines) + b"\n"))
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == ["not_utf8"]
    assert_conserved(raw, result, 4)
    assert raw["parse_error"].to_list() == [None, "not_utf8", "not_utf8", None]
    assert result.device_usage["line_number"].to_list() == [1, 4]
    assert result.device_usage["device_id"][0] == "lamp \ufffd 1"


@pytest.mark.parametrize("valid", [True, False])
def test_ten_megabyte_line(tmp_path, monkeypatch, valid):
    """A 10 MB line (a record with a huge extra field, or the same cut short) is parsed or quarantined when the
    line limit allows it (SMART_HOME_MAX_LINE_BYTES raised to 16 MiB here)."""
    monkeypatch.setenv("SMART_HOME_MAX_LINE_BYTES", str(16 * 2**20))
    line = json.dumps(event(DAY, 0, firmware_dump="x" * 10_000_000))
    write_upload(tmp_path, DAY, "hub-0001", [line if valid else line[:-2], event(DAY, 1)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert result.device_usage.height == (2 if valid else 1)
    assert reasons(result) == ([] if valid else ["not_json"])


# -- limits: what one upload can make a step hold ----------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    "shape,reason,kept",
    [
        ("long_line", "line_too_long", 2),  # the default line limit is 1 MiB
        ("many_lines", "too_many_lines", 5),  # SMART_HOME_MAX_FILE_LINES=5
        ("many_bytes", "file_too_large", 3),  # SMART_HOME_MAX_FILE_BYTES: 3.5 records
    ],
)
def test_an_upload_past_a_limit_is_cut_there_with_a_reason_that_names_the_file(
    tmp_path, monkeypatch, gz, shape, reason, kept
):
    """The complete lines before the limit are kept and judged like any others; the rest of the file is not read,
    and one more line carries the reason (its raw_line: the first kilobyte after the cut)."""
    records = [json.dumps(event(DAY, n)) for n in range(8)]
    if shape == "long_line":
        records.insert(2, json.dumps(event(DAY, 99, firmware_dump="x" * 2**20)))
    elif shape == "many_lines":
        monkeypatch.setenv("SMART_HOME_MAX_FILE_LINES", "5")
    else:
        monkeypatch.setenv("SMART_HOME_MAX_FILE_BYTES", str(int(3.5 * (len(records[0]) + 1))))
    write_upload(tmp_path, DAY, "hub-0001", records, gz=gz)
    write_upload(tmp_path, DAY, "hub-0002", [event(DAY, 0, hub="hub-0002")])
    raw, manifest, result = run(tmp_path)
    name = f"{DAY}/hub-0001.jsonl" + (".gz" if gz else "")
    assert dict(manifest.select("source_file", "problem").rows())[name] == reason
    assert_conserved(raw, result, kept + 1 + 1)
    assert reasons(result) == [reason]
    assert sorted(result.device_usage.filter(pl.col("hub_id") == "hub-0001")["line_number"]) == list(range(1, kept + 1))
    tail = raw.filter(pl.col("parse_error") == reason)["raw_line"][0]
    assert 0 < len(tail) <= 1024 and (tail.startswith('{"event_id"'))


@pytest.mark.slow
def test_a_decompression_bomb_is_refused_within_a_bounded_memory(tmp_path):
    """1 GiB of valid lines in a ~1 MiB .gz, then one line of 1 GiB with no newline: raw_usage ingests each in a
    subprocess whose resident memory is capped (it is killed above 1.5 GiB), and refuses the file where the
    default limits are passed, having decompressed no more than the limit."""
    import subprocess
    import sys

    line = (json.dumps(event(DAY, 0)) + "\n").encode()
    bombs = {"lines": (line, {"file_too_large", "too_many_lines"}), "one_line": (b"x" * 4096, {"line_too_long"})}
    for name, (unit, reason) in bombs.items():
        landing = tmp_path / name
        (landing / DAY).mkdir(parents=True)
        with gzip.open(landing / DAY / "hub-0001.jsonl.gz", "wb", compresslevel=9) as f:
            block = unit * (2**24 // len(unit))
            for _ in range(2**30 // len(block)):
                f.write(block)
        assert (landing / DAY / "hub-0001.jsonl.gz").stat().st_size < 8 * 2**20
        script = (
            "import datetime as dt, resource, sys\n"
            "from resources import LandingZone\n"
            "from tests.conftest import ingest_day\n"
            f"files = LandingZone(path={str(landing)!r}).files_for_day({DAY!r})\n"
            "raw, manifest = ingest_day(" + repr(DAY) + ", files, dt.datetime.now(dt.timezone.utc))\n"
            "print('RESULT', manifest['problem'][0], raw.height, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        cap = 1536 * 2**20  # watched below (an address-space rlimit would trip on the engines' reservations)
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        peak = 0
        while proc.poll() is None:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text())
                rss = int(found.group(1)) * 1024 if found else 0  # no VmRSS once it has exited
                peak = max(peak, rss)
                if rss > cap:
                    proc.kill()
                    pytest.fail(f"{name}: resident memory {rss / 2**20:.0f} MiB above the cap")
            time.sleep(0.05)
        out, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
        result = [ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")]
        assert result, out.decode()[-2000:]
        problem, rows, maxrss_kib = result[-1].split()[1:]
        assert problem in reason, (name, problem)
        print(f"{name}: {problem}, {rows} raw rows, peak RSS {int(maxrss_kib) // 1024} MiB")
        assert int(maxrss_kib) * 1024 < cap, (name, int(maxrss_kib) // 1024)


# -- line shapes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,reason,detail",
    [
        (json.dumps([event(DAY, 0), event(DAY, 1)]), "not_object", "JSON array"),
        ("42", "not_object", "JSON ubigint"),
        ('"a string"', "not_object", "JSON varchar"),
        ("null", "not_object", "JSON null"),
        ("", "empty_line", None),
        ("   ", "not_json", None),
        ("{'event_id': 'x'}", "not_json", None),
        (json.dumps(event(DAY, 0)) + " trailing", "not_json", None),
        (json.dumps(event(DAY, 0)) + json.dumps(event(DAY, 1)), "not_json", None),  # two objects on one line
        ("{}", "missing_field", ",".join(event(DAY, 0))),
    ],
)
def test_lines_that_are_not_records(tmp_path, line, reason, detail):
    write_upload(tmp_path, DAY, "hub-0001", [line, event(DAY, 5)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert result.quarantine.select("reason", "detail").rows() == [(reason, detail)]
    assert result.device_usage["line_number"].to_list() == [2]


GOOD = json.dumps(event(DAY, 0))


@pytest.mark.parametrize(
    "line,reason,detail",
    [
        (GOOD[:-1] + ",}", "not_strict_json", "trailing comma"),
        (GOOD[:-1] + " , \t }", "not_strict_json", "trailing comma"),
        (GOOD[:-1] + ', "tags": [1, 2,]}', "not_strict_json", "trailing comma"),
        (json.dumps([event(DAY, 0)])[:-1] + ",]", "not_strict_json", "trailing comma"),
        # the same characters inside a string are data, not a trailing comma
        (GOOD[:-1] + ', "note": "a,}b, ]\\",}"}', None, None),
        # a repeated key: DuckDB would keep the first value, Python and JavaScript the last
        (GOOD[:-1] + ', "energy_wh": -5}', "duplicate_key", "energy_wh"),
        (GOOD[:-1] + ', "hub_id": "hub-0002", "event_id": "e-x"}', "duplicate_key", "event_id,hub_id"),
        # repeated keys of an unknown nested field are tolerated like the field itself
        (GOOD[:-1] + ', "extra": {"a": 1, "b": 2}}', None, None),
    ],
)
def test_a_line_must_be_strict_json_with_unique_keys(tmp_path, line, reason, detail):
    write_upload(tmp_path, DAY, "hub-0001", [line, event(DAY, 5)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert result.quarantine.select("reason", "detail").rows() == ([(reason, detail)] if reason else [])
    assert result.device_usage.height == (1 if reason else 2)


@st.composite
def json_text(draw, depth: int = 0):
    """(text, has_trailing_comma): JSON rendered by hand, sometimes with a comma before a closing bracket."""
    kind = draw(st.sampled_from(["object", "array", "string", "number"] if depth < 3 else ["string", "number"]))
    if kind == "string":
        return json.dumps(draw(st.text(st.sampled_from(',]}"\\ ab:[{'), max_size=6))), False
    if kind == "number":
        return json.dumps(draw(st.integers(-5, 5) | st.floats(-1e3, 1e3))), False
    items = draw(st.lists(json_text(depth + 1), max_size=3))
    trailing = bool(items) and draw(st.booleans()) and draw(st.booleans())
    inner_trailing = any(t for _, t in items)
    keys = [f'"k{i}"' for i in range(len(items))]
    parts = [f"{k}: {v}" for k, (v, _) in zip(keys, items, strict=True)] if kind == "object" else [v for v, _ in items]
    body = ", ".join(parts) + ("," + draw(st.sampled_from(["", " ", "\t"])) if trailing else "")
    return ("{%s}" if kind == "object" else "[%s]") % body, trailing or inner_trailing


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(json_text(), min_size=1, max_size=8))
def test_strictness_agrees_with_pythons_reader(tmp_path_factory, texts):
    """Every line that DuckDB and Python's strict reader disagree on is caught: a line Python cannot read is
    never parsed into fields, and a line it can read is not flagged as not strict."""
    landing = tmp_path_factory.mktemp("strict")
    lines = [f'{{"event_id": "e-{i}", "payload": {t}}}' for i, (t, _) in enumerate(texts)]
    write_upload(landing, DAY, "hub-0001", lines)
    raw, _, _ = run(landing)
    for line, (_, trailing), error in zip(lines, texts, raw.sort("line_number")["parse_error"], strict=True):
        try:
            json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            python_reads = True
        except ValueError:
            python_reads = False
        assert python_reads == (not trailing), line
        if trailing:
            assert error == "not_strict_json", (line, error)
        else:
            assert error == "missing_field", (line, error)


@pytest.mark.parametrize("gz", [True, False])
def test_utf8_bom_and_crlf_line_ends_are_accepted(tmp_path, gz):
    data = "\ufeff".encode() + jsonl([event(DAY, n) for n in range(3)], newline="\r\n")
    write_bytes(tmp_path, DAY, "hub-0001.jsonl" + (".gz" if gz else ""), gzip.compress(data) if gz else data)
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 3)
    assert result.device_usage.height == 3
    assert not raw["raw_line"].str.contains("\r").any() and not raw["raw_line"].str.starts_with("\ufeff").any()


def test_crlf_file_with_a_blank_line(tmp_path):
    write_bytes(tmp_path, DAY, "hub-0001.jsonl", jsonl([event(DAY, 0), "", event(DAY, 1)], newline="\r\n"))
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 3)
    assert reasons(result) == ["empty_line"]


@pytest.mark.parametrize(
    "overrides,detail",
    [
        ({"energy_wh": "12.5"}, "energy_wh"),
        ({"duration_s": "600"}, "duration_s"),
        ({"energy_wh": True}, "energy_wh"),
        ({"hub_id": 1}, "hub_id"),
        ({"event_id": 7, "energy_wh": [1]}, "event_id,energy_wh"),
    ],
)
def test_wrong_json_types(tmp_path, overrides, detail):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0, **overrides)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 1)
    assert result.quarantine.select("reason", "detail").rows() == [("wrong_type", detail)]


@pytest.mark.parametrize("field", ["energy_wh", "duration_s"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_quarantined(tmp_path, field, literal):
    """DuckDB's JSON reader accepts NaN and Infinity as numbers: they must not reach device_usage."""
    line = json.dumps(event(DAY, 0)).replace(f'"{field}": {event(DAY, 0)[field]}', f'"{field}": {literal}')
    assert literal in line
    write_upload(tmp_path, DAY, "hub-0001", [line, event(DAY, 1)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert reasons(result) == ["non_finite_number"]
    assert_contract(result.device_usage)


@pytest.mark.parametrize(
    "timestamp,reason",
    [
        ("2026-03-01T10:00:00", "timestamp_without_offset"),
        ("2026-03-01T10:00:00.250", "timestamp_without_offset"),
        ("2026-03-01 10:00:00Z", "bad_timestamp"),
        ("1772359200", "bad_timestamp"),
        ("9999-12-31T23:59:59+00:00", "timestamp_outside_day"),
        ("9999-12-31T23:59:59-23:59", "timestamp_outside_day"),  # past year 9999 in UTC
        ("1970-01-01T00:00:00Z", "timestamp_outside_day"),
        ("0001-01-01T00:00:00+23:59", "timestamp_outside_day"),  # before year 1 in UTC
        ("2026-03-02T00:00:00Z", "timestamp_outside_day"),  # the day's end is exclusive
        ("2026-03-01T00:30:00+01:00", "timestamp_outside_day"),  # 2026-02-28T23:30Z
    ],
)
def test_timestamps(tmp_path, timestamp, reason):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0, event_timestamp=timestamp), event(DAY, 1)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert result.quarantine.select("reason", "detail").rows() == [(reason, timestamp)]
    assert_contract(result.device_usage)


def test_file_under_the_wrong_date_folder(tmp_path):
    """The folder is the events' UTC day: a day's events filed under another day are outside it."""
    write_upload(tmp_path, DAY, "hub-0001", [event(NEXT_DAY, n) for n in range(4)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 4)
    assert reasons(result) == ["timestamp_outside_day"] * 4
    raw, _, result = run(tmp_path, NEXT_DAY)  # and the right day does not see them
    assert_conserved(raw, result, 0)


def test_hub_id_inside_lines_differs_from_the_file_name(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0, hub="hub-0002"), event(DAY, 1)])
    raw, _, result = run(tmp_path)
    assert_conserved(raw, result, 2)
    assert result.quarantine.select("reason", "detail").rows() == [
        ("hub_mismatch", "line says hub-0002, file is hub-0001")
    ]


# -- folders, file names, symlinks, uploads in progress --------------------------------------------------


def test_folder_named_like_an_impossible_date(tmp_path):
    write_upload(tmp_path, "2026-02-30", "hub-0001", [event(DAY, 0)])
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    landing = LandingZone(path=str(tmp_path))
    assert list(landing.day_folders()) == [DAY]
    assert landing.invalid_day_folders() == ["2026-02-30"]
    with pytest.raises(LandingZoneError, match="2026-02-30"):
        landing.files_for_day("2026-02-30")


@pytest.mark.parametrize(
    "name",
    [
        "hub..0001.jsonl",
        "hub-0001..jsonl.gz",
        "hub 0001.jsonl",
        "hub-0001 .jsonl.gz",
        "hüb-0001.jsonl",
        "хаб-0001.jsonl.gz",
        "hub-0001\n.jsonl",
        "hub-0001.json",
        "hub-0001.JSONL.GZ",
        "hub-0001.jsonl.gz.part",
        b"hub-\xff\xfe.jsonl",  # bytes that are not UTF-8 in the name
    ],
)
def test_file_names_breaking_the_contract_reach_quarantine_unread(tmp_path, name):
    path = write_bytes(tmp_path, DAY, name, jsonl([event(DAY, 0, user_id="never-read-user")]))
    raw, manifest, result = run(tmp_path)
    shown = name if isinstance(name, str) else name.decode("utf-8", "backslashreplace")
    assert manifest.select("source_file", "problem").rows() == [(f"{DAY}/{shown}", "bad_file_name")]
    assert manifest["size_bytes"].to_list() == [path.lstat().st_size]
    assert_conserved(raw, result, 1)
    assert reasons(result) == ["bad_file_name"]
    assert raw["raw_line"].to_list() == [""] and raw["user_id"].to_list() == [None]


@pytest.mark.parametrize("name", [".hub-0001.jsonl.gz", "..hub-0001.jsonl", ".hub-0001.jsonl.gz.tmp"])
def test_upload_in_progress_under_a_dot_name_is_not_read(tmp_path, name):
    data = gzip.compress(jsonl([event(DAY, n) for n in range(50)]))
    write_bytes(tmp_path, DAY, name, data[: len(data) // 2])
    write_upload(tmp_path, DAY, "hub-0002", [event(DAY, 0, hub="hub-0002")])
    raw, manifest, result = run(tmp_path)
    assert manifest["source_file"].to_list() == [f"{DAY}/hub-0002.jsonl.gz"]
    assert_conserved(raw, result, 1)
    assert result.device_usage.height == 1


def test_file_still_being_written_under_its_final_name(tmp_path):
    """Gzip cut mid-stream -> truncated_gzip tail; plain text cut mid-line -> that line is not_json."""
    data = gzip.compress(jsonl([event(DAY, n) for n in range(100)]))
    write_bytes(tmp_path, DAY, "hub-0001.jsonl.gz", data[: len(data) * 2 // 3])
    text = jsonl([event(DAY, n, hub="hub-0002") for n in range(3)])
    write_bytes(tmp_path, DAY, "hub-0002.jsonl", text[:-20])
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == ["truncated_gzip", None]
    q = result.quarantine.select("source_file", "reason").rows()
    assert q == [(f"{DAY}/hub-0001.jsonl.gz", "truncated_gzip"), (f"{DAY}/hub-0002.jsonl", "not_json")]
    gz_lines = zlib.decompressobj(wbits=31).decompress(data[: len(data) * 2 // 3]).count(b"\n")
    assert_conserved(raw, result, gz_lines + 1 + 3)
    assert_contract(result.device_usage)


def test_symlink_outside_the_landing_zone_is_never_read(tmp_path):
    landing = tmp_path / "landing"
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps(event(DAY, 0, user_id="secret-user")) + "\n")
    (landing / DAY).mkdir(parents=True)
    (landing / DAY / "hub-0001.jsonl").symlink_to(secret)
    (landing / DAY / "hub-0002.jsonl").symlink_to(Path("..") / ".." / "secret.jsonl")  # relative, same target
    raw, manifest, result = run(landing)
    assert manifest["problem"].to_list() == ["symlink_outside_landing"] * 2
    assert_conserved(raw, result, 2)
    assert reasons(result) == ["symlink_outside_landing"] * 2
    assert not raw["raw_line"].str.contains("secret-user").any()


def test_a_day_folder_that_is_a_symlink_outside_the_landing_zone_is_never_read(tmp_path):
    landing, elsewhere = tmp_path / "landing", tmp_path / "elsewhere"
    write_upload(elsewhere, DAY, "hub-0001", [event(DAY, 0, user_id="secret-user", device_id="secret-device")])
    landing.mkdir()
    (landing / DAY).symlink_to(elsewhere / DAY, target_is_directory=True)
    raw, manifest, result = run(landing)
    assert manifest.select("source_file", "problem").rows() == [(f"{DAY}/", "symlink_outside_landing")]
    assert_conserved(raw, result, 1)
    assert reasons(result) == ["symlink_outside_landing"] and result.device_usage.is_empty()
    assert not raw["raw_line"].str.contains("secret").any()
    # A day folder linked to another folder inside the landing zone is read like any other.
    write_upload(landing, "archive", "hub-0002", [event(DAY, 1, hub="hub-0002")])
    (landing / DAY).unlink()
    (landing / DAY).symlink_to(landing / "archive", target_is_directory=True)
    raw, manifest, result = run(landing)
    assert manifest["problem"].to_list() == [None] and result.device_usage.height == 1


def test_entries_that_are_not_uploads_are_recorded_never_skipped_in_silence(tmp_path):
    """A folder named like an upload (holding a file, or empty), a FIFO named like one, an upload inside a
    subfolder: each gets a manifest row and a quarantined line with its reason; none is read."""
    day = tmp_path / DAY
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0)])
    (day / "hub-0002.jsonl.gz").mkdir()
    write_upload(day / "hub-0002.jsonl.gz", "x", "hub-0002", [event(DAY, 1, hub="hub-0002")])
    (day / "hub-0003.jsonl").mkdir()
    os.mkfifo(day / "hub-0004.jsonl")
    write_upload(day, "late", "hub-0005", [event(DAY, 2, hub="hub-0005")])
    raw, manifest, result = run(tmp_path)
    assert dict(manifest.select("source_file", "problem").rows()) == {
        f"{DAY}/hub-0001.jsonl.gz": None,
        f"{DAY}/hub-0002.jsonl.gz/": "not_a_file",
        f"{DAY}/hub-0003.jsonl/": "not_a_file",
        f"{DAY}/hub-0004.jsonl": "not_a_file",
        f"{DAY}/late/": "subfolder_in_day_folder",
    }
    assert_conserved(raw, result, 5)
    assert sorted(reasons(result)) == ["not_a_file"] * 3 + ["subfolder_in_day_folder"]
    assert result.device_usage["hub_id"].to_list() == ["hub-0001"]


def test_two_uploads_of_one_hub_and_day_are_a_conflict_not_an_accident_of_sort_order(tmp_path):
    """hub.jsonl beside hub.jsonl.gz: both are kept in raw_usage, every line of both is quarantined as
    conflicting_upload, and no event of either reaches device_usage."""
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0), event(DAY, 1)])
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, 0, energy_wh=9999.0)], gz=False)  # the forgery sorts first
    write_upload(tmp_path, DAY, "hub-0002", [event(DAY, 2, hub="hub-0002")])
    raw, manifest, result = run(tmp_path)
    assert dict(manifest.select("source_file", "problem").rows()) == {
        f"{DAY}/hub-0001.jsonl": "conflicting_upload",
        f"{DAY}/hub-0001.jsonl.gz": "conflicting_upload",
        f"{DAY}/hub-0002.jsonl.gz": None,
    }
    assert_conserved(raw, result, 4)
    assert reasons(result) == ["conflicting_upload"] * 3
    assert result.device_usage["hub_id"].to_list() == ["hub-0002"]


def test_symlink_loops_and_dangling_symlinks_are_broken_symlink(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    (folder / "hub-0001.jsonl").symlink_to(folder / "hub-0002.jsonl")
    (folder / "hub-0002.jsonl").symlink_to(folder / "hub-0001.jsonl")
    (folder / "hub-0003.jsonl").symlink_to(folder / "hub-0003.jsonl")
    (folder / "hub-0004.jsonl").symlink_to(folder / "gone.jsonl")
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == ["broken_symlink"] * 4
    assert_conserved(raw, result, 4)


def test_symlink_inside_the_landing_zone_is_read(tmp_path):
    write_upload(tmp_path, DAY, "hub-0001", [event(DAY, n) for n in range(2)])
    (tmp_path / DAY / "hub-0002.jsonl.gz").symlink_to("hub-0001.jsonl.gz")
    raw, manifest, result = run(tmp_path)
    assert manifest["problem"].to_list() == [None, None]
    assert_conserved(raw, result, 4)
    assert reasons(result) == ["hub_mismatch"] * 2  # hub-0001's lines in hub-0002's file


def test_symlink_to_a_fifo_or_folder_does_not_block_the_run(tmp_path):
    folder = tmp_path / DAY
    folder.mkdir()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (folder / "hub-0001.jsonl").symlink_to(tmp_path / "pipe")
    (folder / "hub-0002.jsonl").symlink_to(tmp_path / "dir")
    os.mkfifo(folder / "hub-0003.jsonl")  # not a file: listed with its reason, never opened
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=run(tmp_path)), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the reader so the test process can finish
        with open(tmp_path / "pipe", "wb"):  # the reader sees end of file
            pass
        pytest.fail("reading the landing zone blocked on a FIFO")
    raw, manifest, result = outcome["result"]
    assert manifest.select("source_file", "problem").rows() == [
        (f"{DAY}/hub-0001.jsonl", "unreadable_file"),
        (f"{DAY}/hub-0002.jsonl", "unreadable_file"),
        (f"{DAY}/hub-0003.jsonl", "not_a_file"),
    ]
    assert_conserved(raw, result, 3)


# -- property: random mixes of good and bad lines ---------------------------------------------------------

ANY = "<any outcome>"  # a plain file's line cut short: it may be anything, it must only land once
PARSE = "<a parse error>"  # random text
USER = "clear-text-user-{}@example.com"


@st.composite
def upload_line(draw, hub: str, previous: list[tuple[bytes, str | None, dict | None]]):
    """(line bytes without newline, expected reason or None or ANY, the record when it is a dict)."""
    n = draw(st.integers(0, 205))  # event n is at 7n minutes: 205 is 23:55
    fields = dict(
        device_type=draw(st.sampled_from(sorted(CATALOG))),
        energy_wh=draw(st.floats(0, MAX_EVENT_ENERGY_WH)),
        duration_s=draw(st.floats(0, MAX_EVENT_DURATION_S)),
        user_id=USER.format(draw(st.integers(0, 3))),
    )
    good = event(DAY, n, hub=hub, **fields)
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "valid",
                "valid",
                "text",
                "cut_json",
                "not_object",
                "empty",
                "wrong_type",
                "missing",
                "null_user",
                "unknown_type",
                "outside_day",
                "no_offset",
                "non_finite",
                "negative",
                "implausible",
                "empty_field",
                "hub_mismatch",
                "not_utf8",
                "duplicate",
            ]
        )
    )
    if kind == "duplicate" and previous:
        return draw(st.sampled_from(previous))
    if kind == "text":
        text = draw(st.text(st.characters(blacklist_characters="\n", blacklist_categories=["Cs"]), max_size=40))
        return text.encode(), PARSE, None
    if kind == "cut_json":
        line = json.dumps(good)
        return line[: draw(st.integers(1, len(line) - 1))].encode(), "not_json", None
    if kind == "not_object":
        return json.dumps(draw(st.sampled_from([[good], 1, "x", None, True]))).encode(), "not_object", None
    if kind == "empty":
        return b"", "empty_line", None
    if kind == "not_utf8":
        return json.dumps(good).encode().replace(b"-0", b"-\xff", 1), "not_utf8", None
    expected = None
    record = dict(good)
    if kind == "wrong_type":
        field = draw(st.sampled_from(list(good)))
        record[field] = str(good[field]) if isinstance(good[field], float) else draw(st.sampled_from([1, 2.5, [], {}]))
        expected = "wrong_type"
    elif kind == "missing":
        del record[draw(st.sampled_from(list(good)))]
        expected = "missing_field"
    elif kind == "null_user":
        record["user_id"] = None
        expected = "null_user_id"
    elif kind == "unknown_type":
        record["device_type"] = draw(st.sampled_from(["toaster", "Fridge", "fridge ", "\u00e9lectrique"]))
        expected = "unknown_device_type"
    elif kind == "outside_day":
        record["event_timestamp"] = draw(
            st.sampled_from(
                [
                    "1970-01-01T00:00:00Z",
                    "9999-01-01T00:00:00+00:00",
                    "2026-03-02T00:00:00Z",
                    "2026-02-28T23:59:59.999Z",
                ]
            )
        )
        expected = "timestamp_outside_day"
    elif kind == "no_offset":
        record["event_timestamp"] = record["event_timestamp"][:19]
        expected = "timestamp_without_offset"
    elif kind == "non_finite":
        field = draw(st.sampled_from(["energy_wh", "duration_s"]))
        record[field] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        expected = "non_finite_number"
    elif kind == "negative":
        field = draw(st.sampled_from(["energy_wh", "duration_s"]))
        record[field] = -draw(st.floats(0.001, 1e6))
        expected = "negative_energy" if field == "energy_wh" else "negative_duration"
    elif kind == "implausible":
        field = draw(st.sampled_from(["energy_wh", "duration_s"]))
        limit = MAX_EVENT_ENERGY_WH if field == "energy_wh" else MAX_EVENT_DURATION_S
        record[field] = limit + draw(st.floats(0.001, 1e9))
        expected = "implausible_energy" if field == "energy_wh" else "implausible_duration"
    elif kind == "empty_field":
        record[draw(st.sampled_from(["event_id", "device_id", "user_id"]))] = ""
        expected = "empty_field"
    elif kind == "hub_mismatch":
        record["hub_id"] = "hub-9999"
        expected = "hub_mismatch"
    return json.dumps(record).encode(), expected, (record if expected is None else None)


@st.composite
def upload_file(draw, hub: str):
    lines: list[tuple[bytes, str | None, dict | None]] = []
    for _ in range(draw(st.integers(0, 25))):
        lines.append(draw(upload_line(hub, lines)))
    return dict(
        hub=hub,
        lines=lines,
        crlf=draw(st.booleans()),
        gz=draw(st.booleans()),
        members=draw(st.integers(1, 3)),
        cut=draw(st.none() | st.floats(0, 1, exclude_max=True)),
    )


def encode_file(spec: dict) -> tuple[bytes, list[bytes], bytes | None]:
    """The file's bytes, the physical lines that survive, and the unfinished tail of a truncated gzip."""
    newline = b"\r\n" if spec["crlf"] else b"\n"
    body = [line + newline for line, _, _ in spec["lines"]]
    if not spec["gz"]:
        data = b"".join(body)
        if spec["cut"] is not None:
            data = data[: int(len(data) * spec["cut"])]
        return data, data.removesuffix(b"\n").split(b"\n") if data else [], None
    step = -(-len(body) // spec["members"]) or 1
    data = b"".join(gzip.compress(b"".join(body[i : i + step]), mtime=0) for i in range(0, max(len(body), 1), step))
    if spec["cut"] is None:
        text = b"".join(body)
        return data, text.removesuffix(b"\n").split(b"\n") if text else [], None
    data = data[: int(len(data) * spec["cut"])]
    if not data:
        return data, [], b""  # a zero-byte .gz is a truncated gzip
    recovered = bytearray()  # what a gzip reader gets out of the cut file, the way `gzip -dc` would
    reader = gzip.GzipFile(fileobj=io.BytesIO(data))
    try:
        while chunk := reader.read1(1 << 16):
            recovered += chunk
        return data, bytes(recovered).removesuffix(b"\n").split(b"\n") if recovered else [], None
    except (EOFError, gzip.BadGzipFile):  # ended early (BadGzipFile: cut inside the 2-byte magic number)
        cut = recovered.rfind(b"\n") + 1
        complete = bytes(recovered[:cut])
        return data, complete.removesuffix(b"\n").split(b"\n") if complete else [], bytes(recovered[cut:])


def expected_reasons(spec: dict, kept_lines: int) -> list[str | None]:
    """The reason of each surviving line by the documented rules; dedup is per (hub, event_id)."""
    out: list[str | None] = []
    first: dict[str, dict] = {}
    content = ["user_id", "device_id", "device_type", "event_timestamp", "duration_s", "energy_wh"]
    for _, reason, record in spec["lines"][:kept_lines]:
        if reason is None:
            if record["event_id"] in first:
                same = all(first[record["event_id"]][c] == record[c] for c in content)
                reason = "duplicate_event_id" if same else "conflicting_event_id"
            else:
                first[record["event_id"]] = record
        out.append(reason)
    return out


# BAD_INPUT_EXAMPLES=2000 for a longer hunt (about 3 minutes)
@settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    files=st.lists(st.sampled_from(["hub-0001", "hub-0002", "hub-0003"]), min_size=1, max_size=3, unique=True).flatmap(
        lambda hubs: st.tuples(*[upload_file(h) for h in hubs])
    )
)
def test_random_uploads_every_line_lands_once_and_device_usage_meets_the_contract(files):
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        expected_raw: dict[tuple[str, int], tuple[str, str | None]] = {}
        for spec in files:
            data, physical, tail = encode_file(spec)
            name = f"{spec['hub']}.jsonl{'.gz' if spec['gz'] else ''}"
            write_bytes(landing, DAY, name, data)
            source = f"{DAY}/{name}"
            # a line cut short in a plain file may have become anything: only its landing is checked
            intact = len(physical) - (1 if not spec["gz"] and spec["cut"] is not None and physical else 0)
            for i, (line, reason) in enumerate(
                zip(physical, expected_reasons(spec, len(physical)), strict=True), start=1
            ):
                decoded = line.decode("utf-8", "replace").removesuffix("\r")
                if i == 1:
                    decoded = decoded.removeprefix("\ufeff")  # a byte order mark at the start is dropped
                expected_raw[(source, i)] = (decoded, reason if i <= intact else ANY)
            if tail is not None:
                expected_raw[(source, len(physical) + 1)] = (tail.decode("utf-8", "replace"), "truncated_gzip")
        raw, _, result = run(landing)

        assert_conserved(raw, result, len(expected_raw))
        assert dict(zip(raw.select("source_file", "line_number").rows(), raw["raw_line"], strict=True)) == {
            k: line for k, (line, _) in expected_raw.items()
        }
        got = {
            **{k: None for k in result.device_usage.select("source_file", "line_number").rows()},
            **dict(
                zip(
                    result.quarantine.select("source_file", "line_number").rows(),
                    result.quarantine["reason"],
                    strict=True,
                )
            ),
        }
        for key, (line, reason) in expected_raw.items():
            if reason == PARSE:
                assert got[key] in PARSE_CODES, (key, line, got[key])
            elif reason != ANY:
                assert got[key] == reason, (key, line, got[key])
        assert_contract(result.device_usage)
        for frame in (result.device_usage, result.quarantine):
            for column in frame.select(pl.col(pl.String)).columns:
                assert not frame[column].str.contains("clear-text-user", literal=True).any(), column
