"""The asset graph against a recorded snapshot (asset_specs.snapshot.json, next to this file): a change to an asset or
check spec -- a dependency, a partitions definition, an owner, a kind, a tag, an automation condition, a check's
blocking flag -- fails here, named key by key, until the snapshot is regenerated with

    SMART_HOME_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/assets/test_spec_snapshot.py

and the diff of the JSON file is reviewed with the change. Without that variable the test never writes.

What is recorded per asset: its upstream keys, the explicit partition mappings of those deps, its partitions
definition (type; for a time-window one its start, timezone, cron and key format, never its end: that moves with the
clock or SMART_HOME_PARTITIONS_END), group, owners, kinds, tags (the ``dagster/kind/*`` tags left out: they are the
kinds), execution type, automation condition label, and the first paragraph of its description; per check: its asset,
name, blocking flag, description, additional deps and automation condition. Not recorded: metadata (the column
schemas, the freshness checks' params), the executor, resources, jobs and sensors.

The specs are read from ``smart_home_assets.definitions.defs`` in a subprocess started with the project's
``SMART_HOME_*`` variables removed (the last partition pinned as tests/__init__.py pins it): some are read when the
definitions are built (SMART_HOME_PARTITIONS_START, the freshness deadline, timezone and retrain bound), so a value
exported in a developer's shell must not change what is compared.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import PARTITIONS_END
from tests.session_guards import SNAPSHOT_UPDATE_VAR as UPDATE_VAR
from tests.session_guards import snapshot_update_requested

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("asset_specs.snapshot.json")
UPDATE_COMMAND = f"{UPDATE_VAR}=1 .venv/bin/pytest tests/assets/test_spec_snapshot.py"
KIND_TAG_PREFIX = "dagster/kind/"
# What must never reach the snapshot: memory addresses, this checkout's or a temporary folder's absolute paths.
UNSTABLE = re.compile(r"0x[0-9a-fA-F]{6,}|" + re.escape(str(PROJECT_ROOT)) + r"|/tmp/|/var/folders/")


# --- recording ---------------------------------------------------------------------------------------------------


def _partitions(partitions_def) -> dict[str, Any] | None:
    import dagster as dg

    if partitions_def is None:
        return None
    record: dict[str, Any] = {"type": type(partitions_def).__name__}
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        # Not end / end_offset: with SMART_HOME_PARTITIONS_END the offset is counted from today's date.
        record.update(
            start=partitions_def.start.strftime(partitions_def.fmt),
            timezone=partitions_def.timezone,
            cron_schedule=partitions_def.cron_schedule,
            fmt=partitions_def.fmt,
        )
    elif isinstance(partitions_def, dg.StaticPartitionsDefinition):
        record["keys"] = list(partitions_def.get_partition_keys())
    elif isinstance(partitions_def, dg.MultiPartitionsDefinition):
        record["dimensions"] = {d.name: _partitions(d.partitions_def) for d in partitions_def.partitions_defs}
    elif isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        record["name"] = partitions_def.name
    return record


def _condition(condition) -> str | None:
    if condition is None:
        return None
    return condition.get_label() or str(condition)


def _summary(description: str | None) -> str | None:
    """The first paragraph, its lines joined: a docstring re-wrapped at another width records the same."""
    if not description or not description.strip():
        return None
    return " ".join(description.strip().split("\n\n")[0].split())


def _text(description: str | None) -> str | None:
    return " ".join(description.split()) if description and description.strip() else None


def record_specs(defs) -> dict[str, Any]:
    """What the snapshot holds for ``defs`` (a ``dg.Definitions``): plain, sorted JSON values only."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "partition_mappings": {
                parent.to_user_string(): repr(mapping)
                for parent, mapping in node.partition_mappings.items()
                if mapping is not None
            },
            "partitions": _partitions(node.partitions_def),
            "group": node.group_name,
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "tags": {name: value for name, value in node.tags.items() if not name.startswith(KIND_TAG_PREFIX)},
            "execution_type": node.execution_type.value,
            "automation_condition": _condition(node.automation_condition),
            "description": _summary(node.description),
            "checks": sorted(check.name for check in node.check_keys),
        }
    checks = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks[check_key.to_user_string()] = {
            "asset": check_key.asset_key.to_user_string(),
            "name": check_key.name,
            "blocking": spec.blocking,
            "description": _text(spec.description),
            "additional_deps": sorted(dep.asset_key.to_user_string() for dep in spec.additional_deps),
            "automation_condition": _condition(spec.automation_condition),
        }
    # Through JSON, so that the live record compares as the file will read (tuples as lists, keys as strings).
    return json.loads(dumps({"assets": assets, "checks": checks}))


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def unstable_values(record: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Strings of ``record`` that would differ between machines or runs (addresses, absolute paths)."""
    if isinstance(record, dict):
        return [problem for name, value in record.items() for problem in unstable_values(value, (*path, name))]
    if isinstance(record, list):
        return [problem for i, value in enumerate(record) for problem in unstable_values(value, (*path, str(i)))]
    if isinstance(record, str) and UNSTABLE.search(record):
        return [f"{' > '.join(path)}: {record!r}"]
    return []


def live_specs(tmp_path: Path) -> dict[str, Any]:
    """record_specs of the code location, built in a subprocess whose environment has none of the project's
    variables but the pinned last partition (see the module's docstring)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SMART_HOME_")}
    env["SMART_HOME_PARTITIONS_END"] = PARTITIONS_END
    out = tmp_path / "live_specs.json"
    code = (
        "import sys; from tests.assets.test_spec_snapshot import dumps, record_specs; "
        "from smart_home_assets.definitions import defs; "
        "open(sys.argv[1], 'w').write(dumps(record_specs(defs)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"recording the specs failed:\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


# --- comparing ---------------------------------------------------------------------------------------------------


def diff_specs(recorded: Any, live: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    """(path, recorded value, live value) for each difference, at the highest path where the two part: a whole
    asset added shows once. A side's missing value is ``MISSING``."""
    if isinstance(recorded, dict) and isinstance(live, dict):
        differences = []
        for name in sorted(recorded.keys() | live.keys()):
            differences += diff_specs(recorded.get(name, MISSING), live.get(name, MISSING), (*path, name))
        return differences
    return [] if recorded == live else [(path, recorded, live)]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()


def describe(differences: list[tuple[tuple[str, ...], Any, Any]]) -> str:
    lines = []
    for path, recorded, live in differences:
        where = " > ".join(path) or "<root>"
        if recorded is MISSING:
            lines.append(f"  added    {where}: {json.dumps(live, sort_keys=True)}")
        elif live is MISSING:
            lines.append(f"  removed  {where} (was {json.dumps(recorded, sort_keys=True)})")
        else:
            lines.append(
                f"  changed  {where}: {json.dumps(recorded, sort_keys=True)} -> {json.dumps(live, sort_keys=True)}"
            )
    return "\n".join(lines)


# --- the tests ---------------------------------------------------------------------------------------------------


def test_asset_specs_match_the_snapshot(tmp_path):
    live = live_specs(tmp_path)
    unstable = unstable_values(live)
    assert not unstable, "values that differ between machines or runs would enter the snapshot:\n" + "\n".join(unstable)
    if snapshot_update_requested() and (not SNAPSHOT.is_file() or SNAPSHOT.read_text() != dumps(live)):
        SNAPSHOT.write_text(dumps(live))
    if not SNAPSHOT.is_file():
        pytest.fail(f"no snapshot at {SNAPSHOT.relative_to(PROJECT_ROOT)}: create it with\n    {UPDATE_COMMAND}")
    # Against the file as it reads back, also right after an update: a bad write cannot pass.
    differences = diff_specs(json.loads(SNAPSHOT.read_text()), live)
    assert not differences, (
        f"the asset specs differ from {SNAPSHOT.relative_to(PROJECT_ROOT)} (recorded -> live):\n"
        f"{describe(differences)}\n"
        f"If the change is intended, regenerate the snapshot and review its diff:\n    {UPDATE_COMMAND}"
    )


def test_a_changed_spec_is_reported_by_its_key():
    recorded = json.loads(SNAPSHOT.read_text())
    blocking = sorted(key for key, check in recorded["checks"].items() if check["blocking"])
    assert blocking, "the snapshot records no blocking check"
    check = blocking[0]
    live = json.loads(json.dumps(recorded))
    live["checks"][check]["blocking"] = False
    assert diff_specs(recorded, live) == [(("checks", check, "blocking"), True, False)]
    assert describe(diff_specs(recorded, live)) == f"  changed  checks > {check} > blocking: true -> false"

    live = json.loads(json.dumps(recorded))
    asset = min(live["assets"])
    removed = live["assets"].pop(asset)
    live["assets"]["new_asset"] = {"deps": [asset]}
    assert diff_specs(recorded, live) == [
        (("assets", asset), removed, MISSING),
        (("assets", "new_asset"), MISSING, {"deps": [asset]}),
    ]
    assert diff_specs(recorded, json.loads(json.dumps(recorded))) == []
