"""Cleaning: raw_usage rows -> device_usage (typed, UTC, deduplicated, pseudonymized) + quarantine.

Every raw row ends in exactly one place: ``device_usage``, or ``device_usage_quarantine`` with a reason
code; duplicates go to the quarantine with reason ``duplicate_event_id`` so they are counted, not lost.
Pure polars: frames in, frames out, no Dagster.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from smart_home_assets.lib.contract import MAX_EVENT_DURATION_S, MAX_EVENT_ENERGY_WH, STRING_FIELDS
from smart_home_assets.lib.reasons import (  # noqa: F401 (re-exported: callers name them here)
    BAD_TIMESTAMP,
    CONFLICTING_EVENT_ID,
    DUPLICATE_EVENT_ID,
    EMPTY_FIELD,
    HUB_MISMATCH,
    IMPLAUSIBLE_DURATION,
    IMPLAUSIBLE_ENERGY,
    NEGATIVE_DURATION,
    NEGATIVE_ENERGY,
    NON_FINITE_NUMBER,
    NULL_USER_ID,
    TIMESTAMP_OUTSIDE_DAY,
    TIMESTAMP_WITHOUT_OFFSET,
    UNKNOWN_DEVICE_TYPE,
)

UTC_TIMESTAMP = pl.Datetime("us", "UTC")

DEVICE_USAGE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "event_id": pl.String(),
    "hub_id": pl.String(),
    "user_pseudonym": pl.String(),
    "device_id": pl.String(),
    "device_type": pl.String(),
    "event_timestamp": UTC_TIMESTAMP,
    "duration_s": pl.Float64(),
    "energy_wh": pl.Float64(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "reason": pl.String(),
    "detail": pl.String(),
    "event_id": pl.String(),
    "hub_id": pl.String(),
    "user_pseudonym": pl.String(),
    "device_id": pl.String(),
    "device_type": pl.String(),
    "event_timestamp_as_sent": pl.String(),
    "duration_s": pl.Float64(),
    "energy_wh": pl.Float64(),
}


@dataclass(frozen=True)
class CleanResult:
    device_usage: pl.DataFrame
    quarantine: pl.DataFrame


def pseudonymize(user_ids: pl.Series, key: bytes) -> pl.Series:
    """Keyed HMAC-SHA256 of each user id (hex). Hashes each distinct id once; nulls stay null."""
    distinct = user_ids.drop_nulls().unique()
    digests = [hmac.new(key, u.encode("utf-8"), hashlib.sha256).hexdigest() for u in distinct.to_list()]
    mapping = pl.DataFrame({"u": distinct, "p": pl.Series(digests, dtype=pl.String)})
    return (
        pl.DataFrame({"u": user_ids})
        .join(mapping, on="u", how="left", maintain_order="left")
        .get_column("p")
        .alias(user_ids.name)
    )


def parse_event_timestamp(col: pl.Expr) -> pl.Expr:
    """ISO-8601 with an offset (``+01:00``) or ``Z`` -> UTC; anything else -> null."""
    return pl.coalesce(
        col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_zone="UTC", time_unit="us"),
        col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False, time_zone="UTC", time_unit="us"),
    )


def _reason(window_start: pl.Expr, catalog: Iterable[str]) -> tuple[pl.Expr, pl.Expr]:
    """Reason code and detail of each row, from the columns ``parsed_timestamp`` and ``naive_timestamp``
    (parsed once beforehand: a timestamp parse is the most expensive expression here)."""
    timestamp, naive = pl.col("parsed_timestamp"), pl.col("naive_timestamp")
    finite = pl.col("energy_wh").is_finite() & pl.col("duration_s").is_finite()
    empty = pl.concat_str(
        [pl.when(pl.col(f) == "").then(pl.lit(f)) for f in STRING_FIELDS], separator=",", ignore_nulls=True
    )
    rules: list[tuple[pl.Expr, str | None, pl.Expr | None]] = [  # code None: the parse error is the code
        (pl.col("parse_error").is_not_null(), None, pl.col("parse_error_detail")),
        (pl.any_horizontal([pl.col(f) == "" for f in STRING_FIELDS]), EMPTY_FIELD, empty),
        (pl.col("user_id").is_null(), NULL_USER_ID, None),
        (
            pl.col("hub_id") != pl.col("file_hub_id"),
            HUB_MISMATCH,
            pl.concat_str(pl.lit("line says "), pl.col("hub_id"), pl.lit(", file is "), pl.col("file_hub_id")),
        ),
        (~pl.col("device_type").is_in(list(catalog)), UNKNOWN_DEVICE_TYPE, pl.col("device_type")),
        (timestamp.is_null() & naive.is_not_null(), TIMESTAMP_WITHOUT_OFFSET, pl.col("event_timestamp")),
        (timestamp.is_null(), BAD_TIMESTAMP, pl.col("event_timestamp")),
        (
            (timestamp < window_start) | (timestamp >= window_start + pl.duration(days=1)),
            TIMESTAMP_OUTSIDE_DAY,
            pl.col("event_timestamp"),
        ),
        (~finite, NON_FINITE_NUMBER, None),
        (pl.col("energy_wh") < 0, NEGATIVE_ENERGY, pl.col("energy_wh").cast(pl.String)),
        (pl.col("duration_s") < 0, NEGATIVE_DURATION, pl.col("duration_s").cast(pl.String)),
        (pl.col("energy_wh") > MAX_EVENT_ENERGY_WH, IMPLAUSIBLE_ENERGY, pl.col("energy_wh").cast(pl.String)),
        (pl.col("duration_s") > MAX_EVENT_DURATION_S, IMPLAUSIBLE_DURATION, pl.col("duration_s").cast(pl.String)),
    ]
    # One when/then chain (the first rule that matches wins); conditions are null-safe like the nested form.
    # pl.when(...) starts the chain, .then/.when continue it (When, Then, ChainedWhen, ... until .otherwise)
    reason: Any = pl
    detail: Any = pl
    for condition, code, why in rules:
        condition = condition.fill_null(False)
        reason = reason.when(condition).then(pl.col("parse_error") if code is None else pl.lit(code))
        detail = detail.when(condition).then(why if why is not None else pl.lit(None, pl.String))
    return reason.otherwise(pl.lit(None, pl.String)), detail.otherwise(pl.lit(None, pl.String))


def clean_usage(raw: pl.DataFrame, catalog: Iterable[str], key: bytes) -> CleanResult:
    """Split raw_usage rows (one or more partitions) into device_usage rows and quarantined rows.

    An event counts for the partition (UTC day) its file was uploaded under and must fall inside it.
    Among valid rows, the first line (by file, line) of each ``(hub_id, event_id)`` is kept; exact repeats
    are quarantined as ``duplicate_event_id``, repeats with other content as ``conflicting_event_id``.

    Cost: a few vectorized passes over the rows. Each timestamp is parsed once (the naive form only where the
    offset form failed), and the first-of-key comparisons run only on rows whose key repeats.
    """
    window_start = pl.col("partition_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    # raw_line is the bulk of a raw row and no rule reads it: sorting without it copies a fraction of the bytes.
    ordered = raw.drop("raw_line", strict=False).sort("partition_date", "source_file", "line_number")
    parsed = parse_event_timestamp(pl.col("event_timestamp"))
    ordered = ordered.with_columns(parsed_timestamp=parsed).with_columns(
        naive_timestamp=pl.when(pl.col("parsed_timestamp").is_null())
        .then(pl.col("event_timestamp"))
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False)
    )
    reason, detail = _reason(window_start, catalog)
    judged = ordered.with_columns(
        reason=reason, detail=detail, user_pseudonym=pseudonymize(ordered["user_id"], key)
    ).drop("naive_timestamp")
    valid_rows = _judge_repeats(judged.filter(pl.col("reason").is_null()))
    kept = valid_rows.filter(pl.col("reason").is_null())
    device_usage = kept.with_columns(event_timestamp=pl.col("parsed_timestamp")).select(
        [pl.col(c).cast(t) for c, t in DEVICE_USAGE_SCHEMA.items()]
    )
    quarantine = (
        pl.concat([judged.filter(pl.col("reason").is_not_null()), valid_rows.filter(pl.col("reason").is_not_null())])
        .with_columns(event_timestamp_as_sent=pl.col("event_timestamp"))
        .select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])
        .sort("partition_date", "source_file", "line_number")
    )
    return CleanResult(device_usage=device_usage, quarantine=quarantine)


_KEY_COLUMNS = ["partition_date", "hub_id", "event_id"]
_CONTENT_COLUMNS = ["user_id", "device_id", "device_type", "event_timestamp", "duration_s", "energy_wh"]


def _judge_repeats(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid rows (in file, line order) with ``reason``/``detail`` set on every repeat of a key after its first:
    ``duplicate_event_id`` when all content equals the first, else ``conflicting_event_id``.

    Only the rows of repeated keys (a few percent) go through the per-key window expressions."""
    repeated = pl.struct(_KEY_COLUMNS).is_duplicated()
    indexed = valid.with_row_index("_row").with_columns(_repeated=repeated)
    groups = indexed.filter(pl.col("_repeated"))
    if groups.is_empty():
        return valid
    first_of_key = pl.int_range(pl.len()).over(_KEY_COLUMNS) == 0
    same_as_first = pl.all_horizontal(
        [(pl.col(c) == pl.col(c).first().over(_KEY_COLUMNS)).fill_null(False) for c in _CONTENT_COLUMNS]
    )
    judged_groups = groups.with_columns(
        reason=pl.when(first_of_key)
        .then(pl.lit(None, pl.String))
        .when(same_as_first)
        .then(pl.lit(DUPLICATE_EVENT_ID))
        .otherwise(pl.lit(CONFLICTING_EVENT_ID)),
        detail=pl.when(first_of_key)
        .then(pl.lit(None, pl.String))
        .otherwise(
            pl.concat_str(
                pl.lit("first seen at "),
                pl.col("source_file").first().over(_KEY_COLUMNS),
                pl.lit(":"),
                pl.col("line_number").first().over(_KEY_COLUMNS).cast(pl.String),
            )
        ),
    )
    return pl.concat([indexed.filter(~pl.col("_repeated")), judged_groups]).sort("_row").drop("_row", "_repeated")
