"""Freshness per partition: a day whose uploads never came is late at the deadline and not before, its alert
goes out once, and the late upload clears it. Real definitions, real ingest runs, Dagster's freshness sensor
and alerts_sensor on a test instance, with the clock Dagster reads frozen at chosen moments."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from asset_checks import freshness_checks
from asset_checks.freshness_checks import SENSOR_NAME, expected_partition, model_deadline_cron
from smart_home_assets import alerts
from smart_home_assets.definitions import defs
from tests.assets.test_alerts import Receiver
from tests.conftest import event, write_upload

ARRIVED, LATE = "2026-03-01", "2026-03-02"
FRESHNESS = dg.AssetCheckKey(dg.AssetKey("device_usage"), "freshness_check")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def instance(project_env):
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        yield instance


@pytest.fixture
def receiver(monkeypatch):
    server = Receiver()
    monkeypatch.setenv(alerts.WEBHOOK_URL_VAR, server.url)
    monkeypatch.delenv(alerts.WEBHOOK_FORMAT_VAR, raising=False)
    yield server
    server.close()


def usage_messages(receiver) -> list[dict]:
    return [body for body in receiver.bodies if body["asset"] == "device_usage"]


class Daemon:
    """Ticks of the two sensors as the daemon runs them, each from its previous cursor; the freshness
    sensor's run requests are executed in process, as the daemon would launch them."""

    def __init__(self, instance):
        self.instance = instance
        self.cursors: dict[str, str | None] = {}
        self.repository = defs.get_repository_def()

    def tick(self, name: str):
        sensor = self.repository.get_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(name), repository_def=self.repository, sensor_name=name
        )
        result = sensor.evaluate_tick(context)
        self.cursors[name] = result.cursor
        return result

    def freshness(self) -> list[dg.AssetCheckKey]:
        """One tick of Dagster's freshness sensor; runs what it requests. Returns the device_usage checks it
        requested (usage_model's, never materialized here, fails on its own and is left aside)."""
        requests = self.tick(SENSOR_NAME).run_requests
        keys = [key for request in requests for key in (request.asset_check_keys or [])]
        if keys:
            job = dg.define_asset_job("freshness_only", selection=dg.AssetSelection.checks(*keys))
            runnable = dg.Definitions(
                assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources
            ).resolve_job_def("freshness_only")
            assert runnable.execute_in_process(instance=self.instance).success
        return [key for key in keys if key.asset_key == FRESHNESS.asset_key]

    def alerts(self):
        return self.tick("alerts_sensor")


def ingest(instance, day: str):
    """The ingest_and_clean job for ``day``: raw_usage, device_usage and every check on them, the freshness
    check included (as in every run that writes device_usage)."""
    result = defs.resolve_job_def("ingest_and_clean").execute_in_process(partition_key=day, instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == FRESHNESS.asset_key}


def latest_freshness(instance) -> dg.AssetCheckEvaluation:
    record = instance.event_log_storage.get_asset_check_summary_records([FRESHNESS])[FRESHNESS]
    return record.last_completed_check_execution_record.event.asset_check_evaluation


def upload(project_env, day: str):
    write_upload(project_env["landing"], day, "hub-0001", [event(day, n) for n in range(5)])


def test_a_missing_day_is_late_at_the_deadline_not_before_and_a_late_upload_clears_it(project_env, instance, receiver):
    daemon = Daemon(instance)
    upload(project_env, ARRIVED)
    with freeze_time(at(f"{LATE}T09:00")):
        evaluated = ingest(instance, ARRIVED)  # the freshness check runs in the ingest run itself
    assert evaluated["freshness_check"].passed
    assert evaluated["freshness_check"].metadata["expected_partition"].value == ARRIVED

    with freeze_time(at("2026-03-03T02:59")):  # one minute before LATE's deadline
        assert daemon.freshness() == []  # passed, and cannot be overdue before 03:00: not even evaluated
        daemon.alerts()
    assert usage_messages(receiver) == []

    with freeze_time(at("2026-03-03T03:01")):  # the first tick after the deadline
        assert daemon.freshness() == [FRESHNESS]
        late = latest_freshness(instance)
        assert not late.passed and late.metadata["expected_partition"].value == LATE
        assert late.severity == dg.AssetCheckSeverity.WARN
        daemon.alerts()
    (alert,) = usage_messages(receiver)
    assert (alert["event"], alert["kind"], alert["asset"], alert["partition"]) == (
        "alert",
        alerts.FRESHNESS_MISSED,
        "device_usage",
        LATE,
    )
    assert "2026-03-03T03:00:00+00:00" in alert["summary"] and alert["run_url"].endswith(alert["run_id"])

    with freeze_time(at("2026-03-03T03:30")):  # later ticks: the check failed, the sensor waits; one alert
        assert daemon.freshness() == []
        daemon.alerts()
        daemon.alerts()
    assert len(usage_messages(receiver)) == 1

    upload(project_env, LATE)
    with freeze_time(at("2026-03-03T04:10")):
        assert ingest(instance, LATE)["freshness_check"].passed  # the late day's own run turns it green
        daemon.alerts()
        daemon.alerts()
    assert [b["event"] for b in usage_messages(receiver)] == ["alert", "recovery"]
    assert usage_messages(receiver)[1]["partition"] == LATE


def test_a_run_for_another_day_does_not_clear_a_late_day(project_env, instance, receiver):
    daemon = Daemon(instance)
    upload(project_env, ARRIVED)
    with freeze_time(at("2026-03-03T03:05")):
        evaluated = ingest(instance, ARRIVED)
        assert not evaluated["freshness_check"].passed  # LATE is due and missing, whatever day this run wrote
        daemon.alerts()
    assert [(b["kind"], b["partition"]) for b in usage_messages(receiver)] == [(alerts.FRESHNESS_MISSED, LATE)]


def test_the_deadline_is_configurable_and_the_model_follows_it(monkeypatch):
    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
    # Dagster's own check would expect the partition that is last at the deadline: today's, with end_offset=1.
    assert expected_partition(daily, at("2026-03-02T03:00")) == "2026-03-01"
    assert expected_partition(daily, at("2026-01-01T03:00")) is None  # nothing has ended yet
    pinned = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-02-01")
    assert expected_partition(pinned, at("2026-03-02T03:00")) == "2026-01-31"

    assert model_deadline_cron("0 3 * * *", dt.timedelta(hours=2)) == "0 5 * * *"
    assert model_deadline_cron("30 23 * * *", dt.timedelta(hours=1.5)) == "0 1 * * *"
    monkeypatch.setenv(freshness_checks.DEADLINE_CRON_VAR, "0 6 * * *")
    monkeypatch.setenv(freshness_checks.RETRAIN_BOUND_VAR, "3")
    specs = {
        spec.key.asset_key.to_user_string(): spec.metadata["dagster/freshness_params"].value
        for check in freshness_checks.build_freshness_checks()
        for spec in check.check_specs
    }
    assert specs["device_usage"]["deadline_cron"] == "0 6 * * *"
    assert specs["usage_model"]["deadline_cron"] == "0 9 * * *"
    assert specs["usage_model"]["lower_bound_delta_seconds"] == 86400
    monkeypatch.setenv(freshness_checks.DEADLINE_CRON_VAR, "at three")
    with pytest.raises(ValueError, match="SMART_HOME_FRESHNESS_DEADLINE_CRON"):
        freshness_checks.build_freshness_checks()


def test_the_model_is_late_when_not_retrained_since_the_deadline_before(project_env, instance):
    """usage_model's check: at each 05:00 deadline the model was updated in the 24 hours before it."""
    from dagster._utils.schedules import get_next_cron_tick

    model_check = dg.AssetCheckKey(dg.AssetKey("usage_model"), "freshness_check")
    job = dg.define_asset_job("model_freshness", selection=dg.AssetSelection.checks(model_check))
    runnable = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources
    ).resolve_job_def("model_freshness")

    def evaluate(moment: dt.datetime) -> dg.AssetCheckEvaluation:
        with freeze_time(moment):
            (evaluation,) = runnable.execute_in_process(instance=instance).get_asset_check_evaluations()
        return evaluation

    never = evaluate(dt.datetime.now(dt.UTC))
    assert not never.passed and "never materialized" in never.description
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="usage_model"))  # trained now
    deadline = get_next_cron_tick("0 5 * * *", dt.datetime.now(dt.UTC), "UTC")
    assert evaluate(deadline + dt.timedelta(minutes=1)).passed  # trained within the 24 h before it
    late = evaluate(deadline + dt.timedelta(days=1, minutes=1))  # the next deadline, no retrain since
    assert not late.passed and "not updated since" in late.description
