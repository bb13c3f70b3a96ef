"""The HTTP API of the prediction service (see the package's docs): request models, the app and ``serve``."""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import re
import uuid
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from resources.online_store import OnlineStore, OnlineStoreError
from resources.tracking import REGISTERED_MODEL_NAME
from smart_home_assets.lib import training
from smart_home_assets.lib.forecast_model import request_frame
from smart_home_tools.service.state import LoadedModel, ServingState

log = logging.getLogger("smart_home_tools.service")

MAX_BATCH_ROWS = 1000
_ID = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class DeviceRequest(BaseModel):
    """A device of the fleet: answered from its latest row of ``usage_features``."""

    model_config = ConfigDict(extra="forbid")
    device_id: _ID
    hub_id: _ID


def _feature_field(column: str):
    from smart_home_assets.lib.forecast_model import _TYPED

    kind: Any = {"string": str, "boolean": bool, "long": int}.get(_TYPED.get(column, (None, "double"))[1])
    if kind is None:
        kind = Annotated[float, Field(allow_inf_nan=False)]
    if column in training.NULLABLE_SOURCE_COLUMNS:
        return (kind | None, None)
    return (kind, ...)


# A full feature row: the stored columns of usage_features that the model reads (one source: training.py).
FeatureRowRequest = create_model(
    "FeatureRowRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A full feature row, as usage_features stores it (device_type by name); optional columns may be null "
    "or left out. for_day defaults to the next date whose day of the year is target_day_of_year.",
    device_id=(_ID, ...),
    hub_id=(_ID | None, None),
    for_day=(dt.date | None, None),
    **{c: _feature_field(c) for c in training.SOURCE_COLUMNS},
)


def _form(value: Any) -> str:
    if isinstance(value, dict):
        return "row" if set(value) - {"device_id", "hub_id"} else "device"
    return "row" if isinstance(value, FeatureRowRequest) else "device"


PredictRequest = Annotated[
    Annotated[DeviceRequest, Tag("device")] | Annotated[FeatureRowRequest, Tag("row")],  # type: ignore[valid-type]
    Discriminator(_form),
]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[PredictRequest] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


class ModelInfo(BaseModel):
    name: str = Field(description="the registered model's name")
    version: str = Field(description="the registered version ('unregistered': the fallback baseline)")
    kind: Literal["lightgbm", "baseline"]
    forecaster: str = Field(description="lightgbm, or the naive baseline's name")


class Prediction(BaseModel):
    device_id: str
    for_day: dt.date = Field(description="the day predicted")
    prediction_wh: float = Field(description="the point forecast of that day's energy, Wh, never negative")
    p10_wh: float | None = Field(description="lower bound of the 80 % interval (null: the model has no interval)")
    p90_wh: float | None
    model: ModelInfo
    request_id: str


class BatchPrediction(BaseModel):
    request_id: str
    model: ModelInfo
    predictions: list[Prediction]


def _model_info(model: LoadedModel) -> dict[str, str]:
    return {"name": REGISTERED_MODEL_NAME, "version": model.version, "kind": model.kind, "forecaster": model.name}


def for_day_of(day_of_year: int, today: dt.date) -> dt.date:
    """The first date from yesterday on whose day of the year is ``day_of_year`` (a row sent without for_day)."""
    day = today - dt.timedelta(days=1)
    for _ in range(367):
        if day.timetuple().tm_yday == day_of_year:
            return day
        day += dt.timedelta(days=1)
    raise HTTPException(
        422,
        detail=[
            {
                "loc": ["body", "target_day_of_year"],
                "type": "value_error",
                "msg": f"no date has day of the year {day_of_year}",
            }
        ],
    )


def resolve_rows(requests: list[Any], state: ServingState, today: dt.date, batch: bool) -> list[dict[str, Any]]:
    """Each request as the model's input row plus what the answer and the store need; 404 / 409 naming the device
    (and, in a batch, its row)."""
    snapshot = state.features
    rows = []
    for index, req in enumerate(requests):
        where = ["body", "rows", index] if batch else ["body"]
        if isinstance(req, DeviceRequest):
            found = snapshot.rows.get((req.hub_id, req.device_id))
            if found is None:
                raise HTTPException(
                    404,
                    detail={
                        "loc": [*where, "device_id"],
                        "device_id": req.device_id,
                        "hub_id": req.hub_id,
                        "msg": f"unknown device {req.device_id!r} of hub {req.hub_id!r}: no "
                        f"feature row in the last days of usage_features",
                    },
                )
            if not found["has_enough_history"]:
                raise HTTPException(
                    409,
                    detail={
                        "loc": [*where, "device_id"],
                        "device_id": req.device_id,
                        "hub_id": req.hub_id,
                        "msg": f"device {req.device_id!r} has {found['history_days']} days "
                        f"of history on {found['partition_date']}: too few to "
                        "forecast",
                    },
                )
            rows.append(
                {
                    "source": "latest_features",
                    "device_id": req.device_id,
                    "hub_id": req.hub_id,
                    "features_date": found["partition_date"],
                    "for_day": found["partition_date"] + dt.timedelta(days=1),
                    "input": {c: found[c] for c in training.SOURCE_COLUMNS},
                }
            )
        else:
            values = req.model_dump()
            rows.append(
                {
                    "source": "request_row",
                    "device_id": req.device_id,
                    "hub_id": req.hub_id,
                    "features_date": None,
                    "for_day": req.for_day or for_day_of(req.target_day_of_year, today),
                    "input": {c: values[c] for c in training.SOURCE_COLUMNS},
                }
            )
    return rows


def create_app(state: ServingState, store: OnlineStore) -> FastAPI:
    app = FastAPI(
        title="smart-home-assets prediction service",
        description="Next-day energy per device from the MLflow champion; every answer is stored.",
        version="1",
    )

    def answer(rows: list[dict[str, Any]], request_id: str, endpoint: str) -> tuple[LoadedModel, list[dict]]:
        model = state.model  # one version for the whole request, whatever a swap does meanwhile
        if model is None:
            raise HTTPException(503, detail="no model is loaded yet (see GET /health)")
        frame = request_frame(
            pl.DataFrame([r["input"] for r in rows], schema_overrides=_INPUT_OVERRIDES, infer_schema_length=None)
        )
        forecast = model.forecaster.forecast(frame)
        now = dt.datetime.now(dt.UTC)
        answers, records = [], []
        for i, (row, (point, low, high)) in enumerate(zip(rows, forecast.iter_rows(), strict=True)):
            answers.append(
                {
                    "device_id": row["device_id"],
                    "for_day": row["for_day"].isoformat(),
                    "prediction_wh": point,
                    "p10_wh": low,
                    "p90_wh": high,
                    "request_id": request_id,
                }
            )
            records.append(
                {
                    "request_id": request_id,
                    "row": i,
                    "requested_at": now,
                    "endpoint": endpoint,
                    "device_id": row["device_id"],
                    "hub_id": row["hub_id"],
                    "device_type": row["input"]["device_type"],
                    "source": row["source"],
                    "features_date": row["features_date"],
                    "for_day": row["for_day"],
                    "input_json": json.dumps(row["input"], default=str, allow_nan=False),
                    "prediction_wh": point,
                    "p10_wh": low,
                    "p90_wh": high,
                    "model_name": model.name,
                    "model_kind": model.kind,
                    "model_version": model.version,
                }
            )
        try:
            store.append(records)  # durable before the response leaves
        except OnlineStoreError as exc:
            log.error("request %s not answered: %s", request_id, exc)
            raise HTTPException(
                503, detail=f"the prediction store refused the answer, so it is not given: {exc}"
            ) from exc
        return model, answers

    @app.post(
        "/predict",
        response_model=Prediction,
        responses={
            404: {"description": "unknown device"},
            409: {"description": "too little history"},
            422: {"description": "invalid input, naming the field"},
            503: {"description": "no model or no store"},
        },
    )
    async def predict(body: PredictRequest, x_request_id: Annotated[str | None, Header()] = None) -> Response:
        """Next-day energy of one device: by its ids (from its latest feature row) or from a full feature row."""
        # On the event loop (a few ms of work, no thread hand-off); the answer is built here, so FastAPI does not
        # validate and serialize it again (response_model documents it).
        request_id = _request_id(x_request_id)
        rows = resolve_rows([body], state, dt.datetime.now(dt.UTC).date(), batch=False)
        model, answers = answer(rows, request_id, "predict")
        return _json({**answers[0], "model": _model_info(model)}, request_id)

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        responses={
            404: {"description": "unknown device"},
            409: {"description": "too little history"},
            422: {"description": "invalid input, naming the field"},
            503: {"description": "no model or no store"},
        },
    )
    def predict_batch(body: BatchRequest, x_request_id: Annotated[str | None, Header()] = None) -> Response:
        """Up to 1,000 rows (either form, mixed), all answered by one model version."""
        # In the thread pool: a batch takes tens of ms, single requests go on meanwhile.
        request_id = _request_id(x_request_id)
        rows = resolve_rows(body.rows, state, dt.datetime.now(dt.UTC).date(), batch=True)
        model, answers = answer(rows, request_id, "predict/batch")
        info = _model_info(model)
        return _json(
            {"request_id": request_id, "model": info, "predictions": [{**a, "model": info} for a in answers]},
            request_id,
        )

    @app.get("/health")
    def health() -> JSONResponse:
        """The model served and its age, the features' latest day, whether the store is writable (503 if not)."""
        now = dt.datetime.now(dt.UTC)
        writable, why = store.writable()
        model = state.model
        features = state.features
        body = {
            "status": "ok" if model is not None and writable else "unavailable",
            "model": {"registered_name": REGISTERED_MODEL_NAME, **model.describe(now)} if model else None,
            "champion_checked_at": state.checked_at.isoformat() if state.checked_at else None,
            "registry_error": state.registry_error,
            "swaps": state.swaps,
            "features": {
                "devices": len(features.rows),
                "latest_day": features.latest_day.isoformat() if features.latest_day else None,
                "loaded_at": features.loaded_at.isoformat() if features.loaded_at else None,
                "error": state.features_error,
            },
            "store": {"kind": store.kind, "location": store.describe(), "writable": writable, "error": why or None},
        }
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return app


# Columns whose JSON values may all be null in a request: typed from the stored schema, not inferred.
_INPUT_OVERRIDES = {c: (pl.String() if c == "device_type" else pl.Float64()) for c in training.NULLABLE_SOURCE_COLUMNS}


def _json(body: dict[str, Any], request_id: str) -> Response:
    return Response(
        json.dumps(body, allow_nan=False, separators=(",", ":")),
        media_type="application/json",
        headers={"X-Request-ID": request_id},
    )


def _request_id(header: str | None) -> str:
    if header is None:
        return uuid.uuid4().hex
    if not _REQUEST_ID.fullmatch(header):
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["header", "x-request-id"],
                    "type": "value_error",
                    "msg": "X-Request-ID: 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                }
            ],
        )
    return header


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Start the service with the project's configuration (the same environment as the pipeline's)."""
    import uvicorn

    from resources.backend import warehouse_from_environment
    from resources.online_store import online_store
    from resources.tracking import ModelRegistry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = online_store()
    state = ServingState(ModelRegistry(), warehouse_from_environment())
    state.start()
    gc.freeze()  # the imports and the model are long-lived: keep them out of every later full collection
    model = state.model
    log.info(
        "serving %s on http://%s:%d (store: %s %s; champion polled every %g s)",
        f"{model.kind} {model.name} version {model.version}" if model else "no model yet",
        host,
        port,
        store.kind,
        store.describe(),
        state.poll_s,
    )
    try:
        uvicorn.run(create_app(state, store), host=host, port=port, access_log=False, log_level="info")
    finally:
        state.stop()
        store.close()
