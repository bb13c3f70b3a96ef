"""What the CLI reads back from the instance after a `dagster asset materialize` run: whether only checks failed
(the model step of `smart-home pipeline` goes on to the summary then, instead of exiting)."""

import time

import dagster as dg
import pytest

from smart_home_tools.cli import only_checks_failed


@dg.asset
def good() -> int:
    return 1


@dg.asset_check(asset=good, blocking=True)
def good_fails_its_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


@dg.asset
def broken() -> int:
    raise RuntimeError("the asset itself fails")


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("")
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_a_failed_check_alone_is_only_checks_failed(instance):
    started = time.time()
    result = dg.materialize([good, good_fails_its_check], instance=instance, raise_on_error=False)
    assert not result.success  # a failed blocking check fails the run
    assert only_checks_failed(started)


def test_a_failed_asset_is_not(instance):
    started = time.time()
    result = dg.materialize([good, good_fails_its_check, broken], instance=instance, raise_on_error=False)
    assert not result.success
    assert not only_checks_failed(started)


def test_a_successful_run_is_not(instance):
    started = time.time()
    assert dg.materialize([good], instance=instance).success
    assert not only_checks_failed(started)
