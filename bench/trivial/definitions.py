"""One daily-partitioned asset that does nothing, with the same executor as the project (in-process).

dagster asset materialize -m bench.trivial.definitions --select trivial_daily --partition 2026-03-02
"""

import dagster as dg


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=1, timezone="UTC"))
def trivial_daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Returns at once: what is left of a run is Dagster's own cost."""
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


defs = dg.Definitions(assets=[trivial_daily], executor=dg.in_process_executor)
