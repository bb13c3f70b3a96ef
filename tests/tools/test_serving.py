"""The champion is servable: ``mlflow models serve -m models:/smart_home_usage@champion --env-manager local``.

One real server on loopback (a subprocess in its own process group, always stopped): the model is logged as
the usage_model asset logs it (forecast_model.log_forecaster), registered and aliased champion in a temporary
SQLite MLflow store; the served forecasts and intervals must be those of the forecaster. Slow (the server imports
mlflow and starts uvicorn, ~15 s) but part of the default suite. Latency is measured by
``python -m bench.serve_latency``, not asserted here.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bench import serve_latency as serve
from smart_home_assets.lib import training


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    return serve.simulated_features(seed=0, hubs=8, days=30)


@pytest.mark.slow
def test_the_champion_is_served_by_mlflow_models_serve(features, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", serve.tracking_uri_in(tmp_path))
    champion = serve.register_champion(tmp_path, features, n_estimators=50)
    model, holdout = champion.model, champion.holdout
    aliased = mlflow.MlflowClient().get_model_version_by_alias(serve.REGISTERED_MODEL_NAME, serve.CHAMPION_ALIAS)
    assert str(aliased.version) == champion.version

    rows = holdout.head(6)
    # Nulls where features may be null, and a type the model never saw (scored as missing).
    odd = holdout.slice(6, 2).with_columns(
        energy_lag_7=pl.lit(None, dtype=pl.Float64),
        energy_roll7_std=pl.lit(None, dtype=pl.Float64),
        energy_last_year=pl.lit(None, dtype=pl.Float64),
        device_type=pl.Series(["sauna", "fridge"]),
    )
    batch = pl.concat([rows, odd])

    with serve.serving(champion.tracking_uri, tmp_path / "serve.log") as url:
        assert url.startswith("http://127.0.0.1:")
        conn = serve.connect(url)
        try:
            served = serve.invoke_rows(conn, serve.request_body(batch))
            # A single row whose optional columns are null (JSON null).
            single = serve.invoke(conn, serve.request_body(batch.slice(7, 1)))
        finally:
            conn.close()

    expected = model.forecast(batch)
    assert served["prediction_wh"].shape == (batch.height,)
    # The server answers what the batch predictions store: the clipped forecast and its interval, in Wh.
    assert np.allclose(served["prediction_wh"], training.predict(model, batch))
    assert np.allclose(served["p10_wh"], expected["p10_wh"].to_numpy())
    assert np.allclose(served["p90_wh"], expected["p90_wh"].to_numpy())
    assert (served["prediction_wh"] >= 0).all()
    assert np.allclose(single, served["prediction_wh"][7:8])
    assert "Started server process" in (tmp_path / "serve.log").read_text(errors="replace")


@pytest.mark.slow
def test_a_baseline_champion_is_served_by_the_same_command(features, tmp_path, monkeypatch):
    """When no trained model beats the naive baselines, the best baseline is the champion: a pyfunc version that
    the same ``mlflow models serve`` command serves, answering the baseline's forecast and its interval."""
    import mlflow

    from smart_home_assets.lib.forecast_model import log_forecaster

    uri = serve.tracking_uri_in(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment(serve.EXPERIMENT_NAME, artifact_location=(tmp_path / "mlartifacts").as_uri())
    rows = training.attach_labels(features).tail(12)
    baseline = training.BaselineForecaster("mean_last_7_days", training.IntervalCalibration(-0.4, 0.3))
    with mlflow.start_run(experiment_id=experiment):
        info = log_forecaster(baseline, rows, registered_model_name=serve.REGISTERED_MODEL_NAME, name="baseline_model")
    mlflow.MlflowClient().set_registered_model_alias(
        serve.REGISTERED_MODEL_NAME, serve.CHAMPION_ALIAS, str(info.registered_model_version)
    )

    with serve.serving(uri, tmp_path / "serve.log") as url:
        conn = serve.connect(url)
        try:
            served = serve.invoke_rows(conn, serve.request_body(rows))
        finally:
            conn.close()
    expected = baseline.forecast(rows)
    assert np.allclose(served["prediction_wh"], rows["energy_roll7_mean"].to_numpy())
    assert np.allclose(served["p10_wh"], expected["p10_wh"].to_numpy())
    assert np.allclose(served["p90_wh"], expected["p90_wh"].to_numpy())
