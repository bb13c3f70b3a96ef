"""Fixed cost per run: the project's CLI run of a partition with almost no events vs a trivial one-asset
Dagster project's CLI run, each on a fresh instance with the project's dagster.yaml, interleaved.

* project: ``dagster asset materialize -m smart_home_assets.definitions --select raw_usage,device_usage,
  device_usage_quarantine,usage_features --partition D`` over one hub's file of a few events (3 assets and 2
  check steps: 5 steps);
* trivial: ``dagster asset materialize -m bench.trivial.definitions --select trivial_daily --partition D``
  (1 step).
"""

from __future__ import annotations

import datetime as dt

from bench.harness import (
    RESULTS_DIR,
    Run,
    Scale,
    dagster_cli,
    interleaved,
    isolated_env,
    remove,
    run_measured,
    scratch_dir,
    simulated_inputs,
    step_durations,
    summarize,
)
from bench.pipeline import project_command

DAY = dt.date(2026, 3, 2)
TRIVIAL_MODULE = "bench.trivial.definitions"


def trivial_command(day: str) -> list[str]:
    return dagster_cli("asset", "materialize", "-m", TRIVIAL_MODULE, "--select", "trivial_daily", "--partition", day)


def measure(command: list[str], landing, label: str) -> Run:
    root = scratch_dir(label)
    try:
        env = isolated_env(root, landing)
        run = run_measured(command, env, log=RESULTS_DIR / "logs" / f"{label}.log")
        run.extra = {"steps_s": step_durations(root / "home")}
        return run
    finally:
        remove(root)


def run(scale: Scale) -> dict:
    inputs = simulated_inputs(1, 1, DAY, events_per_hub=5)
    day = DAY.isoformat()
    repeats = 5 if scale.name == "full" else scale.repeats
    runs = interleaved(
        {
            "project": lambda i: measure(project_command(day), inputs.landing, f"fixed-project-{i}"),
            "trivial": lambda i: measure(trivial_command(day), inputs.landing, f"fixed-trivial-{i}"),
        },
        repeats,
    )
    results = {}
    for name, measured in runs.items():
        summary = summarize(measured)
        steps = [r.extra["steps_s"] for r in measured]
        summary["steps_s"] = {k: sorted(s.get(k, 0.0) for s in steps)[len(steps) // 2] for k in steps[0]}
        results[name] = summary
    return {
        "day": day,
        "events": inputs.lines,
        "competitors": results,
        "commands": {
            "project": " ".join(["dagster", *project_command(day)[1:]]),
            "trivial": " ".join(["dagster", *trivial_command(day)[1:]]),
        },
    }
