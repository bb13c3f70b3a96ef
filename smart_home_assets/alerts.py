"""Alerts that reach a person: one webhook message when an incident opens, one when it clears.

An incident is something a person must look at: a failed run, a failed blocking check, a missed freshness
deadline, an unreachable landing zone or model registry, a decaying model. ``alerts_sensor`` reads them from the
Dagster instance on each tick (open-source Dagster only: run status events, asset check state, sensor ticks),
compares them with the incidents open at the previous tick, which it keeps in its cursor, and sends what changed.
So a failure that lasts a hundred ticks is one alert, its end one recovery message, and a daemon restart forgets
nothing.

Delivery is at least once: an incident is marked delivered only when the receiver answered 2xx, so a receiver
that is down gets the message on a later tick instead of never. The webhook URL carries its secret in the path
(Slack, most chat tools): it is read from the environment at send time and never logged, nor put in the cursor.

Sources are small functions returning ``{key: Incident}`` of what is wrong now. Channels: the webhook (generic
JSON, Slack-compatible, or a ``file://`` log) and, optionally, e-mail over SMTP (``SMART_HOME_ALERT_SMTP_URL``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from smart_home_assets.lib.tables import USAGE_MODEL

WEBHOOK_URL_VAR = "SMART_HOME_ALERT_WEBHOOK_URL"
# E-mail over SMTP, optional and beside the webhook: smtp://user:password@host:587?starttls=true (or smtps://).
SMTP_URL_VAR = "SMART_HOME_ALERT_SMTP_URL"
EMAIL_TO_VAR = "SMART_HOME_ALERT_EMAIL_TO"  # comma-separated recipients
EMAIL_FROM_VAR = "SMART_HOME_ALERT_EMAIL_FROM"
DEFAULT_EMAIL_FROM = "smart-home-alerts@localhost"
SMTP_NAME = f"the alert mail server ({SMTP_URL_VAR})"
WEBHOOK_FORMAT_VAR = "SMART_HOME_ALERT_WEBHOOK_FORMAT"  # json (default) or slack
UI_URL_VAR = "SMART_HOME_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
# What the logs say instead of the URL: its path is the secret.
WEBHOOK_NAME = f"the alert webhook ({WEBHOOK_URL_VAR})"
TIMEOUT_S = 5.0
ATTEMPTS = 3
CURSOR_VERSION = 1

RUN_FAILURE = "run_failure"
CHECK_FAILED = "blocking_check_failed"
LANDING_ZONE_UNAVAILABLE = "landing_zone_unavailable"
REGISTRY_UNREACHABLE = "registry_unreachable"
FRESHNESS_MISSED = "freshness_deadline_missed"
MODEL_DECAY = "model_decay"

# landing_zone_sensor's skip message when it cannot list the landing zone (smart_home_assets/sensors.py).
LANDING_SKIP_PREFIX = "landing zone unavailable"
LANDING_SENSOR = "landing_zone_sensor"
# Error classes (anywhere in a step failure's cause chain) that name a more precise incident than "run failed".
KIND_BY_ERROR_CLASS = {"TrackingServerUnreachable": REGISTRY_UNREACHABLE, "LandingZoneError": LANDING_ZONE_UNAVAILABLE}
# A step that failed only because a blocking check failed: the check source reports it, with the check's name.
CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
DETAIL_CHARS = 600
# A first tick (or a reset cursor) reports failures of the last week only, not the instance's whole history.
FIRST_TICK_LOOKBACK_DAYS = 7

# Dagster's freshness check builders put this on their specs; the per-partition check names the late day.
FRESHNESS_PARAMS_KEY = "dagster/freshness_params"
EXPECTED_PARTITION_KEY = "expected_partition"

URI_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

log = logging.getLogger(__name__)


# --- incidents (pure) --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Incident:
    """What is wrong, where, and the run that shows it. Two observations with the same ``key`` are one incident."""

    kind: str
    asset: str  # the asset key(s), comma-separated; a job or sensor name when no asset is involved
    partition: str | None
    summary: str
    detail: str = ""
    run_id: str | None = None
    opened_at: str = ""  # ISO 8601, UTC

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.asset}:{self.partition or '-'}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> Incident:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def diff_incidents(
    open_before: Mapping[str, Incident], current: Mapping[str, Incident]
) -> tuple[dict[str, Incident], dict[str, Incident]]:
    """(opened, resolved): incidents in ``current`` that were not open, and open ones no longer in ``current``.
    An incident still open keeps its first observation (its run link, its start), so it is never re-sent."""
    opened = {k: v for k, v in current.items() if k not in open_before}
    resolved = {k: v for k, v in open_before.items() if k not in current}
    return opened, resolved


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """A finished run as the run source sees it: which assets and partition it was for, and how it ended."""

    storage_id: int
    run_id: str
    assets: tuple[str, ...]
    partition: str | None
    succeeded: bool
    kind: str = RUN_FAILURE
    detail: str = ""
    at: str = ""
    reported_by_checks: bool = False  # failed only on blocking checks: the check source has the incident


def apply_run_outcomes(open_runs: Mapping[str, Incident], outcomes: Iterable[RunOutcome]) -> dict[str, Incident]:
    """The run incidents open after ``outcomes`` (in storage order): a failure opens one per (kind, assets,
    partition) unless it is already open; a success closes every open one whose assets it covers, same
    partition. Reprocessing outcomes already applied gives the same answer."""
    current = dict(open_runs)
    for outcome in sorted(outcomes, key=lambda o: o.storage_id):
        if outcome.succeeded:
            covered = set(outcome.assets)
            for key, incident in list(current.items()):
                if incident.partition == outcome.partition and set(incident.asset.split(",")) <= covered:
                    del current[key]
        elif not outcome.reported_by_checks:
            asset = ",".join(outcome.assets)
            where = f" for partition {outcome.partition}" if outcome.partition else ""
            what = {
                REGISTRY_UNREACHABLE: "the model registry is unreachable",
                LANDING_ZONE_UNAVAILABLE: "the landing zone is unavailable",
            }.get(outcome.kind, "run failed")
            incident = Incident(
                outcome.kind,
                asset,
                outcome.partition,
                f"{asset}{where}: {what}",
                outcome.detail,
                outcome.run_id,
                outcome.at,
            )
            current.setdefault(incident.key, incident)
    return current


# --- messages (pure) ---------------------------------------------------------------------------------------------


def run_url(run_id: str | None, ui_url: str = DEFAULT_UI_URL) -> str | None:
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if run_id else None


def json_body(event: str, incident: Incident, ui_url: str, at: str) -> dict:
    """The generic webhook body: ``event`` is "alert" or "recovery"."""
    return {
        "event": event,
        "kind": incident.kind,
        "summary": incident.summary,
        "asset": incident.asset,
        "partition": incident.partition,
        "run_id": incident.run_id,
        "run_url": run_url(incident.run_id, ui_url),
        "detail": incident.detail,
        "at": at,
    }


def slack_body(event: str, incident: Incident, ui_url: str, at: str) -> dict:
    """A Slack-compatible body (incoming webhooks, and the many tools that accept their format)."""
    url = run_url(incident.run_id, ui_url)
    title = f"{'Alert' if event == 'alert' else 'Recovered'}: {incident.summary}"
    facts = [f"*asset* `{incident.asset}`", f"*partition* `{incident.partition or '-'}`", f"*kind* {incident.kind}"]
    if url and incident.run_id:  # run_url gives a URL only when there is a run id
        facts.append(f"*run* <{url}|{incident.run_id[:8]}>")
    text = f"{title} ({', '.join(facts)})"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(facts)}},
    ]
    if incident.detail and event == "alert":
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{incident.detail}```"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": at}]})
    return {"text": text, "blocks": blocks}


def webhook_format(url: str, configured: str | None) -> str:
    """``slack`` for Slack's own host or when configured so; ``json`` otherwise."""
    if configured:
        if configured not in ("json", "slack"):
            raise ValueError(f"{WEBHOOK_FORMAT_VAR} must be 'json' or 'slack', not {configured!r}")
        return configured
    return "slack" if urllib.parse.urlsplit(url).hostname == "hooks.slack.com" else "json"


def build_body(event: str, incident: Incident, fmt: str, ui_url: str, at: str) -> dict:
    return (slack_body if fmt == "slack" else json_body)(event, incident, ui_url, at)


# --- sending -----------------------------------------------------------------------------------------------------


def post_json(
    url: str,
    body: dict,
    logger: logging.Logger | logging.LoggerAdapter = log,
    *,
    timeout: float = TIMEOUT_S,
    attempts: int = ATTEMPTS,
    backoff_s: float = 0.5,
) -> bool:
    """POST ``body``; True once the receiver answers 2xx. Failures are logged by HTTP status or exception class
    only: the URL, and the exception's text (which may repeat it), never reach a log line."""
    data = json.dumps(body).encode()
    if urllib.parse.urlsplit(url).scheme == "file":
        return append_to_log(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), data, logger)
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed URL
            reason = type(exc).__name__
        logger.warning(f"{WEBHOOK_NAME} did not take the message (attempt {attempt} of {attempts}): {reason}")
        if attempt < attempts:
            time.sleep(backoff_s * attempt)
    return False


def append_to_log(path: str, data: bytes, logger: logging.Logger | logging.LoggerAdapter = log) -> bool:
    """A ``file://`` receiver: the message as one JSON line appended to a local file (the demo's alert log, or a
    log shipper's input). One write of one line, so concurrent writers never interleave within a message."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab") as log_file:
            log_file.write(data + b"\n")
        return True
    except OSError as exc:
        logger.warning(f"{WEBHOOK_NAME} did not take the message: {type(exc).__name__}")
        return False


def email_message(event: str, incident: Incident, ui_url: str, at: str, sender: str, recipients: Sequence[str]):
    """The alert as a plain-text e-mail: the summary as its subject, the facts and the run link in its body."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = f"[smart-home] {'Alert' if event == 'alert' else 'Recovered'}: {incident.summary}"[:250]
    message["From"], message["To"] = sender, ", ".join(recipients)
    lines = [
        incident.summary,
        "",
        f"kind:      {incident.kind}",
        f"asset:     {incident.asset}",
        f"partition: {incident.partition or '-'}",
        f"run:       {run_url(incident.run_id, ui_url) or '-'}",
        f"at:        {at}",
    ]
    if incident.detail and event == "alert":
        lines += ["", incident.detail]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(
    smtp_url: str, message, logger: logging.Logger | logging.LoggerAdapter = log, *, timeout: float = TIMEOUT_S
) -> bool:
    """Send ``message`` through the server of ``smtp_url`` (smtp:// with optional ?starttls=true, or smtps://,
    user and password in the URL); True once it accepted it. Failures are logged by exception class only:
    the password (in the URL, and in some servers' replies) never reaches a log line."""
    import smtplib
    import ssl

    parts = urllib.parse.urlsplit(smtp_url)
    query = urllib.parse.parse_qs(parts.query)
    implicit_tls = parts.scheme == "smtps"
    port = parts.port or (465 if implicit_tls else 25)
    host = parts.hostname or ""  # smtplib connects only to a non-empty host; None and "" both mean "none given"
    client: smtplib.SMTP
    try:
        if implicit_tls:
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if query.get("starttls", ["false"])[0].lower() == "true":
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
            client.send_message(message)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning(f"{SMTP_NAME} did not take the message: {type(exc).__name__}")
        return False


# --- sources: what is wrong now, from the instance ---------------------------------------------------------------


def _error_classes(error) -> list[str]:
    classes = []
    while error is not None:
        classes.append(error.cls_name)
        error = error.cause or getattr(error, "context", None)
    return classes


def _first_line(error) -> str:
    """The first line of the error that started it (Dagster wraps a user exception in
    DagsterExecutionStepExecutionError; the cause is what a person needs to read)."""
    while error.cause is not None:
        error = error.cause
    lines = (error.message or "").strip().splitlines()
    return lines[0] if lines else error.cls_name


def redact_credentials(text: str) -> str:
    """``text`` with the password of every URI in it (``scheme://user:secret@host``) replaced by ``***``
    (resources.tracking.redact_uri): error messages sent out repeat the URIs they failed on."""
    from resources.tracking import redact_uri

    for uri in set(URI_PATTERN.findall(text)):
        text = redact_uri(uri, text)
    return text


def run_partition(tags: Mapping[str, str]) -> str | None:
    """A run's partition, or its range as ``start...end`` (single-run backfills)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None


def run_outcome(instance: dg.DagsterInstance, record, run: dg.DagsterRun) -> RunOutcome:
    """One run status event turned into an outcome: its planned assets (a materialize() run has no asset
    selection), else its planned checks, else its job; for a failure, why, from its step failures."""
    from dagster._core.events import DagsterEventType

    planned = instance.all_logs(
        run.run_id,
        of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED},
    )
    events = [e.get_dagster_event() for e in planned]  # of_type returns Dagster events only
    assets = sorted(
        {
            event.asset_key.to_user_string()
            for event in events
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED and event.asset_key is not None
        }
    )  # a planned materialization always names its asset
    if not assets:
        assets = sorted(
            {
                event.asset_check_planned_data.asset_check_key.to_user_string()
                for event in events
                if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
            }
        )
    base = dict(
        storage_id=record.storage_id,
        run_id=run.run_id,
        assets=tuple(assets or [run.job_name]),
        partition=run_partition(run.tags),
        at=_iso(record.timestamp),
    )
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return RunOutcome(succeeded=True, **base)
    kind, detail, only_checks = failure_cause(instance, run.run_id)
    detail = detail or (record.event_log_entry.message or "")
    return RunOutcome(
        succeeded=False,
        kind=kind,
        detail=redact_credentials(detail)[:DETAIL_CHARS],
        reported_by_checks=only_checks,
        **base,
    )


def failure_cause(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str, bool]:
    """Why a run failed, from its step failures: (incident kind, the errors' first lines, whether it failed only
    on blocking checks). Shared with the metrics sensor (smart_home_run_failed's ``cause``)."""
    from dagster._core.events import DagsterEventType

    failures = [
        e.get_dagster_event().step_failure_data
        for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    ]
    errors = [f.error for f in failures if f.error is not None]
    classes = [c for error in errors for c in _error_classes(error)]
    kind = next((KIND_BY_ERROR_CLASS[c] for c in classes if c in KIND_BY_ERROR_CLASS), RUN_FAILURE)
    only_checks = bool(errors) and all(e.cls_name == CHECK_FAILED_ERROR for e in errors)
    return kind, "; ".join(_first_line(e) for e in errors), only_checks


def finished_runs_after(
    instance: dg.DagsterInstance, after_storage_id: int | None, page: int = 500
) -> tuple[list[RunOutcome], int | None]:
    """Run successes and failures recorded after ``after_storage_id`` (event log storage ids only grow), in
    storage order, and the new watermark. At most ``page`` events of each kind per tick, cut where both kinds are
    complete, so a backlog is read in order over several ticks. ``None`` (a first tick, or a reset cursor)
    reads the last FIRST_TICK_LOOKBACK_DAYS only: older failures are history, not news. Canceled runs are a
    person's own doing: no incident, no recovery."""
    from dagster._core.events import DagsterEventType

    since = None if after_storage_id is not None else time.time() - FIRST_TICK_LOOKBACK_DAYS * 86400
    batches = [
        instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after_storage_id, after_timestamp=since),
            limit=page,
            ascending=True,
        ).records
        for event_type in (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS)
    ]
    records = [r for batch in batches for r in batch]
    if not records:
        return [], after_storage_id  # still None when nothing happened lately: the next tick looks back again
    # A full batch may have more after it: keep only what precedes the earliest such cut.
    cut = min(
        (batch[-1].storage_id for batch in batches if len(batch) == page), default=max(r.storage_id for r in records)
    )
    records = sorted((r for r in records if r.storage_id <= cut), key=lambda r: r.storage_id)
    runs = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(run_ids=sorted({r.run_id for r in records})))}
    outcomes = [
        run_outcome(instance, r, runs[r.run_id]) for r in records if r.run_id in runs
    ]  # a deleted run has nothing left to link to
    return outcomes, cut


def failed_check_incidents(
    instance: dg.DagsterInstance, asset_graph, known: Container[str] = ()
) -> dict[str, Incident]:
    """One incident per asset partition whose latest materialization failed a blocking check, read from
    Dagster's check state (smart_home_assets.check_status, shared with automation and training). A new
    materialization clears it until its checks run again; checks still running or skipped are not failures.
    Incidents in ``known`` (already open) skip the look-up of their run: the open one keeps its own."""
    from dagster._core.event_api import PartitionKeyFilter

    from smart_home_assets.check_status import blocking_check_keys, partitions_not_passing

    found: dict[str, Incident] = {}
    for asset_key in sorted({key.asset_key for key in asset_graph.asset_check_keys}, key=lambda k: k.path):
        checks = blocking_check_keys(asset_graph, asset_key)
        if not checks:
            continue
        partitions_def = asset_graph.get(asset_key).partitions_def
        if partitions_def is None:
            failing = unpartitioned_failing(instance, checks)
        else:
            failing = {
                p: [r.removesuffix(": failed") for r in reasons if r.endswith(": failed")]
                for p, reasons in partitions_not_passing(instance, checks, partitions_def).items()
            }
        for partition, names in failing.items():
            if not names:
                continue
            asset = asset_key.to_user_string()
            where = f" for partition {partition}" if partition else ""
            run_id = None
            if f"{CHECK_FAILED}:{asset}:{partition or '-'}" not in known:
                first = next(k for k in checks if k.name == names[0])
                history = instance.event_log_storage.get_asset_check_execution_history(
                    first, limit=1, partition_filter=PartitionKeyFilter(key=partition)
                )
                run_id = history[0].run_id if history else None
            incident = Incident(
                CHECK_FAILED,
                asset,
                partition,
                f"{asset}{where}: blocking check{'s' if len(names) > 1 else ''} failed: {', '.join(names)}",
                run_id=run_id,
                opened_at=_now(),
            )
            found[incident.key] = incident
    return found


def unpartitioned_failing(instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey]) -> dict:
    """``{None: [failed check names]}`` for an unpartitioned asset (partitions_not_passing reads partitions)."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus

    states = instance.event_log_storage.get_asset_check_state([(key, None) for key in checks])
    names = [
        key.name
        for key in checks
        if (state := states.get(key))
        and (subset := state.subsets.get(AssetCheckExecutionResolvedStatus.FAILED))
        and not subset.is_empty
    ]
    return {None: names} if names else {}


def freshness_incidents(instance: dg.DagsterInstance, asset_graph) -> dict[str, Incident]:
    """One incident per freshness check (asset_checks/freshness_checks.py) whose latest evaluation failed: a
    day that missed its deadline, or a model not retrained since. The run that materializes the asset evaluates
    the check again, so the incident clears as soon as the late day or retrain has landed."""
    keys = [
        key
        for key in asset_graph.asset_check_keys
        if FRESHNESS_PARAMS_KEY in (asset_graph.get_check_spec(key).metadata or {})
    ]
    if not keys:
        return {}
    summaries = instance.event_log_storage.get_asset_check_summary_records(keys)
    found = {}
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        record = summaries[key].last_completed_check_execution_record
        if record is None or not record.event:
            continue
        evaluation = record.event.asset_check_evaluation
        if evaluation is None or evaluation.passed:
            continue
        asset = key.asset_key.to_user_string()
        description = evaluation.description or ""
        # the freshness checks (ours and Dagster's) write the partition as text and the deadline as a timestamp
        expected = evaluation.metadata.get(EXPECTED_PARTITION_KEY)
        partition = expected.value if isinstance(expected, dg.TextMetadataValue) and expected.value != "-" else None
        tick = evaluation.metadata.get("dagster/latest_cron_tick_timestamp")
        deadline = f" (deadline {_iso(tick.value)})" if isinstance(tick, dg.TimestampMetadataValue) else ""
        summary = (
            f"{asset}: partition {partition} missed its freshness deadline{deadline}"
            if partition
            else f"{asset}: not updated by its freshness deadline{deadline}"
        )
        incident = Incident(
            FRESHNESS_MISSED,
            asset,
            partition,
            summary,
            description[:DETAIL_CHARS],
            record.run_id,
            _iso(record.create_timestamp),
        )
        found[incident.key] = incident
    return found


def decay_incidents(instance: dg.DagsterInstance, asset_graph) -> dict[str, Incident]:
    """An incident while a decay episode is open (smart_home_assets/lib/decay.py), keyed by the episode's first day:
    one alert when it opens (saying why, and that a retrain was requested), one recovery when it ends."""
    from smart_home_assets import decay_state

    found = decay_state.open_decay(instance, asset_graph)
    if found is None:
        return {}
    first_day = found.episode.rsplit(":", 1)[-1]
    incident = Incident(
        MODEL_DECAY,
        USAGE_MODEL,
        first_day,
        f"usage_model is decaying ({found.signal}): {found.summary}; a retrain was requested",
        f"episode {found.episode}",
        found.run_id,
        _now(),
    )
    return {incident.key: incident}


def landing_zone_incidents(instance: dg.DagsterInstance) -> dict[str, Incident]:
    """An incident while landing_zone_sensor's latest tick says it could not list the landing zone."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    found = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name != LANDING_SENSOR:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        tick = ticks[0] if ticks else None
        skip_reason = (tick.skip_reason or "") if tick else ""
        if tick and tick.status == TickStatus.SKIPPED and skip_reason.startswith(LANDING_SKIP_PREFIX):
            incident = Incident(
                LANDING_ZONE_UNAVAILABLE,
                LANDING_SENSOR,
                None,
                "the landing zone is unavailable",
                skip_reason[:DETAIL_CHARS],
                opened_at=_iso(tick.timestamp),
            )
            found[incident.key] = incident
    return found


# --- the cursor --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AlertState:
    """What the sensor remembers between ticks (its cursor, JSON): the open incidents and whether their alert
    was delivered, the recoveries not delivered yet, and the run events already read."""

    runs_after: int | None = None  # None until the first tick has read the run history
    open: dict[str, Incident] = dataclasses.field(default_factory=dict)
    delivered: set[str] = dataclasses.field(default_factory=set)
    recoveries: dict[str, Incident] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> AlertState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        if data.get("version") != CURSOR_VERSION:
            return cls()
        return cls(
            data["runs_after"],
            {k: Incident.from_json(v) for k, v in data["open"].items()},
            set(data["delivered"]),
            {k: Incident.from_json(v) for k, v in data["recoveries"].items()},
        )

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "runs_after": self.runs_after,
                "open": {k: v.to_json() for k, v in sorted(self.open.items())},
                "delivered": sorted(self.delivered & set(self.open)),
                "recoveries": {k: v.to_json() for k, v in sorted(self.recoveries.items())},
            },
            sort_keys=True,
        )


def next_state(state: AlertState, current: Mapping[str, Incident]) -> tuple[AlertState, dict[str, Incident]]:
    """The state once ``current`` is what is wrong, and the incidents that just resolved. A resolved incident
    whose alert never went out needs no recovery message; one that did waits in ``recoveries`` until sent."""
    opened, resolved = diff_incidents(state.open, current)
    still_open = {k: v for k, v in state.open.items() if k in current} | opened
    recoveries = dict(state.recoveries) | {k: v for k, v in resolved.items() if k in state.delivered}
    return AlertState(state.runs_after, still_open, state.delivered & set(still_open), recoveries), resolved


def deliver(state: AlertState, send: Callable[[str, Incident], bool]) -> tuple[int, int]:
    """Send every undelivered alert, then every pending recovery; stop at the first failure (the receiver is
    down: the rest waits for the next tick rather than for timeouts). Returns (alerts, recoveries) sent."""
    alerts = recovered = 0
    for key, incident in sorted(state.open.items()):
        if key in state.delivered:
            continue
        if not send("alert", incident):
            return alerts, recovered
        state.delivered.add(key)
        alerts += 1
    for key, incident in sorted(state.recoveries.items()):
        if key in state.open:  # it came back before its recovery went out: the alert still stands
            del state.recoveries[key]
            continue
        if not send("recovery", incident):
            return alerts, recovered
        del state.recoveries[key]
        recovered += 1
    return alerts, recovered


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


# --- the sensor --------------------------------------------------------------------------------------------------


def current_incidents(context: dg.SensorEvaluationContext, state: AlertState) -> tuple[dict[str, Incident], int | None]:
    """Everything wrong now, from each source, and the new run-event watermark."""
    instance = context.instance
    run_kinds = (RUN_FAILURE, REGISTRY_UNREACHABLE, LANDING_ZONE_UNAVAILABLE)
    open_runs = {k: v for k, v in state.open.items() if v.kind in run_kinds and v.asset != LANDING_SENSOR}
    outcomes, watermark = finished_runs_after(instance, state.runs_after)
    current = apply_run_outcomes(open_runs, outcomes)
    if context.repository_def is not None:
        current |= failed_check_incidents(instance, context.repository_def.asset_graph, known=state.open)
        current |= freshness_incidents(instance, context.repository_def.asset_graph)
        current |= decay_incidents(instance, context.repository_def.asset_graph)
    current |= landing_zone_incidents(instance)
    return current, watermark


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Sends one webhook message ({WEBHOOK_URL_VAR}) and e-mail ({SMTP_URL_VAR}) per incident "
    "(failed run, failed blocking check, missed freshness deadline, unreachable landing zone or "
    "registry, model decay) and one when it clears.",
)
def alerts_sensor(context: dg.SensorEvaluationContext):
    """Reads incidents from the instance and sends what changed; launches no runs."""
    state = AlertState.from_cursor(context.cursor)
    current, watermark = current_incidents(context, state)
    state, _ = next_state(state, current)
    state.runs_after = watermark
    url = os.environ.get(WEBHOOK_URL_VAR, "").strip()
    smtp_url = os.environ.get(SMTP_URL_VAR, "").strip()
    recipients = [r.strip() for r in os.environ.get(EMAIL_TO_VAR, "").split(",") if r.strip()]
    if smtp_url and not recipients:
        context.log.warning(f"{SMTP_URL_VAR} is set but {EMAIL_TO_VAR} is not: no e-mail is sent")
    email = bool(smtp_url and recipients)
    if not url and not email:
        waiting = len(set(state.open) - state.delivered)
        return dg.SensorResult(
            cursor=state.to_cursor(),
            skip_reason=dg.SkipReason(
                f"{WEBHOOK_URL_VAR} is not set: {len(state.open)} open incident(s), {waiting} alert(s) not sent"
            ),
        )
    fmt = webhook_format(url, os.environ.get(WEBHOOK_FORMAT_VAR, "").strip().lower() or None) if url else "json"
    ui_url = os.environ.get(UI_URL_VAR, "").strip() or DEFAULT_UI_URL
    sender = os.environ.get(EMAIL_FROM_VAR, "").strip() or DEFAULT_EMAIL_FROM
    channels = " and ".join(name for name, on in ((WEBHOOK_NAME, url), (SMTP_NAME, email)) if on)

    def send(event: str, incident: Incident) -> bool:
        """To every channel configured; a message counts as sent once all took it (a retry after a partial
        failure may repeat it on the channel that had it: at least once)."""
        at = _now()
        if url and not post_json(url, build_body(event, incident, fmt, ui_url, at), context.log):
            return False
        if email and not send_email(
            smtp_url, email_message(event, incident, ui_url, at, sender, recipients), context.log
        ):
            return False
        context.log.info(f"sent {event} to {channels}: {incident.summary}")
        return True

    alerts, recovered = deliver(state, send)
    pending = len(set(state.open) - state.delivered) + len(state.recoveries)
    summary = f"{alerts} alert(s) and {recovered} recovery message(s) sent; {len(state.open)} incident(s) open" + (
        f"; {pending} message(s) to retry on the next tick" if pending else ""
    )
    return dg.SensorResult(cursor=state.to_cursor(), skip_reason=dg.SkipReason(summary))
