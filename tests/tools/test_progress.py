"""Live progress of smart-home's dagster runs (issue 14): real CLI backfills through ``materialize_range`` on a
tiny simulated fleet, their lines judged against the run's own event log and the warehouse; the pure state and
line functions on the event records of that real run, and on constructed records of Dagster's own types."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData, StepSuccessData
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.plan.objects import StepFailureData

from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION
from smart_home_tools.cli import materialize_range
from smart_home_tools.progress import (
    RunProgress,
    apply_entries,
    clock,
    partitions_total,
    progress_from_entries,
    selected_assets,
    status_line,
    step_line,
)
from smart_home_tools.simulate import simulate_fleet
from tests.conftest import COMMAND_ENV_OVERRIDES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIRST, DAYS = dt.date(2026, 5, 4), 3
LAST = FIRST + dt.timedelta(days=DAYS - 1)
SELECTION = INGEST_AND_FEATURES_SELECTION
# The steps the selection runs: its assets, then their checks.
STEPS = {
    "raw_usage",
    "device_usage",
    "device_usage_checks",
    "device_usage_freshness",
    "usage_features",
    "usage_features_checks",
}
STEP_LINE = re.compile(r"^  step (\S+) (done|failed)(?:: (\d+)(?:/(\d+))? partitions)? in [\d.]+ s")


def project(root: Path, landing: Path | None = None) -> dict[str, str]:
    """The environment of a smart-home command on its own data directory and instance under ``root``."""
    env = {**os.environ, "SMART_HOME_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home")}
    for var in COMMAND_ENV_OVERRIDES:
        env.pop(var, None)
    if landing is not None:
        env["SMART_HOME_LANDING_DIR"] = str(landing)
    (root / "home").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    return env


def entries_of_newest_run(dagster_home: str) -> tuple[str, list]:
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        (run,) = instance.get_runs(limit=1)
        return run.run_id, [r.event_log_entry for r in instance.get_records_for_run(run.run_id).records]


def step_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("  step ")]


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    """One CLI backfill of the ingest selection over 3 days of 3 hubs, its stdout not a terminal."""
    root = tmp_path_factory.mktemp("progress")
    env = project(root)
    simulate_fleet(root / "data" / "landing", hubs=3, days=DAYS, start=FIRST, seed=5, events_per_hub=40, progress=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        materialize_range(SELECTION, FIRST, LAST, env)
    run_id, entries = entries_of_newest_run(env["DAGSTER_HOME"])
    return {"root": root, "env": env, "output": out.getvalue(), "run_id": run_id, "entries": entries}


@pytest.mark.slow
def test_not_a_terminal_one_line_per_finished_step_naming_it_and_its_partitions(backfill):
    output, entries = backfill["output"], backfill["entries"]
    assert "\r" not in output
    lines = step_lines(output)
    started = [e.step_key for e in entries if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
    assert set(started) == STEPS
    names = [STEP_LINE.match(line).group(1) for line in lines]
    assert names == started, output  # one line each, in the order the steps ran
    for line in lines:
        match = STEP_LINE.match(line)
        # the freshness check judges device_usage as a whole: its line counts no partitions
        days = None if match.group(1) == "device_usage_freshness" else str(DAYS)
        assert match.group(2) == "done" and match.group(3) == days and match.group(4) is None, line
    # nothing else between the command and its result
    (other,) = [line for line in output.splitlines() if not line.startswith(("$ ", "  step "))]
    assert other.startswith("  run succeeded in "), output


@pytest.mark.slow
def test_rows_are_what_the_warehouse_holds_not_the_range_count_times_the_partitions(backfill):
    with duckdb.connect(str(backfill["root"] / "data" / "warehouse.duckdb"), read_only=True) as con:
        count = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("raw_usage", "device_usage", "device_usage_quarantine", "usage_features")
        }
    lines = {STEP_LINE.match(line).group(1): line for line in step_lines(backfill["output"])}
    assert count["raw_usage"] > 0
    assert f", {count['raw_usage']:,} rows, " in lines["raw_usage"]
    assert (
        f", {count['device_usage'] + count['device_usage_quarantine']:,} rows (device_usage "
        f"{count['device_usage']:,}, device_usage_quarantine {count['device_usage_quarantine']:,})"
    ) in lines["device_usage"]
    assert f", {count['usage_features']:,} rows, " in lines["usage_features"]
    # check steps count their results: 8 device_usage checks and 2 feature checks per partition
    assert f", {8 * DAYS} check results, 0 failed" in lines["device_usage_checks"]
    assert f", {2 * DAYS} check results, " in lines["usage_features_checks"]


@pytest.mark.slow
def test_state_from_the_real_event_log(backfill):
    entries = backfill["entries"]
    days = {str(FIRST + dt.timedelta(days=i)) for i in range(DAYS)}
    progress = progress_from_entries(entries)
    assert progress.run_id == backfill["run_id"] and progress.ended == "succeeded"
    assert progress.events == len(entries)
    assert set(progress.steps) == STEPS  # planned events do not make steps of their own
    for step in progress.steps.values():
        expected = {None} if step.key == "device_usage_freshness" else days  # it judges the asset as a whole
        assert step.state == "succeeded" and step.partitions == expected, step
        assert step.duration_s is not None and step.started <= step.finished
    evaluations = [
        e for e in entries if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert sum(s.check_results for s in progress.steps.values()) == len(evaluations)
    assert set(progress.steps["device_usage"].assets) == {"device_usage", "device_usage_quarantine"}

    # polled in small batches (a cursor per tick): the same state, so the same lines
    polled = RunProgress()
    for i in range(0, len(entries), 7):
        apply_entries(polled, entries[i : i + 7])
    assert [step_line(s, DAYS) for s in polled.steps.values()] == [step_line(s, DAYS) for s in progress.steps.values()]


@pytest.mark.slow
def test_status_line_during_the_real_run(backfill):
    entries = backfill["entries"]
    kinds = [e.dagster_event.event_type_value if e.dagster_event else None for e in entries]
    # just after the first check result of device_usage_checks: that step runs, one partition of three is done
    first_check = kinds.index("ASSET_CHECK_EVALUATION")
    progress = progress_from_entries(entries[: first_check + 1])
    now = entries[first_check].timestamp
    line = status_line(progress, DAYS, now, command_started=now - 75)
    written = progress.steps["raw_usage"].rows() + progress.steps["device_usage"].rows()
    assert re.fullmatch(
        rf"  device_usage_checks  1/{DAYS} partitions  [\d.,]+ partitions/s  {written:,} rows "
        r"written \([\d,]+/s\)  0:01:15",
        line,
    ), line
    # inside the raw_usage step: its partitions are written when it returns, so none is claimed before
    progress = progress_from_entries(entries[: kinds.index("STEP_START") + 1])
    assert status_line(progress, DAYS, now, now - 4) == f"  raw_usage  0/{DAYS} partitions  0:00:04"
    assert status_line(None, DAYS, now, now - 1) == "  starting dagster  0:00:01"


def _entry(kind: DagsterEventType, step: str, t: float, data=None) -> EventLogEntry:
    event = DagsterEvent(kind.value, job_name="__ASSET_JOB", step_key=step, event_specific_data=data)
    return EventLogEntry(
        error_info=None, level=20, user_message="", run_id="r", timestamp=t, step_key=step, dagster_event=event
    )


def _materialized(step: str, asset: str, partition: str, rows: int, t: float) -> EventLogEntry:
    materialization = dg.AssetMaterialization(asset, partition=partition, metadata={"dagster/row_count": rows})
    return _entry(DagsterEventType.ASSET_MATERIALIZATION, step, t, StepMaterializationData(materialization))


def test_row_counts_per_partition_are_summed_a_range_count_is_taken_once():
    def finished(*counts: int):
        entries = [_entry(DagsterEventType.STEP_START, "a", 100.0)]
        entries += [_materialized("a", "a", f"2026-01-0{i + 1}", n, 101.0) for i, n in enumerate(counts)]
        entries.append(_entry(DagsterEventType.STEP_SUCCESS, "a", 102.0, StepSuccessData(duration_ms=2000.0)))
        return progress_from_entries(entries).steps["a"]

    assert finished(5, 7, 8).rows() == 20  # per-partition results: 5 + 7 + 8
    assert finished(20, 20, 20).rows() == 20  # one result for the range, repeated on each partition's event
    assert step_line(finished(5, 7, 8), 4) == "  step a done: 3/4 partitions in 2.0 s, 20 rows, 10 rows/s"
    assert step_line(finished(20, 20, 20), 3) == "  step a done: 3 partitions in 2.0 s, 20 rows, 10 rows/s"
    failed = progress_from_entries(
        [
            _entry(DagsterEventType.STEP_START, "b", 10.0),
            _entry(DagsterEventType.STEP_FAILURE, "b", 12.5, StepFailureData(error=None, user_failure_data=None)),
        ]
    ).steps["b"]
    assert step_line(failed, None) == "  step b failed in 2.5 s"


def test_what_the_command_asks_for():
    assert partitions_total(["dagster", "--partition-range", "2024-02-27...2024-03-01"]) == 4  # leap day
    assert partitions_total(["dagster", "--partition", "2024-02-27"]) == 1
    assert partitions_total(["dagster", "--select", "usage_model"]) is None
    assert partitions_total(["dagster", "--partition-range", "a...b"]) is None
    assert selected_assets(["dagster", "--select", "raw_usage,device_usage"]) == {"raw_usage", "device_usage"}
    assert selected_assets(["dagster", "--select", "*usage_model"]) is None
    assert clock(0) == "0:00:00" and clock(3725.9) == "1:02:05"


@pytest.mark.slow
def test_a_terminal_gets_one_status_line_rewritten_in_place(backfill, tmp_path):
    env = {**project(tmp_path, landing=backfill["root"] / "data" / "landing"), "COLUMNS": "200"}
    script = (
        "import datetime as dt, os; from smart_home_tools.cli import materialize_range; "
        f"materialize_range({SELECTION!r}, dt.date.fromisoformat({str(FIRST)!r}), "
        f"dt.date.fromisoformat({str(LAST)!r}), dict(os.environ))"
    )
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    received, deadline = b"", time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty's other side closed: the process ended
                break
            if not chunk:
                break
            received += chunk
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(leader)
    text = received.decode()
    assert process.returncode == 0, text[-3000:]
    status = re.findall(r"\r(  [^\r\n]*?\d:\d\d:\d\d) *(?=\r)", text)
    assert status[0] == "  starting dagster  0:00:00" and len(status) >= 3, text
    clocks = [line.rsplit(" ", 1)[1] for line in status]
    assert clocks == sorted(clocks) and clocks[-1] != clocks[0]  # the line updates as time goes
    # finished steps still get their own line, once each, the status line cleared (blanked) before each
    lines = [line.split("\r")[-1].strip() for line in text.replace("\r\n", "\n").split("\n")]
    assert sorted(line.split()[1] for line in lines if line.startswith("step ")) == sorted(STEPS), text
    assert [line for line in lines if line][-1].startswith("run succeeded in "), text


@pytest.mark.slow
def test_a_failed_step_is_reported_and_the_command_exits_with_the_first_errors(backfill, tmp_path):
    env = project(tmp_path, landing=backfill["root"] / "data" / "landing")
    (tmp_path / "not-a-database.duckdb").write_text("not a DuckDB file\n")
    env["SMART_HOME_WAREHOUSE"] = str(tmp_path / "not-a-database.duckdb")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        materialize_range(SELECTION, FIRST, LAST, env)
    log = tmp_path / "data" / "logs" / f"materialize-usage_features-{FIRST}-{LAST}.log"
    message = str(exited.value.code)
    assert message.startswith(f"dagster asset materialize failed (exit 1); full log: {log}\n"), message
    assert "STEP_FAILURE" in message and "is not a valid DuckDB database file" in message
    assert "STEP_FAILURE" in log.read_text()  # the whole output is in the log
    (line,) = step_lines(out.getvalue())  # the steps after it never ran
    assert line.startswith(f"  step raw_usage failed: 0/{DAYS} partitions in "), line
