"""Marginal cost per event and scale: one day of uploads through the project, the bare engine and pandas.

At three sizes (full: 100, 1,000 and 10,000 hubs x ~1,000 lines each, one day; quick: a tenth), interleaved:

* project: ``dagster asset materialize -m smart_home_assets.definitions --select raw_usage,device_usage,
  device_usage_quarantine,usage_features --partition D`` (every asset check of those assets runs too), on a
  fresh instance and warehouse each time;
* bare: ``python -m bench.bare_pipeline`` (the same polars/DuckDB code and checks, no Dagster);
* pandas: ``python -m bench.pandas_pipeline`` (an independent, straightforward pandas version).

Per-event cost = (wall at the largest size - wall at the next) / (lines at largest - lines at next): the fixed
costs (interpreter, imports, Dagster's run) cancel. A size whose expected peak memory (extrapolated from the two
sizes below it) does not fit in the memory available is skipped and said so; a competitor's per-event cost then
comes from the two largest sizes it ran, and the project is compared with it over those same two sizes. The
three must produce the same row counts.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import duckdb

from bench.harness import (
    DEFINITIONS_MODULE,
    PIPELINE_SELECTION,
    RESULTS_DIR,
    Run,
    Scale,
    dagster_cli,
    interleaved,
    isolated_env,
    last_json_line,
    remove,
    run_measured,
    scratch_dir,
    simulated_inputs,
    step_durations,
    summarize,
)

DAY = dt.date(2026, 3, 2)  # a Monday in the heating season
FULL_HUBS = (100, 1_000, 10_000)
COMPETITORS = ("project", "bare", "pandas")
COUNTED = ("raw_lines", "device_usage", "quarantine", "features")


def project_command(first: str, last: str | None = None) -> list[str]:
    """One CLI run of the ingest-to-features path: one partition, or a range as one backfill run."""
    partitions = ["--partition", first] if last in (None, first) else ["--partition-range", f"{first}...{last}"]
    return dagster_cli("asset", "materialize", "-m", DEFINITIONS_MODULE, "--select", PIPELINE_SELECTION, *partitions)


def count_of(con: duckdb.DuckDBPyConnection, sql: str, parameters: list) -> int:
    """The single value of a ``SELECT count(*) ...`` (which always returns one row)."""
    row = con.execute(sql, parameters).fetchone()
    assert row is not None, sql
    return row[0]


def warehouse_counts(path, first: str, last: str) -> dict[str, int]:
    tables = {
        "raw_lines": "raw_usage",
        "device_usage": "device_usage",
        "quarantine": "device_usage_quarantine",
        "features": "usage_features",
    }
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            name: count_of(con, f"SELECT count(*) FROM {table} WHERE partition_date BETWEEN ? AND ?", [first, last])
            for name, table in tables.items()
        }


def measure_project(inputs, first: str, last: str, label: str) -> Run:
    root = scratch_dir(f"project-{label}")
    try:
        env = isolated_env(root, inputs.landing)
        command = project_command(first, last)
        run = run_measured(command, env, log=RESULTS_DIR / "logs" / f"project-{label}.log")
        run.extra = {
            "counts": warehouse_counts(root / "data" / "warehouse.duckdb", first, last),
            "steps_s": step_durations(root / "home"),
        }
        return run
    finally:
        remove(root)


def measure_worker(
    module: str,
    inputs,
    first: str,
    last: str,
    label: str,
    *,
    env_extra: dict | None = None,
    timeout_s: float = 3600.0,
    counts=None,
) -> Run:
    """bench.bare_pipeline or bench.pandas_pipeline over first..last in a fresh output location; ``counts``
    (warehouse path, first, last) reads the bare script's counts from its warehouse instead of its own report."""
    root = scratch_dir(f"{module}-{label}")
    try:
        env = {**isolated_env(root, inputs.landing, migrate=False), **(env_extra or {})}
        warehouse = root / "warehouse.duckdb"
        out = ["--warehouse", str(warehouse)] if module == "bare" else ["--out", str(root / "out")]
        log = RESULTS_DIR / "logs" / f"{module}-{label}.log"
        run = run_measured(
            [
                sys.executable,
                "-m",
                f"bench.{module}_pipeline",
                "--landing",
                str(inputs.landing),
                *out,
                "--from",
                first,
                "--to",
                last,
            ],
            env,
            log=log,
            timeout_s=timeout_s,
        )
        result = last_json_line(log, "BENCH_RESULT ")
        days = result["days"]
        run.extra = {
            "counts": counts(warehouse, first, last) if counts else {k: sum(d[k] for d in days) for k in COUNTED},
            "compute_s": result["compute_s"],
            "import_s": result["import_s"],
            "day_s": [d["seconds"] for d in days],
            "checks_passed": all(
                d["conserved"] and not d["usage_check_failures"] and not d["feature_check_failures"] for d in days
            ),
        }
        return run
    finally:
        remove(root)


def measure(competitor: str, inputs, first: str, last: str, label: str) -> Run:
    if competitor == "project":
        return measure_project(inputs, first, last, label)
    return measure_worker(competitor, inputs, first, last, label)


def available_mib() -> float:
    """MemAvailable of this machine now, in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def expected_peak_mib(previous: list[tuple[int, Run]], lines: int) -> float | None:
    """Peak RSS at ``lines`` extrapolated linearly from the runs of the two sizes below (lines, run)."""
    ran = [(n, r) for n, r in previous if r.returncode == 0]
    if not ran:
        return None
    if len(ran) == 1:
        ((n, r),) = ran
        return r.peak_rss_mib * lines / n
    (n0, r0), (n1, r1) = ran[-2:]
    slope = max(0.0, (r1.peak_rss_mib - r0.peak_rss_mib) / (n1 - n0))
    return r1.peak_rss_mib + slope * (lines - n1)


def guarded(competitor: str, inputs, previous: list[tuple[int, Run]], day: str, label: str) -> Run:
    """Measure, unless the expected peak RSS would not fit in the memory available now with 10 % to spare:
    then a skipped Run that says so (a run pushed into swap or the OOM killer measures nothing, and other work
    on the machine would suffer)."""
    expected = expected_peak_mib(previous, inputs.lines)
    available = available_mib()
    if expected is not None and expected > 0.9 * available:
        print(
            f"    {competitor}: skipped, expects ~{expected / 1024:.1f} GiB peak, {available / 1024:.1f} GiB available",
            flush=True,
        )
        return Run(
            float("nan"),
            float("nan"),
            expected,
            -1,
            {
                "skipped": f"not run: expected peak RSS ~{expected / 1024:.1f} GiB (extrapolated from the smaller "
                f"sizes), {available / 1024:.1f} GiB available"
            },
        )
    return measure(competitor, inputs, day, day, label)


def run(scale: Scale) -> dict:
    sizes = [scale.hubs(h) for h in FULL_HUBS]
    inputs = {hubs: simulated_inputs(hubs, 1, DAY) for hubs in sizes}
    day = DAY.isoformat()
    results: dict[str, dict] = {}
    # this repeat's runs per competitor, smallest size first, for the memory guard
    earlier: dict[str, list[tuple[int, Run]]] = {name: [] for name in COMPETITORS}

    def measure_guarded(name: str, hubs: int, i: int) -> Run:
        if hubs == sizes[0]:
            earlier[name] = []
        run = guarded(name, inputs[hubs], earlier[name], day, f"{hubs}-{i}")
        earlier[name].append((inputs[hubs].lines, run))
        return run

    competitors = {
        f"{name}@{hubs}": (lambda i, n=name, h=hubs: measure_guarded(n, h, i)) for hubs in sizes for name in COMPETITORS
    }
    runs = interleaved(competitors, scale.repeats)
    for key, all_runs in runs.items():
        name, hubs = key.split("@")
        measured = [r for r in all_runs if r.returncode == 0]
        if not measured:
            results.setdefault(name, {})[int(hubs)] = {
                "skipped": all_runs[0].extra["skipped"],
                "expected_peak_rss_mib": all_runs[0].peak_rss_mib,
            }
            continue
        summary = summarize(measured)
        summary["counts"] = measured[0].extra["counts"]
        if name == "project":
            steps = [r.extra["steps_s"] for r in measured]
            summary["steps_s"] = {k: sorted(s[k] for s in steps)[len(steps) // 2] for k in steps[0]}
        else:
            summary["compute_s"] = sorted(r.extra["compute_s"] for r in measured)[len(measured) // 2]
            summary["import_s"] = sorted(r.extra["import_s"] for r in measured)[len(measured) // 2]
            summary["checks_passed"] = all(r.extra["checks_passed"] for r in measured)
        results.setdefault(name, {})[int(hubs)] = summary
    lines = {h: inputs[h].lines for h in sizes}
    counts_agree = {
        h: len({tuple(sorted(results[c][h]["counts"].items())) for c in COMPETITORS if "counts" in results[c][h]}) == 1
        for h in sizes
    }

    def ran(c: str) -> list[int]:
        return [h for h in sizes if "skipped" not in results[c][h]]

    def marginal(c: str, pair: list[int], field: str) -> float | None:
        if len(pair) < 2:
            return None
        a, b = results[c][pair[0]], results[c][pair[1]]
        return (b[field] - a[field]) / (b["counts"]["raw_lines"] - a["counts"]["raw_lines"])

    # each competitor over the two largest sizes it ran; each comparison over the two largest both ran
    pairs = {c: ran(c)[-2:] for c in COMPETITORS}
    comparisons = {}
    for other in ("bare", "pandas"):
        pair = [h for h in sizes if h in ran("project") and h in ran(other)][-2:]
        comparisons[other] = {
            "pair": pair,
            **{
                f"{c}_{unit}": marginal(c, pair, field)
                for c in ("project", other)
                for unit, field in (("s", "wall_s"), ("cpu_s", "cpu_s"))
            },
        }
    return {
        "day": day,
        "sizes": sizes,
        "lines": lines,
        "per_event_pairs": pairs,
        "comparisons": comparisons,
        "competitors": results,
        "counts_agree": counts_agree,
        "per_event_s": {c: marginal(c, pairs[c], "wall_s") for c in COMPETITORS},
        "per_event_cpu_s": {c: marginal(c, pairs[c], "cpu_s") for c in COMPETITORS},
        "commands": {
            "project": " ".join(["dagster", *project_command(day)[1:]]),
            "bare": f"python -m bench.bare_pipeline --landing L --warehouse W --from {day} --to {day}",
            "pandas": f"python -m bench.pandas_pipeline --landing L --out O --from {day} --to {day}",
        },
    }
