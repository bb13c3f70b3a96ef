"""History import: events CSV -> contract upload files (smart_home_tools.history_import, `smart-home import-csv`).

Small hand-made CSVs in tmp, plus the real tracebase export when ``../shared/data/tracebase/sessions.csv``
exists (it is ODbL data and never copied into the repository).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from resources.landing import LandingZone
from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import DUPLICATE_EVENT_ID, clean_usage
from smart_home_assets.lib.contract import UPLOAD_FIELDS
from smart_home_tools.cli import main
from smart_home_tools.history_import import PLACEHOLDER_USER_ID, HistoryImportError, import_csv
from tests.conftest import ingest_day

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRACEBASE_CSV = PROJECT_ROOT.parent / "shared" / "data" / "tracebase" / "sessions.csv"
TRACEBASE_CATALOG = PROJECT_ROOT / "smart_home_assets" / "lib" / "catalogs" / "tracebase.json"
HEADER = "hub_id,device_id,device_type,event_timestamp,duration_s,energy_wh"
CATALOG = ("fridge", "oven", "lighting")
UTC = dt.UTC


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def read_landing(landing: Path) -> dict[str, list[dict]]:
    """relative path -> parsed lines of every upload file under ``landing``."""
    return {
        p.relative_to(landing).as_posix(): [json.loads(line) for line in gzip.decompress(p.read_bytes()).splitlines()]
        for p in sorted(landing.glob("*/*.jsonl.gz"))
    }


def timestamps(landing: Path) -> list[str]:
    return sorted(line["event_timestamp"] for lines in read_landing(landing).values() for line in lines)


def through_pipeline(landing: Path, catalog=CATALOG, days=None):
    """The files as raw_usage -> device_usage/quarantine would judge them (the pipeline's own functions)."""
    zone = LandingZone(path=str(landing))
    raws = [ingest_day(day, zone.files_for_day(day), dt.datetime.now(UTC))[0] for day in days or zone.day_folders()]
    return clean_usage(pl.concat(raws), catalog, b"k" * 32)


def assert_contract_line(line: dict) -> None:
    assert list(line) == list(UPLOAD_FIELDS)
    for name, kind in UPLOAD_FIELDS.items():
        assert isinstance(line[name], str if kind == "string" else float), (name, line)
    parsed = dt.datetime.fromisoformat(line["event_timestamp"])
    assert line["event_timestamp"].endswith("+00:00") and parsed.utcoffset() == dt.timedelta(0)


def test_writes_contract_files_per_utc_day_and_hub(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            "hub-a,hub-a-fridge,fridge,2012-01-10T00:30:00,600,25.5",  # 23:30Z the day before
            "hub-a,hub-a-oven,oven,2012-01-10 12:00:00,1800.5,900",  # a space instead of T is accepted
            " hub-b , hub-b-lamp , lighting ,2012-01-10T08:00,60,1",  # whitespace stripped, minutes only
        ],
        header=HEADER + ",note",
    )
    csv.write_text(csv.read_text().replace("25.5\n", "25.5,extra columns are ignored\n"))
    landing = tmp_path / "landing"

    summary = import_csv(csv, landing, timezone="Europe/Berlin")

    files = read_landing(landing)
    assert sorted(files) == ["2012-01-09/hub-a.jsonl.gz", "2012-01-10/hub-a.jsonl.gz", "2012-01-10/hub-b.jsonl.gz"]
    assert files["2012-01-09/hub-a.jsonl.gz"][0]["event_timestamp"] == "2012-01-09T23:30:00+00:00"
    assert files["2012-01-10/hub-a.jsonl.gz"][0] | {"event_id": None} == {
        "event_id": None,
        "hub_id": "hub-a",
        "user_id": PLACEHOLDER_USER_ID,
        "device_id": "hub-a-oven",
        "device_type": "oven",
        "event_timestamp": "2012-01-10T11:00:00+00:00",
        "duration_s": 1800.5,
        "energy_wh": 900.0,
    }
    assert files["2012-01-10/hub-b.jsonl.gz"][0]["device_id"] == "hub-b-lamp"
    for lines in files.values():
        for line in lines:
            assert_contract_line(line)
    assert (summary.rows, summary.files, summary.files_written, summary.days) == (3, 3, 3, 2)
    assert (summary.first_day, summary.last_day, summary.hubs) == (
        dt.date(2012, 1, 9),
        dt.date(2012, 1, 10),
        ("hub-a", "hub-b"),
    )
    assert summary.derived_event_ids == summary.placeholder_user_ids == 3
    assert summary.paths == sorted(files)

    # The pipeline's own ingest and cleaning take every line: nothing quarantined.
    result = through_pipeline(landing)
    assert result.quarantine.height == 0 and result.device_usage.height == 3


def test_dst_gap_shifts_forward_and_repeat_takes_the_earlier_instant(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            "hub-a,d1,fridge,2012-03-25T01:59:59,1,1",  # CET, just before the gap
            "hub-a,d1,fridge,2012-03-25T02:30:00,1,1",  # in the gap -> 03:30 CEST
            "hub-a,d1,fridge,2012-03-25T03:00:00,1,1",  # CEST, just after
            "hub-a,d1,fridge,2011-10-30T01:59:59,1,1",  # CEST, before the repeated hour
            "hub-a,d1,fridge,2011-10-30T02:30:00,1,1",  # ambiguous -> the first (CEST) occurrence
            "hub-a,d1,fridge,2011-10-30T03:00:00,1,1",  # CET
        ],
    )
    summary = import_csv(csv, tmp_path / "landing", timezone="Europe/Berlin")
    assert timestamps(tmp_path / "landing") == sorted(
        [
            "2012-03-25T00:59:59+00:00",
            "2012-03-25T01:30:00+00:00",
            "2012-03-25T01:00:00+00:00",
            "2011-10-29T23:59:59+00:00",
            "2011-10-30T00:30:00+00:00",
            "2011-10-30T02:00:00+00:00",
        ]
    )
    assert (summary.dst_shifted_forward, summary.dst_ambiguous_earliest, summary.offset_timestamps) == (1, 1, 0)


@pytest.mark.parametrize(
    "tz, days",
    [
        ("Europe/Berlin", ("2012-03-25", "2011-10-30")),
        ("Australia/Sydney", ("2013-10-06", "2013-04-07")),
        ("America/New_York", ("2012-03-11", "2012-11-04")),
    ],
)
def test_dst_rule_equals_python_fold_0_around_every_transition(tmp_path, tz, days):
    """The stated rule is what zoneinfo does with fold=0: the offset before the transition applies."""
    local = [dt.datetime.fromisoformat(day) + dt.timedelta(minutes=m) for day in days for m in range(0, 24 * 60, 10)]
    csv = write_csv(tmp_path, [f"hub-x,d,fridge,{t.isoformat()},1,1" for t in local])
    summary = import_csv(csv, tmp_path / "landing", timezone=tz)
    expected = sorted(t.replace(tzinfo=ZoneInfo(tz), fold=0).astimezone(UTC).isoformat() for t in local)
    assert timestamps(tmp_path / "landing") == expected
    assert summary.dst_shifted_forward == 6 and summary.dst_ambiguous_earliest == 6  # one hour each, every 10 min


def test_hub_timezone_overrides_the_default_per_hub(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            "hub-de,d,fridge,2013-06-01T12:00:00,1,1",
            "hub-au,d,fridge,2013-06-01T12:00:00,1,1",
            "hub-au,d,fridge,2013-10-06T02:30:00,1,1",  # Sydney's spring-forward gap -> 03:30 AEDT
            "hub-au,d,fridge,2013-04-07T02:30:00,1,1",  # Sydney's repeated hour -> the AEDT (+11) instant
        ],
    )
    summary = import_csv(
        csv, tmp_path / "landing", timezone="Europe/Berlin", hub_timezones={"hub-au": "Australia/Sydney"}
    )
    files = read_landing(tmp_path / "landing")
    assert files["2013-06-01/hub-de.jsonl.gz"][0]["event_timestamp"] == "2013-06-01T10:00:00+00:00"
    assert files["2013-06-01/hub-au.jsonl.gz"][0]["event_timestamp"] == "2013-06-01T02:00:00+00:00"
    assert files["2013-10-05/hub-au.jsonl.gz"][0]["event_timestamp"] == "2013-10-05T16:30:00+00:00"
    assert files["2013-04-06/hub-au.jsonl.gz"][0]["event_timestamp"] == "2013-04-06T15:30:00+00:00"
    assert (summary.dst_shifted_forward, summary.dst_ambiguous_earliest) == (1, 1)

    with pytest.raises(HistoryImportError, match=r"not in .*events\.csv: hub-typo; its hubs are: hub-au, hub-de"):
        import_csv(csv, tmp_path / "other", timezone="Europe/Berlin", hub_timezones={"hub-typo": "UTC"})
    with pytest.raises(HistoryImportError, match="'Mars/Base' is not an IANA time zone"):
        import_csv(csv, tmp_path / "other", timezone="Europe/Berlin", hub_timezones={"hub-au": "Mars/Base"})
    with pytest.raises(HistoryImportError, match="--timezone: 'CEST' is not an IANA"):
        import_csv(csv, tmp_path / "other", timezone="CEST")
    assert not (tmp_path / "other").exists()


def test_timestamps_with_an_offset_are_converted_as_they_are(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            "hub-a,d,fridge,2012-06-01T12:00:00+02:00,1,1",
            "hub-a,d,fridge,2012-06-01T12:00:00Z,1,1",
            "hub-a,d,fridge,2012-06-01T12:00:00.25-0530,1,1",
            "hub-a,d,fridge,2012-03-25T02:30:00+01:00,1,1",  # a nonexistent Berlin wall time, but the offset rules
        ],
    )
    summary = import_csv(csv, tmp_path / "landing", timezone="Australia/Sydney")
    assert timestamps(tmp_path / "landing") == [
        "2012-03-25T01:30:00+00:00",
        "2012-06-01T10:00:00+00:00",
        "2012-06-01T12:00:00+00:00",
        "2012-06-01T17:30:00.250000+00:00",
    ]
    assert (summary.offset_timestamps, summary.dst_shifted_forward, summary.dst_ambiguous_earliest) == (4, 0, 0)
    assert through_pipeline(tmp_path / "landing").device_usage.height == 4


def test_derived_ids_are_deterministic_and_a_reimport_leaves_files_untouched(tmp_path):
    rows = [
        "hub-a,d1,fridge,2012-06-01T12:00:00,600,25",
        "hub-a,d2,oven,2012-06-01T13:00:00,900,800",
        "hub-a,d1,fridge,2012-06-02T12:00:00,600,-3",
    ]  # negative energy is data, not an import error
    csv = write_csv(tmp_path, rows)
    landing = tmp_path / "landing"
    first = import_csv(csv, landing, timezone="Europe/Berlin")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in landing.glob("*/*.jsonl.gz")}
    ids = [line["event_id"] for lines in read_landing(landing).values() for line in lines]
    assert len(set(ids)) == 3 and all(i.startswith("csv-") and len(i) == 4 + 32 for i in ids)

    time.sleep(0.02)
    again = import_csv(csv, landing, timezone="Europe/Berlin")
    assert (first.files_written, again.files_written, again.files_unchanged) == (2, 0, 2)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in landing.glob("*/*.jsonl.gz")} == before
    assert not list(landing.rglob(".*"))  # no temp files left

    # The same rows in another order (a re-export) give the same bytes; another landing, same content.
    shuffled = write_csv(tmp_path, rows[::-1], name="shuffled.csv")
    import_csv(shuffled, tmp_path / "landing2", timezone="Europe/Berlin")
    assert {p.relative_to(tmp_path / "landing2"): p.read_bytes() for p in (tmp_path / "landing2").glob("*/*.gz")} == {
        p.relative_to(landing): data for p, (data, _) in before.items()
    }

    # The pipeline quarantines the negative energy as data.
    result = through_pipeline(landing)
    assert result.device_usage.height == 2 and result.quarantine["reason"].to_list() == ["negative_energy"]


def test_identical_rows_keep_one_id_and_the_pipeline_counts_the_repeat(tmp_path):
    row = "hub-a,d1,fridge,2012-06-01T12:00:00,600,25"
    csv = write_csv(tmp_path, [row, "hub-a,d1,fridge,2012-06-01T12:10:00,600,25", row])
    summary = import_csv(csv, tmp_path / "landing", timezone="UTC")
    assert (summary.rows, summary.duplicate_rows) == (3, 1)
    result = through_pipeline(tmp_path / "landing")
    assert result.device_usage.height == 2
    assert result.quarantine["reason"].to_list() == [DUPLICATE_EVENT_ID]


def test_column_mapping_with_event_and_user_columns(tmp_path):
    csv = write_csv(
        tmp_path,
        ["E1,home_1,alice,plug-7,fridge,2012-06-01T12:00:00+00:00,60,1.5,x"],
        header="id,home,who,plug,kind,start,secs,wh,unused",
    )
    summary = import_csv(
        csv,
        tmp_path / "landing",
        timezone="UTC",
        columns={
            "event_id": "id",
            "hub_id": "home",
            "user_id": "who",
            "device_id": "plug",
            "device_type": "kind",
            "event_timestamp": "start",
            "duration_s": "secs",
            "energy_wh": "wh",
        },
    )
    assert read_landing(tmp_path / "landing") == {
        "2012-06-01/home_1.jsonl.gz": [
            {
                "event_id": "E1",
                "hub_id": "home_1",
                "user_id": "alice",
                "device_id": "plug-7",
                "device_type": "fridge",
                "event_timestamp": "2012-06-01T12:00:00+00:00",
                "duration_s": 60.0,
                "energy_wh": 1.5,
            }
        ]
    }
    assert (summary.derived_event_ids, summary.placeholder_user_ids) == (0, 0)


def test_a_mapped_column_that_is_missing_names_the_file_and_its_columns(tmp_path):
    csv = write_csv(tmp_path, ["hub-a,d,fridge,2012-06-01T12:00:00,1,1"])
    with pytest.raises(HistoryImportError) as err:
        import_csv(csv, tmp_path / "landing", timezone="UTC", columns={"energy_wh": "kwh", "user_id": "user"})
    message = str(err.value)
    assert str(csv) in message and "'kwh' (for energy_wh)" in message and "'user' (for user_id)" in message
    assert "the file has: 'hub_id', 'device_id', 'device_type', 'event_timestamp', 'duration_s', 'energy_wh'" in message
    assert not (tmp_path / "landing").exists()


def test_bad_values_name_file_line_and_column_and_nothing_is_written(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            "hub-a,d,fridge,2012-06-01T12:00:00,1,1",  # line 2: fine
            "hub-a,d,fridge,2012-06-01T12:00:00,ten,1",  # line 3: bad number
            "hub-a,d,fridge,yesterday,1,1",  # line 4: bad timestamp
            "hub-a,,fridge,2012-02-30T12:00:00,1,nan",  # line 5: empty device, no such date, not finite
            "hub/../x,d,fridge,2012-06-01T12:00:00,-1,-1",  # line 6: hub id not a file name (negatives are fine)
        ],
    )
    with pytest.raises(HistoryImportError) as err:
        import_csv(csv, tmp_path / "landing", timezone="Europe/Berlin")
    lines = str(err.value).splitlines()
    assert lines[0] == f"{csv}: 6 value(s) cannot be imported; nothing was written:"
    assert lines[1:] == [
        f"  {csv}:3: column 'duration_s': not a number ('ten')",
        f"  {csv}:4: column 'event_timestamp': not an ISO-8601 timestamp (YYYY-MM-DDTHH:MM[:SS[.f]][Z|+HH:MM])"
        " ('yesterday')",
        f"  {csv}:5: column 'device_id': empty required value",
        f"  {csv}:5: column 'event_timestamp': not an ISO-8601 timestamp (YYYY-MM-DDTHH:MM[:SS[.f]][Z|+HH:MM])"
        " ('2012-02-30T12:00:00')",
        f"  {csv}:5: column 'energy_wh': not a finite number ('nan')",
        f"  {csv}:6: column 'hub_id': hub id is not a valid upload file name (letters, digits, '_' and '-')"
        " ('hub/../x')",
    ]
    assert not (tmp_path / "landing").exists()


def test_many_bad_values_list_ten_and_the_total(tmp_path):
    csv = write_csv(tmp_path, [f"hub-a,d,fridge,2012-06-01T12:00:00,x{i},1" for i in range(25)])
    with pytest.raises(HistoryImportError) as err:
        import_csv(csv, tmp_path / "landing", timezone="UTC")
    lines = str(err.value).splitlines()
    assert "25 value(s) cannot be imported" in lines[0]
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "  ... and 15 more"
    assert lines[1].startswith(f"  {csv}:2: column 'duration_s'") and lines[10].startswith(f"  {csv}:11:")


def test_line_numbers_count_blank_lines_and_line_breaks_in_quoted_fields(tmp_path):
    csv = write_csv(
        tmp_path,
        [
            'hub-a,"plug\nnumber 1",fridge,2012-06-01T12:00:00,1,1',  # lines 2-3
            "",  # line 4, skipped
            "hub-a,d,fridge,2012-06-01T13:00:00,1,oops",
            "",
        ],
    )  # line 5; blank line 6
    with pytest.raises(HistoryImportError, match=r"events\.csv:5: column 'energy_wh': not a number \('oops'\)"):
        import_csv(csv, tmp_path / "landing", timezone="UTC")
    csv.write_text(csv.read_text().replace("oops", "2"))
    summary = import_csv(csv, tmp_path / "landing", timezone="UTC")
    assert (summary.rows, summary.skipped_blank_lines) == (2, 2)
    lines = read_landing(tmp_path / "landing")["2012-06-01/hub-a.jsonl.gz"]
    assert "plug\nnumber 1" in {line["device_id"] for line in lines}


def test_an_existing_upload_with_other_content_is_not_replaced_without_overwrite(tmp_path):
    landing = tmp_path / "landing"
    own = landing / "2012-06-01" / "hub-a.jsonl.gz"
    own.parent.mkdir(parents=True)
    own.write_bytes(gzip.compress(b'{"hub own upload": true}\n', mtime=0))
    csv = write_csv(tmp_path, ["hub-a,d,fridge,2012-06-01T12:00:00,1,1", "hub-a,d,fridge,2012-06-02T12:00:00,1,1"])
    with pytest.raises(HistoryImportError, match=r"1 upload file\(s\) already exist with other content; nothing"):
        import_csv(csv, landing, timezone="UTC")
    assert b"hub own upload" in gzip.decompress(own.read_bytes())
    assert not (landing / "2012-06-02").exists()

    summary = import_csv(csv, landing, timezone="UTC", overwrite=True)
    assert summary.files_written == 2 and len(read_landing(landing)["2012-06-01/hub-a.jsonl.gz"]) == 1


def test_cli_imports_and_reports_errors_without_a_traceback(tmp_path, capsys):
    csv = write_csv(tmp_path, ["hub-a,d,fridge,2012-06-01T12:00:00,1,1", "hub-b,d,fridge,2012-06-01T12:00:00,1,1"])
    landing = tmp_path / "landing"
    assert (
        main(
            [
                "import-csv",
                str(csv),
                "--timezone",
                "Europe/Berlin",
                "--hub-timezone",
                "hub-b=Asia/Tokyo",
                "--landing",
                str(landing),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "imported 2 rows into 2 files (2 written, 0 unchanged)" in out and "placeholder user ids" in out
    assert sorted(read_landing(landing)) == ["2012-06-01/hub-a.jsonl.gz", "2012-06-01/hub-b.jsonl.gz"]
    assert read_landing(landing)["2012-06-01/hub-b.jsonl.gz"][0]["event_timestamp"] == "2012-06-01T03:00:00+00:00"

    assert (
        main(
            ["import-csv", str(csv), "--timezone", "Europe/Berlin", "--landing", str(landing), "--energy-column", "kwh"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("smart-home import-csv: error: ") and "'kwh' (for energy_wh)" in err
    assert "Traceback" not in err

    assert main(["import-csv", str(csv), "--timezone", "UTC", "--hub-timezone", "no-equals-sign"]) == 2
    assert "--hub-timezone 'no-equals-sign' wants HUB=TZ" in capsys.readouterr().err
    assert (
        main(
            [
                "import-csv",
                str(csv),
                "--timezone",
                "UTC",
                "--hub-timezone",
                "hub-a=UTC",
                "--hub-timezone",
                "hub-a=Asia/Tokyo",
            ]
        )
        == 2
    )
    assert "gives the hub two time zones" in capsys.readouterr().err


def test_tracebase_catalog_loads():
    catalog = load_device_catalog(TRACEBASE_CATALOG)
    assert catalog.label == "tracebase@1" and len(catalog.device_types) >= 40
    assert "tracebase.org" in json.loads(TRACEBASE_CATALOG.read_text())["description"]


def test_import_of_the_real_tracebase_export(tmp_path):
    if not TRACEBASE_CSV.is_file():
        pytest.skip(
            f"the tracebase export is not at {TRACEBASE_CSV} (ODbL data, kept outside the repository; "
            "see smart_home_assets/lib/catalogs/tracebase.json)"
        )
    landing = tmp_path / "landing"
    started = time.perf_counter()
    assert (
        main(
            [
                "import-csv",
                str(TRACEBASE_CSV),
                "--timezone",
                "Europe/Berlin",
                "--hub-timezone",
                "tracebase-sydney=Australia/Sydney",
                "--landing",
                str(landing),
            ]
        )
        == 0
    )
    elapsed = time.perf_counter() - started

    csv_rows = sum(1 for _ in TRACEBASE_CSV.open(encoding="utf-8")) - 1
    catalog = set(load_device_catalog(TRACEBASE_CATALOG).device_types)
    files = read_landing(landing)
    lines = [line for day_lines in files.values() for line in day_lines]
    assert len(lines) == csv_rows == 25_577
    for line in lines:
        assert_contract_line(line)
    assert {line["device_type"] for line in lines} <= catalog
    assert {line["hub_id"] for line in lines} == {"tracebase-darmstadt", "tracebase-sydney"}
    assert all(rel.split("/")[0] == line["event_timestamp"][:10] for rel, ls in files.items() for line in ls)

    # The pipeline's own ingest + cleaning with the tracebase catalog (every 10th day and every Sydney day, to
    # stay fast): all rows are judged as data, none for their format, none for an unknown device type.
    all_days = sorted({rel.split("/")[0] for rel in files})
    days = sorted(set(all_days[::10]) | {rel.split("/")[0] for rel in files if "sydney" in rel})
    sample_rows = sum(len(ls) for rel, ls in files.items() if rel.split("/")[0] in days)
    result = through_pipeline(landing, sorted(catalog), days)
    assert result.device_usage.height + result.quarantine.height == sample_rows
    assert set(result.quarantine["reason"].to_list()) <= {"implausible_energy", "implausible_duration"}
    print(
        f"\ntracebase import: {len(lines)} rows, {len(files)} files in {elapsed:.2f}s; pipeline on {len(days)} "
        f"days ({sample_rows} rows): quarantine {result.quarantine['reason'].value_counts(sort=True).rows()}"
    )


def test_no_tracebase_data_in_the_repository():
    """ODbL data must stay outside the repository: only the catalog of class names is committed."""
    tracked = [p for p in PROJECT_ROOT.rglob("*.csv") if ".venv" not in p.parts and "data" not in p.parts]
    assert not [p for p in tracked if "tracebase" in p.read_text(errors="ignore")[:10_000].lower()]
    assert os.path.getsize(TRACEBASE_CATALOG) < 10_000
