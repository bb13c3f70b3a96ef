"""Backfill: 30 days x 100 hubs (~100k lines a day; quick: 10 days x 10 hubs), interleaved, each on a fresh
instance and warehouse:

* single run: ``dagster asset materialize ... --partition-range FIRST...LAST`` (one run, single-run backfill
  policy);
* one run per day: the same command with ``--partition D``, for every day in order;
* bare: ``python -m bench.bare_pipeline --from FIRST --to LAST`` (one process); its median time per day,
  after imports, is the "bare per-day time".
"""

from __future__ import annotations

import datetime as dt

from bench.harness import (
    RESULTS_DIR,
    Run,
    Scale,
    interleaved,
    isolated_env,
    median,
    remove,
    run_measured,
    scratch_dir,
    simulated_inputs,
    step_durations,
    summarize,
)
from bench.pipeline import measure_project, measure_worker, project_command, warehouse_counts

FIRST = dt.date(2026, 2, 1)
FULL_HUBS, FULL_DAYS, QUICK_DAYS = 100, 30, 10


def one_run_per_day(inputs, label: str) -> Run:
    """Every day as its own CLI run, in order, on one instance: wall summed, peak RSS the largest."""
    root = scratch_dir(label)
    try:
        env = isolated_env(root, inputs.landing)
        runs = [
            run_measured(project_command(day), env, log=RESULTS_DIR / "logs" / f"{label}-{day}.log")
            for day in inputs.day_keys()
        ]
        counts = warehouse_counts(root / "data" / "warehouse.duckdb", inputs.day_keys()[0], inputs.day_keys()[-1])
        return Run(
            wall_s=sum(r.wall_s for r in runs),
            cpu_s=sum(r.cpu_s for r in runs),
            peak_rss_mib=max(r.peak_rss_mib for r in runs),
            returncode=0,
            extra={"counts": counts, "run_wall_s": [r.wall_s for r in runs], "steps_s": step_durations(root / "home")},
        )
    finally:
        remove(root)


def run(scale: Scale) -> dict:
    days = FULL_DAYS if scale.name == "full" else QUICK_DAYS
    inputs = simulated_inputs(scale.hubs(FULL_HUBS), days, FIRST)
    first, last = inputs.day_keys()[0], inputs.day_keys()[-1]
    runs = interleaved(
        {
            "single run": lambda i: measure_project(inputs, first, last, f"backfill-single-{i}"),
            "one run per day": lambda i: one_run_per_day(inputs, f"backfill-daily-{i}"),
            "bare": lambda i: measure_worker("bare", inputs, first, last, f"backfill-{i}"),
        },
        scale.repeats,
    )
    results = {name: {**summarize(r), "counts": r[0].extra["counts"]} for name, r in runs.items()}
    bare_per_day = median([median(r.extra["day_s"]) for r in runs["bare"]])
    results["bare"]["per_day_s"] = bare_per_day
    results["bare"]["compute_s"] = median([r.extra["compute_s"] for r in runs["bare"]])
    results["one run per day"]["median_run_s"] = median(
        [median(r.extra["run_wall_s"]) for r in runs["one run per day"]]
    )
    steps = [r.extra["steps_s"] for r in runs["single run"]]
    results["single run"]["steps_s"] = {k: median([s.get(k, 0.0) for s in steps]) for k in steps[0]}
    counts_agree = len({tuple(sorted(r["counts"].items())) for r in results.values()}) == 1
    return {
        "first": first,
        "last": last,
        "days": days,
        "hubs": inputs.hubs,
        "lines": inputs.lines,
        "competitors": results,
        "counts_agree": counts_agree,
        "commands": {
            "single run": " ".join(["dagster", *project_command(first, last)[1:]]),
            "one run per day": " ".join(["dagster", *project_command("D")[1:]]) + "   (for each day D)",
            "bare": f"python -m bench.bare_pipeline --landing L --warehouse W --from {first} --to {last}",
        },
    }
