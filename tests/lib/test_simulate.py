"""Tests for the hub fleet simulator: layout, contract, determinism, faults and data structure."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zlib
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.contract import (
    DATE_FOLDER_RE,
    HUB_ID_RE,
    MAX_EVENT_DURATION_S,
    MAX_EVENT_ENERGY_WH,
    NUMBER_FIELDS,
    STRING_FIELDS,
    UPLOAD_FIELDS,
)
from smart_home_tools import simulate as sim

START = dt.date(2026, 1, 5)  # a Monday in winter
CATALOG_TYPES = set(load_device_catalog().device_types)


def _files(landing: Path) -> dict[str, bytes]:
    return {p.relative_to(landing).as_posix(): p.read_bytes() for p in sorted(landing.rglob("*")) if p.is_file()}


def _read_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("ascii").splitlines()


def classify(line: str, day: dt.date, seen: dict[str, str]) -> str | None:
    """What a strict reader finds wrong with one line (None = valid); ``seen`` maps event_id -> line."""
    try:
        obj = json.loads(line)
    except ValueError:
        return sim.NOT_JSON
    if not isinstance(obj, dict):
        return sim.NOT_JSON
    if any(name not in obj for name in UPLOAD_FIELDS):
        return sim.MISSING_FIELD
    if obj["user_id"] is None:
        return sim.NULL_USER_ID
    if not all(isinstance(obj[k], str) for k in STRING_FIELDS):
        return sim.WRONG_TYPE
    if not all(isinstance(obj[k], (int, float)) and not isinstance(obj[k], bool) for k in NUMBER_FIELDS):
        return sim.WRONG_TYPE
    if obj["device_type"] not in CATALOG_TYPES:
        return sim.UNKNOWN_DEVICE_TYPE
    ts = dt.datetime.fromisoformat(obj["event_timestamp"])
    assert ts.tzinfo is not None, line
    if ts.astimezone(dt.UTC).date() != day:
        return sim.TIMESTAMP_OUTSIDE_DAY
    if obj["energy_wh"] < 0:
        return sim.NEGATIVE_ENERGY
    if obj["event_id"] in seen:
        assert seen[obj["event_id"]] == line, "a duplicate repeats an earlier line exactly"
        return sim.DUPLICATE_EVENT_ID
    seen[obj["event_id"]] = line
    return None


def test_device_types_are_catalog_types() -> None:
    assert set(sim.DEVICE_TYPES) == CATALOG_TYPES


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    simulate = partial(sim.simulate_fleet, hubs=4, days=2, start=START, fault_rate=0.05, events_per_hub=60)
    simulate(tmp_path / "a", seed=7)
    simulate(tmp_path / "b", seed=7)
    simulate(tmp_path / "c", seed=8)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_layout_and_contract_without_faults(tmp_path: Path) -> None:
    summary = sim.simulate_fleet(tmp_path, hubs=12, days=3, start=START, seed=1, events_per_hub=80)
    files = sorted(tmp_path.rglob("*"))
    assert all(p.is_file() == (p.parent != tmp_path) for p in files), "only day folders at the top, files inside"
    uploads = [p for p in files if p.is_file()]
    assert len(uploads) == summary.files == 12 * 3
    assert summary.bytes == sum(p.stat().st_size for p in uploads)
    assert summary.faults == dict.fromkeys(sim.FAULT_KINDS, 0) and summary.truncated_files == []

    event_ids: dict[str, set[str]] = {}
    offsets, lines = set(), 0
    for path in uploads:
        assert DATE_FOLDER_RE.match(path.parent.name) and path.name.endswith(".jsonl.gz")
        hub_id = path.name.removesuffix(".jsonl.gz")
        assert HUB_ID_RE.match(hub_id)
        day = dt.date.fromisoformat(path.parent.name)
        seen: dict[str, str] = {}
        for line in _read_lines(path):
            assert classify(line, day, seen) is None, line
            obj = json.loads(line)
            assert list(obj) == list(UPLOAD_FIELDS)
            assert obj["hub_id"] == hub_id and obj["device_id"].startswith(f"{hub_id}-{obj['device_type']}-")
            assert obj["user_id"].startswith("user-")
            assert 0 <= obj["duration_s"] < MAX_EVENT_DURATION_S and 0 <= obj["energy_wh"] < MAX_EVENT_ENERGY_WH
            assert obj["event_id"] not in event_ids.setdefault(hub_id, set()), "event_id unique within a hub"
            event_ids[hub_id].add(obj["event_id"])
            offsets.add(obj["event_timestamp"][-6:])
            lines += 1
    assert lines == summary.lines == summary.events
    assert "+00:00" in offsets and len(offsets) > 1, "some hubs report in a non-zero UTC offset"
    assert 0.7 * 80 < lines / summary.files < 1.3 * 80, "events_per_hub is the mean per hub and day"


def test_fault_counts_match_what_a_parser_finds(tmp_path: Path) -> None:
    summary = sim.simulate_fleet(tmp_path, hubs=40, days=2, start=START, fault_rate=0.05, seed=3, events_per_hub=40)
    found: Counter[str] = Counter()
    lines = events = truncated = 0
    for path in sorted(tmp_path.rglob("*.jsonl.gz")):
        rel = path.relative_to(tmp_path).as_posix()
        if rel in summary.truncated_files:
            with pytest.raises((EOFError, zlib.error, gzip.BadGzipFile)):
                gzip.decompress(path.read_bytes())
            truncated += 1
            continue
        day = dt.date.fromisoformat(path.parent.name)
        seen: dict[str, str] = {}
        for line in _read_lines(path):
            kind = classify(line, day, seen)
            lines += 1
            if kind is None:
                events += 1
            else:
                found[kind] += 1
    found[sim.TRUNCATED_GZIP] = truncated
    assert dict(found) == summary.faults
    assert all(summary.faults[kind] > 0 for kind in sim.FAULT_KINDS), summary.faults
    assert (lines, events) == (summary.lines, summary.events)
    assert summary.lines == summary.events + sum(v for k, v in summary.faults.items() if k != sim.TRUNCATED_GZIP)
    # Each line-level kind hits roughly fault_rate of the lines.
    for kind in sim.LINE_FAULT_KINDS:
        assert 0.02 < summary.faults[kind] / summary.lines < 0.09, (kind, summary.faults[kind])


@pytest.mark.parametrize(("hubs", "days"), [(20, 1), (5, 4), (1, 20)])
def test_at_least_one_truncated_file_per_20_files(tmp_path: Path, hubs: int, days: int) -> None:
    summary = sim.simulate_fleet(tmp_path, hubs=hubs, days=days, start=START, fault_rate=0.001, events_per_hub=5)
    assert summary.faults[sim.TRUNCATED_GZIP] == len(summary.truncated_files) >= 1
    for rel in summary.truncated_files:
        with pytest.raises((EOFError, zlib.error, gzip.BadGzipFile)):
            gzip.decompress((tmp_path / rel).read_bytes())


def test_one_day_alone_equals_that_day_of_a_longer_run(tmp_path: Path) -> None:
    simulate = partial(sim.simulate_fleet, hubs=6, fault_rate=0.05, seed=11, events_per_hub=50)
    simulate(tmp_path / "run", days=3, start=START)
    for offset in range(3):
        day = START + dt.timedelta(days=offset)
        simulate(tmp_path / "single", days=1, start=day)
    assert _files(tmp_path / "run") == _files(tmp_path / "single")


def test_faults_do_not_change_the_clean_events(tmp_path: Path) -> None:
    simulate = partial(sim.simulate_fleet, hubs=5, days=1, start=START, seed=2, events_per_hub=60)
    simulate(tmp_path / "clean")
    faulty = simulate(tmp_path / "faulty", fault_rate=0.1)
    for path in sorted((tmp_path / "faulty").rglob("*.jsonl.gz")):
        rel = path.relative_to(tmp_path / "faulty").as_posix()
        if rel in faulty.truncated_files:
            continue
        clean = set(_read_lines(tmp_path / "clean" / rel))
        seen: dict[str, str] = {}
        valid = [line for line in _read_lines(path) if classify(line, START, seen) is None]
        assert valid and set(valid) <= clean


def _daily_energy_by_type(day: dt.date, hubs: list[sim.Hub]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for hub in hubs:
        events = sim.simulate_hub_day(hub, day, seed=0, events_per_hub=50)
        energy = np.bincount(events.device, events.energy_wh, len(hub.type_idx))
        for device_type, wh in zip(hub.device_types, energy, strict=True):  # bincount: one total per device
            totals[device_type] += wh
    return dict(totals)


def test_structure_heating_seasonal_and_washer_not_daily() -> None:
    hubs = sim.build_fleet(0, 30)
    january = _daily_energy_by_type(dt.date(2026, 1, 14), hubs)
    july = _daily_energy_by_type(dt.date(2026, 7, 15), hubs)
    assert january["heating"] > 5 * july["heating"]
    assert 0.5 < january["fridge"] / july["fridge"] < 1.2

    # Over two weeks: fridges run every day, washers only on some days, on roughly fixed weekdays.
    washer_days: Counter[tuple[int, int, int]] = Counter()
    fridge_days, n_washers, n_fridges = 0, 0, 0
    for hub in hubs:
        for offset in range(14):
            day = START + dt.timedelta(days=offset)
            events = sim.simulate_hub_day(hub, day, seed=0, events_per_hub=50)
            used = np.bincount(events.device, minlength=len(hub.type_idx)) > 0
            types = hub.device_types.to_list()
            for i, (device_type, on) in enumerate(zip(types, used, strict=True)):
                if device_type == "washing_machine" and on:
                    washer_days[(hub.index, i, day.weekday())] += 1
                fridge_days += device_type == "fridge" and on
        n_washers += hub.device_types.to_list().count("washing_machine")
        n_fridges += hub.device_types.to_list().count("fridge")
    assert fridge_days == 14 * n_fridges
    assert 0 < sum(washer_days.values()) < 0.6 * 14 * n_washers
    # A washer used on a weekday in week one is mostly used on that weekday in week two as well.
    assert sum(1 for v in washer_days.values() if v == 2) > 0.5 * len(washer_days)


def test_events_within_day_and_limits_for_every_offset() -> None:
    for index in range(60):
        hub = sim.build_hub(5, index)
        assert 5 <= len(hub.type_idx) <= 12
        events = sim.simulate_hub_day(hub, START, seed=5, events_per_hub=3)  # few events: large ones
        assert np.all((events.utc_second >= 0) & (events.utc_second < 86_400))
        assert np.all(events.energy_wh < MAX_EVENT_ENERGY_WH) and np.all(events.duration_s < MAX_EVENT_DURATION_S)
        assert np.all(events.energy_wh >= 0) and np.all(events.duration_s >= 0)


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sim.simulate_fleet(tmp_path, hubs=1, days=1, start=START, fault_rate=0.5)
    with pytest.raises(ValueError):
        sim.simulate_fleet(tmp_path, hubs=0, days=1, start=START)
