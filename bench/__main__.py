"""`make bench`: run the benchmark families in bench/ and render docs/benchmarks.md (timings are measured here,
never asserted in tests).

    python -m bench                      # every family, then the report
    python -m bench pipeline backfill    # only these families; the report reuses earlier results of the others
    python -m bench report               # only re-render docs/benchmarks.md from bench/results/*.json
    BENCH_SCALE=quick python -m bench    # about 1/10 of the sizes, 1 repeat: a smoke run

Results are kept in bench/results/<family>.json (git-ignored), logs in bench/results/logs/, simulated inputs
in bench/results/inputs/ (generated once per size, reused).
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

from bench import harness, report

# In the order they run: the cheap ones first, the long ones last.
FAMILIES = ("load_time", "fixed_cost", "pipeline", "backfill", "model", "service", "freshness", "history", "big_day")


def run_family(name: str, scale: harness.Scale) -> bool:
    module = importlib.import_module(f"bench.{name}")
    print(f"\n== {name} ({scale.name}, {scale.repeats} repeat(s)) ==", flush=True)
    started, load = time.monotonic(), harness.load_average()
    try:
        result = module.run(scale)
    except Exception:  # one family failing must not lose the others' results
        traceback.print_exc()
        harness.save_result(name, {"error": traceback.format_exc(limit=3)}, scale, started, load)
        return False
    path = harness.save_result(name, result, scale, started, load)
    print(f"== {name} done in {time.monotonic() - started:.0f} s -> {path}", flush=True)
    return True


def main(argv: list[str]) -> int:
    wanted = [a for a in argv if a != "report"] or ([] if "report" in argv else list(FAMILIES))
    unknown = [w for w in wanted if w not in FAMILIES]
    if unknown:
        print(f"unknown benchmark family {unknown}; choose from {', '.join(FAMILIES)} or 'report'", file=sys.stderr)
        return 2
    scale = harness.current_scale()
    ok = all([run_family(name, scale) for name in wanted])
    path = report.write_report()
    print(f"\nwrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
