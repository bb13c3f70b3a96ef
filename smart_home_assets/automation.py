"""Declarative automation: how assets follow their upstreams with no clicks.

``AutomationCondition.eager()`` only targets the latest time partition, so a late upload that re-runs an
old day's raw_usage would never reach that day's device_usage. ``follows_upstream_partitions`` is eager
without that restriction: any partition whose upstream partition was updated, once all its upstreams exist
and none is still running.

``usage_features`` reads a window of days (its partition mapping says so), so it follows every upstream day of
its window (``follows_history_window``), but only for days whose own upstream partition exists.
"""

from __future__ import annotations

import dagster as dg

from smart_home_assets.lib.tables import ONLINE_PREDICTIONS, USAGE_FEATURES


def follows_upstream_partitions(optional: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """``optional``: upstream assets whose missing partitions do not hold it back (their updates still count)."""
    missing = dg.AutomationCondition.any_deps_missing()
    if optional:
        missing = missing.ignore(dg.AssetSelection.assets(*optional))
    return (
        (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
        & ~missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows_upstream_partitions")


class SamePartitionUpstreamExists(dg.AutomationCondition):
    """True for the partitions whose partition of the same key in ``upstream`` has been materialized.

    A window mapping makes the built-in ``any_deps_missing`` true whenever any day of the window is missing
    (days before a fleet's first upload are missing for ever), and says nothing about the day itself. This
    asks exactly that: has the day's own upstream partition been written?
    """

    def __init__(self, upstream: str):
        self.upstream = dg.AssetKey(upstream)

    @property
    def name(self) -> str:
        return f"same_partition_of_{self.upstream.to_user_string()}_exists"

    # Dagster awaits an async evaluate (its own operators are async) but types the base method sync
    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        view = context.asset_graph_view
        keys = context.candidate_subset.expensively_compute_partition_keys()
        upstream_subset = view.get_subset_from_partition_keys(
            self.upstream, context.asset_graph.get(self.upstream).partitions_def, keys
        )
        missing = await view.compute_missing_subset(key=self.upstream, from_subset=upstream_subset)
        present = keys - missing.expensively_compute_partition_keys()
        return dg.AutomationResult(
            context=context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(present)
        )


def any_dep_updated_after_target() -> dg.AutomationCondition:
    """Like ``any_deps_updated`` but also counting updates by runs that targeted this asset: a CLI run that
    rewrites day D's device_usage and features for D only still leaves D+1..D+28's lags to refresh. Within
    ``since_last_handled`` the target's own later update resets it, so a run that wrote both does not repeat."""
    return dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated() | dg.AutomationCondition.will_be_requested()
    ).with_label("any_dep_updated")


def any_dep_failed_blocking_checks() -> dg.AutomationCondition:
    """True if any upstream partition that exists has not passed its blocking checks. (The built-in
    ``all_deps_blocking_checks_passed`` maps a window back as a union: one good day of 29 would satisfy it.)"""
    return dg.AutomationCondition.any_deps_match(
        ~dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.all_checks_match(
            dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested(), blocking_only=True
        )
    ).with_label("any_dep_failed_blocking_checks")


def follows_history_window(upstream: str) -> dg.AutomationCondition:
    """For a partition computed from a window of upstream days: re-run whenever any day of its window was
    updated (a late upload for D changes the lags of D..D+28), once its own day exists upstream, no upstream
    day of the window is running, and their blocking checks passed."""
    return (
        (dg.AutomationCondition.newly_missing() | any_dep_updated_after_target()).since_last_handled()
        & SamePartitionUpstreamExists(upstream)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ~any_dep_failed_blocking_checks()
    ).with_label("follows_history_window")


# The built-in automation sensor is created STOPPED; this one runs from the first start of the daemon. It is
# evaluated in the code server (use_user_code_server) because SamePartitionUpstreamExists is project code.
automation_sensor = dg.AutomationConditionSensorDefinition(
    name="automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    use_user_code_server=True,
)


class NewUpstreamDaysPassedChecks(dg.AutomationCondition):
    """True for an unpartitioned asset when a partition of ``upstream`` written since the asset's latest
    materialization has passed its blocking checks (or was written without them).

    Days whose blocking checks failed, or have not finished, are held back: they are not a reason to retrain,
    and the evaluation's metadata names them with their checks. A later day that passes triggers the retrain,
    which leaves the held-back days out (``usage_model`` reads the same statuses).
    """

    def __init__(self, upstream: str):
        self.upstream = dg.AssetKey(upstream)

    @property
    def name(self) -> str:
        return f"new_{self.upstream.to_user_string()}_days_passed_blocking_checks"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        from smart_home_assets.check_status import blocking_check_keys, held_back, partitions_not_passing

        if context.candidate_subset.is_empty:  # the other conditions already said no: no query on this tick
            return dg.AutomationResult(context=context, true_subset=context.get_empty_subset())
        instance = context.asset_graph_view.instance
        latest = instance.fetch_materializations(context.key, limit=1).records
        after = latest[0].storage_id if latest else None
        new_days = instance.get_materialized_partitions(self.upstream, after_cursor=after)
        checks = blocking_check_keys(context.asset_graph, self.upstream)
        partitions_def = context.asset_graph.get(self.upstream).partitions_def
        not_passing = partitions_not_passing(instance, checks, partitions_def) if new_days else {}
        held = held_back(new_days, not_passing)
        usable = len(new_days) - len(held)
        return dg.AutomationResult(
            context=context,
            true_subset=context.candidate_subset if usable else context.get_empty_subset(),
            metadata={
                "new_days": len(new_days),
                "new_days_passed": usable,
                "held_back_days": dg.MetadataValue.json(dict(list(held.items())[:50])),
            },
        )


def retrain_when_features_land(features: str = USAGE_FEATURES) -> dg.AutomationCondition:
    """For the unpartitioned model over daily features: retrain once per batch of new feature partitions.

    ``eager()`` would never fire while any upstream partition is missing (``any_deps_missing`` covers every
    partition since the start date); this fires on the first update, and waits while upstream runs (a
    backfill included) are still in progress, so a 30-day backfill leads to one retrain after it. New days
    whose blocking checks failed or are still running do not count: with nothing else new it waits.
    """
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & NewUpstreamDaysPassedChecks(features)
    ).with_label("retrain_when_features_land")


class DecayNotAnswered(dg.AutomationCondition):
    """True for the model while a decay episode is open (smart_home_assets/lib/decay.py: live MAE above the backtest
    by the margin for days, or features drifting for days) that its latest materialization did not answer."""

    @property
    def name(self) -> str:
        return "decay_episode_not_answered"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        from smart_home_assets import decay_state
        from smart_home_assets.lib import decay

        instance = context.asset_graph_view.instance
        found = decay_state.open_decay(instance, context.asset_graph)
        answered = decay_state.handled_episode(instance) if found else None
        true = found is not None and answered != found.episode
        return dg.AutomationResult(
            context=context,
            true_subset=context.candidate_subset if true else context.get_empty_subset(),
            metadata={"episode": found.episode if found else decay.NO_EPISODE, "answered": answered or "-"},
        )


def retrain_on_decay() -> dg.AutomationCondition:
    """One retrain per decay episode: when an unanswered one opens (or the runs in its way end). The retrain
    answers it whatever it decides, so a retrain that keeps the champion is not asked again."""
    return (
        (DecayNotAnswered() & ~dg.AutomationCondition.any_deps_in_progress() & ~dg.AutomationCondition.in_progress())
        .newly_true()
        .with_label("retrain_on_decay")
    )


def retrain_when_features_land_or_decay() -> dg.AutomationCondition:
    return (retrain_when_features_land() | retrain_on_decay()).with_label("retrain_when_features_land_or_decay")


class UnpartitionedDepRequestedThisTick(dg.AutomationCondition):
    """True when an unpartitioned upstream (the model) is requested on this tick. ``will_be_requested()`` only
    sees upstreams that can run in the same run, which an unpartitioned asset never does with a partitioned one."""

    @property
    def name(self) -> str:
        return "unpartitioned_dep_requested_this_tick"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        graph = context.asset_graph
        for parent in graph.get(context.key).parent_keys:
            requested = context.request_subsets_by_key.get(parent)
            if requested is not None and not requested.is_empty and graph.get(parent).partitions_def is None:
                return dg.AutomationResult(context=context, true_subset=context.candidate_subset)
        return dg.AutomationResult(context=context, true_subset=context.get_empty_subset())


def _no_dep_requested_this_tick() -> dg.AutomationCondition:
    # An upstream requested on this tick for another partition key (or unpartitioned, like the model) goes
    # into another run: waiting one tick avoids scoring with the old model or before the actuals exist.
    return (
        ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
        & ~UnpartitionedDepRequestedThisTick()
    )


def predict_latest_days(lookback_days: int = 3) -> dg.AutomationCondition:
    """Predictions for the most recent days, whenever their features or the model change and the model's
    blocking checks passed. Older days keep the predictions that were made at the time."""
    import datetime as dt

    return (
        dg.AutomationCondition.in_latest_time_window(dt.timedelta(days=lookback_days))
        & follows_upstream_partitions()
        & _no_dep_requested_this_tick()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("predict_latest_days")


def score_when_actuals_land() -> dg.AutomationCondition:
    """prediction_feedback for day D: once D's predictions and D+1's features (the actuals) both exist; again
    when the service's answers for D+1 are ingested (online_predictions, which may never exist: not waited for)."""
    return (follows_upstream_partitions(optional=(ONLINE_PREDICTIONS,)) & _no_dep_requested_this_tick()).with_label(
        "score_when_actuals_land"
    )
