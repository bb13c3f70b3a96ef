"""Freshness: in a running ``dagster dev``, seconds from a new day's uploads landing to a new usage_model
materialization, with no clicks (the landing sensor, declarative automation and the run queue do it all).

Setup, untimed, on a fresh instance and data directory: a history of uploads (full: 200 hubs x 30 days,
150 events per hub and day; quick: 20 hubs) ingested by one CLI backfill run, a first usage_model,
then ``dagster dev -w workspace.yaml`` on a free loopback port, left for 60 s (the sensors' first ticks) and
then until no run is in progress and none has started for 30 s. Then, once per repeat, the next day's files
(simulated beforehand into a staging folder) are moved into the landing zone in one ``rename`` and the clock
runs until usage_model has a materialization newer than that moment. The chain of runs the daemon launched is
recorded. The webserver, daemon and code server are stopped with their whole process group.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import TypedDict

from bench.harness import (
    BIN,
    FAULT_RATE,
    PROJECT_ROOT,
    RESULTS_DIR,
    SEED,
    Scale,
    dagster_cli,
    isolated_env,
    median,
    remove,
    run_measured,
    scratch_dir,
)
from bench.pipeline import project_command
from bench.serve_latency import free_port
from smart_home_assets.lib.tables import USAGE_MODEL

# 30 days: the model needs 7 days of history per device, 7 training days and a 7-day holdout
FULL_HUBS, HISTORY_DAYS, FRESH_EVENTS_PER_HUB = 200, 30, 150
SETTLE_S, SETTLE_TIMEOUT_S, FRESHNESS_TIMEOUT_S = 30.0, 900.0, 900.0
# After start-up, the sensors' first ticks (every 15 s) may launch runs of their own (the automation sensor's
# first evaluation): let a few ticks pass before deciding the instance is quiet.
WARM_UP_S = 60.0
MODEL = USAGE_MODEL


def _instance(env: dict[str, str]):
    import dagster as dg

    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def latest_model_time(instance) -> float:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(MODEL))
    return event.timestamp if event else 0.0


class Measurement(TypedDict):
    day: str
    seconds: float | None  # None: no retrain within FRESHNESS_TIMEOUT_S
    runs: list[dict]


def runs_after(instance, since: float) -> list[dict]:
    rows = []
    for record in instance.get_run_records():
        if record.create_timestamp.timestamp() < since:
            continue
        run = record.dagster_run
        rows.append(
            {
                "run": run.run_id[:8],
                "status": run.status.value,
                "assets": ",".join(sorted(k.to_user_string() for k in run.asset_selection or [])),
                "partition": run.tags.get("dagster/partition", ""),
                "trigger": run.tags.get("dagster/sensor_name") or run.tags.get("smart_home/trigger") or "-",
                "created_after_s": round(record.create_timestamp.timestamp() - since, 1),
                "ended_after_s": round(record.end_time - since, 1) if record.end_time else None,
            }
        )
    return sorted(rows, key=lambda r: r["created_after_s"])


def wait_until_quiet(env: dict[str, str], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Until no run is unfinished and no run was created for SETTLE_S seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with _instance(env) as instance:
            records = instance.get_run_records(limit=20)
        busy = any(not r.dagster_run.is_finished for r in records)
        newest = max((r.create_timestamp.timestamp() for r in records), default=0.0)
        if not busy and time.time() - newest > SETTLE_S:
            return
        time.sleep(2)
    raise TimeoutError(f"dagster dev did not settle within {timeout_s:.0f} s")


def wait_for_webserver(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}; log {log}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev webserver not ready after {timeout_s:.0f} s; log {log}")


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to dagster dev's process group, SIGKILL after 10 s (it may not exit on its own: STACK-NOTES)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def run(scale: Scale) -> dict:
    from smart_home_tools.simulate import simulate_fleet

    hubs = scale.hubs(FULL_HUBS, minimum=10)
    history_days = HISTORY_DAYS
    today = dt.datetime.now(dt.UTC).date()
    new_days = [today - dt.timedelta(days=scale.repeats - 1 - i) for i in range(scale.repeats)]
    first = new_days[0] - dt.timedelta(days=history_days)
    root = scratch_dir("freshness")
    logs = RESULTS_DIR / "logs"
    proc = None
    try:
        landing, staging = root / "data" / "landing", root / "staging"
        env = isolated_env(root)
        simulate = partial(
            simulate_fleet, hubs=hubs, fault_rate=FAULT_RATE, seed=SEED, events_per_hub=FRESH_EVENTS_PER_HUB
        )
        simulate(landing, days=history_days, start=first)
        simulate(staging, days=len(new_days), start=new_days[0])
        last = (new_days[0] - dt.timedelta(days=1)).isoformat()
        print(f"  setup: backfill {first}..{last} ({hubs} hubs) and a first {MODEL}", flush=True)
        run_measured(project_command(first.isoformat(), last), env, log=logs / "freshness-backfill.log")
        run_measured(
            dagster_cli("asset", "materialize", "-m", "smart_home_assets.definitions", "--select", MODEL),
            env,
            log=logs / "freshness-first-model.log",
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = logs / "freshness-dagster-dev.log"
        command = [
            str(BIN / "dagster"),
            "dev",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        wait_for_webserver(url, proc, log)
        print(f"  dagster dev up after {time.monotonic() - started:.0f} s; waiting until it is quiet", flush=True)
        time.sleep(WARM_UP_S)
        wait_until_quiet(env)
        measurements: list[Measurement] = []
        for day in new_days:
            with _instance(env) as instance:
                before = latest_model_time(instance)
            landed = time.time()
            os.rename(staging / day.isoformat(), landing / day.isoformat())  # every file of the day at once
            deadline = time.monotonic() + FRESHNESS_TIMEOUT_S
            seconds = None
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster dev exited with {proc.returncode}; log {log}")
                with _instance(env) as instance:
                    newest = latest_model_time(instance)
                if newest > max(before, landed):
                    seconds = newest - landed
                    break
                time.sleep(1)
            wait_until_quiet(env)
            with _instance(env) as instance:
                chain = runs_after(instance, landed)
            measurements.append({"day": day.isoformat(), "seconds": seconds, "runs": chain})
            shown = f"{seconds:.0f} s" if seconds is not None else f"no retrain within {FRESHNESS_TIMEOUT_S:.0f} s"
            print(f"    landed {day}: {MODEL} rematerialized after {shown}, {len(chain)} runs", flush=True)
    finally:
        if proc is not None:
            stop_group(proc)
        remove(root)
    measured = [m["seconds"] for m in measurements if m["seconds"] is not None]
    return {
        "hubs": hubs,
        "history_days": history_days,
        "events_per_hub": FRESH_EVENTS_PER_HUB,
        "measurements": measurements,
        "seconds": median(measured) if measured else None,
        "missed": len(measurements) - len(measured),
        "command": "dagster dev -w workspace.yaml -h 127.0.0.1 -p <free port>",
    }
