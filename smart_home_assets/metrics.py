"""Metrics for Prometheus: what the instance knows, pushed to a Pushgateway by ``metrics_sensor``.

Every 30 s the sensor rebuilds the metrics from the Dagster instance (the latest materialization of each asset,
the latest evaluation of each check, recent runs, the open incidents) and pushes them as one group (job
``smart_home_assets``) through dagster-prometheus's ``PrometheusResource``. Rebuilt, not accumulated: a tick
that could not push loses nothing, the next one pushes the same state; and the group is replaced whole, so a
series whose labels changed (a newer partition) does not linger.

The resource is built on the tick, only when ``SMART_HOME_PUSHGATEWAY_URL`` is set: it needs a gateway to
exist, and the embedded default has none (the sensor then skips at once; nothing waits, nothing breaks).
Values are those of an asset's latest materialization: for a backfill, the run's totals over its partitions.
Dagster job names are the label ``dagster_job``: ``job`` is the Pushgateway's grouping label.

| metric | labels | what |
|---|---|---|
| `smart_home_raw_lines` | `partition` | lines read by the latest raw_usage materialization |
| `smart_home_clean_rows` | `partition` | rows of the latest device_usage materialization |
| `smart_home_quarantine_rate` | `partition` | its quarantined share of raw lines |
| `smart_home_quarantined_rows` | `reason` | its quarantined rows per reason |
| `smart_home_last_materialization_timestamp_seconds` | `asset` | when each asset was last materialized |
| `smart_home_freshness_lag_seconds` | `asset` | seconds since then |
| `smart_home_check_passed` | `asset`, `check`, `blocking` | 1 if the check's latest evaluation passed, else 0 |
| `smart_home_champion_version` | | the registry's champion per usage_model's latest decision |
| `smart_home_backtest_mae_wh` | `model_version` | the champion's backtest MAE |
| `smart_home_live_mae_wh` | `source` | the latest scored day's live MAE (batch, online) |
| `smart_home_live_backtest_mae_wh` | | the backtest MAE of the version that made those batch predictions |
| `smart_home_run_duration_seconds` | `dagster_job`, `status` | the latest finished run of each job and outcome |
| `smart_home_run_failed` | `dagster_job` | 1 if the job's latest finished run failed |
| `smart_home_run_failure_cause` | `dagster_job`, `cause` | 1 for that failure's cause (see below) |
| `smart_home_open_incidents` | `kind` | incidents open now, of each kind alerts_sensor knows |
| `smart_home_metrics_pushed_timestamp_seconds` | | when this push was made (a stale one: the daemon is down) |

The ``cause`` of ``smart_home_run_failure_cause``: ``run_failure``, ``registry_unreachable``, ...
"""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.parse
from collections.abc import Iterable, Mapping

import dagster as dg

from smart_home_assets.lib.tables import DEVICE_USAGE, PREDICTION_FEEDBACK, RAW_USAGE, USAGE_MODEL

PUSHGATEWAY_URL_VAR = "SMART_HOME_PUSHGATEWAY_URL"
PUSH_JOB = "smart_home_assets"
TIMEOUT_S = 5
RUNS_READ = 200
GATEWAY_NAME = f"the Pushgateway ({PUSHGATEWAY_URL_VAR})"  # what logs say instead of the URL (it may hold a login)


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    help: str = ""


def _value(metadata: Mapping, key: str):
    entry = metadata.get(key)
    return getattr(entry, "value", None) if entry is not None else None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: nothing to say


def materialization_samples(latest: Mapping[str, tuple[float, str | None, Mapping]], now: float) -> list[Sample]:
    """From each asset's latest materialization (timestamp, partition, metadata): lag, ingest counts, model and
    live accuracy. Pure: ``latest`` is read from the instance by the sensor."""
    samples = []
    for asset, (timestamp, _, _) in sorted(latest.items()):
        samples += [
            Sample(
                "smart_home_last_materialization_timestamp_seconds",
                timestamp,
                (("asset", asset),),
                "when the asset was last materialized",
            ),
            Sample(
                "smart_home_freshness_lag_seconds",
                max(0.0, now - timestamp),
                (("asset", asset),),
                "seconds since the asset's latest materialization",
            ),
        ]
    if RAW_USAGE in latest:
        _, partition, metadata = latest[RAW_USAGE]
        if (lines := _number(_value(metadata, "lines"))) is not None:
            samples.append(
                Sample(
                    "smart_home_raw_lines",
                    lines,
                    (("partition", partition or "-"),),
                    "lines read by the latest raw_usage materialization",
                )
            )
    if DEVICE_USAGE in latest:
        _, partition, metadata = latest[DEVICE_USAGE]
        where = (("partition", partition or "-"),)
        if (rows := _number(_value(metadata, "dagster/row_count"))) is not None:
            samples.append(Sample("smart_home_clean_rows", rows, where, "rows of the latest device_usage"))
        if (rate := _number(_value(metadata, "quarantine_rate"))) is not None:
            samples.append(Sample("smart_home_quarantine_rate", rate, where, "quarantined share of raw lines"))
        for reason, count in sorted((_value(metadata, "quarantined_by_reason") or {}).items()):
            samples.append(
                Sample(
                    "smart_home_quarantined_rows",
                    float(count),
                    (("reason", reason),),
                    "quarantined rows of the latest device_usage materialization, by reason",
                )
            )
    if USAGE_MODEL in latest:
        _, _, metadata = latest[USAGE_MODEL]
        version = str(_value(metadata, "champion_version") or "")
        if (number := _number(version)) is not None:
            samples.append(Sample("smart_home_champion_version", number, (), "the champion's registry version"))
        if (mae := _number(_value(metadata, "champion_backtest_mae"))) is not None:
            samples.append(
                Sample(
                    "smart_home_backtest_mae_wh",
                    mae,
                    (("model_version", version or "-"),),
                    "the champion's backtest MAE (Wh)",
                )
            )
    if PREDICTION_FEEDBACK in latest:
        _, _, metadata = latest[PREDICTION_FEEDBACK]
        for source, key in (("batch", "live_mae"), ("online", "online_live_mae")):
            if (mae := _number(_value(metadata, key))) is not None:
                samples.append(
                    Sample(
                        "smart_home_live_mae_wh", mae, (("source", source),), "the latest scored day's live MAE (Wh)"
                    )
                )
        if (mae := _number(_value(metadata, "backtest_mae"))) is not None:
            samples.append(
                Sample(
                    "smart_home_live_backtest_mae_wh",
                    mae,
                    (),
                    "backtest MAE of the version whose predictions were scored (Wh)",
                )
            )
    return samples


def check_samples(outcomes: Iterable[tuple[str, str, bool, bool]]) -> list[Sample]:
    """(asset, check, blocking, passed) of each check's latest evaluation."""
    return [
        Sample(
            "smart_home_check_passed",
            float(passed),
            (("asset", asset), ("check", check), ("blocking", str(blocking).lower())),
            "1 if the check's latest evaluation passed",
        )
        for asset, check, blocking, passed in sorted(outcomes)
    ]


def run_samples(runs: Iterable[tuple[str, str, float, float, str]]) -> list[Sample]:
    """From finished runs (job, status, start, end, run id), newest first: the latest duration per job and
    outcome, and whether each job's latest finished run failed."""
    durations: dict[tuple[str, str], float] = {}
    latest: dict[str, str] = {}
    for job, status, start, end, _ in runs:
        durations.setdefault((job, status), max(0.0, end - start))
        latest.setdefault(job, status)
    return [
        Sample(
            "smart_home_run_duration_seconds",
            seconds,
            (("dagster_job", job), ("status", status.lower())),
            "duration of the job's latest finished run with that outcome",
        )
        for (job, status), seconds in sorted(durations.items())
    ] + [
        Sample(
            "smart_home_run_failed",
            float(status == "FAILURE"),
            (("dagster_job", job),),
            "1 if the job's latest finished run failed",
        )
        for job, status in sorted(latest.items())
    ]


def failure_samples(causes: Mapping[str, str]) -> list[Sample]:
    """``{job: cause}`` of the jobs whose latest finished run failed, cause = an alerts kind (run_failure,
    registry_unreachable, landing_zone_unavailable, blocking_check_failed)."""
    return [
        Sample(
            "smart_home_run_failure_cause",
            1.0,
            (("dagster_job", job), ("cause", cause)),
            "why the job's latest finished run failed",
        )
        for job, cause in sorted(causes.items())
    ]


def incident_samples(kinds: Iterable[str], known: Iterable[str]) -> list[Sample]:
    """The count of open incidents per kind (every known kind, 0 included, so an alert rule can clear)."""
    counts = {kind: 0 for kind in known}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return [
        Sample("smart_home_open_incidents", float(n), (("kind", kind),), "incidents open now, by kind")
        for kind, n in sorted(counts.items())
    ]


# --- reading the instance --------------------------------------------------------------------------------------


def latest_materializations(instance: dg.DagsterInstance, asset_graph) -> dict[str, tuple[float, str | None, dict]]:
    found = {}
    for key in sorted(asset_graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        event = instance.get_latest_materialization_event(key)
        if event is not None and event.asset_materialization is not None:
            found[key.to_user_string()] = (
                event.timestamp,
                event.asset_materialization.partition,
                dict(event.asset_materialization.metadata),
            )
    return found


def latest_check_outcomes(instance: dg.DagsterInstance, asset_graph) -> list[tuple[str, str, bool, bool]]:
    keys = sorted(asset_graph.asset_check_keys, key=lambda k: k.to_user_string())
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys) if keys else {}
    outcomes = []
    for key in keys:
        record = summaries[key].last_completed_check_execution_record
        evaluation = record.event.asset_check_evaluation if record is not None and record.event else None
        if evaluation is not None:
            outcomes.append(
                (
                    key.asset_key.to_user_string(),
                    key.name,
                    bool(asset_graph.get_check_spec(key).blocking),
                    bool(evaluation.passed),
                )
            )
    return outcomes


def finished_runs(instance: dg.DagsterInstance) -> list[tuple[str, str, float, float, str]]:
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]), limit=RUNS_READ
    )
    return [
        (r.dagster_run.job_name, r.dagster_run.status.value, r.start_time, r.end_time, r.dagster_run.run_id)
        for r in records
        if r.start_time is not None and r.end_time is not None
    ]


def failure_causes(instance: dg.DagsterInstance, runs: list[tuple[str, str, float, float, str]]) -> dict[str, str]:
    """The cause of each job's latest finished run that failed (its step failures read, those runs only)."""
    from smart_home_assets import alerts

    latest: dict[str, tuple[str, str]] = {}
    for job, status, _, _, run_id in runs:
        latest.setdefault(job, (status, run_id))
    causes = {}
    for job, (status, run_id) in latest.items():
        if status == "FAILURE":
            kind, _, only_checks = alerts.failure_cause(instance, run_id)
            causes[job] = alerts.CHECK_FAILED if only_checks else kind
    return causes


def open_incident_kinds(context: dg.SensorEvaluationContext) -> list[str]:
    """The kinds of what alerts_sensor would call open now, from its state-based sources (run failures are
    exported as smart_home_run_failed)."""
    from smart_home_assets import alerts

    instance, graph = context.instance, _asset_graph(context)
    current: dict[str, alerts.Incident] = {}
    current |= alerts.failed_check_incidents(instance, graph)
    current |= alerts.freshness_incidents(instance, graph)
    current |= alerts.decay_incidents(instance, graph)
    current |= alerts.landing_zone_incidents(instance)
    return [incident.kind for incident in current.values()]


def _asset_graph(context: dg.SensorEvaluationContext):
    repository = context.repository_def
    assert repository is not None, "metrics_sensor runs in a code location, which has its repository"
    return repository.asset_graph


def all_samples(context: dg.SensorEvaluationContext, now: float) -> list[Sample]:
    from smart_home_assets import alerts

    graph = _asset_graph(context)
    known = (alerts.CHECK_FAILED, alerts.FRESHNESS_MISSED, alerts.MODEL_DECAY, alerts.LANDING_ZONE_UNAVAILABLE)
    runs = finished_runs(context.instance)
    return (
        materialization_samples(latest_materializations(context.instance, graph), now)
        + check_samples(latest_check_outcomes(context.instance, graph))
        + run_samples(runs)
        + failure_samples(failure_causes(context.instance, runs))
        + incident_samples(open_incident_kinds(context), known)
        + [Sample("smart_home_metrics_pushed_timestamp_seconds", now, (), "when these metrics were pushed")]
    )


# --- pushing ---------------------------------------------------------------------------------------------------


def register(samples: Iterable[Sample], registry) -> None:
    """One Gauge per metric name in ``registry``, a child per label set."""
    import prometheus_client

    gauges: dict[str, prometheus_client.Gauge] = {}
    for sample in samples:
        names = tuple(name for name, _ in sample.labels)
        gauge = gauges.get(sample.name)
        if gauge is None:
            gauge = gauges[sample.name] = prometheus_client.Gauge(
                sample.name, sample.help or sample.name, names, registry=registry
            )
        (gauge.labels(*[value for _, value in sample.labels]) if names else gauge).set(sample.value)


def push(url: str, samples: list[Sample]) -> None:
    from dagster_prometheus import PrometheusResource

    parts = urllib.parse.urlsplit(url)
    handler = None
    if parts.username:  # basic auth from the URL, which the default handler does not read
        from prometheus_client.exposition import basic_auth_handler

        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        if parts.hostname is None:  # e.g. http://user@/: a malformed address, like a bad port
            raise ValueError(f"{PUSHGATEWAY_URL_VAR} names a user but no host")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

        def handler(url, method, timeout, headers, data):
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    resource = PrometheusResource(gateway=url.rstrip("/"), timeout=TIMEOUT_S)
    # its registry; the resource reads nothing from the context, so none is built
    resource.setup_for_execution(None)  # type: ignore[arg-type]
    register(samples, resource.registry)
    if handler is None:
        resource.push_to_gateway(job=PUSH_JOB)
    else:
        resource.push_to_gateway(job=PUSH_JOB, handler=handler)


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Pushes the pipeline's metrics to a Prometheus Pushgateway ({PUSHGATEWAY_URL_VAR}); "
    "skips at once when none is configured.",
)
def metrics_sensor(context: dg.SensorEvaluationContext):
    """Reads the instance and pushes; launches no runs."""
    url = os.environ.get(PUSHGATEWAY_URL_VAR, "").strip()
    if not url:
        return dg.SkipReason(f"{PUSHGATEWAY_URL_VAR} is not set: no metrics pushed")
    samples = all_samples(context, time.time())
    try:
        push(url, samples)
    except (OSError, ValueError) as exc:  # URLError, refused, timeouts, HTTP errors, a malformed address
        context.log.warning(f"{GATEWAY_NAME} did not take the metrics: {type(exc).__name__}")
        return dg.SkipReason(f"{GATEWAY_NAME} unreachable ({type(exc).__name__}): will push again next tick")
    return dg.SkipReason(f"pushed {len(samples)} samples to {GATEWAY_NAME}")
