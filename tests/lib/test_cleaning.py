"""device_usage cleaning: every raw row lands in exactly one place, with the right reason."""

import datetime as dt

import polars as pl
import pytest

from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import clean_usage, pseudonymize
from smart_home_assets.lib.ingest import parse_lines, split_lines
from tests.conftest import event

DAY = "2026-03-01"
KEY = b"k" * 32
CATALOG = load_device_catalog().device_types


def raw_frame(lines, hub="hub-0001", day=DAY):
    import json

    text = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n"
    frame = pl.DataFrame({"raw_line": split_lines(text)}).with_columns(
        source_file=pl.lit(f"{day}/{hub}.jsonl.gz"),
        file_hub_id=pl.lit(hub),
        line_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        line_problem=pl.lit(None, pl.String),
        partition_date=pl.lit(dt.date.fromisoformat(day)),
    )
    return parse_lines(frame, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))


def reasons(lines):
    result = clean_usage(raw_frame(lines), CATALOG, KEY)
    return result, dict(zip(result.quarantine["line_number"], result.quarantine["reason"], strict=True))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (event(DAY, 1, user_id=None), "null_user_id"),
        (event(DAY, 1, device_type="toaster_x"), "unknown_device_type"),
        (event(DAY, 1, event_timestamp="2026-03-03T10:00:00+00:00"), "timestamp_outside_day"),
        (event(DAY, 1, event_timestamp="2026-02-28T23:59:59+00:00"), "timestamp_outside_day"),
        (event(DAY, 1, event_timestamp="2026-03-01T10:00:00"), "timestamp_without_offset"),
        (event(DAY, 1, event_timestamp="yesterday"), "bad_timestamp"),
        (event(DAY, 1, energy_wh=-3.0), "negative_energy"),
        (event(DAY, 1, duration_s=-1), "negative_duration"),
        (event(DAY, 1, energy_wh=1e9), "implausible_energy"),
        (event(DAY, 1, duration_s=90_000), "implausible_duration"),
        (event(DAY, 1, hub_id="hub-9999"), "hub_mismatch"),
        (event(DAY, 1, device_id=""), "empty_field"),
        ('{"event_id": "x', "not_json"),
        (event(DAY, 1, energy_wh="abc"), "wrong_type"),
        ({k: v for k, v in event(DAY, 1).items() if k != "device_type"}, "missing_field"),
    ],
)
def test_each_fault_is_quarantined_under_its_reason(bad, reason):
    result, got = reasons([event(DAY, 0), bad, event(DAY, 2)])
    assert got == {2: reason}
    assert result.device_usage["line_number"].to_list() == [1, 3]


def test_offsets_are_converted_to_utc_within_the_partition_window():
    result, got = reasons([event(DAY, 0, event_timestamp="2026-03-01T01:30:00+01:00")])
    assert got == {}
    assert result.device_usage["event_timestamp"].to_list() == [dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)]


def test_exact_repeat_is_a_duplicate_and_a_changed_repeat_a_conflict():
    first = event(DAY, 0)
    result, got = reasons([first, first, event(DAY, 0, energy_wh=999.0), event(DAY, 1)])
    assert got == {2: "duplicate_event_id", 3: "conflicting_event_id"}
    assert result.device_usage["line_number"].to_list() == [1, 4]


def test_every_raw_row_lands_exactly_once():
    lines = [event(DAY, i) for i in range(20)] + [event(DAY, 3), "nope", event(DAY, 30, user_id=None)]
    raw = raw_frame(lines)
    result = clean_usage(raw, CATALOG, KEY)
    placed = pl.concat([result.device_usage.select("line_number"), result.quarantine.select("line_number")])
    assert sorted(placed["line_number"].to_list()) == raw["line_number"].to_list()


def test_user_ids_are_pseudonymized_with_the_key_and_never_kept_in_clear():
    result, _ = reasons([event(DAY, 0), event(DAY, 1, device_type="toaster_x")])
    out = pl.concat([result.device_usage.select("user_pseudonym"), result.quarantine.select("user_pseudonym")])
    assert "user_id" not in result.device_usage.columns and "user_id" not in result.quarantine.columns
    assert "raw_line" not in result.quarantine.columns
    assert not any("user-hub-0001" in str(v) for v in result.device_usage.rows() + result.quarantine.rows())
    assert out["user_pseudonym"].n_unique() == 1 and len(out["user_pseudonym"][0]) == 64


def test_pseudonyms_depend_on_the_key_and_are_stable():
    users = pl.Series("user_id", ["alice", "bob", None, "alice"])
    a, b = pseudonymize(users, b"a" * 32), pseudonymize(users, b"b" * 32)
    assert a[0] == a[3] and a[0] != a[1] and a[2] is None
    assert a[0] != b[0]
    assert a.to_list() == pseudonymize(users, b"a" * 32).to_list()
