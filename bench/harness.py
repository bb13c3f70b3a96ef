"""The measuring harness shared by every benchmark family: scale, isolated environments, simulated inputs,
timed subprocesses (wall time, CPU time and peak RSS from ``wait4``, as ``/usr/bin/time -v`` reports them),
interleaved repeats, medians, and the results files the report is rendered from.

Peak RSS is the ``ru_maxrss`` of the measured process tree: the largest resident set of the process or of any
descendant it waited for (that is what ``/usr/bin/time -v`` prints as "Maximum resident set size"). Dagster's
CLI runs with the in-process executor do all their work in one process, so it is the run's peak.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR") or PROJECT_ROOT / "bench" / "results")
DOC_PATH = PROJECT_ROOT / "docs" / "benchmarks.md"
DEFINITIONS_MODULE = "smart_home_assets.definitions"
PIPELINE_SELECTION = INGEST_AND_FEATURES_SELECTION

# Every input comes from the simulator with these settings (the demo's fault rate: every cleaning rule fires).
SEED = 6
FAULT_RATE = 0.02
EVENTS_PER_HUB = 1000


# --- scale ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """``full``: the sizes of issue 6, 3 interleaved repeats. ``quick``: about 1/10 of the sizes, 1 repeat,
    for a smoke run on a busy machine. ``BENCH_REPEATS`` overrides the number of repeats."""

    name: str
    factor: float
    repeats: int

    def hubs(self, full_size: int, minimum: int = 1) -> int:
        return max(minimum, round(full_size * self.factor))


def current_scale() -> Scale:
    name = os.environ.get("BENCH_SCALE", "full").strip().lower() or "full"
    scales = {"full": Scale("full", 1.0, 3), "quick": Scale("quick", 0.1, 1)}
    if name not in scales:
        raise SystemExit(f"BENCH_SCALE must be one of {sorted(scales)}, got {name!r}")
    scale = scales[name]
    if os.environ.get("BENCH_REPEATS"):
        scale = Scale(scale.name, scale.factor, max(1, int(os.environ["BENCH_REPEATS"])))
    return scale


# --- environments -----------------------------------------------------------------------------------------

# Every setting of the project is reset to its embedded default (in-process executor, DuckDB warehouse, ...):
# a benchmark measures the default deployment, whatever the shell that starts it has set.
_PROJECT_VARS = (
    "SMART_HOME_PSEUDONYM_KEY",
    "SMART_HOME_ENV",
    "SMART_HOME_LANDING_DIR",
    "SMART_HOME_WAREHOUSE",
    "SMART_HOME_DEVICE_CATALOG",
    "SMART_HOME_PARTITIONS_START",
    "SMART_HOME_PARTITIONS_END",
    "SMART_HOME_EXECUTOR",
    "SMART_HOME_DASK_SCHEDULER",
    "SMART_HOME_DASK_WORKERS",
    "SMART_HOME_WAREHOUSE_BACKEND",
    "SMART_HOME_DELTA_URI",
    "MLFLOW_TRACKING_URI",
)


def isolated_env(root: Path, landing: Path | None = None, migrate: bool = True) -> dict[str, str]:
    """A Dagster instance (the project's dagster.yaml), data directory and MLflow store of its own under
    ``root``; ``landing`` points the landing zone at shared, read-only simulated inputs.

    ``migrate`` creates the instance's storage first (untimed), as a deployment's instance already exists
    before its first run.
    """
    home, data = root / "home", root / "data"
    home.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in _PROJECT_VARS}
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "SMART_HOME_DATA_DIR": str(data),
            "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONWARNINGS": "ignore",  # Dagster's beta/preview warnings: noise in the logs, not in the timings
        }
    )
    if landing is not None:
        env["SMART_HOME_LANDING_DIR"] = str(landing)
    if migrate:
        result = subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode:
            raise RuntimeError(f"dagster instance migrate failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return env


def scratch_dir(name: str) -> Path:
    """A fresh folder for one measurement (removed by the caller with :func:`remove`)."""
    path = RESULTS_DIR / "scratch" / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- inputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    landing: Path
    first: dt.date
    days: int
    hubs: int
    lines: int  # raw lines in readable files (what raw_usage ingests, bar the remains of truncated files)
    events: int  # lines that are valid events

    @property
    def last(self) -> dt.date:
        return self.first + dt.timedelta(days=self.days - 1)

    def day_keys(self) -> list[str]:
        return [(self.first + dt.timedelta(days=i)).isoformat() for i in range(self.days)]


def simulated_inputs(hubs: int, days: int, first: dt.date, events_per_hub: int = EVENTS_PER_HUB) -> Inputs:
    """Upload files of ``hubs`` hubs for ``days`` days (fixed seed and fault rate), generated once per size
    into ``bench/results/inputs/`` and reused by every repeat and every later bench run."""
    from smart_home_tools.simulate import simulate_fleet

    name = f"hubs{hubs}-days{days}-{first}-eph{events_per_hub}-f{FAULT_RATE}-seed{SEED}"
    folder = RESULTS_DIR / "inputs" / name
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        remove(folder)
        started = time.perf_counter()
        print(f"  simulating {hubs} hubs x {days} days ({events_per_hub} events/hub/day) into {folder}", flush=True)
        summary = simulate_fleet(
            folder / "landing",
            hubs=hubs,
            days=days,
            start=first,
            fault_rate=FAULT_RATE,
            seed=SEED,
            events_per_hub=events_per_hub,
        )
        summary_path.write_text(
            json.dumps(
                {
                    "lines": summary.lines,
                    "events": summary.events,
                    "truncated_lines": summary.truncated_lines,
                    "bytes": summary.bytes,
                    "seconds": time.perf_counter() - started,
                }
            )
        )
    summary = json.loads(summary_path.read_text())
    return Inputs(folder / "landing", first, days, hubs, summary["lines"], summary["events"])


# --- timed subprocesses -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed process: wall seconds, CPU seconds (user + system, whole tree), peak RSS in MiB."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    extra: dict = field(default_factory=dict)


def run_measured(
    command: Sequence[str],
    env: dict[str, str],
    *,
    log: Path,
    cwd: Path = PROJECT_ROOT,
    timeout_s: float = 3600.0,
    check: bool = True,
) -> Run:
    """Run ``command`` to completion in its own process group, its output in ``log``; measured with wait4."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    run = Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
        returncode=proc.returncode,
    )
    if check and (proc.returncode != 0 or timed_out.is_set()):
        why = f"timed out after {timeout_s:.0f} s" if timed_out.is_set() else f"exited with {proc.returncode}"
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} {why}; log {log}:\n{tail}")
    return run


def interleaved(competitors: Mapping[str, Callable[[int], Run]], repeats: int) -> dict[str, list[Run]]:
    """Repeat ``i`` runs every competitor once, in the same order (A B C A B C ...)."""
    runs: dict[str, list[Run]] = {name: [] for name in competitors}
    for i in range(repeats):
        for name, measure in competitors.items():
            run = measure(i)
            runs[name].append(run)
            print(f"    {name} #{i + 1}: {run.wall_s:.2f} s wall, {run.peak_rss_mib:.0f} MiB peak", flush=True)
    return runs


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarize(runs: list[Run]) -> dict:
    """Median and spread of a competitor's runs (every run kept for the report)."""
    walls = [r.wall_s for r in runs]
    return {
        "wall_s": median(walls),
        "wall_min_s": min(walls),
        "wall_max_s": max(walls),
        "cpu_s": median([r.cpu_s for r in runs]),
        "peak_rss_mib": median([r.peak_rss_mib for r in runs]),
        "runs": [asdict(r) for r in runs],
    }


def step_durations(dagster_home: Path) -> dict[str, float]:
    """Seconds of each step of the instance's runs, from Dagster's STEP_SUCCESS events (summed per step)."""
    import dagster as dg

    durations: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
            for record in records:
                event = record.event_log_entry.get_dagster_event()
                key = event.step_key
                if key is None:  # a STEP_SUCCESS event always names its step
                    continue
                durations[key] = durations.get(key, 0.0) + event.step_success_data.duration_ms / 1000.0
    return durations


def last_json_line(log: Path, prefix: str) -> dict:
    """The JSON a worker printed on its last line starting with ``prefix``."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise RuntimeError(f"no {prefix!r} line in {log}")


# --- machine and results ----------------------------------------------------------------------------------


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_facts() -> dict:
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    cpu = "-"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "system": f"{platform.system()} {platform.machine()}",
        "cpu": cpu,
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "versions": {
            p: version(p)
            for p in ("dagster", "polars", "duckdb", "pandera", "pandas", "pyarrow", "lightgbm", "mlflow", "numpy")
        },
    }


def save_result(family: str, result: dict, scale: Scale, started: float, load_before: list[float]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{family}.json"
    result = {
        "family": family,
        "scale": scale.name,
        "repeats": scale.repeats,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": load_average(),
        **result,
    }
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def load_results() -> dict[str, dict]:
    results = {}
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return results


def dagster_cli(*args: str) -> list[str]:
    return [str(BIN / "dagster"), *args]
