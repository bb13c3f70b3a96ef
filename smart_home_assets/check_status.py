"""Which partitions of an asset have not passed their blocking checks, for their latest materialization.

One answer for the two places that need it: the automation condition that decides whether new feature days
are worth a retrain, and the training step that leaves out days it must not learn from. The statuses are
Dagster's own (the check state automation uses): a new materialization clears a day's status until its
checks run again, and a check planned in a run that ended without evaluating it counts as not passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg


def blocking_check_keys(asset_graph, asset_key: dg.AssetKey) -> list[dg.AssetCheckKey]:
    """The blocking checks defined on ``asset_key`` in ``asset_graph`` (a repository's or automation's)."""
    return sorted(
        (key for key in asset_graph.get_check_keys_for_assets({asset_key}) if asset_graph.get(key).blocking),
        key=lambda k: k.name,
    )


def partitions_not_passing(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], partitions_def: dg.PartitionsDefinition
) -> dict[str, list[str]]:
    """``{partition: ["<check>: <status>", ...]}`` for every partition whose latest materialization has a blocking
    check that failed, is still running, was skipped, or whose run ended before it was evaluated.

    A partition never checked (materialized without its checks) is not listed: nothing says it is bad.
    """
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus

    if not check_keys:
        return {}
    states = instance.event_log_storage.get_asset_check_state([(key, partitions_def) for key in check_keys])
    found: dict[str, list[str]] = {}
    for key in check_keys:
        state = states.get(key)
        for status, subset in state.subsets.items() if state else ():
            if status == AssetCheckExecutionResolvedStatus.SUCCEEDED or subset.is_empty:
                continue
            for partition in subset.subset_value.get_partition_keys():
                found.setdefault(partition, []).append(f"{key.name}: {status.value.lower()}")
    return {partition: sorted(reasons) for partition, reasons in sorted(found.items())}


def held_back(partitions: Iterable[str], not_passing: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The subset of ``not_passing`` among ``partitions``."""
    return {p: not_passing[p] for p in sorted(set(partitions)) if p in not_passing}
