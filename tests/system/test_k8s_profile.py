"""The Kubernetes deployment files (deploy/k8s/) load and validate against dagster-k8s's own configuration
schemas, and the code location they point at loads with their configuration. There is no cluster here: what a
cluster would reject in these files is what these tests can catch."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def snake_keys(value):
    """The chart passes camelCase values to the launcher as its snake_case config; nested k8s specs stay."""
    return {snake(k): v for k, v in value.items()}


def values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def manifests() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((DEPLOY / "smart-home-config.yaml").read_text())}


def test_the_run_launcher_values_are_a_valid_k8s_run_launcher_config():
    launcher = values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = snake_keys(launcher["config"]["k8sRunLauncher"])
    config["env_config_maps"] = [m["name"] for m in config["env_config_maps"]]
    config["env_secrets"] = [s["name"] for s in config["env_secrets"]]
    config["run_k8s_config"] = snake_keys(config["run_k8s_config"])  # the chart renames this level too
    # what the chart itself fills in from the release
    config |= {
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "postgres_password_secret": values()["global"]["postgresqlSecretName"],
        "service_account_name": "dagster",
        "load_incluster_config": True,
    }
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, [e.message for e in result.errors]


def test_the_step_executor_run_config_is_valid_for_k8s_job_executor():
    run_config = yaml.safe_load((DEPLOY / "step-executor.yaml").read_text())
    result = process_config(k8s_job_executor.config_schema.config_type, run_config["execution"]["config"])
    assert result.success, [e.message for e in result.errors]


def test_instance_values_match_the_production_profile():
    v = values()
    assert v["postgresql"]["enabled"] is False
    assert v["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"  # as deploy/production/dagster.yaml
    coordinator = v["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator" and coordinator["enabled"] is True
    assert set(v["dagsterDaemon"]["runRetries"]) <= {"enabled", "maxRetries", "retryOnAssetOrOpFailure"}
    config_maps = {"smart-home-config"}
    secrets = {"smart-home-secrets"}
    for section in (v["dagsterWebserver"], v["dagsterDaemon"], v["dagster-user-deployments"]["deployments"][0]):
        assert {m["name"] for m in section["envConfigMaps"]} == config_maps
        assert {s["name"] for s in section["envSecrets"]} == secrets
    assert set(manifests()) == config_maps | secrets


def test_the_user_deployment_loads_with_the_configuration_it_is_given():
    """`dagster api grpc` args of the user deployment name a module that loads with the ConfigMap's settings
    (the secrets are unset here, so the development key and SMART_HOME_ENV=development stand in)."""
    deployment = values()["dagster-user-deployments"]["deployments"][0]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    config = manifests()["smart-home-config"]["data"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMART_HOME_", "AWS_"))},
        **config,
        "SMART_HOME_ENV": "development",
    }
    probe = f"import {module} as m; d = m.defs; print(d.executor.name); print(type(d.resources['warehouse']).__name__)"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["k8s", "DeltaWarehouse"]
