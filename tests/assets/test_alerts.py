"""alerts_sensor against a real Dagster instance, real failed and successful runs, and a real HTTP receiver on
127.0.0.1: one alert per incident, none on repeats, one recovery when it clears, the URL never in a log."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import dagster as dg
import pytest

from smart_home_assets import alerts
from smart_home_assets.alerts import Incident, alerts_sensor
from smart_home_assets.partitions import daily_partitions

DAY, OTHER_DAY = "2026-03-01", "2026-03-02"
SECRET = "T0000/B0000/s3cr3t-t0ken-d0-not-log"
PASSWORD = "hunter2-registry"


@dg.asset(partitions_def=daily_partitions)
def flaky_usage(context) -> None:
    """Fails while ALERTS_TEST_FAIL is set, as an asset whose input is missing would."""
    import os

    if os.environ.get("ALERTS_TEST_FAIL"):
        raise dg.Failure(f"no upload for {context.partition_key}")


@dg.asset(partitions_def=daily_partitions)
def checked_usage() -> None:
    return None


@dg.asset_check(asset=checked_usage, blocking=True, partitions_def=daily_partitions)
def rows_valid() -> dg.AssetCheckResult:
    import os

    return dg.AssetCheckResult(passed=not os.environ.get("ALERTS_TEST_CHECK_FAILS"))


@dg.asset
def model_like() -> None:
    return None


@dg.asset_check(asset=model_like, blocking=True)
def beats_baselines() -> dg.AssetCheckResult:
    import os

    return dg.AssetCheckResult(passed=not os.environ.get("ALERTS_TEST_CHECK_FAILS"))


DEFS = dg.Definitions(
    assets=[flaky_usage, checked_usage, model_like], asset_checks=[rows_valid, beats_baselines], sensors=[alerts_sensor]
)


class Receiver:
    """An HTTP server on 127.0.0.1 recording each POST body; answers 500 while ``failing``."""

    def __init__(self):
        receiver = self
        self.bodies: list[dict] = []
        self.requests = 0
        self.failing = False

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failing:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{SECRET}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    server = Receiver()
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, server.url)
    monkeypatch.delenv(alerts.WEBHOOK_FORMAT_VAR, raising=False)
    monkeypatch.setenv(alerts.UI_URL_VAR, "http://dagster.example:3000")
    yield server
    server.close()


@pytest.fixture
def instance(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield instance


class Ticks:
    """The daemon's successive evaluations of alerts_sensor: each starts from the previous tick's cursor."""

    def __init__(self, instance):
        self.instance = instance
        self.cursor = None
        self.skips: list[str] = []

    def __call__(self) -> str:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=DEFS)
        result = alerts_sensor(context)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        assert result.skip_reason is not None and result.skip_reason.skip_message is not None
        self.cursor = result.cursor
        self.skips.append(result.skip_reason.skip_message)
        return self.skips[-1]


def run_flaky(instance, monkeypatch, day: str, *, fail: bool):
    if fail:
        monkeypatch.setenv("ALERTS_TEST_FAIL", "1")
    else:
        monkeypatch.delenv("ALERTS_TEST_FAIL", raising=False)
    result = dg.materialize([flaky_usage], partition_key=day, instance=instance, raise_on_error=False)
    assert result.success is not fail
    return result


def run_checked(instance, monkeypatch, day: str, *, check_fails: bool):
    if check_fails:
        monkeypatch.setenv("ALERTS_TEST_CHECK_FAILS", "1")
    else:
        monkeypatch.delenv("ALERTS_TEST_CHECK_FAILS", raising=False)
    result = dg.materialize([checked_usage, rows_valid], partition_key=day, instance=instance, raise_on_error=False)
    assert result.success is not check_fails
    return result


def test_a_failed_run_sends_one_alert_and_its_recovery_one_message(instance, receiver, monkeypatch):
    tick = Ticks(instance)
    tick()
    assert receiver.bodies == []  # an empty instance: nothing to say

    failed = run_flaky(instance, monkeypatch, DAY, fail=True)
    tick()
    (alert,) = receiver.bodies
    assert alert["event"] == "alert" and alert["kind"] == "run_failure"
    assert (alert["asset"], alert["partition"], alert["run_id"]) == ("flaky_usage", DAY, failed.run_id)
    assert alert["run_url"] == f"http://dagster.example:3000/runs/{failed.run_id}"
    assert f"flaky_usage for partition {DAY}" in alert["summary"]
    assert f"no upload for {DAY}" in alert["detail"]

    tick()  # the next tick: the same incident, nothing more
    run_flaky(instance, monkeypatch, DAY, fail=True)  # it fails again: still the same incident
    tick()
    assert len(receiver.bodies) == 1

    run_flaky(instance, monkeypatch, OTHER_DAY, fail=False)  # another day's success clears nothing
    tick()
    assert len(receiver.bodies) == 1

    run_flaky(instance, monkeypatch, DAY, fail=False)
    tick()
    tick()
    assert [b["event"] for b in receiver.bodies] == ["alert", "recovery"]
    recovery = receiver.bodies[1]
    assert (recovery["asset"], recovery["partition"], recovery["run_id"]) == ("flaky_usage", DAY, failed.run_id)


def test_the_cursor_survives_a_restart_and_holds_no_secret(instance, receiver, monkeypatch):
    tick = Ticks(instance)
    run_flaky(instance, monkeypatch, DAY, fail=True)
    tick()
    restarted = Ticks(instance)  # a new daemon process: only the stored cursor carries over
    restarted.cursor = tick.cursor
    restarted()
    assert len(receiver.bodies) == 1
    assert SECRET not in tick.cursor and "hooks" not in tick.cursor


def test_slack_format_when_configured_or_on_slacks_host(instance, receiver, monkeypatch):
    monkeypatch.setenv(alerts.WEBHOOK_FORMAT_VAR, "slack")
    failed = run_flaky(instance, monkeypatch, DAY, fail=True)
    Ticks(instance)()
    (body,) = receiver.bodies
    url = f"http://dagster.example:3000/runs/{failed.run_id}"
    assert set(body) == {"text", "blocks"}
    assert f"<{url}|{failed.run_id[:8]}>" in body["text"]
    assert "flaky_usage" in body["text"] and DAY in body["text"]
    shown = "\n".join(block["text"]["text"] for block in body["blocks"] if "text" in block)
    assert "`flaky_usage`" in shown and f"`{DAY}`" in shown and f"<{url}|" in shown

    assert alerts.webhook_format("https://hooks.slack.com/services/T/B/x", None) == "slack"
    assert alerts.webhook_format("https://alerts.example/hook", None) == "json"
    with pytest.raises(ValueError):
        alerts.webhook_format("https://alerts.example/hook", "xml")


def test_a_failed_blocking_check_is_one_incident_cleared_by_a_passing_evaluation(instance, receiver, monkeypatch):
    tick = Ticks(instance)
    failed = run_checked(instance, monkeypatch, DAY, check_fails=True)
    tick()
    # The run failed too, but only on its blocking check: one alert, naming the check, not a second "run failed".
    (alert,) = receiver.bodies
    assert (alert["kind"], alert["asset"], alert["partition"]) == ("blocking_check_failed", "checked_usage", DAY)
    assert "rows_valid" in alert["summary"] and alert["run_id"] == failed.run_id
    tick()
    assert len(receiver.bodies) == 1

    run_checked(instance, monkeypatch, DAY, check_fails=False)
    tick()
    assert [(b["event"], b["kind"]) for b in receiver.bodies] == [
        ("alert", "blocking_check_failed"),
        ("recovery", "blocking_check_failed"),
    ]


def test_a_receiver_error_is_retried_on_the_next_tick_and_delivered_once(instance, receiver, monkeypatch):
    monkeypatch.setattr(alerts.time, "sleep", lambda s: None)  # the retries' backoff
    tick = Ticks(instance)
    run_flaky(instance, monkeypatch, DAY, fail=True)
    receiver.failing = True
    message = tick()
    assert receiver.requests == alerts.ATTEMPTS and receiver.bodies == []
    assert "1 message(s) to retry on the next tick" in message
    receiver.failing = False
    tick()
    tick()
    assert [b["event"] for b in receiver.bodies] == ["alert"]


def test_an_unreachable_receiver_is_retried_and_the_url_is_never_logged(instance, receiver, monkeypatch, caplog, capfd):
    monkeypatch.setattr(alerts.time, "sleep", lambda s: None)
    caplog.set_level(logging.DEBUG)
    tick = Ticks(instance)
    run_flaky(instance, monkeypatch, DAY, fail=True)
    down = f"http://127.0.0.1:1/hooks/{SECRET}"  # nothing listens on port 1
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, down)
    tick()
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, receiver.url)
    receiver.failing = True
    tick()
    receiver.failing = False
    tick()  # delivered
    run_flaky(instance, monkeypatch, DAY, fail=False)
    tick()  # recovered
    assert [b["event"] for b in receiver.bodies] == ["alert", "recovery"]

    out, err = capfd.readouterr()
    logged = caplog.text + out + err + "\n".join(tick.skips)
    assert "did not take the message" in logged and "HTTP 500" in logged and "URLError" in logged
    assert "sent alert to the alert webhook (SMART_HOME_ALERT_WEBHOOK_URL)" in logged
    assert SECRET not in logged and "/hooks/" not in logged


def test_no_webhook_configured_keeps_the_incident_for_later(instance, receiver, monkeypatch):
    tick = Ticks(instance)
    run_flaky(instance, monkeypatch, DAY, fail=True)
    monkeypatch.delenv(alerts.WEBHOOK_URL_VAR)
    assert "SMART_HOME_ALERT_WEBHOOK_URL is not set: 1 open incident(s), 1 alert(s) not sent" in tick()
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, receiver.url)
    tick()
    assert [b["event"] for b in receiver.bodies] == ["alert"]


def test_diff_and_run_outcomes_are_pure_and_idempotent():
    a = Incident("run_failure", "x", DAY, "x failed", run_id="r1")
    b = Incident("run_failure", "y", None, "y failed", run_id="r2")
    assert alerts.diff_incidents({a.key: a}, {b.key: b}) == ({b.key: b}, {a.key: a})
    assert alerts.diff_incidents({a.key: a}, {a.key: a}) == ({}, {})

    fail = alerts.RunOutcome(1, "r1", ("x",), DAY, succeeded=False, detail="boom")
    again = alerts.RunOutcome(2, "r3", ("x",), DAY, succeeded=False)
    covering = alerts.RunOutcome(3, "r4", ("w", "x"), DAY, succeeded=True)  # a run of more assets clears it too
    opened = alerts.apply_run_outcomes({}, [fail, again])
    assert [i.run_id for i in opened.values()] == ["r1"]
    assert alerts.apply_run_outcomes(opened, [fail, again]) == opened  # re-reading the same events
    assert alerts.apply_run_outcomes(opened, [covering]) == {}
    assert alerts.apply_run_outcomes({}, [covering, fail]) == {}  # storage order decides: the success came later
    check_only = alerts.RunOutcome(4, "r5", ("x",), DAY, succeeded=False, reported_by_checks=True)
    assert alerts.apply_run_outcomes({}, [check_only]) == {}


def test_a_range_run_names_its_range():
    assert (
        alerts.run_partition(
            {"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-31"}
        )
        == "2026-03-01...2026-03-31"
    )
    assert alerts.run_partition({"dagster/partition": DAY}) == DAY
    assert alerts.run_partition({}) is None


def record_landing_tick(instance, skip_message: str) -> None:
    """Store landing_zone_sensor's tick as the sensor daemon does (its state, declared running in code, then a
    SKIPPED tick with the sensor's skip message): what alerts_sensor reads in production."""
    import time

    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        SensorInstigatorData,
        TickData,
        TickStatus,
    )

    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("smart_home_assets"), "__repository__"),
        alerts.LANDING_SENSOR,
    )
    if not instance.get_instigator_state(origin.get_id(), origin.get_selector().get_id()):
        instance.add_instigator_state(
            InstigatorState(
                origin, InstigatorType.SENSOR, InstigatorStatus.DECLARED_IN_CODE, SensorInstigatorData(min_interval=15)
            )
        )
    instance.create_tick(
        TickData(
            instigator_origin_id=origin.get_id(),
            instigator_name=alerts.LANDING_SENSOR,
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.SKIPPED,
            timestamp=time.time(),
            selector_id=origin.get_selector().get_id(),
            skip_reason=skip_message,
        )
    )


def test_an_unavailable_landing_zone_is_one_incident_until_the_sensor_lists_it_again(project_env, instance, receiver):
    from resources import DuckDBWarehouse, LandingZone
    from smart_home_assets.sensors import landing_zone_sensor
    from tests.sensor_ticks import NOTHING_NEW, evaluate

    def landing_tick(landing_path):
        resources = {
            "landing": LandingZone(path=str(landing_path)),
            "warehouse": DuckDBWarehouse(database=str(project_env["warehouse"])),
        }
        with dg.build_sensor_context(instance=instance, cursor="{}", resources=resources) as context:
            return evaluate(landing_zone_sensor, context).skip

    tick = Ticks(instance)
    down = landing_tick(project_env["data"] / "no-such-landing-zone")
    assert down.startswith(alerts.LANDING_SKIP_PREFIX)
    record_landing_tick(instance, down)
    tick()
    record_landing_tick(instance, down)  # still down on the sensor's next tick
    tick()
    (alert,) = receiver.bodies
    assert (alert["kind"], alert["asset"], alert["run_id"]) == ("landing_zone_unavailable", "landing_zone_sensor", None)
    assert "no-such-landing-zone" in alert["detail"]

    up = landing_tick(project_env["landing"])
    assert up == NOTHING_NEW
    record_landing_tick(instance, up)
    tick()
    assert [b["event"] for b in receiver.bodies] == ["alert", "recovery"]


def test_an_unpartitioned_blocking_check_failure_is_an_incident_too(instance, receiver, monkeypatch):
    tick = Ticks(instance)
    monkeypatch.setenv("ALERTS_TEST_CHECK_FAILS", "1")
    assert not dg.materialize([model_like, beats_baselines], instance=instance, raise_on_error=False).success
    tick()
    (alert,) = receiver.bodies
    assert (alert["kind"], alert["asset"], alert["partition"]) == ("blocking_check_failed", "model_like", None)
    assert "beats_baselines" in alert["summary"]
    monkeypatch.delenv("ALERTS_TEST_CHECK_FAILS")
    assert dg.materialize([model_like, beats_baselines], instance=instance).success
    tick()
    assert [b["event"] for b in receiver.bodies] == ["alert", "recovery"]


def test_the_sensor_reads_the_projects_own_checks(instance, receiver):
    """With the code location's definitions (every blocking check of the project, partitioned or not) and an
    instance with no history: a tick that finds nothing and says so."""
    from smart_home_assets.definitions import defs

    project = dg.Definitions.merge(defs, dg.Definitions(sensors=[alerts_sensor]))
    context = dg.build_sensor_context(instance=instance, definitions=project)
    result = alerts_sensor(context)
    assert result.skip_reason.skip_message == "0 alert(s) and 0 recovery message(s) sent; 0 incident(s) open"
    assert receiver.bodies == []


@dg.asset
def registry_user() -> None:
    """Opens the model registry the way usage_model does before it trains (resources.tracking)."""
    from resources.tracking import check_reachable

    check_reachable(f"http://smart-home:{PASSWORD}@127.0.0.1:1", timeout=1.0)  # nothing listens on port 1


def test_an_unreachable_registry_is_named_as_such_and_its_password_is_not_sent(instance, receiver):
    failed = dg.materialize([registry_user], instance=instance, raise_on_error=False)
    assert not failed.success
    Ticks(instance)()
    (alert,) = receiver.bodies
    assert (alert["kind"], alert["asset"], alert["partition"]) == ("registry_unreachable", "registry_user", None)
    assert "the model registry is unreachable" in alert["summary"]
    assert "TrackingServerUnreachable" in alert["detail"] and PASSWORD not in json.dumps(alert)


def test_a_backlog_is_read_in_storage_order_over_several_ticks(instance, monkeypatch):
    """Three failures then a success of the same partition, read two events of each kind per tick: the
    watermark stops where both kinds are complete, so the success is never applied before the failures."""
    for _ in range(3):
        run_flaky(instance, monkeypatch, DAY, fail=True)
    run_flaky(instance, monkeypatch, DAY, fail=False)
    seen, watermark, open_runs = [], None, {}
    for _ in range(4):
        outcomes, watermark = alerts.finished_runs_after(instance, watermark, page=2)
        seen += [o.succeeded for o in outcomes]
        open_runs = alerts.apply_run_outcomes(open_runs, outcomes)
    assert seen == [False, False, False, True] and open_runs == {}
    assert alerts.finished_runs_after(instance, watermark, page=2) == ([], watermark)


def test_credentials_in_error_text_are_redacted():
    text = "cannot reach postgresql://app:hunter2@db:5432/x nor http://plain.example/x"
    assert alerts.redact_credentials(text) == "cannot reach postgresql://app:***@db:5432/x nor http://plain.example/x"


def test_a_file_url_appends_each_message_to_a_local_log(instance, monkeypatch, tmp_path):
    """The demo's receiver (`make run` prints it): file://... gets one JSON line per message, nothing else."""
    log_path = tmp_path / "alerts" / "alerts.jsonl"
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, log_path.as_uri())
    tick = Ticks(instance)
    run_flaky(instance, monkeypatch, DAY, fail=True)
    tick()
    tick()
    run_flaky(instance, monkeypatch, DAY, fail=False)
    tick()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(b["event"], b["kind"], b["partition"]) for b in lines] == [
        ("alert", "run_failure", DAY),
        ("recovery", "run_failure", DAY),
    ]


class MailServer:
    """aiosmtpd on 127.0.0.1 that requires a login (AUTH PLAIN/LOGIN without TLS: loopback only)."""

    def __init__(self, user: str, password: str):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list = []
        self.logins: list[str] = []
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):
                import email
                import email.policy

                server.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        def authenticate(smtp, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            if ok:
                server.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        import socket

        with socket.socket() as probe:  # a free port (aiosmtpd's controller connects to itself: no port 0)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=False,
        )
        self.controller.start()

    def close(self):
        self.controller.stop()


def test_email_over_smtp_one_per_incident_and_its_recovery_the_password_never_logged(
    instance, monkeypatch, caplog, capfd
):
    server = MailServer("alerts", PASSWORD)
    try:
        monkeypatch.delenv(alerts.WEBHOOK_URL_VAR, raising=False)
        monkeypatch.setenv(alerts.SMTP_URL_VAR, f"smtp://alerts:{PASSWORD}@127.0.0.1:{server.port}")
        monkeypatch.setenv(alerts.EMAIL_TO_VAR, "oncall@example.org, data-team@example.org")
        monkeypatch.setenv(alerts.UI_URL_VAR, "http://dagster.example:3000")
        tick = Ticks(instance)
        caplog.set_level(logging.DEBUG)
        failed = run_flaky(instance, monkeypatch, DAY, fail=True)
        tick()
        tick()
        run_flaky(instance, monkeypatch, DAY, fail=True)  # the same incident again: no second e-mail
        tick()
        assert len(server.messages) == 1
        (alert,) = server.messages
        assert alert["Subject"].strip().startswith("[smart-home] Alert: flaky_usage for partition 2026-03-01")
        assert alert["To"] == "oncall@example.org, data-team@example.org"
        body = alert.get_content()
        assert f"http://dagster.example:3000/runs/{failed.run_id}" in body and f"no upload for {DAY}" in body
        run_flaky(instance, monkeypatch, DAY, fail=False)
        tick()
        assert [m["Subject"].strip().split(":")[0] for m in server.messages] == [
            "[smart-home] Alert",
            "[smart-home] Recovered",
        ]
        assert server.logins == ["alerts", "alerts"]

        monkeypatch.setenv(alerts.SMTP_URL_VAR, f"smtp://alerts:wrong-{PASSWORD}@127.0.0.1:{server.port}")
        run_flaky(instance, monkeypatch, OTHER_DAY, fail=True)
        tick()  # refused: kept for the next tick, the reason logged by class only
        assert len(server.messages) == 2
        monkeypatch.setenv(alerts.SMTP_URL_VAR, f"smtp://alerts:{PASSWORD}@127.0.0.1:{server.port}")
        tick()
        assert len(server.messages) == 3 and OTHER_DAY in server.messages[2]["Subject"]
        out, err = capfd.readouterr()
        logged = caplog.text + out + err
        assert PASSWORD not in logged and PASSWORD not in tick.cursor
        # aiosmtpd answers 535 and hangs up: smtplib sees the disconnection
        assert "did not take the message: SMTPServerDisconnected" in logged
    finally:
        server.close()
