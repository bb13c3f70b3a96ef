"""dagster-dask's executor, made to work with current dask (imported only when SMART_HOME_EXECUTOR=dask).

dagster-dask 0.29 submits each step as ``client.submit(query_on_dask_worker, dependencies, recon_job,
dagster_run, ...)``. dask >= 2025 parses every argument into its task spec and walks into each tuple it finds;
Dagster's records (the run, the known state, the instance ref) are tuples that refuse iteration, so every run
fails with "Iteration is not allowed on `@record` RunOpConcurrency". Here each Dagster argument travels in an
opaque holder that dask does not walk into, and is unwrapped on the worker. The step futures
(``dependencies``) stay visible to dask, which is what orders the steps. It also names each step's task after
its run: dagster-dask's "<job>.<step>" keys repeat across runs, and dask runs a repeated key only once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

import dagster as dg
import dask.distributed
from dagster_dask.executor import DaskExecutor, dask_executor, query_on_dask_worker


class Opaque:
    """A value that dask's task-spec parser leaves alone (it is not a tuple, list, dict or set)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __reduce__(self):
        return (Opaque, (self.value,))


def run_step_on_worker(dependencies: Any, *wrapped: Opaque):
    return query_on_dask_worker(dependencies, *(w.value for w in wrapped))


class RecordSafeClient(dask.distributed.Client):
    def submit(self, func, *args, **kwargs):
        if func is query_on_dask_worker:
            dependencies, _recon_job, dagster_run, *_ = args
            # dagster-dask names a step's task "<job>.<step>": the same key for that step in every run. On a
            # shared cluster dask treats a key it holds as the same task, so a second run of the job got the
            # first run's result back and executed nothing, yet succeeded. The run id makes each key unique.
            kwargs["key"] = f"{kwargs.get('key', 'step')}.{dagster_run.run_id}"
            return super().submit(run_step_on_worker, dependencies, *map(Opaque, args[1:]), **kwargs)
        return super().submit(func, *args, **kwargs)


class RecordSafeDaskExecutor(DaskExecutor):
    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        # DaskExecutor.execute opens `dask.distributed.Client(cluster)`; for this run it opens ours. A run
        # worker process executes one run, so the swap is confined to it.
        original = dask.distributed.Client
        dask.distributed.Client = RecordSafeClient  # type: ignore[misc]  # the patch this module is for
        try:
            yield from super().execute(plan_context, execution_plan)
        finally:
            dask.distributed.Client = original  # type: ignore[misc]


@dg.executor(
    name="dask",
    config_schema=dask_executor.config_schema.as_field(),  # the same schema, as a Field
    requirements=dg.multiple_process_executor_requirements(),
)
def record_safe_dask_executor(init_context: dg.InitExecutorContext) -> RecordSafeDaskExecutor:
    cluster = cast(Mapping[str, Any], init_context.executor_config["cluster"])  # a selector: one key
    ((cluster_type, cluster_configuration),) = cluster.items()
    return RecordSafeDaskExecutor(cluster_type, cluster_configuration)
