"""Load time of the code location vs ``import dagster``, each a fresh interpreter, interleaved:

* ``python -c "import dagster"``;
* ``python -c "import smart_home_assets.definitions"``: what the code server, every run and every step pay;
* ``dagster definitions validate -m smart_home_assets.definitions`` and the same for the trivial project
  (bench/trivial), for scale: the CLI's own start-up is in both.
"""

from __future__ import annotations

import shlex
import sys

from bench.fixed_cost import TRIVIAL_MODULE
from bench.harness import (
    DEFINITIONS_MODULE,
    RESULTS_DIR,
    Scale,
    dagster_cli,
    interleaved,
    isolated_env,
    remove,
    run_measured,
    scratch_dir,
    summarize,
)

COMMANDS = {
    "import dagster": [sys.executable, "-c", "import dagster"],
    "import definitions": [sys.executable, "-c", f"import {DEFINITIONS_MODULE}"],
    "validate project": dagster_cli("definitions", "validate", "-m", DEFINITIONS_MODULE),
    "validate trivial": dagster_cli("definitions", "validate", "-m", TRIVIAL_MODULE),
}


def run(scale: Scale) -> dict:
    root = scratch_dir("load")
    try:
        env = isolated_env(root)
        repeats = 5 if scale.name == "full" else max(scale.repeats, 2)
        slug = {name: name.replace(" ", "-") for name in COMMANDS}
        competitors = {
            name: (
                lambda i, c=command, n=name: run_measured(c, env, log=RESULTS_DIR / "logs" / f"load-{slug[n]}-{i}.log")
            )
            for name, command in COMMANDS.items()
        }
        runs = interleaved(competitors, repeats)
    finally:
        remove(root)
    commands = {
        name: shlex.join(["python" if c[0] == sys.executable else "dagster", *c[1:]]) for name, c in COMMANDS.items()
    }
    return {"competitors": {name: summarize(r) for name, r in runs.items()}, "commands": commands}
