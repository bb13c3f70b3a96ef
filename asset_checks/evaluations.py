"""Per-partition asset check evaluations, for checks that validate several partitions in one step.

A check step of a range backfill validates each partition and records one evaluation per partition. Each
evaluation names the materialization it checked, as Dagster's own AssetCheckResult does for a single
partition: automation (``all_deps_blocking_checks_passed``) only counts a check as passed for the latest
materialization of that partition.
"""

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)


def target_materialization(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    partition: str,
) -> AssetCheckEvaluationTargetMaterializationData | None:
    # Imported here: the event-log storage module pulls in SQLAlchemy and alembic (about 0.5 s), which a process
    # that only loads the definitions does not otherwise need.
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=records[0].event_log_entry.run_id, storage_id=records[0].storage_id, timestamp=records[0].timestamp
    )


_targets: dict[tuple[str, dg.AssetKey, str], AssetCheckEvaluationTargetMaterializationData | None] = {}
PREFETCH_CHUNK = 500


def prefetch_targets(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, partitions: list[str]) -> None:
    """Look up the latest materialization of every partition of a check step at once (two queries per 500
    partitions, not one per partition): a history backfill checks thousands of partitions in one step."""
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    instance = context.instance
    run_id = context.op_execution_context.run_id
    if len(_targets) > 10_000:
        _targets.clear()
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    ids = sorted(latest.values())
    records = {}
    for start in range(0, len(ids), PREFETCH_CHUNK):
        chunk = ids[start : start + PREFETCH_CHUNK]
        for record in instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)
        ).records:
            records[record.storage_id] = record
    for partition in partitions:
        record = records.get(latest.get(partition, -1))
        _targets[(run_id, asset_key, partition)] = (
            None
            if record is None
            else AssetCheckEvaluationTargetMaterializationData(
                run_id=record.event_log_entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
        )


def _cached_target(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, partition: str):
    """One lookup per (asset, partition) in a check step, not one per check: a step evaluates many checks."""
    key = (context.op_execution_context.run_id, asset_key, partition)
    if key not in _targets:
        if len(_targets) > 10_000:
            _targets.clear()
        _targets[key] = target_materialization(context.instance, asset_key, partition)
    return _targets[key]


def partition_evaluation(
    context: dg.AssetCheckExecutionContext | None,
    asset_key: dg.AssetKey,
    check_name: str,
    partition: str,
    passed: bool,
    metadata: dict,
    *,
    blocking: bool = True,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckEvaluation:
    """One check's outcome for one partition, tied to that partition's latest materialization."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=passed,
        metadata=metadata,
        severity=severity,
        blocking=blocking,
        partition=partition,
        description=None,
        target_materialization_data=_cached_target(context, asset_key, partition) if context else None,
    )


def check_outputs(context: dg.AssetCheckExecutionContext):
    """The step's check outputs: they let blocking checks gate downstream steps of the same run."""
    for output_name in context.op_execution_context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)
