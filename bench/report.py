"""Render docs/benchmarks.md from bench/results/*.json: the machine, the commands, every figure (median of
the interleaved repeats) and each target of issue 6 with its measured value, ratio and PASS / MISS.

Hand-written findings (profiles, fixes with before/after) live in bench/findings.md and are included as they are.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from bench.harness import DOC_PATH, load_results, machine_facts

FINDINGS = Path(__file__).with_name("findings.md")
GIB_MIB = 1024.0


@dataclass
class Target:
    name: str
    target: str
    measured: str
    ok: bool | None  # None: not measured
    note: str = ""
    why: str = ""  # the measured cause, shown when the target is missed (details in bench/findings.md)

    def row(self) -> str:
        verdict = "not measured" if self.ok is None else ("PASS" if self.ok else "**MISS**")
        note = "; ".join(n for n in (self.note, f"**why:** {self.why}" if self.ok is False and self.why else "") if n)
        return f"| {self.name} | {self.target} | {self.measured} | {verdict} | {note} |"


FIXED_COST_RATIO = 1.5  # issue 14 (issue 6 asked for 1.25)
FIXED_COST_TARGET = f"project ≤ {FIXED_COST_RATIO} × trivial project"
# Why a target is missed, from the profiles in bench/findings.md (hand-written there; shown only on a miss).
WHY_MISSED = {
    "pandas": "the engine alone (the bare script, no Dagster) is itself above 0.25 × pandas: the contract keeps and "
    "classifies every raw line (the raw table with each line's text, DuckDB's JSON parses, Parquet "
    "staging, DuckDB's compressed inserts); pandas needs 8 × the project's memory at 9.4M events "
    "(bench/findings.md)",
    "fixed_cost": "importing the engines the design card names costs ~1 s before any work (polars and numpy 0.3 s at "
    "load; DuckDB imports pandas, 0.35-0.4 s, as soon as a query has a parameter; Pandera 0.15 s) and "
    "the run has 5 steps and 13 check evaluations (event-log writes of ~10 ms each) against 1 step "
    "(bench/findings.md)",
    "big_day": "what the contract adds to a plain read: every line kept as it came (the raw table with each line's "
    "text, staged and inserted), DuckDB's JSON parses that classify each line's fault (half of raw_usage), "
    "the quarantine with reasons, device_usage read back from the warehouse and checked with Pandera "
    "(bench/findings.md)",
    "history": "Dagster's SQLite event log: every partition of the run writes 4 planned and 4 materialization events "
    "and 10 check evaluations, at 5-13 ms each (SQLAlchemy opens an engine per write); the project's own "
    "work is a few ms per partition since the run's partitions share batches and one transaction "
    "(bench/findings.md)",
    "backfill": "the asset boundaries: per day, device_usage reads raw_usage back and the checks read device_usage "
    "back from the warehouse (a few connections and queries each), and the run records 5 materializations "
    "and 13 check evaluations a day; the bare script ingests, cleans and checks each day in one pass "
    "(bench/findings.md)",
    "freshness": "the chain is four runs (raw_usage, device_usage, usage_features, usage_model) started by sensor "
    "and automation ticks; most of it is the retrain's own run (bench/findings.md)",
    "service": "each single request costs the server about 7 ms of CPU: the forecast ~2.8 ms (a fixed cost per call: "
    "the model-input select, the interval; LightGBM itself 0.05 ms), the polars frame, the store's append "
    "(fdatasync), and uvicorn/FastAPI; the load generator shares the 2 cores (bench/findings.md)",
    "serving": "single requests to `mlflow models serve` (uvicorn) on 2 shared cores: the tail is the machine, "
    "the median is a few ms (bench/findings.md)",
}


def fmt_s(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_n(n: float) -> str:
    return f"{n:,.0f}"


def usable(result: dict | None) -> TypeGuard[dict]:
    return result is not None and bool(result) and "error" not in result


def per_event_us(pipeline: dict, competitor: str, field: str = "per_event_s") -> float | None:
    value = pipeline.get(field, {}).get(competitor)
    return None if value is None else value * 1e6


def raw_lines(pipeline: dict, hubs: int) -> int:
    """The raw lines of the ``hubs`` size as the runs counted them (the simulator's own count leaves out the
    remainders of truncated files, which the pipeline keeps as lines)."""
    for by_size in pipeline["competitors"].values():
        counts = by_size.get(str(hubs), {}).get("counts")
        if counts:
            return counts["raw_lines"]
    return pipeline["lines"][str(hubs)]


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} µs"


# --- targets ------------------------------------------------------------------------------------------------


def targets(results: dict[str, dict]) -> list[Target]:
    rows: list[Target] = []
    pipeline, fixed, backfill = results.get("pipeline"), results.get("fixed_cost"), results.get("backfill")
    load, model, fresh = results.get("load_time"), results.get("model"), results.get("freshness")

    if usable(pipeline):
        for other, limit in (("bare", 1.3), ("pandas", 0.25)):
            comparison = pipeline.get("comparisons", {}).get(other, {})
            project, value = (comparison.get(f"{c}_s") for c in ("project", other))
            project_cpu, other_cpu = (comparison.get(f"{c}_cpu_s") for c in ("project", other))
            if project is None or value is None:
                rows.append(
                    Target(
                        f"per-event cost vs {other}",
                        f"project ≤ {limit} × {other}",
                        "-",
                        None,
                        "fewer than two sizes ran for both (memory guard)",
                    )
                )
                continue
            ratio = project / value
            between = " and ".join(fmt_n(raw_lines(pipeline, h)) for h in comparison["pair"])
            note = (
                f"between {between} events; CPU time per event: {project_cpu * 1e6:.2f} vs {other_cpu * 1e6:.2f} "
                f"µs, {project_cpu / other_cpu:.2f} ×"
            )
            rows.append(
                Target(
                    f"per-event cost vs {other}",
                    f"project ≤ {limit} × {other}",
                    f"{fmt_us(project * 1e6)} vs {fmt_us(value * 1e6)}: {ratio:.2f} ×",
                    ratio <= limit,
                    note,
                    WHY_MISSED.get(other, ""),
                )
            )
        by_size = pipeline["competitors"]["project"]
        largest = str(pipeline["sizes"][-1])
        ran = [str(h) for h in pipeline["sizes"] if "skipped" not in by_size[str(h)]]
        if "skipped" in by_size[largest]:
            rows.append(
                Target(
                    f"{fmt_n(pipeline['lines'][largest])} events in one day's partition",
                    "peak RSS ≤ 4 GiB",
                    by_size[largest]["skipped"],
                    False,
                )
            )
        if ran:
            big = by_size[ran[-1]]
            lines = big["counts"]["raw_lines"]
            rss = big["peak_rss_mib"]
            note = ""
            if lines < 5_000_000 and len(ran) >= 2:  # what the 10M would need at the same bytes per event
                below = by_size[ran[-2]]
                per_event = (rss - below["peak_rss_mib"]) / (lines - below["counts"]["raw_lines"])
                note = (
                    f"linear extrapolation to 10M events: ~{(rss + per_event * (10_000_000 - lines)) / GIB_MIB:.1f} GiB"
                )
            rows.append(
                Target(
                    f"{fmt_n(lines)} events in one day's partition",
                    "peak RSS ≤ 4 GiB",
                    f"{fmt_s(big['wall_s'])}, peak RSS {rss / GIB_MIB:.2f} GiB",
                    rss <= 4 * GIB_MIB,
                    note,
                )
            )
        if len(ran) >= 2:
            a, b = by_size[ran[-2]], by_size[ran[-1]]
            size_ratio = b["counts"]["raw_lines"] / a["counts"]["raw_lines"]
            growth = sum(b["steps_s"].values()) / sum(a["steps_s"].values())
            rows.append(
                Target(
                    "growth of the work with size",
                    "no worse than linear (step time ratio ≤ size ratio)",
                    f"step time × {growth:.1f} for × {size_ratio:.1f} events",
                    growth <= size_ratio,
                )
            )
    else:
        rows += [
            Target("per-event cost", "project ≤ 1.3 × bare, ≤ 0.25 × pandas", "-", None),
            Target("10M events in a day", "peak RSS ≤ 4 GiB, linear growth", "-", None),
        ]

    if usable(fixed):
        project, trivial = (fixed["competitors"][c]["wall_s"] for c in ("project", "trivial"))
        ratio = project / trivial
        cpu = fixed["competitors"]["project"]["cpu_s"] / fixed["competitors"]["trivial"]["cpu_s"]
        rows.append(
            Target(
                "fixed cost per run",
                FIXED_COST_TARGET,
                f"{fmt_s(project)} vs {fmt_s(trivial)}: {ratio:.2f} ×",
                ratio <= FIXED_COST_RATIO,
                f"CPU time: {cpu:.2f} ×",
                WHY_MISSED["fixed_cost"],
            )
        )
    else:
        rows.append(Target("fixed cost per run", FIXED_COST_TARGET, "-", None))

    if usable(backfill) and usable(fixed):
        single = backfill["competitors"]["single run"]["wall_s"]
        budget = (
            backfill["days"] * backfill["competitors"]["bare"]["per_day_s"] + fixed["competitors"]["project"]["wall_s"]
        )
        rows.append(
            Target(
                f"{backfill['days']}-day backfill as one run",
                f"≤ 1.3 × ({backfill['days']} × bare per-day + one fixed cost)",
                f"{fmt_s(single)} vs {fmt_s(budget)}: {single / budget:.2f} ×",
                single <= 1.3 * budget,
                why=WHY_MISSED["backfill"],
            )
        )
    else:
        rows.append(
            Target(
                "backfill as one run",
                "≤ 1.3 × (N × bare per-day + one fixed cost)",
                "-",
                None,
                "needs the backfill and fixed_cost families",
            )
        )

    if usable(load):
        definitions = load["competitors"]["import definitions"]["wall_s"]
        dagster = load["competitors"]["import dagster"]["wall_s"]
        ratio = definitions / dagster
        cpu = load["competitors"]["import definitions"]["cpu_s"] / load["competitors"]["import dagster"]["cpu_s"]
        rows.append(
            Target(
                "code-location load",
                "≤ 1.5 × `import dagster`",
                f"{fmt_s(definitions)} vs {fmt_s(dagster)}: {ratio:.2f} ×",
                ratio <= 1.5,
                f"CPU time: {cpu:.2f} ×",
            )
        )
    else:
        rows.append(Target("code-location load", "≤ 1.5 × `import dagster`", "-", None))

    if usable(fresh) and fresh.get("seconds") is not None:
        rows.append(
            Target(
                "upload to retrained model",
                "≤ 120 s",
                fmt_s(fresh["seconds"]),
                fresh["seconds"] <= 120 and not fresh["missed"],
                f"{fresh['missed']} landing(s) without a retrain" if fresh["missed"] else "",
                WHY_MISSED["freshness"],
            )
        )
    else:
        rows.append(Target("upload to retrained model", "≤ 120 s", "-", None if not usable(fresh) else False))

    rows += history_targets(results.get("history"))
    big = results.get("big_day")
    if usable(big):
        pe = big["per_event"]
        lines = big["lines"]
        rows.append(
            Target(
                "per-event cost on a big day vs a plain polars script",
                f"project ≤ {big['target_ratio']:.0f} × plain",
                f"{pe['project']['wall_us']:.2f} µs vs {pe['plain']['wall_us']:.2f} µs: {big['ratio']:.2f} ×",
                big["ratio"] <= big["target_ratio"],
                f"between {' and '.join(fmt_n(v) for v in lines.values())} events in one day (section 9); "
                f"CPU time per event {pe['project']['cpu_us']:.2f} vs {pe['plain']['cpu_us']:.2f} µs",
                WHY_MISSED["big_day"],
            )
        )
    else:
        rows.append(Target("per-event cost on a big day vs a plain polars script", "project ≤ 2 × plain", "-", None))

    if usable(model):
        p99 = model["serving"]["p99_ms"]
        rows.append(
            Target(
                "one prediction over HTTP",
                "p99 ≤ 50 ms on loopback",
                f"p99 {p99:.1f} ms",
                p99 <= 50,
                why=WHY_MISSED["serving"],
            )
        )
    else:
        rows.append(Target("one prediction over HTTP", "p99 ≤ 50 ms on loopback", "-", None))
    rows += service_targets(results.get("service"))
    return rows


SERVICE_P99_MS, SERVICE_BATCH_MS = 20.0, 150.0
SERVICE_TARGETS = (
    ("prediction service: one request at 100 requests/s", f"p99 ≤ {SERVICE_P99_MS:.0f} ms on 2 cores"),
    ("prediction service: a batch of 1,000 rows", f"≤ {SERVICE_BATCH_MS:.0f} ms"),
    ("prediction service: a champion swap during load", "no request lost"),
)


def service_targets(r: dict | None) -> list[Target]:
    """Section 10: `smart-home serve` under an open-loop load (latency from each request's due time)."""
    if not usable(r):
        return [Target(name, target, "-", None) for name, target in SERVICE_TARGETS]
    single, batch, swap, store = r["single"], r["batch"], r["swap"], r["store"]
    why = WHY_MISSED["service"]
    p99 = single["from_schedule_p99_ms"]
    per_repeat = " / ".join(f"{run['from_schedule']['p99_ms']:.1f}" for run in single["runs"])
    rows = [
        Target(
            *SERVICE_TARGETS[0],
            f"p99 {p99:.1f} ms, the median of the repeats' {per_repeat} ms "
            f"(p50 {single['from_schedule_p50_ms']:.1f} ms)",
            p99 <= SERVICE_P99_MS and not single["errors"],
            f"from each request's due time, {fmt_n(r['requests'])} requests × {r['repeats']} offered at "
            f"{r['rate_rps']:.0f}/s (open loop), {single['throughput_rps']:.1f}/s answered, {single['errors']} "
            f"errors; from the actual send p99 {single['from_send_p99_ms']:.1f} ms; the client on the same 2 "
            "cores",
            why,
        )
    ]
    rows.append(
        Target(
            *SERVICE_TARGETS[1],
            f"median {batch['median_ms']:.0f} ms (max {batch['max_ms']:.0f} ms)",
            batch["median_ms"] <= SERVICE_BATCH_MS and not batch["errors"],
            f"{sum(b['batches'] for b in batch['runs'])} sequential batches of random devices, "
            f"{batch['errors']} errors",
            why,
        )
    )
    swapped = swap["swapped"] and all(w["swap_s"] is not None for w in swap["runs"])
    ok = swapped and not swap["non_200"] and not swap["lost"] and swap["monotonic"] and not store["missing"]
    answered = sum(w["answered"] for w in swap["runs"])
    rows.append(
        Target(
            *SERVICE_TARGETS[2],
            f"{swap['non_200']} non-200, {swap['lost']} of {fmt_n(answered)} answers not stored as "
            f"answered, {'monotonic' if swap['monotonic'] else '**not monotonic**'}",
            ok,
            f"{len(swap['runs'])} swap(s) at {r['rate_rps']:.0f} requests/s; first answer of the new "
            f"version {fmt_s(swap['swap_s'])} after the alias move (median; the alias is polled every "
            f"{r['poll_s']:.0f} s); all {fmt_n(store['answered_ids'])} answered requests of the run: "
            f"{store['missing']} missing from the store",
        )
    )
    return rows


def history_expected_s(r: dict) -> float | None:
    """The history run at the issue's 1,401 partitions, from a smaller scale: the measured run plus the project
    run's per-partition slope (section 8) times the missing partitions (their few events not counted)."""
    slope = r.get("per_partition", {}).get("slopes", {}).get("project run (wall)", {}).get("slope_ms")
    if slope is None or math.isnan(slope):
        return None
    return r["competitors"]["project"]["wall_s"] + slope / 1000.0 * (r["full_days"] - r["days"])


def history_targets(r: dict | None) -> list[Target]:
    """Issue 14: the long history as one run, and the per-partition overhead per step."""
    if not usable(r):
        return [
            Target("long history (1,401 daily partitions, 1 hub) as one run", "≤ 60 s on 2 cores", "-", None),
            Target("per-partition overhead in a single-run backfill", "≤ 20 ms per partition per step", "-", None),
        ]
    rows = []
    c = r["competitors"]
    wall = c["project"]["wall_s"]
    lines = c["project"]["counts"]["raw_lines"]
    ratios = r["ratios"]
    note = (
        f"project / bare {ratios['bare']['wall']:.2f} × ({fmt_s(c['bare']['wall_s'])}), project / plain polars "
        f"{ratios['plain']['wall']:.1f} × ({fmt_s(c['plain']['wall_s'])})"
    )
    if r["days"] == r["full_days"]:
        rows.append(
            Target(
                f"long history ({fmt_n(r['days'])} daily partitions, 1 hub, {fmt_n(lines)} lines) as one run",
                f"≤ {r['target_s']:.0f} s on 2 cores",
                fmt_s(wall),
                wall <= r["target_s"],
                note,
                WHY_MISSED["history"],
            )
        )
    else:
        expected = history_expected_s(r)
        measured = f"{fmt_s(wall)} at {fmt_n(r['days'])} partitions ({fmt_n(lines)} lines)"
        if expected is not None:
            measured += f"; ~{fmt_s(expected)} expected at {fmt_n(r['full_days'])} (extrapolated)"
        rows.append(
            Target(
                f"long history ({fmt_n(r['full_days'])} daily partitions, 1 hub) as one run",
                f"≤ {r['target_s']:.0f} s on 2 cores",
                measured,
                None if expected is None else expected <= r["target_s"],
                f"{r['scale']} scale: measured at {fmt_n(r['days'])} partitions, the verdict is on the "
                f"extrapolation (run + per-partition slope × the missing partitions); " + note,
                WHY_MISSED["history"],
            )
        )
    slopes = r["per_partition"]["slopes"]
    limit = r["per_partition"]["target_ms"]
    steps = {k: v["slope_ms"] for k, v in slopes.items() if v["is_step"]}
    if steps:
        worst = max(steps, key=lambda k: steps[k])
        over = [k for k, v in steps.items() if v > limit]
        sizes = "/".join(str(n) for n in r["per_partition"]["partitions"])
        rows.append(
            Target(
                "per-partition overhead in a single-run backfill",
                f"≤ {limit:.0f} ms per partition per step",
                f"worst {worst} {steps[worst]:.0f} ms/partition; all steps {slopes['all steps']['slope_ms']:.0f} ms",
                not over,
                f"slope over {sizes} partitions at fixed events (section 8); "
                + (
                    f"{len(over)} of {len(steps)} steps above: " + ", ".join(f"{k} {steps[k]:.0f}" for k in over)
                    if over
                    else f"all {len(steps)} steps within"
                ),
                WHY_MISSED["history"],
            )
        )
    return rows


# --- sections -----------------------------------------------------------------------------------------------


def run_line(result: dict) -> str:
    load = lambda xs: "/".join(f"{x:.1f}" for x in xs) or "-"  # noqa: E731
    return (
        f"_{result['scale']} scale, {result['repeats']} repeat(s), finished {result['finished_at']} in "
        f"{fmt_s(result['duration_s'])}; load average before {load(result['load_before'])}, after "
        f"{load(result['load_after'])} (1/5/15 min)._"
    )


def section_pipeline(r: dict) -> list[str]:
    out = ["## 1, 3. Marginal cost per event, and scale", "", run_line(r), ""]
    out += [
        "One day (partition " + r["day"] + ") of simulated uploads (seed 6, 2 % faults of every kind), "
        "each competitor on a fresh warehouse (and a fresh Dagster instance for the project):",
        "",
    ]
    out += [
        f"- project: `{r['commands']['project']}` (with every check of these assets)",
        f"- bare: `{r['commands']['bare']}`: the project's own polars/DuckDB functions and Pandera checks in "
        "one script, no Dagster",
        f"- pandas: `{r['commands']['pandas']}`: independent, straightforward pandas",
        "",
    ]
    out += [
        "| competitor | events (raw lines) | wall | events/s | CPU | peak RSS | "
        "device_usage / quarantine / features rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_size in r["competitors"].items():
        for size, s in by_size.items():
            if "skipped" in s:
                out.append(f"| {name} | {fmt_n(r['lines'][size])} | {s['skipped']} | | | | |")
                continue
            c = s["counts"]
            out.append(
                f"| {name} | {fmt_n(c['raw_lines'])} | {fmt_s(s['wall_s'])} "
                f"({fmt_s(s['wall_min_s'])}–{fmt_s(s['wall_max_s'])}) | {fmt_n(c['raw_lines'] / s['wall_s'])} | "
                f"{fmt_s(s['cpu_s'])} | {s['peak_rss_mib']:,.0f} MiB | "
                f"{fmt_n(c['device_usage'])} / {fmt_n(c['quarantine'])} / {fmt_n(c['features'])} |"
            )
    agree = all(r["counts_agree"].values())
    out += ["", f"Row counts of the three {'agree' if agree else '**DISAGREE**'} at every size.", ""]
    pairs = r.get("per_event_pairs", {})
    out += [
        "Per-event cost = (time at the larger size − time at the smaller) / (events at larger − events at "
        "smaller), over the two largest sizes each competitor ran (the targets above compare the project with "
        "each baseline over the two largest sizes both ran); CPU = user + system time of the process tree, "
        "steadier than wall time on a shared machine:",
        "",
        "| competitor | between (events) | wall µs per event | CPU µs per event |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {name} | {' and '.join(fmt_n(raw_lines(r, h)) for h in pairs.get(name, [])) or '-'} | "
        f"{fmt_us(per_event_us(r, name))} | {fmt_us(per_event_us(r, name, 'per_event_cpu_s'))} |"
        for name in r["per_event_s"]
    ]
    for s in r["competitors"]["project"].values():
        if "skipped" in s:
            continue
        steps = s["steps_s"]
        out += [
            "",
            f"Project steps at {fmt_n(s['counts']['raw_lines'])} events (Dagster's STEP_SUCCESS durations; "
            f"the rest of the {fmt_s(s['wall_s'])} is process start, imports and run bookkeeping):",
            "",
            "| step | seconds |",
            "|---|---|",
        ]
        out += [f"| {k} | {v:.2f} |" for k, v in steps.items()]
        out.append(f"| all steps | {sum(steps.values()):.2f} |")
    out.append("")
    for name in ("bare", "pandas"):
        measured = [s for s in r["competitors"][name].values() if "skipped" not in s]
        out.append(
            f"{name} script's own time after its imports: "
            + ", ".join(f"{fmt_s(s['compute_s'])} at {fmt_n(s['counts']['raw_lines'])} events" for s in measured)
            + "."
        )
    out.append("")
    return out


def section_big_day(r: dict) -> list[str]:
    out = [
        "## 9. Per-event cost on a big day (issue 14)",
        "",
        run_line(r),
        "",
        f"One day ({r['day']}) of {' and '.join(fmt_n(h) for h in r['hubs'])} hubs, each run on a fresh instance "
        "and output folder:",
        "",
        f"- project: `{r['commands']['project']}`",
        f"- plain: `{r['commands']['plain']}` "
        "(polars only, none of the project's functions; less than the contract: no raw table, no quarantine, no "
        "checks)",
        "",
        "| competitor | events (raw lines) | wall (min–max) | CPU | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for name, by_size in r["competitors"].items():
        for hubs, s in by_size.items():
            out.append(
                f"| {name} | {fmt_n(r['lines'][hubs])} | {fmt_s(s['wall_s'])} ({fmt_s(s['wall_min_s'])}–"
                f"{fmt_s(s['wall_max_s'])}) | {fmt_s(s['cpu_s'])} | {s['peak_rss_mib']:,.0f} MiB |"
            )
    pe = r["per_event"]
    out += [
        "",
        f"Per event, between the two sizes: project {pe['project']['wall_us']:.2f} µs wall "
        f"({pe['project']['cpu_us']:.2f} µs CPU), plain {pe['plain']['wall_us']:.2f} µs "
        f"({pe['plain']['cpu_us']:.2f} µs CPU): {r['ratio']:.2f} ×.",
        "",
    ]
    largest = list(r["competitors"]["project"])[-1]
    steps = r["competitors"]["project"][largest].get("steps_s", {})
    if steps:
        out += [
            f"Project steps at {fmt_n(r['lines'][largest])} events (seconds): "
            + ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
            + ".",
            "",
        ]
    return out


def section_fixed(r: dict) -> list[str]:
    out = [
        "## 2. Fixed cost per run",
        "",
        run_line(r),
        "",
        f"A partition with {r['events']} events (one hub), each run on a fresh instance (storage created "
        "beforehand, untimed) with the project's dagster.yaml:",
        "",
        f"- project: `{r['commands']['project']}`",
        f"- trivial: `{r['commands']['trivial']}`",
        "",
        "| run | wall (min–max) | CPU | peak RSS | steps | time in steps |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in r["competitors"].items():
        out.append(
            f"| {name} | {fmt_s(s['wall_s'])} ({fmt_s(s['wall_min_s'])}–{fmt_s(s['wall_max_s'])}) | "
            f"{fmt_s(s['cpu_s'])} | {s['peak_rss_mib']:,.0f} MiB | {len(s['steps_s'])} | "
            f"{fmt_s(sum(s['steps_s'].values()))} |"
        )
    return out + [""]


def section_backfill(r: dict, fixed: dict | None) -> list[str]:
    c = r["competitors"]
    out = [
        "## 4. Backfill",
        "",
        run_line(r),
        "",
        f"{r['days']} days ({r['first']}..{r['last']}) × {r['hubs']} hubs, {fmt_n(r['lines'])} raw lines in all:",
        "",
        f"- single run: `{r['commands']['single run']}`",
        f"- one run per day: `{r['commands']['one run per day']}`",
        f"- bare: `{r['commands']['bare']}`",
        "",
        "| how | wall (min–max) | events/s | peak RSS |",
        "|---|---|---|---|",
    ]
    for name, s in c.items():
        out.append(
            f"| {name} | {fmt_s(s['wall_s'])} ({fmt_s(s['wall_min_s'])}–{fmt_s(s['wall_max_s'])}) | "
            f"{fmt_n(r['lines'] / s['wall_s'])} | {s['peak_rss_mib']:,.0f} MiB |"
        )
    per_day = c["bare"]["per_day_s"]
    out += [
        "",
        f"Bare per-day time (median day, after imports): {fmt_s(per_day)}; {r['days']} × that = "
        f"{fmt_s(r['days'] * per_day)}. One run per day: {fmt_s(c['one run per day']['median_run_s'])} per run "
        "(median).",
    ]
    if usable(fixed):
        out.append(
            f"Budget of the target: {r['days']} × bare per-day + one fixed cost "
            f"({fmt_s(fixed['competitors']['project']['wall_s'])}, section 2) = "
            f"{fmt_s(r['days'] * per_day + fixed['competitors']['project']['wall_s'])}."
        )
    out += [
        "",
        "Single-run backfill steps (seconds): "
        + ", ".join(f"{k} {v:.1f}" for k, v in c["single run"]["steps_s"].items())
        + ".",
        f"Row counts of the three {'agree' if r['counts_agree'] else '**DISAGREE**'}.",
        "",
    ]
    return out


def section_load(r: dict) -> list[str]:
    out = [
        "## 5. Load time",
        "",
        run_line(r),
        "",
        "Each a fresh interpreter:",
        "",
        "| command | wall (min–max) | CPU | peak RSS |",
        "|---|---|---|---|",
    ]
    for name, s in r["competitors"].items():
        out.append(
            f"| `{r['commands'][name]}` | {fmt_s(s['wall_s'])} ({fmt_s(s['wall_min_s'])}–"
            f"{fmt_s(s['wall_max_s'])}) | {fmt_s(s['cpu_s'])} | {s['peak_rss_mib']:,.0f} MiB |"
        )
    return out + [""]


def section_model(r: dict) -> list[str]:
    out = [
        "## 6. Model",
        "",
        run_line(r),
        "",
        f"Features of {r['hubs']} simulated hubs × {r['days']} days ({fmt_n(r['feature_rows'])} rows, built in "
        f"{fmt_s(r['features_build_s'])}); LightGBM with the asset's defaults (300 trees, 2 threads); holdout MAE "
        f"of the largest model {r['holdout_mae']:.1f} Wh on {fmt_n(r['holdout_rows'])} rows.",
        "",
        "| training rows | training time | rows/s |",
        "|---|---|---|",
    ]
    out += [f"| {fmt_n(t['rows'])} | {fmt_s(t['wall_s'])} | {fmt_n(t['rows'] / t['wall_s'])} |" for t in r["training"]]
    if "backtest" in r:
        b, full = r["backtest"], r["training"][-1]
        out += [
            "",
            f"The backtest usage_model runs before its final fit ({b['folds']} folds of 7 days, each fitted on "
            f"the days before it): {fmt_s(b['wall_s'])}, {b['wall_s'] / full['wall_s']:.1f} × one fit on all "
            f"{fmt_n(full['rows'])} training rows.",
        ]
    s = r["scoring"]
    out += [
        "",
        f"Batch scoring (`training.predict`) of {fmt_n(s['rows'])} rows: {fmt_s(s['wall_s'])}, "
        f"{fmt_n(s['rows_per_s'])} rows/s.",
        "",
        f"Serving: `{r['serving']['command']}`, 500 sequential single-row `POST /invocations` on one keep-alive "
        "loopback connection after 20 warm-up requests, a fresh server per repeat:",
        "",
        "| repeat | p50 | p99 | mean | server ready after |",
        "|---|---|---|---|---|",
    ]
    for i, run in enumerate(r["serving"]["runs"], start=1):
        out.append(
            f"| {i} | {run['p50_ms']:.2f} ms | {run['p99_ms']:.2f} ms | {run['mean_ms']:.2f} ms | "
            f"{fmt_s(run['ready_s'])} |"
        )
    out += [
        "",
        f"Median p50 {r['serving']['p50_ms']:.2f} ms, p99 {r['serving']['p99_ms']:.2f} ms; the same row "
        f"scored in-process takes {r['serving']['in_process_p50_ms']:.2f} ms (p50).",
        "",
    ]
    return out


def section_freshness(r: dict) -> list[str]:
    out = [
        "## 7. Freshness",
        "",
        run_line(r),
        "",
        f"`{r['command']}` on a fresh instance with {r['hubs']} hubs × {r['history_days']} days of history "
        f"({r['events_per_hub']} events per hub and day) ingested and a first model trained beforehand. Each "
        "repeat moves the next day's uploads into the landing zone at once and waits for a new usage_model "
        "materialization:",
        "",
        "| day landed | seconds to a new usage_model | runs launched |",
        "|---|---|---|",
    ]
    for m in r["measurements"]:
        out.append(
            f"| {m['day']} | {fmt_s(m['seconds']) if m['seconds'] is not None else 'none (timed out)'} | "
            f"{len(m['runs'])} |"
        )
    if r["measurements"]:
        out += [
            "",
            "The runs after the first landing (seconds after it lands):",
            "",
            "| run | assets | partition | launched by | created | ended | status |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in r["measurements"][0]["runs"]:
            out.append(
                f"| {run['run']} | {run['assets']} | {run['partition']} | {run['trigger']} | "
                f"{run['created_after_s']} | {run['ended_after_s']} | {run['status']} |"
            )
    return out + [""]


def section_history(r: dict) -> list[str]:
    c = r["competitors"]
    out = [
        "## 8. Long history (issue 14)",
        "",
        run_line(r),
        "",
        f"One household, {fmt_n(r['days'])} daily partitions ({r['first']}..{r['last']}), {r['events_per_hub']} "
        f"events a day in the simulator: {fmt_n(r['lines'])} raw lines in readable files, {fmt_n(r['events'])} "
        "valid events; each competitor on a fresh instance / warehouse / output folder, interleaved"
        + (
            " (one run each at full scale: the 1,401-day runs take minutes; the slopes below have every repeat)"
            if r.get("scale") == "full"
            else ""
        )
        + ":",
        "",
        f"- project: `{r['commands']['project']}` (one run, every check of these assets)",
        f"- bare: `{r['commands']['bare']}`: the project's own functions and checks, day by day, no Dagster",
        f"- plain: `{r['commands']['plain']}`: polars only (`read_ndjson` per file, filter bad rows, dedup on "
        "(hub_id, event_id), SHA-256 of user ids, sums per device and day); less than the contract (no raw "
        "table, no quarantine, no checks, no features)",
        "",
        "| competitor | wall (min–max) | per partition | CPU | peak RSS | raw lines / device_usage / quarantine "
        "/ features / device-days |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in c.items():
        k = s["counts"]
        quarantine = k.get("quarantine", k.get("dropped"))
        out.append(
            f"| {name} | {fmt_s(s['wall_s'])} ({fmt_s(s['wall_min_s'])}–{fmt_s(s['wall_max_s'])}) | "
            f"{s['wall_s'] / r['days'] * 1000:.0f} ms | {fmt_s(s['cpu_s'])} | {s['peak_rss_mib']:,.0f} MiB | "
            f"{fmt_n(k['raw_lines'])} / {fmt_n(k['device_usage'])} / {fmt_n(quarantine)} / "
            f"{fmt_n(k['features']) if 'features' in k else '-'} / {fmt_n(k['device_days'])} |"
        )
    ratios = r["ratios"]
    out += [
        "",
        "Project / bare: " + f"{ratios['bare']['wall']:.2f} × wall, {ratios['bare']['cpu']:.2f} × CPU. "
        "Project / plain: " + f"{ratios['plain']['wall']:.1f} × wall, {ratios['plain']['cpu']:.1f} × CPU.",
        "",
    ]
    plain, project = c["plain"]["counts"], c["project"]["counts"]
    out.append(
        f"Row counts of project and bare {'agree' if r['counts_agree'] else '**DISAGREE**'} (raw lines, "
        "device_usage, quarantine, features, device-days); bare checks "
        f"{'all passed' if c['bare'].get('checks_passed') else '**failed on some day**'}. "
        f"The plain script (reported, not required to agree): {fmt_n(plain['raw_lines'])} raw lines against "
        f"{fmt_n(project['raw_lines'])} (it skips the {plain.get('files_skipped', 0)} truncated files whole; "
        f"the project keeps their readable remains as lines), {fmt_n(plain['device_usage'])} clean events "
        f"against {fmt_n(project['device_usage'])}, {fmt_n(plain['device_days'])} device-days against "
        f"{fmt_n(project['device_days'])}."
    )
    out += [
        "",
        "Project steps (seconds, Dagster's STEP_SUCCESS durations): "
        + ", ".join(f"{k} {v:.1f}" for k, v in c["project"]["steps_s"].items())
        + f"; all steps {sum(c['project']['steps_s'].values()):.1f} of the run's {fmt_s(c['project']['wall_s'])}.",
        f"Bare script: {fmt_s(c['bare']['compute_s'])} after its imports, {fmt_s(c['bare']['per_day_s'])} per day "
        f"(median). Plain script: {fmt_s(c['plain']['compute_s'])} after its imports (read "
        f"{fmt_s(c['plain']['read_s'])}, process {fmt_s(c['plain']['process_s'])}, write "
        f"{fmt_s(c['plain']['write_s'])}).",
        "",
    ]
    if r["days"] != r["full_days"]:
        expected = history_expected_s(r)
        if expected is not None:
            out += [
                f"At {fmt_n(r['full_days'])} partitions the project run would take about {fmt_s(expected)}: "
                f"{fmt_s(c['project']['wall_s'])} + the run's per-partition slope below × "
                f"{fmt_n(r['full_days'] - r['days'])} more partitions (their events not counted).",
                "",
            ]
    p = r["per_partition"]
    sizes = p["partitions"]
    by_size = p["by_size"]
    out += [
        "### Per-partition overhead in one single-run backfill",
        "",
        f"The same simulated household with {fmt_n(p['total_events_per_hub'])} events in all, spread over "
        + ", ".join(str(n) for n in sizes)
        + " daily partitions ("
        + ", ".join(f"{fmt_n(by_size[str(n)]['lines'])} lines" for n in sizes)
        + "), one project CLI run each (the command above over each range)"
        + (" and the bare script for reference" if "bare" in by_size[str(sizes[0])] else "")
        + "; "
        "slope = least squares of seconds against partitions, in ms per partition; the intercept is what the "
        "line gives at 0 partitions (imports, run start, the events' own cost):",
        "",
        "| step | " + " | ".join(f"{n} partitions" for n in sizes) + " | slope | intercept | ≤ "
        f"{p['target_ms']:.0f} ms |",
        "|---|" + "---|" * len(sizes) + "---|---|---|",
    ]
    for name, s in p["slopes"].items():
        verdict = ("yes" if s["slope_ms"] <= p["target_ms"] else "**no**") if s["is_step"] else ""
        label = name if s["is_step"] else f"_{name}_"
        out.append(
            f"| {label} | "
            + " | ".join(f"{v:.2f} s" for v in s["seconds"])
            + f" | {s['slope_ms']:.1f} ms | {fmt_s(s['intercept_s'])} | {verdict} |"
        )
    out += [
        "",
        "Peak RSS of the project runs: "
        + ", ".join(f"{by_size[str(n)]['project']['peak_rss_mib']:,.0f} MiB at {n}" for n in sizes)
        + " partitions.",
        "",
    ]
    return out


def _lat(m: dict) -> str:
    return "-" if m.get("p99_ms") is None else f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f} / {m['max_ms']:.1f} ms"


def section_service(r: dict) -> list[str]:
    versions = ", ".join(f"{v} ({t} trees)" for v, t in r["versions"].items())
    out = [
        "## 10. Prediction service",
        "",
        run_line(r),
        "",
        f"`{r['command']}` (its own process group; ready, `GET /health` 200, after {fmt_s(r['ready_s'])}) on a "
        f"scratch data directory: usage_features of {r['hubs']} simulated hubs × {r['days']} days "
        f"({fmt_n(r['feature_rows'])} rows; {fmt_n(r['devices'])} devices on {r['latest_day']}, the latest day) in "
        f"its DuckDB warehouse, versions {versions} of the model in its MLflow store, the champion alias polled "
        f"every {r['poll_s']:.0f} s, every answer stored (JSON lines, fdatasync) before it is sent. The client runs "
        "on the same machine: an open-loop load generator (`bench/service.py`) of "
        f"{r['threads']} threads, each with its own keep-alive connection; request *i* is due at start + *i* / "
        f"{r['rate_rps']:.0f} s and sent then, or as soon as a thread is free, so a slow answer does not lower the "
        "offered rate. Latency **from schedule** counts from the due time (what a steady stream of clients "
        "sees), **from send** from the actual send; each request is a random device of the latest day "
        "(`POST /predict` with device_id and hub_id) with its own `X-Request-ID`.",
        "",
        f"Single requests, {fmt_n(r['requests'])} per repeat at {r['rate_rps']:.0f} requests/s:",
        "",
        "| repeat | answered / sent | errors | answered per s | from schedule p50 / p99 / max | "
        "from send p50 / p99 / max | send lag p99 | server / client CPU per request | load average before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(r["single"]["runs"], start=1):
        cpu = f"{s['server_cpu_ms']:.1f} / {s['client_cpu_ms']:.1f} ms" if "server_cpu_ms" in s else "-"
        out.append(
            f"| {i} | {fmt_n(s['answered'])} / {fmt_n(s['requests'])} | {s['errors']} | "
            f"{s['throughput_rps']:.1f} | {_lat(s['from_schedule'])} | {_lat(s['from_send'])} | "
            f"{s['send_lag']['p99_ms']:.1f} ms | {cpu} | {s.get('load_before', '-')} |"
        )
    single = r["single"]
    out += [
        "",
        f"Median of the repeats: from schedule p50 {single['from_schedule_p50_ms']:.2f} ms, p99 "
        f"{single['from_schedule_p99_ms']:.2f} ms, max {single['from_schedule_max_ms']:.1f} ms; from send p50 "
        f"{single['from_send_p50_ms']:.2f} ms, p99 {single['from_send_p99_ms']:.2f} ms. *Send lag*: how late the "
        "generator sent (all its threads waiting for answers, or the client not scheduled); *CPU per request*: "
        "user + system time of the server process (all its threads) and of the client over the repeat, divided by "
        "the answered requests.",
        "",
        f"Batches: `POST /predict/batch` of {fmt_n(r['batch']['rows'])} random devices, sequential on one "
        "connection after one uncounted:",
        "",
        "| repeat | batches | median | max | errors | server CPU per batch |",
        "|---|---|---|---|---|---|",
    ]
    for i, b in enumerate(r["batch"]["runs"], start=1):
        cpu = f"{b['server_cpu_ms']:.0f} ms" if "server_cpu_ms" in b else "-"
        out.append(f"| {i} | {b['batches']} | {b['median_ms']:.1f} ms | {b['max_ms']:.1f} ms | {b['errors']} | {cpu} |")
    out += [
        "",
        "A champion swap under load: the same load (open-ended), the alias moved to the other version after "
        "3 s, the load kept on until an answer carried the new version and 5 s more. *Old after new*: answers of "
        "the old version after the first of the new one on the same connection, or to any request sent after "
        "that first answer arrived. *Stored*: the answered request ids found in the store (read back with "
        "`online_store(...).read_day`) with the version and row count the answer named:",
        "",
        "| repeat | version | answered / sent | non-200 | first new answer after the alias move | old / new "
        "answers | old after new | from schedule p50 / p99 / max | stored | load average before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, w in enumerate(r["swap"]["runs"], start=1):
        st = w["store"]
        out.append(
            f"| {i} | {w['old_version']} → {w['new_version']} | {fmt_n(w['answered'])} / "
            f"{fmt_n(w['requests'])} | {w['non_200']} | {fmt_s(w['swap_s'])} | {fmt_n(w['old_answers'])} / "
            f"{fmt_n(w['new_answers'])} | {w['per_connection_old_after_new']} / {w['old_sent_after_first_new']}"
            f" | {_lat(w['from_schedule'])} | {fmt_n(st['answered_ids'] - st['missing'])} of "
            f"{fmt_n(st['answered_ids'])} | {w.get('load_before', '-')} |"
        )
    store = r["store"]
    out += [
        "",
        f"The store after the run: {fmt_n(store['stored_ids'])} request ids ({fmt_n(store['stored_rows'])} "
        f"rows) for {fmt_n(store['answered_ids'])} answered requests ({fmt_n(store['answered_rows'])} rows, "
        "warm-up included): "
        f"{store['missing']} answered but missing, {store['version_or_rows_mismatch']} with another version or "
        f"row count, {store['stored_not_answered']} stored but not answered, {store['torn_lines']} torn lines.",
        "",
    ]
    parts = r.get("pieces")
    if parts:
        labels = list(parts["pieces_ms"])
        names = list(parts["pieces_ms"][labels[0]])
        ms = lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}"  # noqa: E731
        out += [
            "Where a request's time goes: each piece the endpoint runs, timed in the bench process on the same "
            "model, features and disk after the server stopped (median ms of interleaved rounds; no HTTP, no "
            f"thread pool; load average then {'/'.join(f'{x:.1f}' for x in parts.get('load_average', []))}):",
            "",
            "| piece | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for n in names:
            label = f"_{n}_" if n.startswith("forecast:") else n
            out.append(f"| {label} | " + " | ".join(ms(parts["pieces_ms"][lb][n]) for lb in labels) + " |")
        for n in parts.get("reference_ms", {}).get(labels[0], {}):
            out.append(
                f"| _for reference: {n}_ | " + " | ".join(ms(parts["reference_ms"][lb][n]) for lb in labels) + " |"
            )
        total = [sum(v for k, v in parts["pieces_ms"][lb].items() if not k.startswith("forecast:")) for lb in labels]
        out.append("| sum (the whole forecast, not its parts) | " + " | ".join(ms(t) for t in total) + " |")
        out += [
            "",
            f"Served over HTTP the same request took {single['from_send_p50_ms']:.2f} ms (p50 from send) and "
            f"a batch {r['batch']['median_ms']:.0f} ms (median); a bare write + fdatasync of 600 bytes on this "
            f"disk takes {ms(parts['fdatasync_600_bytes_ms'])} ms.",
            "",
        ]
    return out


def render(results: dict[str, dict]) -> str:
    machine = machine_facts()
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    scales = sorted({r.get("scale", "?") for r in results.values()})
    out = [
        "# Benchmarks",
        "",
        "Measured, not asserted: tests never check timings. Generated by `make bench` "
        "(`.venv/bin/python -m bench`; one family: `python -m bench pipeline`; `BENCH_SCALE=quick` for a smoke "
        "run at about 1/10 of the sizes with 1 repeat) from `bench/`; do not edit by hand: hand-written findings "
        "go to `bench/findings.md`.",
        "",
        f"Machine: {machine['system']}, {machine['cpu']}, {machine['usable_cores']} usable cores, "
        f"{machine['memory_gib']} GiB; Python {machine['python']}; {versions}. Rendered "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.",
        "",
        "Method: every figure is the median of the repeats taken in one session, the competitors interleaved "
        "(A B C A B C …); wall time of the whole process, peak RSS = `ru_maxrss` from `wait4` (what "
        "`/usr/bin/time -v` reports: the largest process of the tree), CPU = user + system. Inputs come from "
        "the simulator (`smart_home_tools.simulate`, seed 6, 2 % faults of every kind), generated once per "
        "size. Each run has its own DAGSTER_HOME (the project's dagster.yaml), data directory and MLflow store.",
        "",
    ]
    if scales != ["full"]:
        out += [
            f"> **Scale: {', '.join(scales)}.** Not the issue's sizes: a smoke run on a shared machine. "
            "Run `make bench` on a quiet machine for the real figures.",
            "",
        ]
    out += [
        "## Targets (issue 6; long history: issue 14)",
        "",
        "| what | target | measured | verdict | note |",
        "|---|---|---|---|---|",
    ]
    out += [t.row() for t in targets(results)]
    out.append("")
    sections = [
        ("pipeline", section_pipeline),
        ("fixed_cost", section_fixed),
        ("backfill", lambda r: section_backfill(r, results.get("fixed_cost"))),
        ("load_time", section_load),
        ("model", section_model),
        ("freshness", section_freshness),
        ("history", section_history),
        ("big_day", section_big_day),
        ("service", section_service),
    ]
    for name, render_section in sections:
        result = results.get(name)
        if result is None:
            out += [f"## {name}", "", "Not run yet.", ""]
        elif "error" in result:
            out += [f"## {name}", "", run_line(result), "", "Failed:", "", "```", result["error"].strip(), "```", ""]
        else:
            out += render_section(result)
    if FINDINGS.exists():
        out += [FINDINGS.read_text().strip(), ""]
    return "\n".join(out)


# Which section and which target rows each family renders: a family with no result in bench/results/ keeps its
# section and rows from the current docs/benchmarks.md (each dated by its own run line), so re-running one family
# on a fresh checkout does not wipe the others' figures.
FAMILY_HEADINGS = {
    "pipeline": "## 1, 3.",
    "fixed_cost": "## 2.",
    "backfill": "## 4.",
    "load_time": "## 5.",
    "model": "## 6.",
    "freshness": "## 7.",
    "history": "## 8.",
    "big_day": "## 9.",
    "service": "## 10.",
}
FAMILY_ROWS = {
    "big_day": ("per-event cost on a big day",),  # before "per-event cost" of the pipeline family
    "pipeline": ("per-event cost", "events in one day's partition", "10M events in a day", "growth of the work"),
    "fixed_cost": ("fixed cost per run",),
    "backfill": ("backfill as one run",),
    "load_time": ("code-location load",),
    "freshness": ("upload to retrained model",),
    "model": ("one prediction over HTTP",),
    "history": ("long history", "per-partition overhead"),
    "service": ("prediction service:",),
}


def _row_family(row: str) -> str | None:
    what = row.split("|")[1] if row.count("|") > 2 else ""
    return next((f for f, names in FAMILY_ROWS.items() if any(n in what for n in names)), None)


def _blocks(text: str) -> list[str]:
    """``text`` cut before every level-2 heading (the first block is what comes before the first one)."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("## ") and current:
            blocks.append("\n".join(current))
            current = []
        current.append(line)
    return blocks + ["\n".join(current)]


def keep_unmeasured(new: str, old: str, missing: set[str]) -> str:
    """``new`` with the sections and target rows of the ``missing`` families taken from ``old``."""
    old_blocks = _blocks(old)
    old_rows = [
        line
        for block in old_blocks
        if block.startswith("## Targets")
        for line in block.splitlines()
        if line.startswith("| ") and _row_family(line)
    ]
    out = []
    for block in _blocks(new):
        if block.startswith("## Targets"):
            lines, placed = [], set()
            for line in block.split("\n"):  # split, not splitlines: the block's closing blank line stays
                family = _row_family(line) if line.startswith("| ") else None
                earlier = [r for r in old_rows if _row_family(r) == family] if family in missing else []
                if earlier:  # a family never measured keeps all its new "not measured" rows
                    if family not in placed:
                        lines += earlier
                        placed.add(family)
                    continue
                lines.append(line)
            block = "\n".join(lines)
        else:
            name = next((f for f in missing if block.startswith(f"## {f}\n") and "Not run yet." in block), None)
            earlier = [b for b in old_blocks if name and b.startswith(FAMILY_HEADINGS[name])]
            if earlier:
                block = earlier[0].rstrip("\n") + "\n"
        out.append(block)
    return "\n".join(out)


def write_report(path: Path = DOC_PATH) -> Path:
    results = load_results()
    text = render(results)
    missing = set(FAMILY_HEADINGS) - set(results)
    if missing and path.exists():
        text = keep_unmeasured(text, path.read_text(), missing)
    path.write_text(text)
    return path
