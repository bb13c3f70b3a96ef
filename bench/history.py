"""Long history (issue 14): one household, years of daily partitions with few events each.

1. The history shape: 1 hub × 1,401 days from 2007-01-26 (about 217 events a day, ~300k lines; quick: 140
   days), interleaved, each on a fresh instance / warehouse / output folder:

   * project: ``dagster asset materialize -m smart_home_assets.definitions --select raw_usage,device_usage,
     device_usage_quarantine,usage_features --partition-range FIRST...LAST`` (one run, every check of those
     assets), with ``SMART_HOME_PARTITIONS_START=2007-01-01`` and ``SMART_HOME_PARTITIONS_END=LAST`` (the
     partitions must exist; the end is pinned so the partitions definition does not grow with the clock);
   * bare: ``python -m bench.bare_pipeline`` over the same days (the project's own functions and checks, one
     process, no Dagster; day by day, as it is written);
   * plain: ``python -m bench.plain_history`` (polars only: ``read_ndjson`` per file, filter, dedup, hash,
     aggregate per device and day).

   Target: the project ≤ 60 s for the 1,401 days on 2 cores. Counts of project and bare must agree (raw lines,
   device_usage, quarantine, features, device-days); the plain script's are reported beside them.

2. Per-partition overhead inside one single-run backfill: the same total events (60k; quick: 6k) spread over
   50, 200 and 800 daily partitions (quick: 20, 50, 100), one project CLI run each (and the bare script at the
   same sizes, for reference, at quick scale only); per step (Dagster's STEP_SUCCESS durations) the least-squares
   slope of seconds against partitions, in ms per partition. Target: ≤ 20 ms per partition per step.
"""

from __future__ import annotations

import datetime as dt
import sys

import duckdb

from bench.harness import (
    RESULTS_DIR,
    Run,
    Scale,
    interleaved,
    isolated_env,
    last_json_line,
    median,
    remove,
    run_measured,
    scratch_dir,
    simulated_inputs,
    step_durations,
    summarize,
)
from bench.pipeline import count_of, measure_worker, project_command, warehouse_counts

FIRST = dt.date(2007, 1, 26)
PARTITIONS_START = "2007-01-01"  # on or before FIRST: the partitions of the range must exist
FULL_DAYS = 1_401
EVENTS_PER_DAY = 217  # events_per_hub of the simulator: ~300k lines over 1,401 days
SLOPE_PARTITIONS = {"full": (50, 200, 800), "quick": (20, 50, 100)}
SLOPE_EVENTS = 60_000  # total, the same at every partition count (times the scale's factor)
STEPS = ("raw_usage", "device_usage", "device_usage_checks", "usage_features", "usage_features_checks")
HISTORY_TARGET_S = 60.0
PER_PARTITION_TARGET_MS = 20.0
COMPARABLE = ("raw_lines", "device_usage", "quarantine", "features", "device_days")
TIMEOUT_S = 4 * 3600.0
# The 1,401-day runs take minutes each (the bare script too: it goes day by day): one repeat at full scale.
FULL_HISTORY_REPEATS = 1


def history_env(root, inputs, migrate: bool = True) -> dict[str, str]:
    env = isolated_env(root, inputs.landing, migrate=migrate)
    env["SMART_HOME_PARTITIONS_START"] = PARTITIONS_START
    env["SMART_HOME_PARTITIONS_END"] = inputs.last.isoformat()
    return env


def history_counts(path, first: str, last: str) -> dict[str, int]:
    """warehouse_counts plus the (day, device) pairs of device_usage: what the plain script's daily sums have."""
    counts = warehouse_counts(path, first, last)
    with duckdb.connect(str(path), read_only=True) as con:
        counts["device_days"] = count_of(
            con,
            "SELECT count(*) FROM (SELECT DISTINCT partition_date, device_id FROM device_usage "
            "WHERE partition_date BETWEEN ? AND ?)",
            [first, last],
        )
    return counts


def measure_project(inputs, label: str) -> Run:
    first, last = inputs.day_keys()[0], inputs.day_keys()[-1]
    root = scratch_dir(f"history-project-{label}")
    try:
        env = history_env(root, inputs)
        run = run_measured(
            project_command(first, last),
            env,
            log=RESULTS_DIR / "logs" / f"history-project-{label}.log",
            timeout_s=TIMEOUT_S,
        )
        run.extra = {
            "counts": history_counts(root / "data" / "warehouse.duckdb", first, last),
            "steps_s": step_durations(root / "home"),
        }
        return run
    finally:
        remove(root)


def measure_bare(inputs, label: str) -> Run:
    first, last = inputs.day_keys()[0], inputs.day_keys()[-1]
    return measure_worker(
        "bare",
        inputs,
        first,
        last,
        f"history-{label}",
        timeout_s=TIMEOUT_S,
        env_extra={
            "SMART_HOME_PARTITIONS_START": PARTITIONS_START,
            "SMART_HOME_PARTITIONS_END": inputs.last.isoformat(),
        },
        counts=history_counts,
    )


def measure_plain(inputs, label: str) -> Run:
    first, last = inputs.day_keys()[0], inputs.day_keys()[-1]
    root = scratch_dir(f"history-plain-{label}")
    try:
        env = history_env(root, inputs, migrate=False)
        log = RESULTS_DIR / "logs" / f"history-plain-{label}.log"
        run = run_measured(
            [
                sys.executable,
                "-m",
                "bench.plain_history",
                "--landing",
                str(inputs.landing),
                "--from",
                first,
                "--to",
                last,
                "--out",
                str(root / "out"),
            ],
            env,
            log=log,
            timeout_s=TIMEOUT_S,
        )
        result = last_json_line(log, "BENCH_RESULT ")
        run.extra = {
            "counts": result["counts"],
            "compute_s": result["compute_s"],
            "import_s": result["import_s"],
            "read_s": result["read_s"],
            "process_s": result["process_s"],
            "write_s": result["write_s"],
        }
        return run
    finally:
        remove(root)


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through (xs, ys)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else float("nan")
    return slope, my - slope * mx


def median_steps(runs: list[Run]) -> dict[str, float]:
    steps = [r.extra["steps_s"] for r in runs]
    keys = [k for k in STEPS if any(k in s for s in steps)] + sorted({k for s in steps for k in s} - set(STEPS))
    return {k: median([s.get(k, 0.0) for s in steps]) for k in keys}


def history_part(scale: Scale) -> dict:
    days = FULL_DAYS if scale.name == "full" else max(10, round(FULL_DAYS * scale.factor))
    inputs = simulated_inputs(1, days, FIRST, events_per_hub=EVENTS_PER_DAY)
    first, last = inputs.day_keys()[0], inputs.day_keys()[-1]
    runs = interleaved(
        {
            "project": lambda i: measure_project(inputs, f"{days}d-{i}"),
            "bare": lambda i: measure_bare(inputs, f"{days}d-{i}"),
            "plain": lambda i: measure_plain(inputs, f"{days}d-{i}"),
        },
        FULL_HISTORY_REPEATS if scale.name == "full" else scale.repeats,
    )
    results = {name: {**summarize(r), "counts": r[0].extra["counts"]} for name, r in runs.items()}
    results["project"]["steps_s"] = median_steps(runs["project"])
    for name in ("bare", "plain"):
        results[name]["compute_s"] = median([r.extra["compute_s"] for r in runs[name]])
        results[name]["import_s"] = median([r.extra["import_s"] for r in runs[name]])
    results["bare"]["per_day_s"] = median([median(r.extra["day_s"]) for r in runs["bare"]])
    results["bare"]["checks_passed"] = all(r.extra["checks_passed"] for r in runs["bare"])
    for key in ("read_s", "process_s", "write_s"):
        results["plain"][key] = median([r.extra[key] for r in runs["plain"]])
    project = results["project"]
    ratios = {
        other: {"wall": project["wall_s"] / results[other]["wall_s"], "cpu": project["cpu_s"] / results[other]["cpu_s"]}
        for other in ("bare", "plain")
    }
    # project and bare: every count; the plain script only has what it computes (reported, never a failure)
    counts_agree = all(results["project"]["counts"][k] == results["bare"]["counts"][k] for k in COMPARABLE)
    return {
        "first": first,
        "last": last,
        "days": days,
        "hubs": 1,
        "events_per_hub": EVENTS_PER_DAY,
        "lines": inputs.lines,
        "events": inputs.events,
        "partitions_start": PARTITIONS_START,
        "competitors": results,
        "ratios": ratios,
        "counts_agree": counts_agree,
        "commands": {
            "project": f"SMART_HOME_PARTITIONS_START={PARTITIONS_START} SMART_HOME_PARTITIONS_END={last} "
            + " ".join(["dagster", *project_command(first, last)[1:]]),
            "bare": f"python -m bench.bare_pipeline --landing L --warehouse W --from {first} --to {last}",
            "plain": f"python -m bench.plain_history --landing L --from {first} --to {last} --out O",
        },
    }


def slope_part(scale: Scale) -> dict:
    sizes = SLOPE_PARTITIONS.get(scale.name, SLOPE_PARTITIONS["quick"])
    total = max(sizes[-1], round(SLOPE_EVENTS * scale.factor))
    inputs = {n: simulated_inputs(1, n, FIRST, events_per_hub=max(1, round(total / n))) for n in sizes}
    competitors = {}
    with_bare = scale.name != "full"  # at full scale the bare script's 800 days alone take minutes
    for n in sizes:
        competitors[f"project@{n}"] = lambda i, n=n: measure_project(inputs[n], f"slope-{n}p-{i}")
        if with_bare:
            competitors[f"bare@{n}"] = lambda i, n=n: measure_bare(inputs[n], f"slope-{n}p-{i}")
    runs = interleaved(competitors, scale.repeats)
    by_size = {}
    for n in sizes:
        project = runs[f"project@{n}"]
        by_size[n] = {
            "lines": project[0].extra["counts"]["raw_lines"],
            "events_per_day": round(total / n),
            "project": {**summarize(project), "counts": project[0].extra["counts"], "steps_s": median_steps(project)},
        }
        if with_bare:
            bare = runs[f"bare@{n}"]
            by_size[n]["bare"] = {
                **summarize(bare),
                "counts": bare[0].extra["counts"],
                "compute_s": median([r.extra["compute_s"] for r in bare]),
            }
    xs = [float(n) for n in sizes]
    steps = [k for k in by_size[sizes[0]]["project"]["steps_s"]]
    series = {k: [by_size[n]["project"]["steps_s"].get(k, 0.0) for n in sizes] for k in steps}
    series["all steps"] = [sum(by_size[n]["project"]["steps_s"].values()) for n in sizes]
    series["project run (wall)"] = [by_size[n]["project"]["wall_s"] for n in sizes]
    if with_bare:
        series["bare script (after imports)"] = [by_size[n]["bare"]["compute_s"] for n in sizes]
        series["bare script (wall)"] = [by_size[n]["bare"]["wall_s"] for n in sizes]
    slopes = {}
    for name, ys in series.items():
        slope, intercept = least_squares(xs, ys)
        slopes[name] = {"seconds": ys, "slope_ms": slope * 1000.0, "intercept_s": intercept, "is_step": name in steps}
    return {
        "partitions": list(sizes),
        "total_events_per_hub": total,
        "by_size": by_size,
        "slopes": slopes,
        "target_ms": PER_PARTITION_TARGET_MS,
    }


def run(scale: Scale) -> dict:
    history = history_part(scale)
    per_partition = slope_part(scale)
    return {**history, "per_partition": per_partition, "target_s": HISTORY_TARGET_S, "full_days": FULL_DAYS}
