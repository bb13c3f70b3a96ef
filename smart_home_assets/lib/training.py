"""Next-day energy per device: labels, rolling-origin backtest, naive baselines, LightGBM, intervals, promotion.

Pure functions around the feature rows of :mod:`smart_home_assets.lib.features` (polars in; pandas only at the
model boundary, where LightGBM and MLflow want it). No Dagster and no MLflow here (the MLflow model lives in
:mod:`smart_home_assets.lib.forecast_model`); lightgbm and matplotlib are imported inside the functions that use
them, so importing this module (as the Dagster definitions do) stays cheap.

The task: from device ``d``'s feature row of day ``D``, predict its energy on ``D + 1`` (Wh). A model is
only worth serving when it beats the naive forecasts a person would make without it (yesterday's value,
the same weekday last week, the mean of the last week) on days it never trained on.

**The target is relative.** Trees cannot forecast outside the range of the labels they were trained on, so a
fleet whose heating climbs through autumn (or drops in spring) would always be forecast at yesterday's levels.
The model learns instead the ratio of the next day's energy to the device's recent level,
``level = max(energy_roll7_mean, LEVEL_FLOOR_WH)``, weighted by that level: the weighted L1 loss
``sum level * |label / level - r|`` equals ``sum |label - level * r|``, so it still minimises the MAE in Wh,
while every input but ``level_wh`` itself and the device type is relative too (lags, rolling statistics, last
year's values over the level; the fleet's and the hub's state on D over their week before). A forecast is
``level * r``, clipped at 0.

**Evaluation is a rolling-origin backtest** (:func:`fold_windows`, :func:`backtest`): the last
``folds * fold_days`` labeled days are cut into folds; each fold is forecast by a model trained only on the
labeled days before it, and the candidate, the champion and every naive baseline are scored on the same rows.

**Forecasts carry an 80 % interval** (p10, p90): split-conformal quantiles of the backtest's out-of-fold errors,
scaled by the level and taken per device type (:class:`IntervalCalibration`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from smart_home_assets.lib.features import NULLABLE_COLUMNS

if TYPE_CHECKING:
    import lightgbm
    import pandas as pd

LABEL = "label_next_day_energy_wh"
CATEGORICAL_COLUMNS = ["device_type"]

# The recent level a forecast is relative to (a stored feature), and its floor for devices silent all week.
LEVEL_SOURCE = "energy_roll7_mean"
LEVEL_FLOOR_WH = 1.0
LEVEL = "level_wh"
TARGET = "ratio_to_roll7_mean"  # what the LightGBM model predicts: label / level

# Model inputs derived from a stored feature, divided by the level: name -> stored column.
RELATIVE_INPUTS: dict[str, str] = {
    "rel_energy": "energy_wh",
    "rel_lag_1": "energy_lag_1",
    "rel_lag_2": "energy_lag_2",
    "rel_lag_6": "energy_lag_6",
    "rel_lag_7": "energy_lag_7",
    "rel_roll28_mean": "energy_roll28_mean",
    "rel_roll7_std": "energy_roll7_std",
    "rel_roll28_std": "energy_roll28_std",
    "rel_prev7_mean": "energy_prev7_mean",
    "rel_same_weekday_mean4": "energy_same_weekday_mean4",
    "rel_last_year": "energy_last_year",
    "rel_last_year_mean7": "energy_last_year_mean7",
}
# Stored features the model takes as they are: context (fleet, hub, last year's trend) and the calendar of D+1.
DIRECT_INPUTS = [
    "fleet_type_ratio",
    "fleet_type_ratio_lag_1",
    "hub_energy_ratio",
    "fleet_type_last_year_trend",
    "day_of_week",
    "target_day_of_week",
    "target_is_weekend",
    "target_day_of_year",
]
# Model inputs, in the order the model takes them. All known at the end of day D.
FEATURE_COLUMNS = ["device_type", LEVEL, *RELATIVE_INPUTS, *DIRECT_INPUTS]
NUMERIC_COLUMNS = [c for c in FEATURE_COLUMNS if c not in CATEGORICAL_COLUMNS]
# The stored feature columns a row must carry to be scored (what a served request sends).
SOURCE_COLUMNS = ["device_type", LEVEL_SOURCE, *dict.fromkeys(RELATIVE_INPUTS.values()), *DIRECT_INPUTS]
# Stored columns that may be null (lib.features.NULLABLE_COLUMNS): the level and energy_wh never are.
NULLABLE_SOURCE_COLUMNS = [c for c in SOURCE_COLUMNS if c in NULLABLE_COLUMNS]
# The 18 inputs of models trained before the relative target (absolute Wh); a champion of that kind still scores.
LEGACY_FEATURE_COLUMNS = [
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

# The backtest: folds of FOLD_DAYS labeled days each (the last ones), each trained on at least MIN_TRAIN_DAYS.
BACKTEST_FOLDS = 4
FOLD_DAYS = 7
MIN_TRAIN_DAYS = 7
HOLDOUT_DAYS = FOLD_DAYS  # split_holdout's default: the last fold
# The central interval of the forecasts: p10..p90.
INTERVAL_QUANTILES = (0.1, 0.9)

# Chosen on simulated data by backtest MAE (docs/mlops-pipeline.md has the measurements).
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


class NotEnoughHistory(ValueError):
    """Too few labeled days to train and evaluate a model: the naive baseline serves instead."""


# --- labels and folds --------------------------------------------------------------------------------


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
    labeled = features.filter(pl.col("has_enough_history")).join(
        next_day, on=["device_id", "partition_date"], how="inner"
    )
    if silent_next_day_is_unknown:
        labeled = labeled.filter(pl.col("next_day_events") > 0).drop("next_day_events")
    return labeled.sort("partition_date", "device_id")


@dataclass(frozen=True)
class Fold:
    """Days first..last (inclusive, labeled days) forecast by a model trained on the labeled days before first."""

    index: int
    first: Any  # dt.date
    last: Any

    @property
    def name(self) -> str:
        return f"fold{self.index}"


def fold_windows(
    days: Sequence[Any], folds: int = BACKTEST_FOLDS, fold_days: int = FOLD_DAYS, min_train_days: int = MIN_TRAIN_DAYS
) -> list[Fold]:
    """The backtest's folds over the distinct labeled ``days``: the last ``folds * fold_days`` of them, oldest
    fold first, each preceded by at least ``min_train_days`` days to train on.

    With less history, as many whole folds as fit (the caller reports it); with not even one,
    :class:`NotEnoughHistory`.
    """
    days = sorted(set(days))
    if folds < 1 or fold_days < 1:
        raise ValueError(f"need at least one fold of at least one day, got {folds} x {fold_days}")
    fitting = min(folds, (len(days) - min_train_days) // fold_days)
    if fitting < 1:
        raise NotEnoughHistory(
            f"not enough labeled days to train and evaluate: need {min_train_days + fold_days} "
            f"({min_train_days} to train + {fold_days} per fold), got {len(days)}"
        )
    first = len(days) - fitting * fold_days
    return [Fold(k + 1, days[first + k * fold_days], days[first + (k + 1) * fold_days - 1]) for k in range(fitting)]


def split_holdout(
    labeled: pl.DataFrame, holdout_days: int = HOLDOUT_DAYS, min_train_days: int = MIN_TRAIN_DAYS
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, holdout) by time: the last fold of :func:`fold_windows` with one fold of ``holdout_days``."""
    try:
        (fold,) = fold_windows(labeled.get_column("partition_date").unique().to_list(), 1, holdout_days, min_train_days)
    except NotEnoughHistory as exc:
        raise NotEnoughHistory(str(exc).replace("per fold", "holdout")) from None
    in_holdout = pl.col("partition_date") >= fold.first
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
    wape = abs_err / total if total > 0 else (0.0 if abs_err == 0 else math.inf)
    return {"mae": float(np.mean(err)), "rmse": float(np.sqrt(np.mean(err**2))), "wape": wape}


BASELINE_NAMES = ("same_as_yesterday", "same_weekday_last_week", "mean_last_7_days")


def baseline_predictions(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Naive next-day forecasts for each feature row (same order), by name (:data:`BASELINE_NAMES`).

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


# --- model input ---------------------------------------------------------------------------------------

# The fitted model carries the device-type list it was trained with (see :func:`train_model`): the codes
# in device_type are indices into that list, so scoring must encode with the same list, whatever the
# device catalog says by then. Plain attributes, so they travel with the pickled model.
DEVICE_TYPES_ATTR = "smart_home_device_types_"
TARGET_ATTR = "smart_home_target_"  # TARGET for models of the relative target; absent on legacy models


def level_expr() -> pl.Expr:
    """:func:`level` as a polars expression."""
    return pl.max_horizontal(pl.col(LEVEL_SOURCE).fill_null(pl.col("energy_wh")), pl.lit(LEVEL_FLOOR_WH)).cast(
        pl.Float64
    )


def level(frame: pl.DataFrame) -> np.ndarray:
    """The recent level of each row (Wh): energy_roll7_mean, at least :data:`LEVEL_FLOOR_WH`."""
    return frame.select(level_expr()).to_series().to_numpy()


def device_type_categories(frame: pl.DataFrame | None = None) -> list[str]:
    """The fixed category list of device_type: the catalog's types plus any others in ``frame``, sorted.

    A type's code in the model input is its index in this list; the list is stored on the model at
    training time, so a later catalog change (a new type, a removed one) does not shift the codes.
    """
    from smart_home_assets.lib.catalog import load_device_catalog

    types = set(load_device_catalog().device_types)
    if frame is not None:
        types |= set(frame.get_column("device_type").drop_nulls().unique().to_list())
    return sorted(types)


def device_type_code_expr(device_types: Sequence[str], column: str = "device_type") -> pl.Expr:
    """:func:`encode_device_types` as a polars expression on ``column``."""
    types = list(device_types)
    if len(set(types)) != len(types):
        raise ValueError("device_types has duplicates")
    return (
        pl.col(column)
        .cast(pl.String)
        .replace_strict(types, list(range(len(types))), default=None, return_dtype=pl.Float64)
    )


def encode_device_types(values: pl.Series | Sequence[str | None], device_types: Sequence[str]) -> np.ndarray:
    """Codes of device types as float64: the index in ``device_types``; NaN (missing) when absent or null.

    Float, not int, so that a missing type is NaN, which LightGBM treats as missing for a categorical
    feature. The codes are whole numbers, which is what LightGBM needs for a categorical feature.
    """
    series = values if isinstance(values, pl.Series) else pl.Series("device_type", list(values), dtype=pl.String)
    return series.to_frame("device_type").select(device_type_code_expr(device_types)).to_series().to_numpy()


def model_input_frame(frame: pl.DataFrame, device_types: Sequence[str] | None = None) -> pl.DataFrame:
    """The model's input: :data:`FEATURE_COLUMNS` as a purely numeric polars frame, in one select.

    ``level_wh`` is :func:`level`; every ``rel_*`` column is its stored feature divided by the level (null
    where the feature is null); the rest are stored features as they are. device_type is a code, the index in
    ``device_types`` (null for a type not in it, or null). Every column is float64 (booleans 0/1; nulls become
    NaN in numpy, which LightGBM treats as missing), so the input has the same dtypes whatever the nulls in a
    batch. ``device_types`` defaults to :func:`device_type_categories` of ``frame``, which is only right when
    training.
    """
    missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks feature columns {missing}")
    categories = list(device_types) if device_types is not None else device_type_categories(frame)
    lvl = level_expr()
    columns = {LEVEL: lvl.alias(LEVEL), "device_type": device_type_code_expr(categories).alias("device_type")}
    columns |= {name: (pl.col(source).cast(pl.Float64) / lvl).alias(name) for name, source in RELATIVE_INPUTS.items()}
    columns |= {name: pl.col(name).cast(pl.Float64).alias(name) for name in DIRECT_INPUTS}
    return frame.select([columns[c] for c in FEATURE_COLUMNS])


def to_model_input(frame: pl.DataFrame, device_types: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`model_input_frame` as a pandas frame (NaN for nulls), which LightGBM trains on with names."""
    import pandas as pd

    matrix = (
        model_input_frame(frame, device_types).to_numpy().astype(np.float64, copy=False)
        if frame.height
        else np.zeros((0, len(FEATURE_COLUMNS)))
    )
    return pd.DataFrame(matrix, columns=FEATURE_COLUMNS)


def _legacy_input(frame: pl.DataFrame, device_types: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {
        c: frame.get_column(c).cast(pl.Float64).to_numpy() for c in LEGACY_FEATURE_COLUMNS if c != "device_type"
    }
    data["device_type"] = encode_device_types(frame.get_column("device_type"), device_types)
    return pd.DataFrame(data, columns=LEGACY_FEATURE_COLUMNS)


def model_device_types(model: lightgbm.LGBMRegressor) -> list[str]:
    """The device-type list ``model`` was trained with (its codes are indices into it)."""
    types = getattr(model, DEVICE_TYPES_ATTR, None)
    if types is None:
        raise ValueError(f"model has no {DEVICE_TYPES_ATTR}: it was not trained by training.train_model")
    return list(types)


def model_input(model: lightgbm.LGBMRegressor, frame: pl.DataFrame) -> pd.DataFrame:
    """The input ``model`` takes for ``frame``: :func:`to_model_input` with its own device-type list (the
    18 absolute columns for a model trained before the relative target)."""
    if getattr(model, TARGET_ATTR, None) == TARGET:
        return to_model_input(frame, model_device_types(model))
    return _legacy_input(frame, model_device_types(model))


# --- LightGBM ------------------------------------------------------------------------------------------


def train_model(
    train: pl.DataFrame,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device_types: Sequence[str] | None = None,
) -> lightgbm.LGBMRegressor:
    """Fit a LightGBM regressor (sklearn API) of the relative target on labeled feature rows; deterministic.

    The label is divided by the row's level and the row weighted by it (see the module docstring), so the
    L1 objective still minimises the error in Wh. ``params`` override :data:`DEFAULT_PARAMS` (the determinism
    settings always apply). device_type is encoded with ``device_types`` (default: the catalog plus any type
    seen) and declared categorical; the list and the target are stored on the model for scoring.
    """
    import lightgbm as lgb

    if train.height == 0:
        raise ValueError("no training rows")
    types = list(device_types) if device_types is not None else device_type_categories(train)
    x = to_model_input(train, types)
    lvl = x[LEVEL].to_numpy()
    model = lgb.LGBMRegressor(**{**DEFAULT_PARAMS, **(params or {}), **_DETERMINISM, "random_state": seed})
    model.fit(
        x,
        train.get_column(LABEL).cast(pl.Float64).to_numpy() / lvl,
        sample_weight=lvl,
        categorical_feature=CATEGORICAL_COLUMNS,
    )
    setattr(model, DEVICE_TYPES_ATTR, types)
    setattr(model, TARGET_ATTR, TARGET)
    return model


SMALL_PREDICTION_ROWS = 10_000


def predict(model: Any, frame: pl.DataFrame) -> np.ndarray:
    """Next-day energy (Wh) per feature row, clipped at 0 (energy is never negative).

    ``model`` is a forecaster (:class:`LightGBMForecaster`, :class:`BaselineForecaster`) or a fitted
    LGBMRegressor: of the relative target (its output times the level) or a legacy one of absolute Wh.
    """
    if frame.height == 0:
        return np.zeros(0)
    if hasattr(model, "point_forecast"):
        return model.point_forecast(frame)
    if getattr(model, TARGET_ATTR, None) == TARGET:
        # The booster on the float matrix: what LGBMRegressor.predict does with the frame, without its pandas
        # checks; small inputs (a served request) on one thread: OpenMP's idle threads spin between requests.
        matrix = model_input_frame(frame, model_device_types(model)).to_numpy().astype(np.float64, copy=False)
        raw = model.booster_.predict(matrix, num_threads=1 if len(matrix) < SMALL_PREDICTION_ROWS else 0)
    else:
        raw = model.predict(model_input(model, frame))
    if getattr(model, TARGET_ATTR, None) == TARGET:
        raw = raw * level(frame)
    return np.clip(raw, 0.0, None)


def evaluate(model: Any, holdout: pl.DataFrame) -> dict[str, float]:
    """:func:`regression_metrics` of a model or forecaster on labeled rows."""
    return regression_metrics(holdout.get_column(LABEL).to_numpy(), predict(model, holdout))


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


# --- forecasters: what the registry holds and scores ---------------------------------------------------


@dataclass(frozen=True)
class IntervalCalibration:
    """Split-conformal interval: per device type, the p10/p90 quantiles of out-of-fold errors divided by the
    row's level, ``(actual - forecast) / level``. Types with fewer than ``min_rows`` errors use all types'."""

    lower: float
    upper: float
    by_type: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    quantiles: tuple[float, float] = INTERVAL_QUANTILES
    rows: int = 0

    @classmethod
    def fit(
        cls, rows: pl.DataFrame, forecast: Any, quantiles: tuple[float, float] = INTERVAL_QUANTILES, min_rows: int = 50
    ) -> IntervalCalibration:
        """From labeled ``rows`` (feature rows, or :func:`backtest`'s out-of-fold rows, which carry the level)
        and their ``forecast``s, made by models that did not train on them."""
        lvl = rows[LEVEL].to_numpy() if LEVEL in rows.columns else level(rows)
        errors = (rows[LABEL].cast(pl.Float64).to_numpy() - np.asarray(forecast, dtype=float)) / lvl
        if errors.size == 0:
            raise ValueError("no errors to calibrate an interval on")
        lo, hi = quantiles

        def bounds(e: np.ndarray) -> tuple[float, float]:
            return float(np.quantile(e, lo, method="lower")), float(np.quantile(e, hi, method="higher"))

        types = rows.get_column("device_type").cast(pl.String).fill_null("").to_numpy()
        by_type = {str(t): bounds(errors[types == t]) for t in np.unique(types) if int(np.sum(types == t)) >= min_rows}
        overall = bounds(errors)
        return cls(overall[0], overall[1], by_type, quantiles, int(errors.size))

    def bounds(self, frame: pl.DataFrame, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p10, p90) in Wh around ``point``, with p10 <= point <= p90 and p10 >= 0."""
        types = pl.col("device_type").cast(pl.String).fill_null("")
        lo, hi, lvl = (
            frame.select(
                types.replace_strict(
                    {t: b[0] for t, b in self.by_type.items()}, default=self.lower, return_dtype=pl.Float64
                ),
                types.replace_strict(
                    {t: b[1] for t, b in self.by_type.items()}, default=self.upper, return_dtype=pl.Float64
                ).alias("hi"),
                level_expr().alias("lvl"),
            )
            .to_numpy()
            .T
        )
        return (np.clip(np.minimum(point + lo * lvl, point), 0.0, None), np.maximum(point + hi * lvl, point))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "by_type": {t: list(b) for t, b in self.by_type.items()},
            "quantiles": list(self.quantiles),
            "rows": self.rows,
        }


FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "prediction_wh": pl.Float64(),
    "p10_wh": pl.Float64(),
    "p90_wh": pl.Float64(),
}


class Forecaster:
    """What usage_predictions and the service score with: a LightGBM version or a naive baseline."""

    kind = ""
    interval: IntervalCalibration | None

    @property
    def name(self) -> str:
        raise NotImplementedError

    def point_forecast(self, frame: pl.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def forecast(self, frame: pl.DataFrame) -> pl.DataFrame:
        """prediction_wh (the point forecast, p50), p10_wh and p90_wh per row (null bounds without an interval)."""
        point = self.point_forecast(frame) if frame.height else np.zeros(0)
        if self.interval is None:
            lo = hi = np.full(point.shape, np.nan)
        else:
            lo, hi = self.interval.bounds(frame, point)
        return pl.DataFrame({"prediction_wh": point, "p10_wh": lo, "p90_wh": hi}, schema=FORECAST_SCHEMA).fill_nan(None)


@dataclass
class LightGBMForecaster(Forecaster):
    """A fitted LightGBM model (relative target, or a legacy absolute one) with its interval."""

    model: Any
    interval: IntervalCalibration | None = None
    kind = "lightgbm"

    @property
    def name(self) -> str:
        return "lightgbm"

    def point_forecast(self, frame: pl.DataFrame) -> np.ndarray:
        return predict(self.model, frame)


@dataclass
class BaselineForecaster(Forecaster):
    """A naive baseline (:data:`BASELINE_NAMES`) as a model: what serves when no trained model beats it."""

    baseline: str
    interval: IntervalCalibration | None = None
    kind = "baseline"

    def __post_init__(self) -> None:
        if self.baseline not in BASELINE_NAMES:
            raise ValueError(f"unknown baseline {self.baseline!r}: one of {', '.join(BASELINE_NAMES)}")

    @property
    def name(self) -> str:
        return self.baseline

    def point_forecast(self, frame: pl.DataFrame) -> np.ndarray:
        return np.clip(baseline_predictions(frame)[self.baseline], 0.0, None)


# --- the backtest ----------------------------------------------------------------------------------------

# A contender in the backtest: given a fold and its rows, its forecasts of those rows.
Contender = Callable[[Fold, pl.DataFrame], np.ndarray]


def backtest(
    folds: Sequence[Fold], fold_rows: Callable[[Fold], pl.DataFrame], contenders: Mapping[str, Contender]
) -> pl.DataFrame:
    """Out-of-fold forecasts: per fold, its labeled rows with the forecast of every contender and every naive
    baseline (columns ``pred_<name>``), next to fold, partition_date, device_id, device_type, label and level.

    A contender that trains must only use days before ``fold.first`` (see :func:`fit_before`).
    """
    frames = []
    for fold in folds:
        rows = fold_rows(fold)
        if rows.is_empty():
            raise ValueError(f"backtest fold {fold.first}..{fold.last} has no labeled rows")
        preds = {
            f"pred_{name}": np.asarray(contender(fold, rows), dtype=float) for name, contender in contenders.items()
        }
        preds |= {f"pred_{name}": np.clip(p, 0.0, None) for name, p in baseline_predictions(rows).items()}
        frames.append(
            rows.select("partition_date", "device_id", "device_type", LABEL, LEVEL_SOURCE, "energy_wh")
            .with_columns(fold=pl.lit(fold.index, dtype=pl.Int32), **{LEVEL: level(rows)})
            .drop(LEVEL_SOURCE)
            .with_columns(**{k: pl.Series(v, dtype=pl.Float64) for k, v in preds.items()})
        )
    return pl.concat(frames)


def fit_before(labeled: pl.DataFrame, fit: Callable[[pl.DataFrame], Any]) -> Contender:
    """A contender that trains ``fit`` on the rows of ``labeled`` before each fold and forecasts the fold."""

    def contender(fold: Fold, rows: pl.DataFrame) -> np.ndarray:
        return predict(fit(labeled.filter(pl.col("partition_date") < fold.first)), rows)

    return contender


@dataclass(frozen=True)
class BacktestScores:
    """MAE and WAPE of every contender per fold, per device type and overall (mean MAE over folds, pooled WAPE)."""

    folds: list[str]
    fold_mae: dict[str, list[float]]
    fold_wape: dict[str, list[float]]
    type_mae: dict[str, dict[str, float]]
    type_wape: dict[str, dict[str, float]]
    mae: dict[str, float]
    wape: dict[str, float]

    def best_baseline(self) -> str:
        return min(BASELINE_NAMES, key=lambda n: (self.mae[n], n))

    def skill(self, name: str) -> float:
        """1 - MAE(name) / MAE(best baseline), over the folds' mean MAE."""
        best = self.mae[self.best_baseline()]
        return 1.0 - self.mae[name] / best if best > 0 else 0.0

    def losses(self, name: str, against: str) -> int:
        """Folds where ``name``'s MAE is not below ``against``'s."""
        return sum(a >= b for a, b in zip(self.fold_mae[name], self.fold_mae[against], strict=True))


def backtest_scores(oof: pl.DataFrame) -> BacktestScores:
    """:class:`BacktestScores` of every ``pred_*`` column of :func:`backtest`'s out-of-fold rows."""
    names = [c.removeprefix("pred_") for c in oof.columns if c.startswith("pred_")]

    def scored(group: list[str]) -> pl.DataFrame:
        return (
            oof.group_by(group)
            .agg(
                *[(pl.col(f"pred_{n}") - pl.col(LABEL)).abs().mean().alias(f"mae_{n}") for n in names],
                *[(pl.col(f"pred_{n}") - pl.col(LABEL)).abs().sum().alias(f"err_{n}") for n in names],
                actual=pl.col(LABEL).abs().sum(),
            )
            .sort(group)
        )

    def wape(frame: pl.DataFrame, n: str) -> list[float]:
        return [
            e / a if a > 0 else (0.0 if e == 0 else math.inf)
            for e, a in zip(frame[f"err_{n}"].to_list(), frame["actual"].to_list(), strict=True)
        ]

    by_fold, by_type = scored(["fold"]), scored(["device_type"])
    total_actual = float(oof[LABEL].abs().sum())
    return BacktestScores(
        folds=[f"fold{k}" for k in by_fold["fold"].to_list()],
        fold_mae={n: by_fold[f"mae_{n}"].to_list() for n in names},
        fold_wape={n: wape(by_fold, n) for n in names},
        type_mae={
            n: dict(zip(by_type["device_type"].to_list(), by_type[f"mae_{n}"].to_list(), strict=True)) for n in names
        },
        type_wape={n: dict(zip(by_type["device_type"].to_list(), wape(by_type, n), strict=True)) for n in names},
        mae={n: float(np.mean(by_fold[f"mae_{n}"].to_numpy())) for n in names},
        wape={
            n: float((oof[f"pred_{n}"] - oof[LABEL]).abs().sum()) / total_actual if total_actual > 0 else 0.0
            for n in names
        },
    )


def interval_coverage(actual: Any, lower: Any, upper: Any) -> float:
    """Share of actuals inside [lower, upper]."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (actual, lower, upper))
    return float(np.mean((y >= lo) & (y <= hi))) if y.size else math.nan


# --- promotion ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionDecision:
    """``outcome``: "candidate" (the candidate becomes champion), "keep" (the champion stays) or "baseline"
    (no trained model beats the best naive baseline, which becomes champion: ``baseline`` names it)."""

    outcome: str
    reason: str
    baseline: str

    @property
    def promote(self) -> bool:
        return self.outcome == "candidate"


def _beats(scores: BacktestScores, name: str, other: str) -> bool:
    """Lower mean MAE over the folds than ``other``, and not losing to it on most folds."""
    return scores.mae[name] < scores.mae[other] and scores.losses(name, other) <= len(scores.folds) // 2


def decide_promotion(
    scores: BacktestScores,
    *,
    candidate: str = "candidate",
    champion: str | None = None,
    champion_label: str = "champion",
    champion_is_baseline: bool = False,
    same_recipe: bool = False,
) -> PromotionDecision:
    """The promotion rule, on backtest scores where the candidate, the champion (``champion`` names its
    column, None when there is none) and the baselines were scored on the same folds.

    The candidate is promoted when it beats the best baseline and the champion: a lower mean MAE over the
    folds, and not losing on most folds (a tie on a fold counts as a loss). ``same_recipe``: the champion is
    the candidate's own configuration fitted on fewer days, so the backtest scores them identically; the
    candidate, on newer data, replaces it once it beats the baselines. Otherwise a champion that still beats
    the best baseline stays; and when nothing trained beats it, the best baseline is the champion.
    """
    best = scores.best_baseline()
    n = len(scores.folds)

    def said(name: str, label: str) -> str:
        return f"{label} backtest MAE {scores.mae[name]:.1f} Wh (loses {scores.losses(name, best)}/{n} folds)"

    base = f"best baseline {best} {scores.mae[best]:.1f} Wh"
    cand = f"candidate MAE {scores.mae[candidate]:.1f} Wh, skill {scores.skill(candidate):+.3f}"
    trained_champion = champion is not None and not champion_is_baseline
    if _beats(scores, candidate, best):
        if not trained_champion or same_recipe:
            why = (
                ("the same configuration as the " + champion_label + ", refreshed on newer days")
                if same_recipe
                else ("no trained champion yet" if champion is None else f"the champion is the baseline {champion}")
            )
            return PromotionDecision(
                "candidate", f"{cand} beats {base} on {n - scores.losses(candidate, best)}/{n} folds; {why}", best
            )
        assert champion is not None  # trained_champion
        if _beats(scores, candidate, champion):
            return PromotionDecision(
                "candidate", f"{cand} beats {champion_label} ({scores.mae[champion]:.1f}) and {base}", best
            )
        return PromotionDecision(
            "keep",
            f"{cand} does not beat {champion_label} "
            f"({scores.mae[champion]:.1f}, loses {scores.losses(candidate, champion)}/{n} folds to"
            f" it); {base}",
            best,
        )
    lost = f"{cand} does not beat {base} (loses {scores.losses(candidate, best)}/{n} folds)"
    if trained_champion and champion is not None and _beats(scores, champion, best):
        return PromotionDecision("keep", f"{lost}; {said(champion, champion_label)} still beats it", best)
    if champion_is_baseline and champion == best:
        return PromotionDecision("keep", f"{lost}; the baseline {best} stays champion", best)
    return PromotionDecision("baseline", f"{lost}; the baseline {best} becomes champion", best)


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
