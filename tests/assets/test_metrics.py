"""metrics_sensor pushes to a real Pushgateway, which a real Prometheus scrapes (Debian's prometheus and
prometheus-pushgateway on loopback, installed by `make test`); the series are queried from Prometheus's HTTP
API after a real ingest run. The shipped deploy/prometheus files pass promtool, and Prometheus loads the rules."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from smart_home_assets import metrics
from smart_home_assets.definitions import defs
from tests.conftest import event, write_upload

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"
DAY = "2026-03-01"
GOOD, BAD = 6, 2  # lines of the upload; the bad ones name a device type outside the catalog


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def prometheus(tmp_path):
    """A Pushgateway and a Prometheus scraping it every second, with the shipped alerting rules."""
    for binary in ("prometheus", "prometheus-pushgateway", "promtool"):
        assert shutil.which(binary), f"{binary} is missing: `make test` installs it (scripts/system-packages.sh)"
    gateway_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}],
                    }
                ],
            }
        )
    )
    processes = [
        subprocess.Popen(
            ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{gateway_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        gateway, api = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{prometheus_port}"
        wait_http(f"{gateway}/-/ready")
        wait_http(f"{api}/-/ready")
        yield {"gateway": gateway, "api": api}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def query(api: str, promql: str) -> list[dict]:
    url = f"{api}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scraped(api: str, promql: str, timeout: float = 60.0) -> list[dict]:
    """The query's result once Prometheus has scraped something for it."""
    deadline = time.monotonic() + timeout
    while not (result := query(api, promql)):
        assert time.monotonic() < deadline, f"no series for {promql}"
        time.sleep(0.5)
    return result


def tick(instance) -> str:
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    result = metrics.metrics_sensor(context)
    assert isinstance(result, dg.SkipReason) and result.skip_message is not None
    return result.skip_message


def test_a_materialization_s_metrics_reach_prometheus(project_env, prometheus, monkeypatch):
    lines = [event(DAY, n) for n in range(GOOD)] + [event(DAY, GOOD + n, device_type="toaster_x") for n in range(BAD)]
    write_upload(project_env["landing"], DAY, "hub-0001", lines)
    monkeypatch.setenv(metrics.PUSHGATEWAY_URL_VAR, prometheus["gateway"])
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        run = defs.resolve_job_def("ingest_and_clean").execute_in_process(partition_key=DAY, instance=instance)
        assert run.success
        assert tick(instance).startswith("pushed ")

        api = prometheus["api"]
        (raw,) = scraped(api, "smart_home_raw_lines")
        assert raw["metric"]["partition"] == DAY and float(raw["value"][1]) == GOOD + BAD
        assert raw["metric"]["job"] == metrics.PUSH_JOB  # honor_labels: the pushed job label is kept
        (clean,) = scraped(api, "smart_home_clean_rows")
        assert float(clean["value"][1]) == GOOD
        (reason,) = scraped(api, "smart_home_quarantined_rows")
        assert reason["metric"]["reason"] == "unknown_device_type" and float(reason["value"][1]) == BAD
        (rate,) = scraped(api, "smart_home_quarantine_rate")
        assert float(rate["value"][1]) == pytest.approx(BAD / (GOOD + BAD))
        (conserved,) = scraped(api, 'smart_home_check_passed{check="check_rows_conserved"}')
        assert conserved["metric"]["asset"] == "device_usage" and conserved["metric"]["blocking"] == "true"
        assert float(conserved["value"][1]) == 1
        (catalog,) = scraped(api, 'smart_home_check_passed{check="check_device_type_in_catalog"}')
        assert float(catalog["value"][1]) in (0, 1)  # evaluated and exported, whatever its verdict
        (duration,) = scraped(api, 'smart_home_run_duration_seconds{dagster_job="ingest_and_clean"}')
        assert duration["metric"]["status"] == "success" and float(duration["value"][1]) > 0
        (failed,) = scraped(api, 'smart_home_run_failed{dagster_job="ingest_and_clean"}')
        assert float(failed["value"][1]) == 0
        lags = {r["metric"]["asset"] for r in scraped(api, "smart_home_freshness_lag_seconds")}
        assert {"raw_usage", "device_usage"} <= lags
        incidents = {r["metric"]["kind"]: float(r["value"][1]) for r in scraped(api, "smart_home_open_incidents")}
        assert set(incidents) >= {
            "blocking_check_failed",
            "freshness_deadline_missed",
            "model_decay",
            "landing_zone_unavailable",
        }

        # the shipped rules are loaded and evaluated against these series
        with urllib.request.urlopen(f"{api}/api/v1/rules", timeout=5) as response:
            groups = json.load(response)["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert {
            "SmartHomeRunFailed",
            "SmartHomeBlockingCheckFailed",
            "SmartHomeFreshnessDeadlineMissed",
            "SmartHomeLandingZoneUnavailable",
            "SmartHomeRegistryUnreachable",
            "SmartHomeModelDecaying",
        } <= set(rules)
        assert all(rule["health"] in ("ok", "unknown") for rule in rules.values()), rules


def test_with_no_pushgateway_configured_the_sensor_skips_at_once(project_env, monkeypatch):
    monkeypatch.delenv(metrics.PUSHGATEWAY_URL_VAR, raising=False)
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        started = time.monotonic()
        assert "not set" in tick(instance)
        assert time.monotonic() - started < 5  # no push, no wait (a bound against hanging, not a benchmark)


def test_an_unreachable_pushgateway_is_a_warning_not_a_failure(project_env, monkeypatch, capfd):
    monkeypatch.setenv(metrics.PUSHGATEWAY_URL_VAR, f"http://metrics:s3cret-pw@127.0.0.1:{free_port()}")
    with dg.instance_for_test(temp_dir=str(project_env["home"])) as instance:
        message = tick(instance)
    assert "unreachable" in message and "next tick" in message
    out, err = capfd.readouterr()
    assert "did not take the metrics" in out + err and "s3cret-pw" not in out + err + message


def test_the_shipped_prometheus_files_pass_promtool():
    for command in (
        ["promtool", "check", "rules", str(DEPLOY / "alerts.yml")],
        ["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr
