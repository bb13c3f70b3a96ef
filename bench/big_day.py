"""Per-event cost on the big-day shape against a plain polars script (issue 14): one day of uploads at two sizes
(full: 200 and 2,000 hubs × ~1,000 lines; quick: 20 and 200), interleaved, each on a fresh instance / output:

* project: ``dagster asset materialize ... --select raw_usage,device_usage,device_usage_quarantine,usage_features
  --partition D`` (every check of those assets);
* plain: ``python -m bench.plain_history --landing L --from D --to D`` (polars only: ``read_ndjson`` per file,
  filter, dedup, hash, aggregate; none of the project's functions).

Per-event cost = (wall at the larger size - wall at the smaller) / (lines at larger - lines at smaller): the fixed
costs cancel. Target: the project ≤ 2 × the plain script.
"""

from __future__ import annotations

from bench.harness import Scale, interleaved, median, simulated_inputs, summarize
from bench.history import measure_plain
from bench.pipeline import DAY, measure_project

FULL_HUBS = (200, 2_000)
TARGET_RATIO = 2.0


def run(scale: Scale) -> dict:
    sizes = [scale.hubs(h) for h in FULL_HUBS]
    inputs = {h: simulated_inputs(h, 1, DAY) for h in sizes}
    day = DAY.isoformat()
    competitors = {}
    for h in sizes:
        competitors[f"project@{h}"] = lambda i, h=h: measure_project(inputs[h], day, day, f"bigday-{h}-{i}")
        competitors[f"plain@{h}"] = lambda i, h=h: measure_plain(inputs[h], f"bigday-{h}-{i}")
    runs = interleaved(competitors, scale.repeats)
    small, large = sizes
    lines = {h: inputs[h].lines for h in sizes}
    per_event = {}
    results = {}
    for name in ("project", "plain"):
        walls = {h: median([r.wall_s for r in runs[f"{name}@{h}"]]) for h in sizes}
        cpus = {h: median([r.cpu_s for r in runs[f"{name}@{h}"]]) for h in sizes}
        per_event[name] = {
            "wall_us": (walls[large] - walls[small]) / (lines[large] - lines[small]) * 1e6,
            "cpu_us": (cpus[large] - cpus[small]) / (lines[large] - lines[small]) * 1e6,
        }
        results[name] = {
            str(h): {**summarize(runs[f"{name}@{h}"]), "counts": runs[f"{name}@{h}"][0].extra["counts"]} for h in sizes
        }
        if name == "project":
            for h in sizes:
                results[name][str(h)]["steps_s"] = runs[f"project@{h}"][0].extra["steps_s"]
    ratio = per_event["project"]["wall_us"] / per_event["plain"]["wall_us"]
    return {
        "day": day,
        "hubs": sizes,
        "lines": {str(h): lines[h] for h in sizes},
        "competitors": results,
        "per_event": per_event,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "commands": {
            "project": "dagster asset materialize -m smart_home_assets.definitions --select "
            f"raw_usage,device_usage,device_usage_quarantine,usage_features --partition {day}",
            "plain": f"python -m bench.plain_history --landing L --from {day} --to {day} --out O",
        },
    }


if __name__ == "__main__":  # pragma: no cover - run through python -m bench big_day
    raise SystemExit("run it with: python -m bench big_day")
