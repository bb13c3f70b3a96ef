"""Simulated hub fleet: writes daily upload files that follow :mod:`smart_home_assets.lib.contract`.

Each hub writes one file per UTC day, ``<landing>/<YYYY-MM-DD>/<hub_id>.jsonl.gz``, one JSON object per
line (see ``contract.UPLOAD_FIELDS``). Events are generated with numpy and rendered to JSON lines with
polars expressions, so there is no Python loop per event; the loops are per hub-file.

Determinism. Every random draw comes from a generator keyed on ``(seed, stream, hub, day)``:

* a hub's household (user, UTC offset, devices and their habits) depends on ``(seed, hub)`` only;
* a hub-day's events depend on ``(seed, hub, day)`` only, its faults on a separate stream;
* fleet-wide weather depends on ``(seed, day)`` only.

So writing one day alone produces the same bytes as the same day inside a longer run, and the clean
events of a file do not change when fault injection is switched on (faults only replace/add lines).
Files are gzipped with ``mtime=0`` so a run is byte-identical for a given seed.

Realism (so a model on per-device daily energy has something to learn beyond lags):

* per-type start-time profiles in the hub's local time (heating mornings/evenings, lighting evenings...);
* a seasonal factor on day-of-year (heating much higher in winter), fleet-wide weather spells, a slow
  per-household occupancy wave, weekend effects, per-device weekday rhythm (a washer runs on its own fixed
  weekdays, an EV charges on commute days), a per-device lognormal scale and day-to-day noise;
* the number of events of a device on a day scales with its energy that day, each event's energy is
  ``power * duration`` with a plausible per-type power.

Faults (``fault_rate`` F > 0). Each line-level kind in :data:`LINE_FAULT_KINDS` replaces about F of a
file's lines (mutually exclusive, so F <= 1/8); ``duplicate_event_id`` adds an exact copy of about F of
the valid lines later in the same file; ``truncated_gzip`` cuts about F/4 of the files (at least one file
per 20 files of a run) in the middle of the compressed bytes. A truncated file gets no line faults and its
lines are not counted as lines/events: a reader cannot trust it, downstream quarantines the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from smart_home_assets.lib.contract import (
    MAX_EVENT_DURATION_S,
    MAX_EVENT_ENERGY_WH,
    UPLOAD_FIELDS,
    upload_relative_path,
)
from smart_home_assets.lib.reasons import (  # noqa: F401 (re-exported: callers name them here)
    DUPLICATE_EVENT_ID,
    MISSING_FIELD,
    NEGATIVE_ENERGY,
    NOT_JSON,
    NULL_USER_ID,
    TIMESTAMP_OUTSIDE_DAY,
    TRUNCATED_GZIP,
    UNKNOWN_DEVICE_TYPE,
    WRONG_TYPE,
)

# --- fault kinds (they double as the quarantine reason codes downstream) -------------------------------

# Kinds that replace a generated line; the order fixes which slice of [0, 7F) of a uniform draw selects it.
LINE_FAULT_KINDS = (
    NULL_USER_ID,
    UNKNOWN_DEVICE_TYPE,
    TIMESTAMP_OUTSIDE_DAY,
    NEGATIVE_ENERGY,
    NOT_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
)
FAULT_KINDS = (*LINE_FAULT_KINDS, DUPLICATE_EVENT_ID, TRUNCATED_GZIP)
MAX_FAULT_RATE = 1.0 / (len(LINE_FAULT_KINDS) + 1)

UNKNOWN_TYPES = ("toaster_x", "aquarium_pump", "unknown")
FIELD_NAMES = tuple(UPLOAD_FIELDS)
# Files per run that guarantee at least one truncated file (when faults are on).
TRUNCATE_AT_LEAST_ONE_PER_FILES = 20
GZIP_LEVEL = 3

# Random streams: seeds are always [seed, stream, hub, day] (fixed length: numpy's SeedSequence treats
# [a, b] and [a, b, 0] as the same entropy, so variable-length keys could collide).
_STREAM_HUB, _STREAM_DAY, _STREAM_FAULTS, _STREAM_WEATHER, _STREAM_TRUNCATE = 1, 2, 3, 4, 5

# --- device types ------------------------------------------------------------------------------------


def _hours(base: float, *peaks: tuple[int, int, float]) -> tuple[float, ...]:
    """24 relative start-time weights: ``base`` everywhere plus ``(from_hour, to_hour, weight)`` peaks.

    ``to_hour`` is exclusive and may be smaller than ``from_hour`` to wrap over midnight.
    """
    w = [base] * 24
    for start, end, weight in peaks:
        for step in range((end - start) % 24):
            w[(start + step) % 24] = weight
    return tuple(w)


@dataclass(frozen=True)
class DeviceProfile:
    presence: float  # probability that a household has one
    event_share: float  # relative share of a hub's events when the device is in normal use
    daily_kwh: float  # typical energy on a day it is used, at seasonal factor 1
    power_w: float  # typical draw while running
    season: str  # "heating" (clipped winter cosine) or "cosine" with season_amp (+ = more in winter)
    season_amp: float
    weekend_factor: float  # energy multiplier on Saturday and Sunday
    weather_coef: float  # sensitivity to fleet-wide cold spells
    noise_sigma: float  # day-to-day lognormal noise
    runs_per_week: float | None  # None = in use every day; else active on that many fixed weekdays
    hours_weekday: tuple[float, ...]
    hours_weekend: tuple[float, ...] | None = None  # None = same as weekdays


# The keys must be valid catalog types (tests check this against device_catalog.json).
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    "dishwasher": DeviceProfile(
        0.6,
        0.04,
        1.3,
        1800,
        "cosine",
        0.05,
        1.2,
        0.0,
        0.2,
        5.5,
        _hours(0.05, (12, 14, 0.5), (19, 23, 3.0)),
    ),
    "ev_charger": DeviceProfile(
        0.2,
        0.04,
        14.0,
        7200,
        "cosine",
        0.1,
        0.6,
        0.0,
        0.3,
        3.5,
        _hours(0.02, (22, 6, 3.0), (18, 22, 0.8)),
    ),
    "fridge": DeviceProfile(
        0.97,
        0.22,
        1.2,
        120,
        "cosine",
        -0.12,
        1.05,
        0.0,
        0.08,
        None,
        _hours(1.0, (7, 22, 1.3)),
    ),
    "heating": DeviceProfile(
        0.75,
        0.2,
        12.0,
        1600,
        "heating",
        0.0,
        1.1,
        0.35,
        0.15,
        None,
        _hours(0.5, (5, 9, 3.0), (9, 17, 0.8), (17, 22, 3.0)),
        _hours(0.5, (7, 11, 3.0), (11, 17, 1.6), (17, 23, 3.0)),
    ),
    "lighting": DeviceProfile(
        0.9,
        0.15,
        1.5,
        150,
        "cosine",
        0.35,
        1.1,
        0.05,
        0.2,
        None,
        _hours(0.2, (0, 1, 0.8), (1, 6, 0.1), (6, 9, 1.0), (17, 19, 2.0), (19, 23, 3.0)),
    ),
    "oven": DeviceProfile(
        0.7,
        0.05,
        1.2,
        2200,
        "cosine",
        0.1,
        1.3,
        0.0,
        0.35,
        5.0,
        _hours(0.05, (11, 13, 2.0), (17, 20, 3.0)),
    ),
    "television": DeviceProfile(
        0.85,
        0.08,
        0.6,
        120,
        "cosine",
        0.1,
        1.6,
        0.0,
        0.3,
        None,
        _hours(0.1, (7, 9, 0.5), (18, 23, 3.0)),
        _hours(0.1, (9, 18, 1.5), (18, 24, 3.0)),
    ),
    "washing_machine": DeviceProfile(
        0.75,
        0.04,
        1.0,
        900,
        "cosine",
        0.05,
        1.0,
        0.0,
        0.25,
        2.5,
        _hours(0.05, (8, 12, 2.0), (12, 17, 1.0), (17, 21, 2.0)),
    ),
    "water_heater": DeviceProfile(
        0.45,
        0.08,
        4.0,
        2500,
        "cosine",
        0.2,
        1.1,
        0.05,
        0.2,
        None,
        _hours(0.2, (5, 9, 3.0), (9, 19, 0.5), (19, 22, 1.5)),
    ),
}
DEVICE_TYPES = tuple(DEVICE_PROFILES)
_T = {name: i for i, name in enumerate(DEVICE_TYPES)}
# Extra devices beyond one per type (more rooms, zones, a second fridge) and how likely each is.
_EXTRA_TYPES = np.array([_T["lighting"], _T["heating"], _T["television"], _T["fridge"]])
_EXTRA_WEIGHTS = np.array([0.5, 0.2, 0.2, 0.1])
# Non-zero UTC offsets some hubs report their timestamps in (the instant stays inside the UTC day).
_OFFSETS_MIN = np.array([60, 120, -300, 330, -480, 540])


def _profile_array(attr: str) -> np.ndarray:
    return np.array([getattr(DEVICE_PROFILES[t], attr) for t in DEVICE_TYPES], dtype=float)


_PRESENCE = _profile_array("presence")
_EVENT_SHARE = _profile_array("event_share")
_DAILY_WH = _profile_array("daily_kwh") * 1000.0
_POWER_W = _profile_array("power_w")
_SEASON_AMP = _profile_array("season_amp")
_IS_HEATING = np.array([DEVICE_PROFILES[t].season == "heating" for t in DEVICE_TYPES])
_WEEKEND_FACTOR = _profile_array("weekend_factor")
_WEATHER_COEF = _profile_array("weather_coef")
_NOISE_SIGMA = _profile_array("noise_sigma")


def _hour_cdfs() -> np.ndarray:
    """Cumulative start-hour distributions, shape (2 = weekday/weekend, types, 24)."""
    w = np.array(
        [
            [DEVICE_PROFILES[t].hours_weekday for t in DEVICE_TYPES],
            [DEVICE_PROFILES[t].hours_weekend or DEVICE_PROFILES[t].hours_weekday for t in DEVICE_TYPES],
        ]
    )
    cdf = np.cumsum(w, axis=2)
    cdf /= cdf[..., -1:]
    cdf[..., -1] = 1.0  # exact, so a uniform draw < 1 always lands on an hour < 24
    return cdf


_HOUR_CDF = _hour_cdfs()


def season_factors(day: dt.date) -> np.ndarray:
    """Seasonal energy multiplier per device type for ``day`` (northern hemisphere, peak mid/late January)."""
    angle = 2 * math.pi * (day.timetuple().tm_yday - 20) / 365.25
    cos = math.cos(angle)
    heating = 0.08 + 1.9 * max(cos, 0.0) ** 1.2
    return np.where(_IS_HEATING, heating, 1.0 + _SEASON_AMP * cos)


def _utc_midnight_epoch(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def _rng(seed: int, stream: int, hub: int = 0, day: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, hub, day])


def weather_anomaly(seed: int, day: dt.date) -> float:
    """Fleet-wide cold (+) / mild (-) spell for ``day``: a few slow waves, smooth from day to day."""
    rng = _rng(seed, _STREAM_WEATHER)
    periods = np.array([5.3, 11.7, 23.1])
    amps = rng.uniform(0.3, 0.6, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    return float(np.sum(amps * np.sin(2 * math.pi * day.toordinal() / periods + phases)))


# --- households --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Hub:
    """One household: its hub, user, clock offset and devices with their habits (arrays per device)."""

    index: int
    hub_id: str
    user_id: str
    utc_offset_min: int
    type_idx: np.ndarray  # (devices,) index into DEVICE_TYPES
    device_ids: pl.Series
    device_types: pl.Series
    daily_wh: np.ndarray  # (devices,) typical energy on a used day
    power_w: np.ndarray  # (devices,)
    dow_mult: np.ndarray  # (devices, 7) fixed weekday rhythm
    active_p: np.ndarray  # (devices, 7) probability the device is used at all on that weekday
    weekly_mean: np.ndarray  # (devices,) mean over weekdays of the weekly usage factors, for event counts
    occupancy: tuple[float, float, float]  # amplitude, period (days), phase of the slow presence wave

    @property
    def offset_str(self) -> str:
        sign = "+" if self.utc_offset_min >= 0 else "-"
        hours, minutes = divmod(abs(self.utc_offset_min), 60)
        return f"{sign}{hours:02d}:{minutes:02d}"

    def occupancy_factor(self, day: dt.date) -> float:
        amp, period, phase = self.occupancy
        return 1.0 + amp * math.sin(2 * math.pi * day.toordinal() / period + phase)


def hub_id_for(index: int) -> str:
    return f"hub-{index:05d}"


def _choose_device_types(rng: np.random.Generator) -> np.ndarray:
    """5-12 device types: each type present by its ``presence``; trimmed or topped up with extra rooms."""
    target = int(rng.integers(5, 13))
    present = np.flatnonzero(rng.random(len(DEVICE_TYPES)) < _PRESENCE)
    fridge = present[present == _T["fridge"]]
    others = rng.permutation(present[present != _T["fridge"]])
    chosen = np.concatenate([fridge, others[: target - len(fridge)]])
    extra = rng.choice(_EXTRA_TYPES, size=target - len(chosen), p=_EXTRA_WEIGHTS)
    return np.sort(np.concatenate([chosen, extra])).astype(np.int64)


def _active_probabilities(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    """Per device and weekday, the chance it is used at all: 1 for daily devices, else fixed weekdays."""
    active = np.ones((len(type_idx), 7))
    weekday_pref = np.array([1, 1, 1, 1, 1, 2, 2], dtype=float)
    commute_pref = np.array([2, 2, 2, 2, 2, 0.5, 0.5])
    for d, t in enumerate(type_idx):
        runs = DEVICE_PROFILES[DEVICE_TYPES[t]].runs_per_week
        if runs is None:
            continue
        k = int(np.clip(round(runs + rng.uniform(-1, 1)), 1, 7))
        # An EV charges after commute days; other chores lean to the weekend.
        pref = commute_pref if DEVICE_TYPES[t] == "ev_charger" else weekday_pref
        days = rng.choice(7, size=k, replace=False, p=pref / pref.sum())
        active[d] = 0.05
        active[d, days] = 0.9
    return active


def build_hub(seed: int, index: int) -> Hub:
    """The household of hub ``index``; depends only on ``(seed, index)``."""
    rng = _rng(seed, _STREAM_HUB, index)
    hub_id = hub_id_for(index)
    user_id = "user-" + rng.bytes(6).hex()
    offset = int(rng.choice(_OFFSETS_MIN)) if rng.random() < 0.3 else 0
    type_idx = _choose_device_types(rng)
    n = len(type_idx)
    names = [DEVICE_TYPES[t] for t in type_idx]
    device_ids = [f"{hub_id}-{name}-{names[:i].count(name) + 1}" for i, name in enumerate(names)]

    dow_mult = rng.lognormal(0.0, 0.15, (n, 7))
    active_p = _active_probabilities(rng, type_idx)
    weekend = np.arange(7) >= 5
    weekday_factor = np.where(weekend[None, :], _WEEKEND_FACTOR[type_idx][:, None], 1.0)
    weekly_mean = np.mean(weekday_factor * dow_mult * active_p, axis=1)
    return Hub(
        index=index,
        hub_id=hub_id,
        user_id=user_id,
        utc_offset_min=offset,
        type_idx=type_idx,
        device_ids=pl.Series("device_id", device_ids),
        device_types=pl.Series("device_type", names),
        daily_wh=_DAILY_WH[type_idx] * rng.lognormal(0.0, 0.35, n),
        power_w=_POWER_W[type_idx] * rng.lognormal(0.0, 0.15, n),
        dow_mult=dow_mult,
        active_p=active_p,
        weekly_mean=weekly_mean,
        occupancy=(float(rng.uniform(0.03, 0.15)), float(rng.uniform(20, 90)), float(rng.uniform(0, 2 * math.pi))),
    )


def build_fleet(seed: int, hubs: int) -> list[Hub]:
    return [build_hub(seed, i) for i in range(hubs)]


# --- one hub-day of events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HubDayEvents:
    """Clean events of one hub on one UTC day, sorted by time (arrays of equal length)."""

    hub: Hub
    day: dt.date
    device: np.ndarray  # index into hub's devices
    utc_second: np.ndarray  # seconds since the UTC day's midnight, in [0, 86400)
    duration_s: np.ndarray
    energy_wh: np.ndarray

    def __len__(self) -> int:
        return len(self.device)

    def to_frame(self) -> pl.DataFrame:
        """The events as a typed frame (event_timestamp as UTC datetime), handy for analysis and tests."""
        midnight = _utc_midnight_epoch(self.day)
        return pl.DataFrame(
            {
                "hub_id": [self.hub.hub_id] * len(self),
                "device_id": self.hub.device_ids.gather(self.device),
                "device_type": self.hub.device_types.gather(self.device),
                "event_timestamp": pl.from_epoch(
                    pl.Series(midnight + self.utc_second), time_unit="s"
                ).dt.replace_time_zone("UTC"),
                "duration_s": self.duration_s,
                "energy_wh": self.energy_wh,
            }
        )


@dataclass(frozen=True)
class RegimeChange:
    """From ``first_day`` on, every device of ``device_type`` uses ``factor`` times its energy (a new tariff,
    a firmware change, a cold snap that lasts): what a model trained before it has never seen."""

    first_day: dt.date
    device_type: str
    factor: float

    def __post_init__(self):
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(
                f"regime change: unknown device type {self.device_type!r} (one of {', '.join(DEVICE_TYPES)})"
            )
        if not self.factor > 0:
            raise ValueError(f"regime change: the factor must be positive, not {self.factor}")

    @classmethod
    def parse(cls, text: str) -> RegimeChange:
        """``YYYY-MM-DD:device_type:factor``, e.g. ``2026-03-20:heating:2``."""
        try:
            day, device_type, factor = text.split(":")
            return cls(dt.date.fromisoformat(day), device_type, float(factor))
        except ValueError as exc:
            raise ValueError(f"--regime-change {text!r}: expected YYYY-MM-DD:device_type:factor ({exc})") from None

    def multipliers(self, hub: Hub, day: dt.date) -> np.ndarray | float:
        if day < self.first_day:
            return 1.0
        return np.where(hub.type_idx == _T[self.device_type], self.factor, 1.0)


def _daily_energy(
    hub: Hub, day: dt.date, weather: float, rng: np.random.Generator, regime: RegimeChange | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per device: energy (Wh) on ``day`` and its usage factor (1 = a typical day at seasonal factor 1)."""
    t = hub.type_idx
    dow = day.weekday()
    factor = (
        season_factors(day)[t]
        * (_WEEKEND_FACTOR[t] if dow >= 5 else 1.0)
        * hub.dow_mult[:, dow]
        * hub.occupancy_factor(day)
        * np.exp(_WEATHER_COEF[t] * weather)
        * rng.lognormal(0.0, _NOISE_SIGMA[t])
    )
    active = rng.random(len(t)) < hub.active_p[:, dow]
    factor = np.where(active, factor, 0.0)
    if regime is not None:
        factor = factor * regime.multipliers(hub, day)
    return hub.daily_wh * factor, factor / hub.weekly_mean


def simulate_hub_day(
    hub: Hub,
    day: dt.date,
    *,
    seed: int,
    events_per_hub: int,
    weather: float | None = None,
    regime: RegimeChange | None = None,
) -> HubDayEvents:
    """Clean events of ``hub`` on ``day``; depends only on ``(seed, hub.index, day)``."""
    if weather is None:
        weather = weather_anomaly(seed, day)
    rng = _rng(seed, _STREAM_DAY, hub.index, day.toordinal())
    energy_day, usage = _daily_energy(hub, day, weather, rng, regime)

    # Events per device scale with its usage today, normalised by today's seasonal expectation so that a
    # hub has about events_per_hub events on any day of the year; a used device has at least one event.
    share = _EVENT_SHARE[hub.type_idx]
    lam = events_per_hub * share * usage / np.sum(share * season_factors(day)[hub.type_idx])
    counts = np.where(energy_day > 0, np.maximum(rng.poisson(lam), 1), 0)
    device = np.repeat(np.arange(len(counts)), counts)
    n = len(device)

    # Start times follow the type's local-time profile; wrapped into the UTC day so the instant stays in it.
    weekend = int(day.weekday() >= 5)
    cdf = _HOUR_CDF[weekend, hub.type_idx][device]  # (n, 24)
    hour = (rng.random(n)[:, None] >= cdf).sum(axis=1)
    local_second = hour * 3600 + rng.integers(0, 3600, n)
    utc_second = (local_second - hub.utc_offset_min * 60) % 86_400

    # Split the day's energy over its events; energy = power * duration, both within contract limits.
    weights = rng.gamma(2.0, 1.0, n)
    energy = energy_day[device] * weights / np.bincount(device, weights, len(counts))[device]
    power = hub.power_w[device] * rng.uniform(0.85, 1.15, n)
    duration = np.clip(energy / power * 3600.0, 1.0, 0.9 * MAX_EVENT_DURATION_S)
    energy = np.minimum(power * duration / 3600.0, 0.9 * MAX_EVENT_ENERGY_WH)
    duration = np.round(energy / power * 3600.0, 1)
    energy = np.round(energy, 3)

    order = np.argsort(utc_second, kind="stable")
    return HubDayEvents(hub, day, device[order], utc_second[order], duration[order], energy[order])


# --- faults ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    """Which lines of one file are replaced by which fault, which are duplicated, whether it is truncated."""

    kind: np.ndarray  # per line: -1 clean, else index into LINE_FAULT_KINDS
    missing_field: np.ndarray  # per line: index into FIELD_NAMES dropped where kind is missing_field
    variant: np.ndarray  # per line: small int choosing among alternatives (unknown type, wrong type)
    shift_days: np.ndarray  # per line: ±1 or ±2, used where kind is timestamp_outside_day
    cut_fraction: np.ndarray  # per line: where a not_json line is cut
    duplicate_order: np.ndarray  # final line order as indices into the generated lines (copies repeat one)
    truncate: bool

    @staticmethod
    def none(n: int) -> FaultPlan:
        zeros = np.zeros(n, dtype=np.int64)
        return FaultPlan(zeros - 1, zeros, zeros, zeros, np.zeros(n), np.arange(n), False)

    def counts(self) -> dict[str, int]:
        by_kind = np.bincount(self.kind[self.kind >= 0], minlength=len(LINE_FAULT_KINDS))
        counts = dict(zip(LINE_FAULT_KINDS, (int(c) for c in by_kind), strict=True))
        counts[DUPLICATE_EVENT_ID] = len(self.duplicate_order) - len(self.kind)
        counts[TRUNCATED_GZIP] = int(self.truncate)
        return counts


def forced_truncation(seed: int, hubs: int, day: dt.date) -> int | None:
    """The hub whose file is always truncated on ``day`` (when faults are on), or None.

    One forced file every ``ceil(20 / hubs)`` days (by day ordinal) guarantees a truncated file in any run
    of at least 20 files, while staying a function of (seed, fleet size, day) so single days reproduce.
    """
    every = math.ceil(TRUNCATE_AT_LEAST_ONE_PER_FILES / hubs)
    if day.toordinal() % every:
        return None
    return int(_rng(seed, _STREAM_TRUNCATE, 0, day.toordinal()).integers(hubs))


def plan_faults(
    seed: int, hub: Hub, day: dt.date, n: int, fault_rate: float, force_truncate: bool = False
) -> FaultPlan:
    """Draw the faults of one file from its own stream (the clean events are unaffected by fault_rate)."""
    if fault_rate <= 0:
        return FaultPlan.none(n)
    rng = _rng(seed, _STREAM_FAULTS, hub.index, day.toordinal())
    truncate = bool(rng.random() < fault_rate / 4) or force_truncate
    u = rng.random(n)
    # One uniform per line: [0, F) -> first kind, [F, 2F) -> second, ...; so kinds never overlap.
    slot = np.minimum((u / fault_rate).astype(np.int64), len(LINE_FAULT_KINDS) - 1)
    kind = np.where(u < len(LINE_FAULT_KINDS) * fault_rate, slot, -1)
    missing_field = rng.integers(0, len(FIELD_NAMES), n)
    variant = rng.integers(0, 6, n)
    shift_days = rng.choice(np.array([-2, -1, 1, 2]), n)
    cut_fraction = rng.uniform(0.2, 0.8, n)

    # Duplicates: copies of clean lines, each placed somewhere after its original.
    source = np.flatnonzero((rng.random(n) < fault_rate) & (kind < 0))
    position = source + rng.uniform(0.5, n - source + 0.5)
    keys = np.concatenate([np.arange(n, dtype=float), position])
    order = np.concatenate([np.arange(n), source])[np.argsort(keys, kind="stable")]
    if truncate:  # a truncated file is lost as a whole: keep it clean so the counts stay simple
        return dataclasses.replace(FaultPlan.none(n), truncate=True)
    return FaultPlan(kind, missing_field, variant, shift_days, cut_fraction, order, False)


# --- rendering ---------------------------------------------------------------------------------------


def _json_str(expr: pl.Expr) -> pl.Expr:
    # Every generated string is [A-Za-z0-9_-+:T], so quoting needs no escaping.
    return pl.concat_str(pl.lit('"'), expr, pl.lit('"'))


def render_lines(events: HubDayEvents, plan: FaultPlan) -> bytes:
    """The file's uncompressed content: one JSON object per line, faults applied, trailing newline."""
    hub, day = events.hub, events.day
    kind = plan.kind
    is_kind = {name: kind == i for i, name in enumerate(LINE_FAULT_KINDS)}

    # Numeric faults are applied to the arrays; textual ones in the expressions below.
    shift = np.where(is_kind[TIMESTAMP_OUTSIDE_DAY], plan.shift_days * 86_400, 0)
    local_epoch = _utc_midnight_epoch(day) + events.utc_second + shift + hub.utc_offset_min * 60
    energy = np.where(is_kind[NEGATIVE_ENERGY], -np.maximum(events.energy_wh, 0.001), events.energy_wh)

    frame = pl.DataFrame(
        {
            "n": np.arange(len(events)),
            "device_id": hub.device_ids.gather(events.device),
            "device_type": hub.device_types.gather(events.device),
            "local_epoch": local_epoch,
            "duration_s": events.duration_s,
            "energy_wh": energy,
            "kind": kind,
            "missing": np.where(is_kind[MISSING_FIELD], plan.missing_field, -1),
            "variant": plan.variant,
            "cut": plan.cut_fraction,
        }
    )
    k = pl.col("kind")
    wrong_type = k == LINE_FAULT_KINDS.index(WRONG_TYPE)
    unknown = pl.lit(pl.Series(UNKNOWN_TYPES)).gather(pl.col("variant") % len(UNKNOWN_TYPES))
    values = {
        "event_id": _json_str(pl.lit(f"{hub.hub_id}-{day:%Y%m%d}-") + pl.col("n").cast(pl.String).str.zfill(6)),
        "hub_id": pl.lit(f'"{hub.hub_id}"'),
        "user_id": pl.when(k == LINE_FAULT_KINDS.index(NULL_USER_ID))
        .then(pl.lit("null"))
        .otherwise(pl.lit(f'"{hub.user_id}"')),
        "device_id": _json_str(pl.col("device_id")),
        "device_type": _json_str(
            pl.when(k == LINE_FAULT_KINDS.index(UNKNOWN_DEVICE_TYPE)).then(unknown).otherwise(pl.col("device_type"))
        ),
        "event_timestamp": _json_str(
            pl.from_epoch("local_epoch", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S") + pl.lit(hub.offset_str)
        ),
        # wrong_type: even variants break energy_wh (a non-numeric string), odd ones duration_s (an object).
        "duration_s": pl.when(wrong_type & (pl.col("variant") % 2 == 1))
        .then(pl.concat_str(pl.lit('{"value":'), pl.col("duration_s").cast(pl.String), pl.lit("}")))
        .otherwise(pl.col("duration_s").cast(pl.String)),
        "energy_wh": pl.when(wrong_type & (pl.col("variant") % 2 == 0))
        .then(pl.lit('"abc"'))
        .otherwise(pl.col("energy_wh").cast(pl.String)),
    }
    assert tuple(values) == FIELD_NAMES
    members = [
        pl.when(pl.col("missing") == i).then(None).otherwise(pl.lit(f'"{name}":') + expr)
        for i, (name, expr) in enumerate(values.items())
    ]
    line = pl.concat_str(pl.lit("{"), pl.concat_str(members, separator=",", ignore_nulls=True), pl.lit("}"))
    # not_json: the line cut before its closing brace, which can never parse as JSON.
    cut_at = (line.str.len_bytes() * pl.col("cut")).cast(pl.Int64)
    line = pl.when(k == LINE_FAULT_KINDS.index(NOT_JSON)).then(line.str.slice(0, cut_at)).otherwise(line)
    lines = frame.select(line=line)["line"].gather(plan.duplicate_order)
    return (lines.str.join("\n").item() + "\n").encode("ascii")


# --- writing -----------------------------------------------------------------------------------------


@dataclass
class SimulationSummary:
    """What a run wrote. ``lines``/``events`` cover the readable (non-truncated) files only.

    ``lines == events + sum(line-level faults incl. duplicate_event_id)``; ``faults[truncated_gzip]`` is the
    number of truncated files, listed (relative to the landing folder) in ``truncated_files``, whose lines
    before the cut are counted in ``truncated_lines``.
    """

    files: int = 0
    lines: int = 0
    bytes: int = 0
    events: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    truncated_files: list[str] = field(default_factory=list)
    truncated_lines: int = 0

    def merge(self, other: SimulationSummary) -> None:
        self.files += other.files
        self.lines += other.lines
        self.bytes += other.bytes
        self.events += other.events
        for kind, count in other.faults.items():
            self.faults[kind] = self.faults.get(kind, 0) + count
        self.truncated_files.extend(other.truncated_files)
        self.truncated_lines += other.truncated_lines


def upload_path(landing: Path, day: dt.date, hub_id: str) -> Path:
    return Path(landing) / upload_relative_path(day, hub_id)


def _write_atomically(path: Path, data: bytes) -> None:
    # Same bytes already there (a re-run with the same seed): keep the file and its mtime, so the landing
    # sensor does not see a re-upload.
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    # A hidden temp name first, so a sensor listing the folder never sees a half-written upload.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_hub_day(
    landing: Path,
    hub: Hub,
    day: dt.date,
    *,
    seed: int,
    events_per_hub: int,
    fault_rate: float,
    force_truncate: bool = False,
    weather: float | None = None,
    regime: RegimeChange | None = None,
) -> SimulationSummary:
    """Generate, render, gzip and write one hub's file for ``day``; the summary of that one file."""
    events = simulate_hub_day(hub, day, seed=seed, events_per_hub=events_per_hub, weather=weather, regime=regime)
    plan = plan_faults(seed, hub, day, len(events), fault_rate, force_truncate)
    data = gzip.compress(render_lines(events, plan), compresslevel=GZIP_LEVEL, mtime=0)
    path = upload_path(landing, day, hub.hub_id)
    summary = SimulationSummary(files=1, faults=plan.counts())
    if plan.truncate:
        data = data[: len(data) // 2]
        summary.truncated_files.append(path.relative_to(landing).as_posix())
        summary.truncated_lines = len(events)
    else:
        summary.lines = len(plan.duplicate_order)
        summary.events = int(np.sum(plan.kind < 0))
    _write_atomically(path, data)
    summary.bytes = len(data)
    return summary


def _check_args(hubs: int, days: int, fault_rate: float, seed: int, events_per_hub: int) -> None:
    if hubs < 1 or days < 1:
        raise ValueError("hubs and days must be >= 1")
    if not 0 <= fault_rate <= MAX_FAULT_RATE:
        raise ValueError(f"fault_rate must be within [0, {MAX_FAULT_RATE:.3f}] (line faults are mutually exclusive)")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if events_per_hub < 1:
        raise ValueError("events_per_hub must be >= 1")


def simulate_fleet(
    landing: Path,
    *,
    hubs: int,
    days: int,
    start: dt.date,
    fault_rate: float = 0.0,
    seed: int = 0,
    events_per_hub: int = 1000,
    progress: bool = False,
    regime: RegimeChange | None = None,
) -> SimulationSummary:
    """Write ``hubs`` upload files per day for ``days`` days from ``start`` into ``landing``.

    ``events_per_hub`` is the mean number of events per hub and day. Any day written alone (``start=day,
    days=1``) is byte-identical to the same day of a longer run with the same seed, hubs and fault_rate.
    ``regime`` injects a lasting change of one device type's usage from a given day (RegimeChange).
    """
    from tqdm import tqdm

    _check_args(hubs, days, fault_rate, seed, events_per_hub)
    landing = Path(landing)
    fleet = build_fleet(seed, hubs)
    summary = SimulationSummary()
    with tqdm(total=hubs * days, unit="file", disable=not progress, desc="simulate") as bar:
        for offset in range(days):
            day = start + dt.timedelta(days=offset)
            (landing / day.isoformat()).mkdir(parents=True, exist_ok=True)
            weather = weather_anomaly(seed, day)
            forced = forced_truncation(seed, hubs, day) if fault_rate > 0 else None
            for hub in fleet:
                summary.merge(
                    write_hub_day(
                        landing,
                        hub,
                        day,
                        seed=seed,
                        events_per_hub=events_per_hub,
                        fault_rate=fault_rate,
                        force_truncate=hub.index == forced,
                        weather=weather,
                        regime=regime,
                    )
                )
                bar.update()
    return summary
