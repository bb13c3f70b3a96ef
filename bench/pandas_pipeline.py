"""The pandas competitor: the same logic written the straightforward way, as a notebook would, independently of
the project's code (only the contract's constants and the device catalog are shared).

    python -m bench.pandas_pipeline --landing DIR --out DIR --from YYYY-MM-DD --to YYYY-MM-DD

Per day: read each hub file (gzip, tolerating a truncated one: its complete lines are kept and the cut-off
rest is one quarantined row), ``json.loads`` every line (the usual way to keep going past a bad line, which
``pd.read_json`` cannot), then vectorized pandas: the quarantine rules in the project's order, keep the first
line of each (hub, event id), HMAC-SHA256 pseudonyms per distinct user, the same validations as the checks,
daily sums per device and the feature row of every device over the 28-day lookback (lags, rolling means and
standard deviations, calendar, hub totals). Tables are written as Parquet files, one per table and day.

It prints ``BENCH_RESULT {json}``: seconds per day (after imports), imports, and row counts.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smart_home_assets.lib.catalog import load_device_catalog  # noqa: E402
from smart_home_assets.lib.contract import MAX_EVENT_DURATION_S, MAX_EVENT_ENERGY_WH, NUMBER_FIELDS, UPLOAD_FIELDS  # noqa: E402

IMPORT_S = time.perf_counter() - _STARTED

FIELDS = list(UPLOAD_FIELDS)
STRING_FIELDS = [f for f in FIELDS if f not in NUMBER_FIELDS]
DEVELOPMENT_KEY = b"smart-home-development-key-do-not-use-in-production"
LOOKBACK_DAYS, MIN_HISTORY_DAYS, LAGS = 28, 7, (1, 2, 6, 7)


# --- reading ----------------------------------------------------------------------------------------------


def read_lines(path: Path) -> tuple[list[str], str | None, str]:
    """The file's complete lines, a file problem (truncated_gzip / not_gzip) and the cut-off tail."""
    data = path.read_bytes()
    problem = None
    if path.name.endswith(".gz"):
        decompressor = zlib.decompressobj(wbits=31)
        try:
            data = decompressor.decompress(data) + decompressor.flush()
            if not decompressor.eof:
                problem = "truncated_gzip"
        except zlib.error:
            data, problem = b"", "not_gzip"
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    tail = ""
    if problem == "truncated_gzip":
        cut = text.rfind("\n") + 1
        text, tail = text[:cut], text[cut:]
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []
    return lines, problem, tail


def parse_line(line: str) -> tuple:
    """(parse_error, detail, *field values) of one line."""
    if line == "":
        return ("empty_line", None, *([None] * len(FIELDS)))
    try:
        record = json.loads(line)
    except ValueError:
        return ("not_json", None, *([None] * len(FIELDS)))
    if not isinstance(record, dict):
        return ("not_object", f"JSON {type(record).__name__}", *([None] * len(FIELDS)))
    values = [record.get(f) for f in FIELDS]
    missing = [f for f, v in zip(FIELDS, values, strict=True) if v is None and (f not in record or f != "user_id")]
    if missing:
        return ("missing_field", ",".join(missing), *([None] * len(FIELDS)))
    wrong = [
        f
        for f, v in zip(FIELDS, values, strict=True)
        if v is not None
        and (not isinstance(v, (int, float)) or isinstance(v, bool) if f in NUMBER_FIELDS else not isinstance(v, str))
    ]
    if wrong:
        return ("wrong_type", ",".join(wrong), *([None] * len(FIELDS)))
    return (None, None, *values)


def read_day(landing: Path, day: str) -> pd.DataFrame:
    rows = []
    folder = landing / day
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not path.name.endswith((".jsonl.gz", ".jsonl")):
            continue
        hub = path.name.removesuffix(".gz").removesuffix(".jsonl")
        source = f"{day}/{path.name}"
        lines, problem, tail = read_lines(path)
        for number, line in enumerate(lines, start=1):
            rows.append((source, hub, number, line, *parse_line(line)))
        if problem:
            rows.append((source, hub, len(lines) + 1, tail, problem, None, *([None] * len(FIELDS))))
    raw = pd.DataFrame.from_records(
        rows,
        columns=["source_file", "file_hub_id", "line_number", "raw_line", "parse_error", "parse_error_detail", *FIELDS],
    )
    for f in NUMBER_FIELDS:
        raw[f] = pd.to_numeric(raw[f], errors="coerce").astype("float64")
    raw.insert(0, "partition_date", dt.date.fromisoformat(day))
    return raw


# --- cleaning ---------------------------------------------------------------------------------------------


def pseudonymize(user_ids: pd.Series, key: bytes) -> pd.Series:
    mapping = {u: hmac.new(key, u.encode("utf-8"), hashlib.sha256).hexdigest() for u in user_ids.dropna().unique()}
    return user_ids.map(mapping)


def clean(raw: pd.DataFrame, day: dt.date, catalog: set[str], key: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = raw.sort_values(["source_file", "line_number"], kind="stable").reset_index(drop=True)
    text = raw["event_timestamp"]
    has_offset = text.str.contains(r"(?:Z|[+-]\d{2}:\d{2})$", regex=True, na=False)
    timestamp = pd.to_datetime(text.where(has_offset), format="ISO8601", utc=True, errors="coerce")
    naive = pd.to_datetime(text.where(~has_offset), format="ISO8601", errors="coerce")
    start = pd.Timestamp(day, tz="UTC")
    energy, duration = raw["energy_wh"], raw["duration_s"]
    empty = pd.concat([raw[f].eq("") for f in STRING_FIELDS], axis=1).any(axis=1)
    rules = [  # the first rule that matches decides the reason
        (raw["parse_error"].notna(), raw["parse_error"]),
        (empty, "empty_field"),
        (raw["user_id"].isna(), "null_user_id"),
        (raw["hub_id"].ne(raw["file_hub_id"]), "hub_mismatch"),
        (~raw["device_type"].isin(catalog), "unknown_device_type"),
        (timestamp.isna() & naive.notna(), "timestamp_without_offset"),
        (timestamp.isna(), "bad_timestamp"),
        ((timestamp < start) | (timestamp >= start + pd.Timedelta(days=1)), "timestamp_outside_day"),
        (~(np.isfinite(energy) & np.isfinite(duration)), "non_finite_number"),
        (energy < 0, "negative_energy"),
        (duration < 0, "negative_duration"),
        (energy > MAX_EVENT_ENERGY_WH, "implausible_energy"),
        (duration > MAX_EVENT_DURATION_S, "implausible_duration"),
    ]
    reason = pd.Series(None, index=raw.index, dtype=object)
    for condition, code in reversed(rules):
        reason = reason.mask(condition, code)
    raw["reason"] = reason
    raw["event_timestamp_utc"] = timestamp
    raw["user_pseudonym"] = pseudonymize(raw["user_id"], key)

    valid = raw[raw["reason"].isna()].copy()
    content = ["user_id", "device_id", "device_type", "event_timestamp", "duration_s", "energy_wh"]
    repeated = valid.duplicated(["hub_id", "event_id"], keep="first")
    firsts = valid[~repeated].set_index(["hub_id", "event_id"])[content]
    repeats = valid[repeated]
    first_of = firsts.loc[pd.MultiIndex.from_frame(repeats[["hub_id", "event_id"]])].to_numpy()
    same = (repeats[content].to_numpy() == first_of).all(axis=1)
    valid.loc[repeated, "reason"] = np.where(same, "duplicate_event_id", "conflicting_event_id")

    kept = valid[valid["reason"].isna()]
    usage = (
        kept[
            [
                "partition_date",
                "event_id",
                "hub_id",
                "user_pseudonym",
                "device_id",
                "device_type",
                "event_timestamp_utc",
                "duration_s",
                "energy_wh",
                "source_file",
                "line_number",
            ]
        ]
        .rename(columns={"event_timestamp_utc": "event_timestamp"})
        .reset_index(drop=True)
    )
    quarantine = pd.concat([raw[raw["reason"].notna()], valid[valid["reason"].notna()]])
    quarantine = quarantine[
        [
            "partition_date",
            "source_file",
            "line_number",
            "reason",
            "parse_error_detail",
            "event_id",
            "hub_id",
            "user_pseudonym",
            "device_id",
            "device_type",
            "event_timestamp",
            "duration_s",
            "energy_wh",
        ]
    ].rename(columns={"parse_error_detail": "detail", "event_timestamp": "event_timestamp_as_sent"})
    return usage, quarantine.sort_values(["source_file", "line_number"]).reset_index(drop=True)


def usage_check_failures(usage: pd.DataFrame, day: dt.date, catalog: set[str]) -> int:
    """Failing rows of the device_usage checks (0 when the partition passes them all)."""
    start = pd.Timestamp(day, tz="UTC")
    ts = usage["event_timestamp"]
    bad = (
        ~usage["user_pseudonym"].fillna("").str.fullmatch(r"[0-9a-f]{64}")
        | ts.isna()
        | (ts < start)
        | (ts >= start + pd.Timedelta(days=1))
        | ~usage["device_type"].isin(catalog)
        | ~usage["energy_wh"].between(0, MAX_EVENT_ENERGY_WH)
        | ~usage["duration_s"].between(0, MAX_EVENT_DURATION_S)
        | usage[["event_id", "hub_id", "device_id"]].isna().any(axis=1)
        | usage.duplicated(["hub_id", "event_id"], keep=False)
    )
    return int(bad.sum())


# --- features ---------------------------------------------------------------------------------------------


def daily_sums(usage: pd.DataFrame) -> pd.DataFrame:
    latest = usage.sort_values("event_timestamp", kind="stable")
    return latest.groupby(["partition_date", "device_id"], as_index=False).agg(
        hub_id=("hub_id", "last"),
        device_type=("device_type", "last"),
        energy_wh=("energy_wh", "sum"),
        active_s=("duration_s", "sum"),
        event_count=("energy_wh", "size"),
    )


def build_features(daily: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    start = day - dt.timedelta(days=LOOKBACK_DAYS)
    window = daily[(daily["partition_date"] >= start) & (daily["partition_date"] <= day)]
    days = [start + dt.timedelta(days=i) for i in range(LOOKBACK_DAYS + 1)]
    pivot = {
        col: window.pivot(index="device_id", columns="partition_date", values=col).reindex(columns=days)
        for col in ("energy_wh", "active_s", "event_count")
    }
    devices = (
        window.sort_values("partition_date")
        .groupby("device_id")
        .agg(first_seen=("partition_date", "min"), hub_id=("hub_id", "last"), device_type=("device_type", "last"))
    )
    # silent days since the first appearance are 0; days before it stay unknown (NaN)
    known = np.array(days)[None, :] >= devices["first_seen"].to_numpy()[:, None]
    grid = {col: frame.loc[devices.index].fillna(0).where(known) for col, frame in pivot.items()}
    energy = grid["energy_wh"]
    features = pd.DataFrame(index=devices.index)
    features["partition_date"] = day
    features["hub_id"], features["device_type"] = devices["hub_id"], devices["device_type"]
    features["energy_wh"], features["active_s"] = energy[day], grid["active_s"][day]
    features["event_count"] = grid["event_count"][day].astype("int64")
    for k in LAGS:
        features[f"energy_lag_{k}"] = energy[day - dt.timedelta(days=k)]
    for w in (7, 28):
        recent = energy[days[-w:]]
        features[f"energy_roll{w}_mean"] = recent.mean(axis=1)
        features[f"energy_roll{w}_std"] = recent.std(axis=1, ddof=1)
    target = day + dt.timedelta(days=1)
    features["day_of_week"], features["is_weekend"], features["month"] = day.weekday(), day.weekday() >= 5, day.month
    features["target_day_of_week"], features["target_is_weekend"] = target.weekday(), target.weekday() >= 5
    features["hub_energy_wh"] = features.groupby("hub_id")["energy_wh"].transform("sum")
    features["history_days"] = [(day - first).days + 1 for first in devices["first_seen"]]
    features["has_enough_history"] = features["history_days"] >= MIN_HISTORY_DAYS
    return features.reset_index().sort_values("device_id").reset_index(drop=True)


def feature_check_failures(features: pd.DataFrame) -> int:
    required = [
        "energy_wh",
        "active_s",
        "event_count",
        "energy_roll7_mean",
        "energy_roll28_mean",
        "hub_energy_wh",
        "history_days",
        "device_id",
        "hub_id",
        "device_type",
    ]
    numeric = features.select_dtypes("number")
    bad = features[required].isna().any(axis=1) | (numeric < 0).any(axis=1) | features.duplicated(["device_id"])
    return int(bad.sum())


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.clip(np.histogram(reference, edges)[0] / reference.size, 1e-6, None)
    actual = np.clip(np.histogram(current, edges)[0] / current.size, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


# --- storage and the day ----------------------------------------------------------------------------------


def write(out: Path, table: str, day: dt.date, frame: pd.DataFrame) -> None:
    folder = out / table
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{day}.parquet", index=False)


def read_window(out: Path, table: str, first: dt.date, last: dt.date) -> pd.DataFrame:
    frames = [
        pd.read_parquet(p)
        for p in sorted((out / table).glob("*.parquet"))
        if first <= dt.date.fromisoformat(p.stem) <= last
    ]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "partition_date" in frame:
        frame["partition_date"] = pd.to_datetime(frame["partition_date"]).dt.date
    return frame


def run_day(landing: Path, out: Path, day: dt.date, catalog: set[str], key: bytes) -> dict:
    raw = read_day(landing, day.isoformat())
    usage, quarantine = clean(raw, day, catalog, key)
    write(out, "raw_usage", day, raw)
    write(out, "device_usage", day, usage)
    write(out, "device_usage_quarantine", day, quarantine)
    usage_failures = usage_check_failures(usage, day, catalog)
    conserved = len(raw) == len(usage) + len(quarantine)

    write(out, "daily_usage", day, daily_sums(usage))
    daily = read_window(out, "daily_usage", day - dt.timedelta(days=LOOKBACK_DAYS), day)
    features = build_features(daily, day)
    write(out, "usage_features", day, features)
    reference = read_window(out, "usage_features", day - dt.timedelta(days=LOOKBACK_DAYS), day - dt.timedelta(days=1))
    drift = (
        {
            c: psi(reference[c].to_numpy(float), features[c].to_numpy(float))
            for c in ("energy_wh", "energy_roll7_mean", "event_count", "active_s")
        }
        if len(reference)
        else {}
    )
    return {
        "partition": day.isoformat(),
        "raw_lines": len(raw),
        "device_usage": len(usage),
        "quarantine": len(quarantine),
        "features": len(features),
        "conserved": conserved,
        "usage_check_failures": usage_failures,
        "feature_check_failures": feature_check_failures(features),
        "max_psi": max(drift.values(), default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pandas_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    catalog = set(load_device_catalog().device_types)
    key = (os.environ.get("SMART_HOME_PSEUDONYM_KEY") or DEVELOPMENT_KEY.decode()).encode()
    days = []
    day = args.first
    while day <= args.last:
        started = time.perf_counter()
        days.append({**run_day(args.landing, args.out, day, catalog, key), "seconds": time.perf_counter() - started})
        day += dt.timedelta(days=1)
    print(
        "BENCH_RESULT "
        + json.dumps({"import_s": IMPORT_S, "days": days, "compute_s": sum(d["seconds"] for d in days)}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
