"""MLflow tracking and registry: an embedded SQLite store under the data directory by default.

The Dagster resource is dagster-mlflow's ``mlflow_tracking``, imported lazily (mlflow takes seconds to
import and the definitions module must stay light). Where dagster-mlflow misbehaves with mlflow 3 it is
guarded in :func:`mlflow_run_for_materialization` (see docs/mlops-pipeline.md):
- a failed Dagster run would be recorded as FINISHED: we end the run ourselves, FAILED on any exception;
- two materializations in one process would share one MLflow run: we end every run we use, and never
  continue a run whose ``dagster_run_id`` tag is not ours.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from resources.settings import data_dir

if TYPE_CHECKING:
    from smart_home_assets.lib.training import Forecaster

EXPERIMENT_NAME = "smart_home_usage"
REGISTERED_MODEL_NAME = "smart_home_usage"
CHAMPION_ALIAS = "champion"
TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
# How long to wait for a tracking server's port before giving up (mlflow's own HTTP retries take minutes).
CONNECT_TIMEOUT_S = 5.0


class TrackingServerUnreachable(RuntimeError):
    pass


def redact_uri(uri: str, text: str | None = None) -> str:
    """``text`` (default: ``uri`` itself) with the password of ``uri``'s user info (``http://user:secret@host``)
    replaced by ``***``: mlflow's error messages repeat the URI as given."""
    text = uri if text is None else text
    password = urllib.parse.urlsplit(uri).password
    return text.replace(password, "***") if password else text


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """For an http(s) tracking server, fail within ``timeout`` seconds when nothing accepts a connection on
    its host and port. Other stores (sqlite, file, databases) and servers behind a proxy are not checked."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
        return  # the proxy decides; mlflow's requests go through it
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise TrackingServerUnreachable(
            f"MLflow tracking server {redact_uri(uri)} is unreachable: no connection to {parts.hostname}:{port} "
            f"within {timeout:g} s ({exc})"
        ) from None


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or an absolute SQLite URI in the data directory (runs start in any cwd)."""
    return os.environ.get(TRACKING_URI_ENV_VAR) or f"sqlite:///{data_dir() / 'mlflow.db'}"


def default_artifact_location() -> str:
    return (data_dir() / "mlartifacts").as_uri()


def ensure_experiment(tracking_uri: str) -> str:
    """Create the experiment with an artifact location under the data directory (not the cwd)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        if tracking_uri.startswith("sqlite:"):
            # Embedded store: artifacts next to it in the data directory (not the run's cwd).
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=default_artifact_location())
        return mlflow.create_experiment(EXPERIMENT_NAME)  # a server decides where artifacts go
    return experiment.experiment_id


@dg.resource(
    config_schema={
        "experiment_name": dg.Field(str, default_value=EXPERIMENT_NAME),
        "mlflow_tracking_uri": dg.Field(dg.StringSource, is_required=False),
    },
    description="dagster-mlflow's mlflow_tracking, imported when a step needs it; tracking URI from "
    "MLFLOW_TRACKING_URI or the embedded SQLite store.",
)
def mlflow_tracking(context: dg.InitResourceContext):
    from dagster_mlflow.resources import MlFlow

    uri = context.resource_config.get("mlflow_tracking_uri") or default_tracking_uri()
    check_reachable(uri)  # seconds, not the minutes of mlflow's HTTP retries
    try:
        ensure_experiment(uri)
    except Exception as exc:  # a clear message instead of a driver stack trace
        raw = f"MLflow tracking store {uri!r} is unreachable: {type(exc).__name__}: {exc}"
        message = redact_uri(uri, raw)
        if message != raw:  # the cause repeats the credentials: keep them out of the event log
            raise RuntimeError(message) from None
        raise RuntimeError(message) from exc
    config = {**context.resource_config, "mlflow_tracking_uri": uri}
    return MlFlow(_ContextWithConfig(context, config))


class _ContextWithConfig:
    """The init context dagster-mlflow reads (log, run, run id, resource_config), with our resolved config."""

    def __init__(self, context: dg.InitResourceContext, config: dict):
        self.log = context.log
        self.dagster_run = context.dagster_run
        self.run_id = context.run_id
        self.resource_config = config


@contextmanager
def mlflow_run_for_materialization(context: dg.AssetExecutionContext, run_name: str):
    """The MLflow run of this materialization; ended FINISHED on success and FAILED on any exception.

    dagster-mlflow's resource has started (or re-activated) a run tagged with this Dagster run id; if the
    active run belongs to another Dagster run (a run left active in this process), it is ended and a new
    one is started, so every materialization is its own MLflow run.
    """
    import mlflow

    active = mlflow.active_run()
    # active_run() caches the tags of when the run started; read them from the store.
    owner = mlflow.get_run(active.info.run_id).data.tags.get("dagster_run_id") if active else None
    if owner != context.run_id or active is None:  # no active run has no owner: the same test, spelled out
        if active is not None:
            mlflow.end_run(status="KILLED")  # left active by another materialization in this process
        active = mlflow.start_run(run_name=run_name, tags={"dagster_run_id": context.run_id})
    try:
        mlflow.set_tags(
            {
                "mlflow.runName": run_name,
                "dagster_asset": context.asset_key.to_user_string(),
                "dagster_run_id": context.run_id,
            }
        )
        yield active
    except BaseException:
        try:
            mlflow.end_run(status="FAILED")
        except Exception as exc:  # e.g. the server is gone: report the original error, not this one
            context.log.warning(
                redact_uri(
                    mlflow.get_tracking_uri(),
                    f"could not mark MLflow run "
                    f"{active.info.run_id} FAILED, it stays RUNNING in the store: "
                    f"{type(exc).__name__}: {exc}",
                )
            )
        raise
    mlflow.end_run(status="FINISHED")


class ModelRegistry(dg.ConfigurableResource):
    """Read access to the MLflow model registry: the champion and its versions (used for scoring)."""

    tracking_uri: str = ""

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def client(self):
        import mlflow

        check_reachable(self.uri())
        mlflow.set_tracking_uri(self.uri())
        return mlflow.MlflowClient(tracking_uri=self.uri())

    def champion_version(self):
        """The registered model version the ``champion`` alias points to, or None when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise

    def load_forecaster(self, version: str | int) -> Forecaster:
        """The forecaster of a registered version (LightGBM or a naive baseline), as usage_predictions scores it."""
        import mlflow

        from smart_home_assets.lib.forecast_model import load_forecaster

        mlflow.set_tracking_uri(self.uri())
        return load_forecaster(f"models:/{REGISTERED_MODEL_NAME}/{version}")
