"""The Dagster warnings this project accepts knowingly, silenced in one place.

Every process that loads the code location (the CLI, ``dagster dev``, the daemon, run workers) printed them at
each start, hiding what matters. Each entry says why the flagged API is used; a warning not listed here is
still shown. Matched by message (no Dagster import: tools that never load Dagster stay fast).
"""

import re
import warnings

ACCEPTED: tuple[tuple[str, str], ...] = (
    (
        "Parameter `backfill_policy` of function `asset` is currently in beta",
        "single-run backfills make a CLI date range one run (docs/data-pipeline.md)",
    ),
    (
        "Parameter `allow_nonexistent_upstream_partitions` of initializer `TimeWindowPartitionMapping.__init__`",
        "usage_features' 28-day window reaches before the first partition",
    ),
    (
        "Parameter `use_user_code_server` of initializer `AutomationConditionSensorDefinition.__init__`",
        "the automation sensor evaluates the project's own conditions (automation.py) in the code server",
    ),
    (
        "Specifying a partitions_def on an AssetCheckSpec",
        "checks report one result per partition (asset_checks/, tests/assets/test_checks.py)",
    ),
    (
        "Function `build_sensor_for_freshness_checks` is superseded",
        "it evaluates the per-day freshness check, which FreshnessPolicy (judged per asset, not per partition) "
        "cannot express (asset_checks/freshness_checks.py)",
    ),
)

# Raised by the dagster CLI itself, before it loads any project code: silenced in the subprocesses the
# ``smart-home`` command starts (PYTHONWARNINGS), not in a user's own shell.
ACCEPTED_BY_THE_CLI: tuple[tuple[str, str], ...] = (
    (
        "Function `asset_materialize_command` is superseded",
        "`dagster asset materialize` is what runs a date range as one backfill run with the embedded profile",
    ),
)


def python_warnings_option(current: str = "") -> str:
    """A PYTHONWARNINGS value that ignores every accepted warning (``current`` kept after it)."""
    entries = [f"ignore:{message}" for message, _ in (*ACCEPTED_BY_THE_CLI, *ACCEPTED)]
    return ",".join([*entries, *([current] if current else [])])


def silence_accepted_warnings() -> None:
    for message, _why in ACCEPTED:
        warnings.filterwarnings("ignore", message=re.escape(message), category=Warning)
