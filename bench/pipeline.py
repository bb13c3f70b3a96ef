"""Marginal cost per event and scale: one day of uploads through the project, the bare engine and pandas.

At two sizes (full: 1,000 and 10,000 hubs x ~1,000 lines each, one day; quick: a tenth), interleaved:

* project: ``dagster asset materialize -m smart_home_assets.definitions --select raw_usage,device_usage,
  device_usage_quarantine,usage_features --partition D`` (every asset check of those assets runs too), on a
  fresh instance and warehouse each time;
* bare: ``python -m bench.bare_pipeline`` (the same polars/DuckDB code and checks, no Dagster);
* pandas: ``python -m bench.pandas_pipeline`` (an independent, straightforward pandas version).

Per-event cost = (wall at the large size - wall at the small size) / (lines at large - lines at small): the
fixed costs (interpreter, imports, Dagster's run) cancel. The three must produce the same row counts.
"""

from __future__ import annotations

import datetime as dt
import sys

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
FULL_HUBS = (1_000, 10_000)
COMPETITORS = ("project", "bare", "pandas")
COUNTED = ("raw_lines", "device_usage", "quarantine", "features")


def project_command(first: str, last: str | None = None) -> list[str]:
    """One CLI run of the ingest-to-features path: one partition, or a range as one backfill run."""
    partitions = ["--partition", first] if last in (None, first) else ["--partition-range", f"{first}...{last}"]
    return dagster_cli("asset", "materialize", "-m", DEFINITIONS_MODULE, "--select", PIPELINE_SELECTION,
                       *partitions)


def warehouse_counts(path, first: str, last: str) -> dict[str, int]:
    tables = {"raw_lines": "raw_usage", "device_usage": "device_usage", "quarantine": "device_usage_quarantine",
              "features": "usage_features"}
    with duckdb.connect(str(path), read_only=True) as con:
        return {name: con.execute(f"SELECT count(*) FROM {table} WHERE partition_date BETWEEN ? AND ?",
                                  [first, last]).fetchone()[0] for name, table in tables.items()}


def measure_project(inputs, first: str, last: str, label: str) -> Run:
    root = scratch_dir(f"project-{label}")
    try:
        env = isolated_env(root, inputs.landing)
        command = project_command(first, last)
        run = run_measured(command, env, log=RESULTS_DIR / "logs" / f"project-{label}.log")
        run.extra = {"counts": warehouse_counts(root / "data" / "warehouse.duckdb", first, last),
                     "steps_s": step_durations(root / "home")}
        return run
    finally:
        remove(root)


def measure_worker(module: str, inputs, first: str, last: str, label: str) -> Run:
    """bench.bare_pipeline or bench.pandas_pipeline over first..last in a fresh output location."""
    root = scratch_dir(f"{module}-{label}")
    try:
        env = isolated_env(root, inputs.landing, migrate=False)
        out = ["--warehouse", str(root / "warehouse.duckdb")] if module == "bare" else ["--out", str(root / "out")]
        log = RESULTS_DIR / "logs" / f"{module}-{label}.log"
        run = run_measured([sys.executable, "-m", f"bench.{module}_pipeline", "--landing", str(inputs.landing),
                            *out, "--from", first, "--to", last], env, log=log)
        result = last_json_line(log, "BENCH_RESULT ")
        days = result["days"]
        run.extra = {"counts": {k: sum(d[k] for d in days) for k in COUNTED}, "compute_s": result["compute_s"],
                     "import_s": result["import_s"], "day_s": [d["seconds"] for d in days],
                     "checks_passed": all(d["conserved"] and not d["usage_check_failures"]
                                          and not d["feature_check_failures"] for d in days)}
        return run
    finally:
        remove(root)


def measure(competitor: str, inputs, first: str, last: str, label: str) -> Run:
    if competitor == "project":
        return measure_project(inputs, first, last, label)
    return measure_worker(competitor, inputs, first, last, label)


def run(scale: Scale) -> dict:
    sizes = [scale.hubs(h) for h in FULL_HUBS]
    inputs = {hubs: simulated_inputs(hubs, 1, DAY) for hubs in sizes}
    day = DAY.isoformat()
    results: dict[str, dict] = {}
    competitors = {}
    for hubs in sizes:
        for name in COMPETITORS:
            competitors[f"{name}@{hubs}"] = (lambda i, n=name, h=hubs: measure(n, inputs[h], day, day, f"{h}-{i}"))
    runs = interleaved(competitors, scale.repeats)
    for key, measured in runs.items():
        name, hubs = key.split("@")
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
    small, large = sizes
    lines = {h: inputs[h].lines for h in sizes}
    counts_agree = {h: len({tuple(sorted(results[c][h]["counts"].items())) for c in COMPETITORS}) == 1 for h in sizes}
    marginal = {c: (results[c][large]["wall_s"] - results[c][small]["wall_s"])
                / (results[c][large]["counts"]["raw_lines"] - results[c][small]["counts"]["raw_lines"])
                for c in COMPETITORS}
    return {"day": day, "sizes": sizes, "lines": lines, "competitors": results, "counts_agree": counts_agree,
            "per_event_s": marginal,
            "commands": {"project": " ".join(["dagster", *project_command(day)[1:]]),
                         "bare": f"python -m bench.bare_pipeline --landing L --warehouse W --from {day} --to {day}",
                         "pandas": f"python -m bench.pandas_pipeline --landing L --out O --from {day} --to {day}"}}
