"""The registered model: a forecaster (LightGBM or a naive baseline) as an MLflow pyfunc model.

Both kinds are logged the same way, so ``mlflow models serve -m models:/smart_home_usage@champion`` serves
whichever is champion. A request is a batch of feature rows as stored in ``usage_features`` (the columns of
``training.SOURCE_COLUMNS``, ``device_type`` by its name); the answer has one row per request row:
``prediction_wh`` (the point forecast, clipped at 0, as the batch predictions), ``p10_wh`` and ``p90_wh``.

The pyfunc wraps a :mod:`smart_home_assets.lib.training` forecaster, pickled by reference to this package, so the
serving environment is this project's (``--env-manager local`` with its virtual environment). Versions logged
before the relative target are plain ``mlflow.lightgbm`` models: :func:`load_forecaster` still loads them.
"""

from __future__ import annotations

from importlib.metadata import version as installed_version
from typing import Any

import mlflow.pyfunc
import polars as pl
from mlflow.pyfunc import PythonModel  # (mlflow types its ``pyfunc`` attribute as a lazy loader)

from smart_home_assets.lib import training

# The request's column types: (polars type it is cast to, MLflow signature type); the rest are doubles.
_TYPED = {
    "device_type": (pl.String(), "string"),
    "target_is_weekend": (pl.Boolean(), "boolean"),
    **{c: (pl.Int64(), "long") for c in ("day_of_week", "target_day_of_week", "target_day_of_year")},
}
_INPUT_TYPES: dict[str, pl.DataType] = {c: _TYPED.get(c, (pl.Float64(), ""))[0] for c in training.SOURCE_COLUMNS}


class UsageForecastModel(PythonModel):
    """pyfunc: feature rows (pandas) -> prediction_wh, p10_wh, p90_wh (pandas)."""

    def __init__(self, forecaster: Any):
        self.forecaster = forecaster

    def predict(self, context, model_input, params=None):  # noqa: ARG002 - the pyfunc signature
        return self.forecaster.forecast(request_frame(model_input)).to_pandas()


def request_frame(model_input: Any) -> pl.DataFrame:
    """A served request (pandas frame) as typed feature rows; a missing required column is a clear error."""
    frame = pl.from_pandas(model_input) if not isinstance(model_input, pl.DataFrame) else model_input
    missing = [c for c in training.SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"request lacks feature columns {missing}")
    return frame.select([pl.col(c).cast(t, strict=False) for c, t in _INPUT_TYPES.items()])


def signature():
    """Input: the stored feature columns (nullable ones optional); output: the three forecast columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec(_TYPED.get(c, (None, "double"))[1], c, required=c not in training.NULLABLE_SOURCE_COLUMNS)
            for c in training.SOURCE_COLUMNS
        ]
    )
    outputs = Schema([ColSpec("double", c) for c in training.FORECAST_SCHEMA])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(frame: pl.DataFrame, rows: int = 5):
    return request_frame(frame.head(rows)).to_pandas()


def _requirements() -> list[str]:
    return [
        f"{name}=={installed_version(name)}"
        for name in ("mlflow", "lightgbm", "polars", "numpy", "pandas", "scikit-learn", "pyarrow")
    ]


def serving_metadata(forecaster: Any) -> dict[str, Any]:
    """What a client of the served model needs (stored in the MLmodel file)."""
    interval = forecaster.interval.to_dict() if forecaster.interval is not None else None
    return {
        "model_kind": forecaster.kind,
        "model_name": forecaster.name,
        "input_columns": list(training.SOURCE_COLUMNS),
        "input": "feature rows of usage_features (device_type by name); null for a missing optional column",
        "output": "prediction_wh (next-day energy, Wh, clipped at 0), p10_wh and p90_wh (80 % interval)",
        "interval": interval,
    }


def model_arguments(forecaster: Any, sample: pl.DataFrame) -> dict[str, Any]:
    """The arguments of ``mlflow.pyfunc.log_model`` / ``save_model`` for ``forecaster``: the pyfunc, the
    signature, an input example from ``sample``, the pinned requirements and :func:`serving_metadata`."""
    return {
        "python_model": UsageForecastModel(forecaster),
        "signature": signature(),
        "input_example": input_example(sample) if sample.height else None,
        "pip_requirements": _requirements(),
        "metadata": serving_metadata(forecaster),
    }


def log_forecaster(
    forecaster: Any, sample: pl.DataFrame, registered_model_name: str | None = None, *, name: str = "model"
):
    """Log ``forecaster`` to the active MLflow run as a pyfunc servable by ``mlflow models serve``
    (:func:`model_arguments`); registered when a name is given. Returns mlflow's ModelInfo."""
    return mlflow.pyfunc.log_model(
        name=name, registered_model_name=registered_model_name, **model_arguments(forecaster, sample)
    )


def load_forecaster(model_uri: str) -> Any:
    """The forecaster behind a logged model: a pyfunc of this module, or a legacy ``mlflow.lightgbm`` model."""
    from mlflow.models import Model

    flavors = Model.load(model_uri).flavors
    if "lightgbm" in flavors:  # logged before the relative target: the model itself, absolute Wh
        from mlflow import lightgbm as mlflow_lightgbm

        return training.LightGBMForecaster(mlflow_lightgbm.load_model(model_uri))
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().forecaster
