"""device_usage checks pass on clean data and each fails on the fault it guards against."""

import datetime as dt
import json

import polars as pl
import pytest

from asset_checks.device_usage_checks import (
    PANDERA_RULES,
    conservation_evaluations,
    evaluations_of_cases,
)
from asset_checks.schemas import device_usage_schema, failure_cases
from smart_home_assets.lib.catalog import load_device_catalog
from smart_home_assets.lib.cleaning import clean_usage
from smart_home_assets.lib.ingest import parse_lines, split_lines
from tests.conftest import event

DAY = "2026-03-01"
CATALOG = load_device_catalog().device_types


def pandera_evaluations(partition: str, rows: pl.DataFrame, catalog) -> list:
    """The Pandera evaluations of one partition's rows, as device_usage_checks computes them for a batch."""
    return evaluations_of_cases(partition, failure_cases(device_usage_schema(partition, catalog), rows), rows.height)


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    text = "\n".join(json.dumps(event(DAY, i, device_type=t)) for i, t in enumerate(CATALOG * 3)) + "\n"
    lines = pl.DataFrame({"raw_line": split_lines(text)}).with_columns(
        source_file=pl.lit(f"{DAY}/hub-0001.jsonl.gz"),
        file_hub_id=pl.lit("hub-0001"),
        line_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        line_problem=pl.lit(None, pl.String),
        partition_date=pl.lit(dt.date.fromisoformat(DAY)),
    )
    raw = parse_lines(lines, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    return clean_usage(raw, CATALOG, b"k" * 32).device_usage


def outcomes(frame):
    return {e.check_name: e.passed for e in pandera_evaluations(DAY, frame, CATALOG)}


def test_every_check_passes_on_clean_rows(clean):
    assert outcomes(clean) == {r.name: True for r in PANDERA_RULES}


def _set_first(frame, column, value):
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(value, frame.schema[column]))
        .otherwise(pl.col(column))
        .alias(column)
    )


@pytest.mark.parametrize(
    "column, value, failing",
    [
        ("user_pseudonym", None, "check_user_id_not_null"),
        ("user_pseudonym", "user-in-clear", "check_user_id_not_null"),
        ("event_timestamp", dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC), "check_event_timestamp_in_partition_window"),
        (
            "event_timestamp",
            dt.datetime(2026, 2, 28, 23, 59, tzinfo=dt.UTC),
            "check_event_timestamp_in_partition_window",
        ),
        ("device_type", "toaster_x", "check_device_type_in_catalog"),
        ("energy_wh", -1.0, "check_energy_and_duration_plausible"),
        ("energy_wh", 1e9, "check_energy_and_duration_plausible"),
        ("duration_s", 90_000.0, "check_energy_and_duration_plausible"),
        ("device_id", None, "check_required_fields_present"),
    ],
)
def test_each_check_fails_on_its_fault_and_only_its_own(clean, column, value, failing):
    results = outcomes(_set_first(clean, column, value))
    assert {name for name, passed in results.items() if not passed} == {failing}


def test_duplicate_event_ids_fail_uniqueness_with_a_sample(clean):
    evaluations = pandera_evaluations(DAY, pl.concat([clean, clean.head(2)]), CATALOG)
    unique = next(e for e in evaluations if e.check_name == "check_event_id_unique")
    assert not unique.passed and unique.metadata["failures"].value == 4
    assert "failure_sample" in unique.metadata


def test_conservation_fails_when_a_line_is_unaccounted_for():
    ok, score = conservation_evaluations(DAY, 100, 90, 7, 3, {"not_json": 7})
    assert ok.passed and score.passed is False and score.blocking is False  # 90% < 95%: a warning only
    lost, _ = conservation_evaluations(DAY, 100, 90, 6, 3, {})
    assert not lost.passed and lost.metadata["unaccounted"].value == 1 and lost.blocking
