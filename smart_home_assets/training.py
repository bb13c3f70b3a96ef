"""Next-day energy per device: labels, time-based holdout, naive baselines, LightGBM, metrics, promotion rule.

Pure functions around the feature rows of :mod:`smart_home_assets.features` (polars in; pandas only at the
model boundary, where LightGBM and MLflow want it). No Dagster here, and MLflow only in
:func:`log_lightgbm_model` (how the model is logged so that ``mlflow models serve`` can score it; the asset
logs its metrics itself). lightgbm, mlflow and matplotlib are imported inside the functions that use them,
so importing this module (as the Dagster definitions do) stays cheap.

The model input is purely numeric (:func:`to_model_input`): device_type is the index of the type in a
sorted list stored on the model, declared to LightGBM as a categorical feature. A pandas Categorical would
not survive MLflow's pyfunc/serving path (the signature records it as a string column).

The task: from device ``d``'s feature row of day ``D``, predict its energy on ``D + 1`` (Wh). A model is
only worth serving when it beats the naive forecasts a person would make without it (yesterday's value,
the same weekday last week, the mean of the last week) on days it never trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import lightgbm
    import pandas as pd

LABEL = "label_next_day_energy_wh"
CATEGORICAL_COLUMNS = ["device_type"]
# Model inputs, in the order the model takes them. All known at the end of day D (the calendar of D+1 is
# known in advance); history_days / has_enough_history only select training rows.
FEATURE_COLUMNS = [
    "device_type",
    "energy_wh",
    "active_s",
    "event_count",
    "energy_lag_1",
    "energy_lag_2",
    "energy_lag_6",
    "energy_lag_7",
    "energy_roll7_mean",
    "energy_roll7_std",
    "energy_roll28_mean",
    "energy_roll28_std",
    "day_of_week",
    "is_weekend",
    "month",
    "target_day_of_week",
    "target_is_weekend",
    "hub_energy_wh",
]
NUMERIC_COLUMNS = [c for c in FEATURE_COLUMNS if c not in CATEGORICAL_COLUMNS]

HOLDOUT_DAYS = 7
MIN_TRAIN_DAYS = 7

# Chosen on simulated data by holdout MAE (see tests/test_training.py for the end-to-end check).
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "regression_l1",
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
}
# Fixed so two runs on the same data give the same model (LightGBM is only reproducible with
# deterministic=True, a fixed thread count and one histogram layout).
_DETERMINISM: dict[str, Any] = {"deterministic": True, "force_col_wise": True, "n_jobs": 2, "verbose": -1}


# --- labels and split --------------------------------------------------------------------------------


def attach_labels(features: pl.DataFrame, silent_next_day_is_unknown: bool = False) -> pl.DataFrame:
    """Feature rows of (device, D) with :data:`LABEL` = the device's energy_wh on D+1.

    The label comes from the device's feature row of D+1, so a silent D+1 is a 0 label (the device was
    still in the window) and rows whose D+1 has no features yet (the last day, or a device that dropped out
    of the window) are dropped as unlabeled. Rows with too little history are dropped too.

    ``silent_next_day_is_unknown``: for data where a device is not metered every day (history imports such
    as tracebase), a day without events means "not measured", not "used nothing": such labels are dropped
    instead of taught as zeros. The fleet contract (every hub uploads every day) keeps them as real zeros.
    """
    next_day = features.select(
        "device_id",
        partition_date=pl.col("partition_date") - pl.duration(days=1),
        **{LABEL: pl.col("energy_wh")},
        **({"next_day_events": pl.col("event_count")} if silent_next_day_is_unknown else {}),
    )
    labeled = features.filter(pl.col("has_enough_history")).join(next_day, on=["device_id", "partition_date"],
                                                                 how="inner")
    if silent_next_day_is_unknown:
        labeled = labeled.filter(pl.col("next_day_events") > 0).drop("next_day_events")
    return labeled.sort("partition_date", "device_id")


def split_holdout(
    labeled: pl.DataFrame, holdout_days: int = HOLDOUT_DAYS, min_train_days: int = MIN_TRAIN_DAYS
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, holdout) by time: the last ``holdout_days`` distinct partition dates are the holdout.

    Holdout rows are never trained on, and every training day is before every holdout day, as in
    production where the model forecasts days after the ones it learned from.
    """
    dates = labeled.get_column("partition_date").unique().sort()
    if dates.len() < holdout_days + min_train_days:
        raise ValueError(
            f"not enough labeled days to train and evaluate: need {holdout_days + min_train_days} "
            f"({min_train_days} to train + {holdout_days} holdout), got {dates.len()}"
        )
    first_holdout = dates[-holdout_days]
    in_holdout = pl.col("partition_date") >= first_holdout
    return labeled.filter(~in_holdout), labeled.filter(in_holdout)


# --- metrics and baselines -----------------------------------------------------------------------------


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """MAE, RMSE (Wh) and WAPE = sum|error| / sum|actual|.

    WAPE is 0 when all actuals and all errors are 0, and +inf when the actuals sum to 0 but some
    prediction is off (any error is infinitely large relative to no usage).
    """
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"need equally long, non-empty actuals and predictions, got {y.shape} and {p.shape}")
    err = np.abs(p - y)
    total = float(np.sum(np.abs(y)))
    abs_err = float(np.sum(err))
    if total > 0:
        wape = abs_err / total
    else:
        wape = 0.0 if abs_err == 0 else math.inf
    return {"mae": float(np.mean(err)), "rmse": float(np.sqrt(np.mean(err**2))), "wape": wape}


def baseline_predictions(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Naive next-day forecasts for each feature row (same order), by name.

    * ``same_as_yesterday``: energy on D (the most recent actual);
    * ``same_weekday_last_week``: energy_lag_6, the energy on D+1-7;
    * ``mean_last_7_days``: energy_roll7_mean (D-6..D).

    Where a lag or mean is null (before the device's first appearance), the most recent actual (energy
    on D, never null) stands in, so every baseline forecasts every row.
    """
    recent = pl.col("energy_wh")
    out = frame.select(
        same_as_yesterday=recent,
        same_weekday_last_week=pl.col("energy_lag_6").fill_null(recent),
        mean_last_7_days=pl.col("energy_roll7_mean").fill_null(recent),
    )
    return {name: out.get_column(name).cast(pl.Float64).to_numpy() for name in out.columns}


def baseline_metrics(holdout: pl.DataFrame) -> dict[str, dict[str, float]]:
    """:func:`regression_metrics` of every naive baseline on labeled rows."""
    y = holdout.get_column(LABEL).to_numpy()
    return {name: regression_metrics(y, pred) for name, pred in baseline_predictions(holdout).items()}


def best_baseline(metrics: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]]:
    """The baseline with the lowest MAE (ties: the first by name, so the choice is stable)."""
    if not metrics:
        raise ValueError("no baseline metrics")
    name = min(sorted(metrics), key=lambda n: metrics[n]["mae"])
    return name, metrics[name]


# --- model -------------------------------------------------------------------------------------------

# The fitted model carries the device-type list it was trained with (see :func:`train_model`): the codes
# in device_type are indices into that list, so scoring must encode with the same list, whatever the
# device catalog says by then. It is a plain attribute, so it travels with the pickled/skops model.
DEVICE_TYPES_ATTR = "smart_home_device_types_"
# Model-input columns that may be missing (NaN; null in a JSON request): device_type when the type is not
# in the model's list, lags before a device's first appearance, standard deviations over a single day.
# The MLflow signature marks them optional, whatever the nulls of the sample it was inferred from.
NULLABLE_COLUMNS = ["device_type", "energy_lag_1", "energy_lag_2", "energy_lag_6", "energy_lag_7",
                    "energy_roll7_std", "energy_roll28_std"]


def device_type_categories(frame: pl.DataFrame | None = None) -> list[str]:
    """The fixed category list of device_type: the catalog's types plus any others in ``frame``, sorted.

    A type's code in the model input is its index in this list; the list is stored on the model at
    training time, so a later catalog change (a new type, a removed one) does not shift the codes.
    """
    from smart_home_assets.catalog import load_device_catalog

    types = set(load_device_catalog().device_types)
    if frame is not None:
        types |= set(frame.get_column("device_type").drop_nulls().unique().to_list())
    return sorted(types)


def encode_device_types(values: pl.Series | Sequence[str | None], device_types: Sequence[str]) -> np.ndarray:
    """Codes of device types as float64: the index in ``device_types``; NaN (missing) when absent or null.

    Float, not int, so that a missing type is NaN, which LightGBM treats as missing for a categorical
    feature (as it does any negative value, so a client may also send -1), and a served request may carry
    null for it. The codes are whole numbers, which is what LightGBM needs for a categorical feature.
    """
    types = list(device_types)
    if len(set(types)) != len(types):
        raise ValueError("device_types has duplicates")
    series = values if isinstance(values, pl.Series) else pl.Series("device_type", list(values), dtype=pl.String)
    codes = series.cast(pl.String).replace_strict(types, list(range(len(types))), default=None,
                                                  return_dtype=pl.Float64)
    return codes.to_numpy()


def to_model_input(frame: pl.DataFrame, device_types: Sequence[str] | None = None) -> pd.DataFrame:
    """The model's input: :data:`FEATURE_COLUMNS` as a purely numeric pandas frame.

    device_type is a code, the index in ``device_types`` (NaN for a type not in it, or null; see
    :func:`encode_device_types`), which LightGBM takes as a categorical feature. Every column is float64
    (booleans 0/1, nulls NaN, which LightGBM treats as missing), so the frame has the same dtypes whatever
    the nulls in a given batch. This exact frame is what the model is trained on, scored on, and what its
    MLflow signature and input example describe, so ``mlflow models serve`` takes it as JSON.

    For a fitted model use :func:`model_input` (its own list); ``device_types`` defaults to
    :func:`device_type_categories` of ``frame``, which is only right when training.
    """
    import pandas as pd

    missing = [c for c in FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks feature columns {missing}")
    categories = list(device_types) if device_types is not None else device_type_categories(frame)
    data: dict[str, Any] = {
        c: frame.get_column(c).cast(pl.Float64).to_numpy() for c in NUMERIC_COLUMNS
    }
    data["device_type"] = encode_device_types(frame.get_column("device_type"), categories)
    return pd.DataFrame(data, columns=FEATURE_COLUMNS)


def model_device_types(model: lightgbm.LGBMRegressor) -> list[str]:
    """The device-type list ``model`` was trained with (its codes are indices into it)."""
    types = getattr(model, DEVICE_TYPES_ATTR, None)
    if types is None:
        raise ValueError(f"model has no {DEVICE_TYPES_ATTR}: it was not trained by training.train_model")
    return list(types)


def model_input(model: lightgbm.LGBMRegressor, frame: pl.DataFrame) -> pd.DataFrame:
    """:func:`to_model_input` of ``frame`` with ``model``'s own device-type list."""
    return to_model_input(frame, model_device_types(model))


def _legacy_categories(model: lightgbm.LGBMRegressor) -> list[str] | None:
    """The device types of a model trained on a pandas-Categorical device_type (before numeric codes), if so.

    Such models (possibly still in a registry as champion) keep their categories in the booster and need
    the Categorical frame; they cannot be served by ``mlflow models serve``, but they can still be scored.
    """
    if hasattr(model, DEVICE_TYPES_ATTR):
        return None
    pandas_categorical = getattr(model.booster_, "pandas_categorical", None)
    return list(pandas_categorical[0]) if pandas_categorical else None


def train_model(
    train: pl.DataFrame, params: dict[str, Any] | None = None, seed: int = 0,
    device_types: Sequence[str] | None = None,
) -> lightgbm.LGBMRegressor:
    """Fit a LightGBM regressor (sklearn API) on labeled feature rows; deterministic for a given seed.

    ``params`` override :data:`DEFAULT_PARAMS` (the determinism settings always apply). device_type is
    encoded with ``device_types`` (default: :func:`device_type_categories` of ``train``, i.e. the catalog
    plus any type seen) and declared categorical; the list is stored on the model as
    :data:`DEVICE_TYPES_ATTR` for scoring.
    """
    import lightgbm as lgb

    if train.height == 0:
        raise ValueError("no training rows")
    types = list(device_types) if device_types is not None else device_type_categories(train)
    model = lgb.LGBMRegressor(**{**DEFAULT_PARAMS, **(params or {}), **_DETERMINISM, "random_state": seed})
    model.fit(to_model_input(train, types), train.get_column(LABEL).to_numpy(),
              categorical_feature=CATEGORICAL_COLUMNS)
    setattr(model, DEVICE_TYPES_ATTR, types)
    return model


def predict(model: lightgbm.LGBMRegressor, frame: pl.DataFrame) -> np.ndarray:
    """Next-day energy (Wh) per feature row, clipped at 0 (energy is never negative).

    The rows are encoded with the model's own device-type list (:func:`model_input`).
    """
    if frame.height == 0:
        return np.zeros(0)
    legacy = _legacy_categories(model)
    if legacy is None:
        x = model_input(model, frame)
    else:
        import pandas as pd

        x = to_model_input(frame, legacy)
        x["device_type"] = pd.Categorical(frame.get_column("device_type").to_numpy(), categories=legacy)
    return np.clip(model.predict(x), 0.0, None)


def evaluate(model: lightgbm.LGBMRegressor, holdout: pl.DataFrame) -> dict[str, float]:
    """:func:`regression_metrics` of the model on labeled rows."""
    return regression_metrics(holdout.get_column(LABEL).to_numpy(), predict(model, holdout))


# --- MLflow logging (the model.py asset and the serving test/benchmark share it) ----------------------


def model_signature(model: lightgbm.LGBMRegressor, frame: pl.DataFrame):
    """The MLflow signature of ``model``: inferred from its input and predictions on ``frame`` (e.g. the
    whole holdout), with :data:`NULLABLE_COLUMNS` optional even where ``frame`` has no nulls in them."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    inferred = infer_signature(model_input(model, frame), predict(model, frame))
    inputs = Schema([
        ColSpec(type=c.type, name=c.name, required=c.required and c.name not in NULLABLE_COLUMNS)
        for c in inferred.inputs.inputs
    ])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


def serving_metadata(model: lightgbm.LGBMRegressor) -> dict[str, Any]:
    """What a client of the served model needs to build a request (stored in the MLmodel file)."""
    return {
        "feature_columns": list(FEATURE_COLUMNS),
        "device_type_categories": model_device_types(model),
        "device_type_encoding": "index in device_type_categories as a number; null (or any negative "
                                "value) for a type not in the list, scored as missing",
        "prediction": "next-day energy in Wh (raw model output: not clipped at 0, unlike training.predict)",
    }


def log_lightgbm_model(
    model: lightgbm.LGBMRegressor, holdout: pl.DataFrame, registered_model_name: str | None = None,
    *, name: str = "model", example_rows: int = 20,
):
    """Log ``model`` to the active MLflow run in the ``mlflow.lightgbm`` flavor, servable as it is with
    ``mlflow models serve``: signature from the whole holdout (:func:`model_signature`), the first
    ``example_rows`` holdout rows as input example, :func:`serving_metadata`; registered under
    ``registered_model_name`` when given. Returns mlflow's ModelInfo."""
    import mlflow

    return mlflow.lightgbm.log_model(
        model, name=name, signature=model_signature(model, holdout),
        input_example=model_input(model, holdout.head(example_rows)),
        registered_model_name=registered_model_name, metadata=serving_metadata(model))


def feature_importance(model: lightgbm.LGBMRegressor) -> pl.DataFrame:
    """Per feature: total gain of its splits and how often it is split on, largest gain first."""
    booster = model.booster_
    return pl.DataFrame(
        {
            "feature": booster.feature_name(),
            "importance_gain": booster.feature_importance(importance_type="gain").astype(float),
            "importance_split": booster.feature_importance(importance_type="split").astype(np.int64),
        }
    ).sort("importance_gain", "feature", descending=[True, False])


# --- promotion ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    candidate_mae: float,
    champion_mae: float | None,
    best_baseline_mae: float,
    *,
    best_baseline_name: str | None = None,
    champion_version: str | int | None = None,
) -> PromotionDecision:
    """Promote only if the candidate strictly beats the best naive baseline and, if there is a champion,
    the champion re-scored on the same holdout. Ties keep what is there. The reason names the numbers.
    """
    champion = f"champion v{champion_version}" if champion_version is not None else "champion"
    baseline = f"best baseline {best_baseline_name}" if best_baseline_name else "best baseline"
    cand = f"MAE {candidate_mae:.1f} Wh"
    if not candidate_mae < best_baseline_mae:
        return PromotionDecision(False, f"{cand} does not beat {baseline} ({best_baseline_mae:.1f})")
    if champion_mae is None:
        return PromotionDecision(True, f"{cand} beats {baseline} ({best_baseline_mae:.1f}); no champion yet")
    if not candidate_mae < champion_mae:
        return PromotionDecision(
            False, f"{cand} does not beat {champion} ({champion_mae:.1f}); {baseline} is {best_baseline_mae:.1f}")
    return PromotionDecision(
        True, f"{cand} beats {champion} ({champion_mae:.1f}) and {baseline} ({best_baseline_mae:.1f})")


# --- plots (MLflow artifacts, Dagster UI) ---------------------------------------------------------------


def _figure(width: float, height: float):
    # A bare Figure on the Agg canvas: no pyplot global state or GUI backend, safe in worker processes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def importance_plot_png(model: lightgbm.LGBMRegressor, path: str | Path) -> Path:
    """Horizontal bar chart of the features' total gain, largest on top; written to ``path`` as PNG."""
    imp = feature_importance(model).reverse()
    fig = _figure(7, 0.3 * imp.height + 1.2)
    ax = fig.add_subplot()
    ax.barh(imp["feature"].to_list(), imp["importance_gain"].to_numpy(), color="#4472c4")
    ax.set_xlabel("total gain")
    ax.set_title("LightGBM feature importance (gain)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def predicted_vs_actual_png(y_true: Any, y_pred: Any, path: str | Path, max_points: int = 20_000) -> Path:
    """Scatter of predicted vs actual next-day energy (kWh) with the y = x line; written as PNG.

    At most ``max_points`` points are drawn (an evenly spaced, deterministic subsample) to keep it light.
    """
    y = np.asarray(y_true, dtype=float) / 1000.0
    p = np.asarray(y_pred, dtype=float) / 1000.0
    if len(y) > max_points:
        keep = np.linspace(0, len(y) - 1, max_points).astype(int)
        y, p = y[keep], p[keep]
    fig = _figure(6, 6)
    ax = fig.add_subplot()
    ax.scatter(y, p, s=4, alpha=0.3, color="#4472c4", linewidths=0)
    top = float(max(np.max(y, initial=0.0), np.max(p, initial=0.0), 1e-3)) * 1.05
    ax.plot([0, top], [0, top], color="#c00000", linewidth=1, label="predicted = actual")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("actual next-day energy (kWh)")
    ax.set_ylabel("predicted (kWh)")
    ax.set_title(f"Predicted vs actual ({len(y)} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
