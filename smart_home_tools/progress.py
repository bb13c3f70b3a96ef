"""Live progress of a ``dagster asset materialize`` run that smart-home started, read from the run's event log.

What is shown, and where each number comes from (the event log of the instance at $DAGSTER_HOME):

- the step: the step with a STEP_START and no STEP_SUCCESS / STEP_FAILURE yet ("waiting" for a step that has
  events, e.g. a pool claim, but no STEP_START yet);
- partitions done of the total: the distinct partitions of the step's ASSET_MATERIALIZATION events (an asset
  step) or ASSET_CHECK_EVALUATION events (a check step); the total is the days of the command's
  ``--partition-range FIRST...LAST`` (inclusive) or 1 for ``--partition``, none for an unpartitioned run.
  This project's assets return one MaterializeResult for the whole range, and Dagster writes its per-partition
  events when the step returns: an asset step shows 0/N until it finishes, then N/N. Check steps report each
  partition as they go, so their count moves during the step;
- rows: an asset's ``dagster/row_count`` once its step finished, taken once per asset when every partition's
  event carries the same metadata (one result for the whole range, as this project's assets emit today: summing
  would count the range N times), summed over partitions otherwise (true per-partition results); a multi-asset
  step's rows are the sum over its assets. A finished step's rows/s is its rows over its own duration (for
  raw_usage: landed events ingested per second); the status line's "rows written" is the sum over the run's
  finished asset steps (every table, so an event counts once in raw_usage and again in device_usage), per
  second of the run so far;
- the time so far: since the smart-home command started the dagster process.

An interactive terminal (stdout a TTY) gets one status line rewritten in place (carriage return) and a permanent
line per finished step above it; anything else (CI logs, pipes) gets only the line per finished step.

The functions that turn event log entries into a state and a state into lines are pure (they read the entries'
attributes and import nothing); ``follow_run`` is the thin poller, and imports dagster when called.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

POLL_INTERVAL_S = 0.5
# Runs not started by the smart-home command: never taken for its run.
OTHER_LAUNCHERS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")
FINISHED = ("succeeded", "failed", "skipped")
CLOCK_SLACK_S = 60.0


# --- what the command asked for ---------------------------------------------------------------------------------


def _option(command: list[str], name: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def partitions_total(command: list[str]) -> int | None:
    """Days of ``--partition-range FIRST...LAST`` (inclusive), 1 for ``--partition``, None otherwise."""
    span = _option(command, "--partition-range")
    if span and "..." in span:
        try:
            first, last = (dt.date.fromisoformat(part) for part in span.split("...", 1))
        except ValueError:  # not daily keys: no total rather than a guess
            return None
        return (last - first).days + 1
    return 1 if _option(command, "--partition") else None


def selected_assets(command: list[str]) -> frozenset[str] | None:
    """The asset keys (user strings) of ``--select`` when it is a plain comma list of keys, else None."""
    selection = _option(command, "--select")
    if not selection:
        return None
    keys = [part.strip() for part in selection.split(",")]
    if not all(keys) or any(c in key for key in keys for c in "*+: ()"):
        return None
    return frozenset(keys)


# --- event log entries -> state ---------------------------------------------------------------------------------


@dataclass
class AssetRows:
    """The ``dagster/row_count`` values of one asset's materializations in one step."""

    by_partition: dict[str | None, int] = field(default_factory=dict)
    events: int = 0
    first_metadata: Any = None
    uniform: bool = True  # every event so far carried the same metadata as the first

    def rows(self) -> int | None:
        if not self.by_partition:
            return None
        values = list(self.by_partition.values())
        # One MaterializeResult over the range: each partition's event repeats the range's count.
        return values[0] if self.uniform and len(values) > 1 else sum(values)


@dataclass
class StepProgress:
    key: str
    state: str = "waiting"  # waiting, running, succeeded, failed, skipped
    started: float | None = None
    finished: float | None = None
    duration_s: float | None = None
    partitions: set = field(default_factory=set)
    assets: dict[str, AssetRows] = field(default_factory=dict)
    check_results: int = 0
    checks_failed: int = 0
    checks_failed_blocking: int = 0

    def rows(self) -> int | None:
        known = [r for r in (a.rows() for a in self.assets.values()) if r is not None]
        return sum(known) if known else None

    def seconds(self, now: float) -> float | None:
        if self.duration_s is not None:
            return self.duration_s
        if self.started is None:
            return None
        return max(0.0, (self.finished if self.finished is not None else now) - self.started)


@dataclass
class RunProgress:
    run_id: str | None = None
    started: float | None = None
    ended: str | None = None  # "succeeded" / "failed" / "canceled" once the run's last event arrived
    events: int = 0
    steps: dict[str, StepProgress] = field(default_factory=dict)

    def step(self, key: str) -> StepProgress:
        return self.steps.setdefault(key, StepProgress(key))

    def finished_rows(self) -> int:
        return sum(s.rows() or 0 for s in self.steps.values() if s.state == "succeeded")


def _type(entry) -> str | None:
    event = entry.dagster_event
    return event.event_type_value if event is not None else None


def apply_entries(progress: RunProgress, entries) -> RunProgress:
    """Fold event log entries (``EventLogEntry``, oldest first) into ``progress``; returns it."""
    for entry in entries:
        progress.events += 1
        progress.run_id = progress.run_id or entry.run_id
        kind = _type(entry)
        if kind in ("PIPELINE_START", "RUN_START") or (progress.started is None and kind == "PIPELINE_STARTING"):
            progress.started = entry.timestamp
        elif kind in ("PIPELINE_SUCCESS", "RUN_SUCCESS"):
            progress.ended = "succeeded"
        elif kind in ("PIPELINE_FAILURE", "RUN_FAILURE"):
            progress.ended = "failed"
        elif kind in ("PIPELINE_CANCELED", "RUN_CANCELED"):
            progress.ended = "canceled"
        step_key = entry.step_key or (entry.dagster_event.step_key if entry.dagster_event is not None else None)
        # Planned events name every step of the plan at the run's creation: not a sign of a step's life.
        if kind is None or not step_key or kind.endswith("_PLANNED"):
            continue
        step = progress.step(step_key)
        data = entry.dagster_event.event_specific_data
        if kind == "STEP_START":
            step.state, step.started = "running", entry.timestamp
        elif kind == "STEP_SUCCESS":
            step.state, step.finished = "succeeded", entry.timestamp
            duration_ms = getattr(data, "duration_ms", None)
            step.duration_s = duration_ms / 1000 if duration_ms is not None else None
        elif kind == "STEP_FAILURE":
            step.state, step.finished = "failed", entry.timestamp
        elif kind == "STEP_SKIPPED":
            step.state, step.finished = "skipped", entry.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            materialization = data.materialization
            step.partitions.add(materialization.partition)
            rows = step.assets.setdefault(materialization.asset_key.to_user_string(), AssetRows())
            if rows.events == 0:
                rows.first_metadata = materialization.metadata
            elif materialization.metadata != rows.first_metadata:
                rows.uniform = False
            rows.events += 1
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                rows.by_partition[materialization.partition] = int(count.value)
        elif kind == "ASSET_CHECK_EVALUATION":
            step.check_results += 1
            step.partitions.add(data.partition)
            if not data.passed:
                step.checks_failed += 1
                step.checks_failed_blocking += bool(getattr(data, "blocking", False))
    return progress


def progress_from_entries(entries) -> RunProgress:
    return apply_entries(RunProgress(), entries)


# --- state -> lines ---------------------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _plural(n: int, word: str) -> str:
    return f"{word}s" if n != 1 else word


def _partitions(step: StepProgress, total: int | None, *, of_total: bool = False) -> str | None:
    if step.partitions == {None}:  # it judged the asset as a whole (a freshness check): no partitions to count
        return None
    done = len(step.partitions - {None})
    if total is None:
        return f"{done} {_plural(done, 'partition')}" if done else None
    if done == total and not of_total:
        return f"{done} {_plural(done, 'partition')}"
    return f"{done}/{total} {_plural(total, 'partition')}"


def step_line(step: StepProgress, total: int | None) -> str:
    """The line of a finished step, e.g.
    ``  step raw_usage done: 1401 partitions in 12.3 s, 1,234,567 rows, 100,371 rows/s``
    (``  step usage_model done in 41.0 s, 30,211 rows, 737 rows/s`` for an unpartitioned run)."""
    if step.state == "skipped":
        return f"  step {step.key} skipped"
    verb = {"succeeded": "done", "failed": "failed"}.get(step.state, step.state)
    partitions, seconds = _partitions(step, total), step.seconds(step.finished or 0.0)
    line = f"  step {step.key} {verb}" + (f": {partitions}" if partitions else "")
    if seconds is not None:
        line += f" in {seconds:.1f} s"
    rows = step.rows()
    if rows is not None:
        per_asset = [(name, a.rows()) for name, a in step.assets.items() if a.rows() is not None]
        line += f", {rows:,} rows"
        if len(per_asset) > 1:
            line += " (" + ", ".join(f"{name} {n:,}" for name, n in per_asset) + ")"
        if seconds and step.state == "succeeded":
            line += f", {rows / seconds:,.0f} rows/s"
    if step.check_results:
        blocking = (
            f" ({step.checks_failed_blocking} blocking)"
            if step.checks_failed_blocking
            else " (none blocking)"
            if step.checks_failed
            else ""
        )
        line += (
            f", {step.check_results} check {_plural(step.check_results, 'result')}, "
            f"{step.checks_failed} failed{blocking}"
        )
    return line


def current_step(progress: RunProgress) -> StepProgress | None:
    running = [s for s in progress.steps.values() if s.state == "running"]
    if running:
        return max(running, key=lambda s: s.started or 0.0)
    waiting = [s for s in progress.steps.values() if s.state == "waiting"]
    return waiting[-1] if waiting else None


def status_line(progress: RunProgress | None, total: int | None, now: float, command_started: float) -> str:
    """The interactive status line, e.g.
    ``  device_usage_checks  612/1401 partitions  52.1 partitions/s  1,234,567 rows written (30,112/s)  0:00:41``."""
    parts: list[str] = []
    step = current_step(progress) if progress is not None else None
    if progress is None or progress.run_id is None:
        parts.append("starting dagster")
    elif step is None:
        parts.append("finishing run" if progress.steps else "starting run")
    else:
        running = sum(s.state == "running" for s in progress.steps.values())
        parts.append(
            step.key
            + (f" (+{running - 1} more)" if running > 1 else "")
            + ("" if step.state == "running" else " waiting")
        )
        partitions = _partitions(step, total, of_total=True)
        if partitions:
            parts.append(partitions)
        done, seconds = len(step.partitions - {None}), step.seconds(now)
        if done and seconds:
            parts.append(f"{done / seconds:,.1f} partitions/s")
    if progress is not None and progress.started is not None:
        rows = progress.finished_rows()
        if rows:
            parts.append(f"{rows:,} rows written ({rows / max(now - progress.started, 1e-3):,.0f}/s)")
    parts.append(clock(now - command_started))
    return "  " + "  ".join(parts)


# --- the poller -------------------------------------------------------------------------------------------------


def find_run(instance, started: float, assets: frozenset[str] | None, known: frozenset[str] = frozenset()):
    """The newest run created after ``started`` that the command could have made (not one of the ``known`` runs
    the instance held when the command started; no sensor, schedule or backfill launched it; the same asset
    selection when known), or None. ``started`` allows CLOCK_SLACK_S: a PostgreSQL run storage stamps runs with
    the database server's clock."""
    for record in instance.get_run_records(limit=25):  # newest first
        if record.create_timestamp.timestamp() < started - CLOCK_SLACK_S:
            break
        run = record.dagster_run
        if run.run_id in known or any(tag in run.tags for tag in OTHER_LAUNCHERS):
            continue
        if (
            assets is not None
            and run.asset_selection is not None
            and {k.to_user_string() for k in run.asset_selection} != assets
        ):
            continue
        return run
    return None


class StatusWriter:
    """Writes the lines: on a TTY, finished steps above one status line rewritten with a carriage return."""

    def __init__(self, out: TextIO, interactive: bool):
        self.out, self.interactive, self.width = out, interactive, 0

    def status(self, line: str) -> None:
        if not self.interactive:
            return
        line = line[: max(20, shutil.get_terminal_size((100, 24)).columns - 1)]
        self.out.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.out.flush()

    def clear(self) -> None:
        if self.interactive and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()
            self.width = 0

    def end(self) -> None:
        if self.interactive and self.width:
            self.out.write("\n")
            self.out.flush()
            self.width = 0

    def line(self, text: str) -> None:
        self.clear()
        self.out.write(text + "\n")
        self.out.flush()


def follow_run(
    process: subprocess.Popen,
    dagster_home: str,
    started: float,
    command: list[str],
    out: TextIO,
    interval: float = POLL_INTERVAL_S,
) -> RunProgress:
    """Show the progress of the run that ``process`` (a ``dagster asset materialize`` started at ``started``)
    makes, until the process exits; returns the last state. Reads the run's new event log records every
    ``interval`` seconds (waiting on the process meanwhile). Progress never fails the command: a read that
    fails is tried again at the next tick, and the last failure is named at the end."""
    import dagster as dg

    total, assets = partitions_total(command), selected_assets(command)
    writer = StatusWriter(out, bool(getattr(out, "isatty", lambda: False)()))
    progress, reported = RunProgress(), set()
    cursor: str | None = None
    problem: Exception | None = None
    with dg.DagsterInstance.from_config(dagster_home) as instance:

        def read() -> None:
            nonlocal cursor
            if progress.run_id is None:
                run = find_run(instance, started, assets, known)
                # Before its first events the run's event storage may not exist (SQLite: a file per run).
                if run is None or run.status == dg.DagsterRunStatus.NOT_STARTED:
                    return
                progress.run_id = run.run_id
            while True:
                connection = instance.get_records_for_run(progress.run_id, cursor=cursor, limit=1000)
                apply_entries(progress, [record.event_log_entry for record in connection.records])
                cursor = connection.cursor
                if not connection.has_more:
                    return

        # The runs that exist now are not the command's: its process is still importing dagster (seconds).
        try:
            known = frozenset(instance.get_run_ids(limit=50))
        except Exception as exc:  # noqa: BLE001
            known, problem = frozenset(), exc
        try:
            while True:
                exited = process.poll() is not None  # before the read: the last read sees every event
                try:
                    read()
                    problem = None
                except Exception as exc:  # noqa: BLE001 (a locked SQLite file, a storage hiccup)
                    problem = exc
                finished = [s for s in progress.steps.values() if s.state in FINISHED and s.key not in reported]
                for step in sorted(finished, key=lambda s: s.finished or 0.0):
                    reported.add(step.key)
                    writer.line(step_line(step, total))
                if exited:
                    break
                writer.status(status_line(progress, total, time.time(), started))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=interval)
        except BaseException:
            writer.end()  # an interrupted status line stays; what follows starts on a line of its own
            raise
    writer.clear()
    if problem is not None:
        writer.line(f"  (progress could not be read from the event log: {problem!r})")
    return progress
