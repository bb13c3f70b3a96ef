"""Running an asset's checks on their own, as a user re-running a check in the UI does."""

import dagster as dg


def run_checks(checks, assets, day: str | None, resources, instance):
    """Run only ``checks`` (on ``day``'s partition; None for an unpartitioned asset), as a user re-running a check
    in the UI: real evaluations of the warehouse's rows, tied to the asset's latest materialization."""
    from smart_home_assets.partitions import daily_partitions

    job = dg.define_asset_job(
        "checks_only", selection=dg.AssetSelection.checks(checks), partitions_def=daily_partitions if day else None
    )
    definitions = dg.Definitions(assets=assets, asset_checks=[checks], jobs=[job], resources=resources)
    return definitions.resolve_job_def("checks_only").execute_in_process(
        tags={"dagster/partition": day} if day else None, instance=instance, raise_on_error=False
    )


def check_outcomes(result, check_name: str) -> set[bool]:
    return {e.passed for e in result.get_asset_check_evaluations() if e.check_name == check_name}
