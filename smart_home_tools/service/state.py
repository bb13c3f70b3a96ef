"""What the service serves from, each swapped atomically by a background thread: the champion's forecaster and
each device's latest feature row.

A request reads ``ServingState.model`` (and ``.features``) once and uses that object to the end, so an answer
never mixes two versions; a swap is one reference assignment, made only after the new version has loaded and
answered a warm-up row. Neither poll ever stops the service: a registry or warehouse that cannot be read keeps
what is loaded, and ``/health`` says why.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from smart_home_assets.lib import training
from smart_home_assets.lib.tables import USAGE_FEATURES

log = logging.getLogger("smart_home_tools.service")

POLL_ENV_VAR = "SMART_HOME_SERVE_POLL_SECONDS"
DEFAULT_POLL_S = 10.0  # the champion alias: a promotion is served within two polls (the issue asks 30 s)
FEATURES_REFRESH_S = 60.0  # where the warehouse cannot say cheaply that it changed (Delta)
# Each device's latest row among the last days of usage_features (a device silent for longer is unknown).
LATEST_DAYS = 35
UNREGISTERED = "unregistered"


def poll_seconds() -> float:
    value = float(os.environ.get(POLL_ENV_VAR) or DEFAULT_POLL_S)
    if value <= 0:
        raise ValueError(f"{POLL_ENV_VAR}={value}: must be positive")
    return value


@dataclass(frozen=True)
class LoadedModel:
    forecaster: Any
    version: str  # the registered version, or "unregistered" for the fallback baseline
    registered_at: dt.datetime | None
    loaded_at: dt.datetime

    @property
    def kind(self) -> str:
        return self.forecaster.kind

    @property
    def name(self) -> str:
        return self.forecaster.name

    def describe(self, now: dt.datetime) -> dict[str, Any]:
        age = (now - self.registered_at).total_seconds() if self.registered_at else None
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "registered_at": self.registered_at.isoformat() if self.registered_at else None,
            "age_seconds": round(age, 1) if age is not None else None,
            "loaded_at": self.loaded_at.isoformat(),
        }


@dataclass(frozen=True)
class FeatureSnapshot:
    """Each device's latest feature row, as plain dicts keyed by (hub_id, device_id)."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    latest_day: dt.date | None = None
    loaded_at: dt.datetime | None = None


LATEST_FEATURES_SQL = f"""
    SELECT * FROM {USAGE_FEATURES}
    WHERE partition_date > (SELECT max(partition_date) FROM {USAGE_FEATURES}) - INTERVAL {LATEST_DAYS} DAY
    QUALIFY row_number() OVER (PARTITION BY device_id ORDER BY partition_date DESC) = 1"""


def read_latest_features(warehouse) -> pl.DataFrame:
    """The latest feature row of every device seen in the last :data:`LATEST_DAYS` days. On DuckDB through a
    read-only connection (it never takes the write lock; it fails while a run holds the file, and the next
    refresh tries again); on Delta from the tables' current snapshot."""
    from resources.warehouse import DuckDBWarehouse

    if isinstance(warehouse, DuckDBWarehouse):
        return warehouse.read_only_query(USAGE_FEATURES, LATEST_FEATURES_SQL)
    if not warehouse.table_exists(USAGE_FEATURES):
        return pl.DataFrame()
    return warehouse.query(LATEST_FEATURES_SQL)


def warehouse_signature(warehouse) -> tuple | None:
    """What changes whenever the DuckDB file is written (its and its WAL's size and mtime); None for other
    backends, whose snapshot is re-read every FEATURES_REFRESH_S."""
    from resources.warehouse import DuckDBWarehouse

    if not isinstance(warehouse, DuckDBWarehouse):
        return None
    path = warehouse.path()
    signature: list[tuple[int, int] | None] = []
    for candidate in (path, path.with_name(path.name + ".wal")):
        try:
            stat = candidate.stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def feature_snapshot(frame: pl.DataFrame, now: dt.datetime) -> FeatureSnapshot:
    if frame.is_empty():
        return FeatureSnapshot(loaded_at=now)
    columns = ["partition_date", "device_id", "hub_id", "has_enough_history", "history_days", *training.SOURCE_COLUMNS]
    rows = {(r["hub_id"], r["device_id"]): r for r in frame.select(columns).iter_rows(named=True)}
    latest = frame["partition_date"].max()  # a date column (the answers add days to it)
    return FeatureSnapshot(rows=rows, latest_day=latest if isinstance(latest, dt.date) else None, loaded_at=now)


class ServingState:
    """The loaded model and features, and the threads that keep them current."""

    def __init__(
        self, registry, warehouse, *, poll_s: float | None = None, features_refresh_s: float = FEATURES_REFRESH_S
    ):
        self.registry = registry
        self.warehouse = warehouse
        self.poll_s = poll_s or poll_seconds()
        self.features_refresh_s = features_refresh_s
        self.model: LoadedModel | None = None
        self.features = FeatureSnapshot()
        self._features_signature: tuple | None = None
        self._features_read_at = 0.0
        self.registry_error: str | None = None
        self.features_error: str | None = None
        self.checked_at: dt.datetime | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the model ------------------------------------------------------------------------------------------
    def refresh_model(self) -> bool:
        """Load the champion if the alias moved (or nothing is loaded); True when a new version was swapped in."""
        now = dt.datetime.now(dt.UTC)
        try:
            champion = self.registry.champion_version()
        except Exception as exc:  # the registry is down: keep serving what is loaded
            self.registry_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "champion alias could not be read, serving version %s: %s",
                self.model.version if self.model else None,
                self.registry_error,
            )
            return False
        self.checked_at = now
        version = str(champion.version) if champion is not None else UNREGISTERED
        if self.model is not None and self.model.version == version:
            self.registry_error = None
            return False
        try:
            if champion is None:
                forecaster, registered_at = training.BaselineForecaster("mean_last_7_days"), None
            else:
                forecaster = self.registry.load_forecaster(version)
                registered_at = dt.datetime.fromtimestamp(champion.creation_timestamp / 1000, dt.UTC)
            forecaster.forecast(warm_up_frame(self.features))  # the first real request is not the slow one
        except Exception as exc:
            self.registry_error = f"version {version} could not be loaded: {type(exc).__name__}: {exc}"
            log.error("%s; still serving version %s", self.registry_error, self.model.version if self.model else None)
            return False
        previous = self.model.version if self.model else None
        self.model = LoadedModel(forecaster, version, registered_at, dt.datetime.now(dt.UTC))
        gc.freeze()  # the new model is long-lived too (the old one stays frozen: a swap is rare)
        self.registry_error = None
        self.swaps += previous is not None
        log.info("serving %s %s version %s (was %s)", forecaster.kind, forecaster.name, version, previous)
        return True

    # -- the features ---------------------------------------------------------------------------------------
    def refresh_features(self) -> bool:
        """Re-read each device's latest feature row when the warehouse changed (DuckDB: checked on every poll),
        or every ``features_refresh_s`` (other backends). True when a new snapshot was swapped in."""
        signature = warehouse_signature(self.warehouse)
        due = time.monotonic() - self._features_read_at >= self.features_refresh_s
        if (
            self.features.loaded_at is not None
            and self.features_error is None
            and (signature == self._features_signature if signature is not None else not due)
        ):
            return False
        now = dt.datetime.now(dt.UTC)
        try:
            frame = read_latest_features(self.warehouse)
        except Exception as exc:  # e.g. a run holds the DuckDB file: keep the snapshot, try again later
            self.features_error = f"{type(exc).__name__}: {exc}"
            return False
        self.features = feature_snapshot(frame, now)
        self._features_signature, self._features_read_at = signature, time.monotonic()
        self.features_error = None
        return True

    # -- the threads ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh_features()
        self.refresh_model()
        for target, interval in ((self.refresh_model, self.poll_s), (self.refresh_features, self.poll_s)):
            thread = threading.Thread(
                target=self._every, args=(target, interval), daemon=True, name=f"serve-{target.__name__}"
            )
            thread.start()
            self._threads.append(thread)

    def _every(self, target, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                target()
            except Exception:  # never let the poll die
                log.exception("%s failed", target.__name__)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def warm_up_frame(features: FeatureSnapshot) -> pl.DataFrame:
    """One feature row to make a freshly loaded model answer before it serves (a device's, or a typical one)."""
    from smart_home_assets.lib.forecast_model import request_frame

    if features.rows:
        row = next(iter(features.rows.values()))
        return request_frame(pl.DataFrame([{c: row[c] for c in training.SOURCE_COLUMNS}]))
    typical = {c: 0.0 for c in training.SOURCE_COLUMNS} | {
        "device_type": "fridge",
        "energy_wh": 1000.0,
        "day_of_week": 0,
        "target_day_of_week": 1,
        "target_is_weekend": False,
        "target_day_of_year": 100,
    }
    return request_frame(pl.DataFrame([typical]))
