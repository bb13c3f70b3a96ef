"""History import: an events CSV (a historical fleet export) -> hub upload files that follow the contract.

History is backfilled through the same path as live uploads, ``landing -> raw_usage -> device_usage``:
this module only writes ``<landing>/<YYYY-MM-DD>/<hub_id>.jsonl.gz`` files (see
:mod:`smart_home_assets.lib.contract`), one per hub and UTC day of the events, and the pipeline judges them
like any other upload (negative or implausible values are data, quarantined downstream, not import errors).

Reading. The CSV is read with every column as a string (no inference), then converted with polars
expressions, so there is no Python loop per row; the loops are per time zone and per output file. Extra
columns are ignored; a mapped column that is missing, or a value that cannot be converted (an empty
required value, a bad number, a bad timestamp, a hub id that is not a valid file name), fails the whole
import before anything is written, with the file, CSV line (header = line 1; a record with line breaks
inside quoted fields counts them) and column of up to 10 of them and their total count. Surrounding
whitespace of every value is stripped; completely empty lines are skipped (and counted).

Timestamps. ``YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]]``, optionally followed by ``Z`` or a UTC offset
(``+01:00`` / ``+0100``). A timestamp with an offset is converted to UTC as it is. A timestamp without one
is local wall-clock time of its hub's time zone (``hub_timezones[hub]``, else ``timezone``, IANA names)
and is converted with this rule:

* a nonexistent local time (in the spring-forward gap) is shifted forward by the length of the gap, i.e.
  read with the UTC offset in force just before the transition: Europe/Berlin 2012-03-25 02:30 ->
  03:30 CEST = 01:30Z. Counted in ``dst_shifted_forward``;
* an ambiguous local time (the repeated hour when clocks fall back) takes the earlier occurrence, the
  one still in daylight saving time: Europe/Berlin 2011-10-30 02:30 -> 02:30 CEST = 00:30Z. Counted in
  ``dst_ambiguous_earliest``.

Every ``event_timestamp`` written is ISO-8601 UTC with ``+00:00`` (microseconds only when not zero), and
the file an event goes to is the UTC day of that instant.

Event ids. With no event-id column, each row's id is derived from its content: ``csv-`` + the first 32
hex digits of SHA-256 over the length-prefixed hub id, user id, device id, device type, timestamp as given,
duration as given and energy as given (all stripped). A re-import therefore writes byte-identical files
(lines are sorted by their content, not by CSV order, so a re-ordered export gives the same bytes too).
Identical rows get the same id ON PURPOSE: two rows with the same device, start time, duration and energy
are taken as the same event exported twice, so the pipeline quarantines the repeats as
``duplicate_event_id`` (counted, not lost, and never double-counted in device_usage). ``duplicate_rows``
of the summary says how many rows repeat an earlier derived id.

User ids. With no user column, every row gets :data:`PLACEHOLDER_USER_ID` (counted in
``placeholder_user_ids``): the contract requires a user id, an export of plug data may have none.

Writing. Files are gzipped with ``mtime=0`` (deterministic), written under a hidden temp name and renamed
(the landing sensor never sees half a file), and a file whose bytes are already there is not rewritten (its
mtime stays, so the sensor sees no re-upload). An existing file with DIFFERENT bytes (a hub's own upload,
or an earlier import of other data) is not replaced unless ``overwrite=True``: the import fails before
writing anything and lists the files. Files written by an earlier import that this one no longer produces
(e.g. after a time zone correction moved events to other days) are left as they are.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl

from smart_home_assets.lib.contract import (
    HUB_ID_RE,
    PLACEHOLDER_USER_ID,
    UPLOAD_FIELDS,
    upload_relative_path,
)

DERIVED_EVENT_ID_PREFIX = "csv-"
DERIVED_EVENT_ID_HEX_DIGITS = 32  # 128 bits of SHA-256
GZIP_LEVEL = 6
MAX_LISTED_ERRORS = 10

# Contract field -> default CSV column; None = not read unless mapped (derived id / placeholder user).
DEFAULT_COLUMNS: dict[str, str | None] = {
    "event_id": None,
    "hub_id": "hub_id",
    "user_id": None,
    "device_id": "device_id",
    "device_type": "device_type",
    "event_timestamp": "event_timestamp",
    "duration_s": "duration_s",
    "energy_wh": "energy_wh",
}
OPTIONAL_FIELDS = ("event_id", "user_id")
NUMBER_COLUMNS = ("duration_s", "energy_wh")

_OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z")
_UTC_Z_FORMATS = ("%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.fz", "%Y-%m-%dT%H:%MZ")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")


class HistoryImportError(ValueError):
    """The CSV (or the arguments) cannot be imported; the message says where and why."""


@dataclass
class ImportSummary:
    rows: int = 0
    files: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    days: int = 0
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    hubs: tuple[str, ...] = ()
    dst_shifted_forward: int = 0
    dst_ambiguous_earliest: int = 0
    offset_timestamps: int = 0  # rows whose timestamp already carried an offset
    derived_event_ids: int = 0
    duplicate_rows: int = 0  # rows repeating an earlier row's event id (the pipeline counts them)
    placeholder_user_ids: int = 0
    skipped_blank_lines: int = 0
    landing: str = ""
    paths: list[str] = field(default_factory=list, repr=False)  # relative to landing, sorted

    def report(self) -> str:
        span = f"{self.first_day}..{self.last_day}" if self.first_day else "-"
        return "\n".join(
            [
                (
                    f"imported {self.rows:,} rows into {self.files} files ({self.files_written} written, "
                    f"{self.files_unchanged} unchanged) under {self.landing}"
                ),
                f"  days: {self.days} ({span}); hubs: {', '.join(self.hubs) or '-'}",
                (
                    f"  timestamps: {self.dst_shifted_forward} in a DST gap shifted forward, "
                    f"{self.dst_ambiguous_earliest} ambiguous given the earlier instant, "
                    f"{self.offset_timestamps} already carried an offset"
                ),
                f"  event ids derived: {self.derived_event_ids} (rows repeating an earlier id: {self.duplicate_rows}); "
                f"placeholder user ids ({PLACEHOLDER_USER_ID!r}): {self.placeholder_user_ids}"
                + (f"; blank lines skipped: {self.skipped_blank_lines}" if self.skipped_blank_lines else ""),
            ]
        )


def validate_timezone(name: str, what: str = "--timezone") -> str:
    """``name`` if it is an IANA time zone known to both Python and polars, else HistoryImportError."""
    try:
        zoneinfo.ZoneInfo(name)
        pl.Series([dt.datetime(2000, 1, 1)]).dt.replace_time_zone(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError) as exc:
        raise HistoryImportError(f"{what}: {name!r} is not an IANA time zone name (e.g. Europe/Berlin)") from exc
    return name


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema=False, encoding="utf8")
    except FileNotFoundError as exc:
        raise HistoryImportError(f"{path}: no such file") from exc
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise HistoryImportError(f"{path}: cannot be read as a UTF-8 CSV with a header line ({exc})") from exc


def _resolve_columns(path: Path, header: list[str], columns: Mapping[str, str | None] | None) -> dict[str, str | None]:
    unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
    if unknown:
        raise HistoryImportError(f"unknown contract field(s) in the column mapping: {', '.join(sorted(unknown))}")
    mapping = {**DEFAULT_COLUMNS, **(columns or {})}
    unmapped = [fld for fld, name in mapping.items() if not name and fld not in OPTIONAL_FIELDS]
    if unmapped:
        raise HistoryImportError(f"a CSV column is required for: {', '.join(unmapped)}")
    missing = [f"{name!r} (for {fld})" for fld, name in mapping.items() if name and name not in header]
    if missing:
        raise HistoryImportError(
            f"{path}: mapped column(s) not in the file: {', '.join(missing)}; "
            f"the file has: {', '.join(repr(c) for c in header)}"
        )
    return mapping


def _first_non_null(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.coalesce(exprs) if len(exprs) > 1 else exprs[0]


def _parse_timestamps(ts: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(instant in UTC for strings with Z/offset, naive local datetime for strings without)."""
    text = ts.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    aware = _first_non_null(
        [text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC") for f in _OFFSET_FORMATS]
        + [text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC") for f in _UTC_Z_FORMATS]
    )
    naive = _first_non_null([text.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_FORMATS])
    return aware, naive


def _localize(naive: pl.Expr, tz: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(UTC instant by the module's DST rule, in-gap flag, ambiguous flag) for naive local times in ``tz``."""
    earliest = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    latest = naive.dt.replace_time_zone(tz, ambiguous="latest", non_existent="null")
    # In a gap: read the wall time with the offset in force a day earlier, i.e. before the transition
    # (transitions are months apart), which moves it forward by the length of the gap.
    before = (naive - pl.duration(days=1)).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    offset_before = before.dt.base_utc_offset() + before.dt.dst_offset()
    shifted = (naive - offset_before).dt.replace_time_zone("UTC")
    in_gap = naive.is_not_null() & earliest.is_null()
    utc = pl.when(in_gap).then(shifted).otherwise(earliest.dt.convert_time_zone("UTC"))
    return utc, in_gap, (earliest != latest).fill_null(False)


def _derive_event_ids(keys: pl.Series) -> pl.Series:
    """``csv-`` + the first hex digits of SHA-256 of each key.

    The one per-row step of the import: polars has no cryptographic hash (``Expr.hash`` is not stable
    across polars versions, and ids must be), so hashlib (C) runs over the list of keys, ~0.5 us a row;
    DuckDB's ``sha256`` would be vectorized but costs about a second to start (it imports pandas/pyarrow).
    """
    digits = DERIVED_EVENT_ID_HEX_DIGITS
    return pl.Series(
        "event_id",
        [DERIVED_EVENT_ID_PREFIX + hashlib.sha256(k.encode("utf-8")).hexdigest()[:digits] for k in keys.to_list()],
        dtype=pl.String,
    )


def _length_prefixed(parts: list[pl.Expr]) -> pl.Expr:
    pieces: list[pl.Expr] = []
    for part in parts:
        pieces += [part.str.len_bytes().cast(pl.String), pl.lit(":"), part, pl.lit("|")]
    return pl.concat_str(pieces)


def _raise_errors(path: Path, errors: list[pl.DataFrame]) -> None:
    found = pl.concat(errors).sort("line", "order") if errors else None
    if found is None or found.height == 0:
        return
    shown = [
        f"  {path}:{row['line']}: column {row['column']!r}: {row['problem']}"
        + (f" ({row['value']!r})" if row["value"] is not None else "")
        for row in found.head(MAX_LISTED_ERRORS).iter_rows(named=True)
    ]
    more = f"\n  ... and {found.height - MAX_LISTED_ERRORS} more" if found.height > MAX_LISTED_ERRORS else ""
    raise HistoryImportError(
        f"{path}: {found.height} value(s) cannot be imported; nothing was written:\n" + "\n".join(shown) + more
    )


def _upload_bytes(group: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    group.select(list(UPLOAD_FIELDS)).write_ndjson(buffer)
    return gzip.compress(buffer.getvalue(), compresslevel=GZIP_LEVEL, mtime=0)


def _write_atomically(path: Path, data: bytes) -> bool:
    """Write ``data`` unless exactly these bytes are there; True when the file was (re)written."""
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


class _PlannedFile(NamedTuple):
    """One upload file of the import: all are built in memory before the first is written."""

    relative: str  # to the landing folder, ``YYYY-MM-DD/<hub_id>.jsonl.gz``
    target: Path
    data: bytes


def _check_arguments(timezone: str, hub_timezones: Mapping[str, str] | None) -> dict[str, str]:
    """The per-hub time zones as a dict, after checking every zone name and hub id given.

    Done before the CSV is read, so a misspelt zone or hub fails at once and under the option's name, not as
    a polars error halfway through the conversion.
    """
    validate_timezone(timezone)
    hub_timezones = dict(hub_timezones or {})
    for hub, tz in hub_timezones.items():
        if not HUB_ID_RE.match(hub):
            raise HistoryImportError(f"--hub-timezone: {hub!r} is not a valid hub id")
        validate_timezone(tz, f"--hub-timezone {hub}")
    return hub_timezones


def _read_records(path: Path, columns: Mapping[str, str | None] | None) -> tuple[pl.DataFrame, dict[str, str], int]:
    """Read step: (the mapped fields of every non-blank record, stripped, "" = null, with the CSV ``line`` it
    starts on; contract field -> CSV column actually read; count of blank lines skipped).

    The line is numbered before blank lines are dropped, since every error message names it: after the header,
    each record takes 1 line plus the line breaks inside its quoted fields.
    """
    raw = _read_csv(path)
    mapped = {fld: col for fld, col in _resolve_columns(path, raw.columns, columns).items() if col}
    header_lines = 1 + sum(name.count("\n") for name in raw.columns)
    breaks = pl.sum_horizontal([pl.col(c).str.count_matches("\n").fill_null(0) for c in raw.columns])
    frame = raw.select(
        (header_lines + (1 + breaks).cum_sum() - breaks).cast(pl.Int64).alias("line"),
        *[pl.col(col).str.strip_chars().replace("", None).alias(fld) for fld, col in mapped.items()],
    )
    blank = pl.all_horizontal([pl.col(c).is_null() for c in raw.columns])
    skipped_blank = int(raw.select(blank.sum()).item()) if raw.width else 0
    if skipped_blank:
        frame = frame.filter(~raw.select(blank.alias("b"))["b"])
    return frame, mapped, skipped_blank


def _parse_values(frame: pl.DataFrame) -> pl.DataFrame:
    """Convert step: ``<number>_value`` floats and the ``aware`` / ``naive`` timestamps next to the strings.

    Null where a value does not convert; the strings stay, because error messages quote the value as given
    and derived event ids hash it as given.
    """
    aware, naive = _parse_timestamps(pl.col("event_timestamp"))
    return frame.with_columns(
        *[pl.col(f).cast(pl.Float64, strict=False).alias(f"{f}_value") for f in NUMBER_COLUMNS],
        aware.alias("aware"),
        naive.alias("naive"),
    )


def _check_values(path: Path, frame: pl.DataFrame, mapped: Mapping[str, str]) -> None:
    """Validate step: HistoryImportError naming file, line and column of every value that cannot be imported.

    All checks run before anything is written, so a bad export leaves the landing folder as it was; problems of
    one line are listed in contract field order.
    """
    order = {fld: i for i, fld in enumerate(DEFAULT_COLUMNS)}

    def problem(fld: str, condition: pl.Expr, text: str) -> pl.DataFrame:
        return frame.filter(condition).select(
            "line",
            pl.lit(order[fld]).alias("order"),
            pl.lit(mapped[fld]).alias("column"),
            pl.lit(text).alias("problem"),
            pl.col(fld).alias("value"),
        )

    errors = [problem(fld, pl.col(fld).is_null(), "empty required value") for fld in mapped]
    errors.append(
        problem(
            "hub_id",
            pl.col("hub_id").is_not_null() & ~pl.col("hub_id").str.contains(HUB_ID_RE.pattern),
            "hub id is not a valid upload file name (letters, digits, '_' and '-')",
        )
    )
    for fld in NUMBER_COLUMNS:
        value = pl.col(f"{fld}_value")
        errors.append(problem(fld, pl.col(fld).is_not_null() & value.is_null(), "not a number"))
        errors.append(problem(fld, value.is_not_null() & ~value.is_finite(), "not a finite number"))
    unparsed = pl.col("event_timestamp").is_not_null() & pl.col("aware").is_null() & pl.col("naive").is_null()
    errors.append(
        problem("event_timestamp", unparsed, "not an ISO-8601 timestamp (YYYY-MM-DDTHH:MM[:SS[.f]][Z|+HH:MM])")
    )
    _raise_errors(path, [e for e in errors if e.height])


def _check_hub_timezones(path: Path, frame: pl.DataFrame, hub_timezones: Mapping[str, str]) -> set[str]:
    """The hub ids in the file; HistoryImportError when ``hub_timezones`` names one it does not have.

    Such an override is almost certainly a misspelt hub id, whose events would otherwise silently get the
    default time zone.
    """
    present_hubs = set(frame["hub_id"].unique().to_list())
    unused = sorted(set(hub_timezones) - present_hubs)
    if unused:
        raise HistoryImportError(
            f"--hub-timezone names hub(s) not in {path}: {', '.join(unused)}; "
            f"its hubs are: {', '.join(sorted(present_hubs)) or '-'}"
        )
    return present_hubs


def _localize_timestamps(
    path: Path,
    frame: pl.DataFrame,
    timezone: str,
    hub_timezones: Mapping[str, str],
) -> pl.DataFrame:
    """Localize step: adds ``tz`` (the hub's zone), ``utc`` (the instant) and the ``in_gap`` / ``ambiguous`` flags.

    Naive local times go to UTC in one vectorized pass per time zone in use (not per row); timestamps with an
    offset keep the instant they name.
    """
    zones = sorted({timezone, *hub_timezones.values()})
    hub_tz = (
        pl.col("hub_id").replace_strict(hub_timezones, default=pl.lit(timezone), return_dtype=pl.String)
        if hub_timezones
        else pl.lit(timezone)
    )
    local_utc: pl.Expr = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    in_gap: pl.Expr = pl.lit(False)
    ambiguous: pl.Expr = pl.lit(False)
    for tz in zones:
        utc, gap, amb = _localize(pl.col("naive"), tz)
        here = (pl.col("tz") == tz) & pl.col("aware").is_null()
        local_utc = pl.when(here).then(utc).otherwise(local_utc)
        in_gap = pl.when(here).then(gap).otherwise(in_gap)
        ambiguous = pl.when(here).then(amb).otherwise(ambiguous)
    frame = frame.with_columns(tz=hub_tz).with_columns(
        utc=pl.coalesce("aware", local_utc), in_gap=in_gap, ambiguous=ambiguous
    )
    if frame["utc"].null_count():  # cannot happen for a valid zone; never write a file with a gap in it
        bad = frame.filter(pl.col("utc").is_null())
        raise HistoryImportError(
            f"{path}:{bad['line'][0]}: timestamp {bad['event_timestamp'][0]!r} "
            f"cannot be placed in time zone {bad['tz'][0]}"
        )
    return frame


def _format_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Adds ``day`` (the UTC day, which picks the file) and ``utc_text`` (``+00:00``, microseconds only when not 0).

    The contract's one spelling of an instant, whatever offset and precision the CSV gave it.
    """
    utc = pl.col("utc")
    return frame.with_columns(
        day=utc.dt.date(),
        utc_text=pl.when(utc.dt.microsecond() == 0)
        .then(utc.dt.strftime("%Y-%m-%dT%H:%M:%S"))
        .otherwise(utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
        + pl.lit("+00:00"),
    )


def _fill_ids(frame: pl.DataFrame, mapped: Mapping[str, str]) -> pl.DataFrame:
    """Derive-ids step: the placeholder user id and the content-derived event id where the CSV has no column.

    The placeholder comes first: it is part of the key an event id is derived from.
    """
    if "user_id" not in mapped:
        frame = frame.with_columns(user_id=pl.lit(PLACEHOLDER_USER_ID))
    if "event_id" not in mapped:
        keys = frame.select(
            _length_prefixed(
                [
                    pl.col(f)
                    for f in (
                        "hub_id",
                        "user_id",
                        "device_id",
                        "device_type",
                        "event_timestamp",
                        "duration_s",
                        "energy_wh",
                    )
                ]
            )
        )
        frame = frame.with_columns(_derive_event_ids(keys.to_series()))
    return frame


def _upload_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows as written (contract values) plus ``day``, ``line`` and ``utc``, sorted for the files.

    Sorted by content, with the CSV line only as the last tie-break, so a re-ordered export writes the same bytes.
    """
    return frame.select(
        "day",
        "line",
        "utc",
        pl.col("event_id"),
        pl.col("hub_id"),
        pl.col("user_id"),
        pl.col("device_id"),
        pl.col("device_type"),
        pl.col("utc_text").alias("event_timestamp"),
        pl.col("duration_s_value").alias("duration_s"),
        pl.col("energy_wh_value").alias("energy_wh"),
    ).sort("day", "hub_id", "utc", "device_id", "device_type", "event_id", "user_id", "duration_s", "energy_wh", "line")


def _plan_files(rows: pl.DataFrame, landing: Path) -> list[_PlannedFile]:
    """Plan step: the bytes of every upload file, one per UTC day and hub, in memory before any is written.

    Having them all first is what lets a conflict stop the import with nothing written.
    """
    planned: list[_PlannedFile] = []
    for (day, hub), group in rows.partition_by("day", "hub_id", as_dict=True, maintain_order=True).items():
        relative = upload_relative_path(day, hub)
        planned.append(_PlannedFile(relative, landing / relative, _upload_bytes(group)))
    return planned


def _refuse_conflicts(planned: list[_PlannedFile], landing: Path) -> None:
    """HistoryImportError listing the planned files that exist with other bytes (a hub's own upload, say)."""
    conflicts = [
        rel
        for rel, target, data in planned
        if target.exists() and not (target.stat().st_size == len(data) and target.read_bytes() == data)
    ]
    if conflicts:
        listed = "\n".join(f"  {landing / rel}" for rel in conflicts[:MAX_LISTED_ERRORS])
        rest = len(conflicts) - MAX_LISTED_ERRORS
        more = f"\n  ... and {rest} more" if rest > 0 else ""
        raise HistoryImportError(
            f"{len(conflicts)} upload file(s) already exist with other content; nothing was written "
            f"(pass --overwrite / overwrite=True to replace them):\n{listed}{more}"
        )


def _write_files(planned: list[_PlannedFile]) -> int:
    """Write step: how many files were (re)written; one already holding its bytes is left alone (and its mtime)."""
    return sum(_write_atomically(target, data) for _, target, data in planned)


def _summarize(
    frame: pl.DataFrame,
    rows: pl.DataFrame,
    planned: list[_PlannedFile],
    written: int,
    *,
    hubs: set[str],
    mapped: Mapping[str, str],
    skipped_blank: int,
    landing: Path,
) -> ImportSummary:
    """The counts of an import that went through (``frame`` holds the flags, ``rows`` what was written)."""
    days = sorted({rel.split("/", 1)[0] for rel, _, _ in planned})
    return ImportSummary(
        rows=rows.height,
        files=len(planned),
        files_written=written,
        files_unchanged=len(planned) - written,
        days=len(days),
        first_day=dt.date.fromisoformat(days[0]) if days else None,
        last_day=dt.date.fromisoformat(days[-1]) if days else None,
        hubs=tuple(sorted(hubs)),
        dst_shifted_forward=int(frame["in_gap"].sum()),
        dst_ambiguous_earliest=int(frame["ambiguous"].sum()),
        offset_timestamps=int(frame["aware"].is_not_null().sum()),
        derived_event_ids=0 if "event_id" in mapped else rows.height,
        duplicate_rows=rows.height - rows.select(pl.struct("day", "hub_id", "event_id").n_unique()).item(),
        placeholder_user_ids=0 if "user_id" in mapped else rows.height,
        skipped_blank_lines=skipped_blank,
        landing=str(landing),
        paths=sorted(rel for rel, _, _ in planned),
    )


def import_csv(
    path: str | os.PathLike,
    landing: str | os.PathLike,
    *,
    timezone: str,
    hub_timezones: Mapping[str, str] | None = None,
    columns: Mapping[str, str | None] | None = None,
    overwrite: bool = False,
) -> ImportSummary:
    """Convert the events CSV at ``path`` into contract upload files under ``landing``.

    ``columns`` maps contract fields to CSV column names (defaults: :data:`DEFAULT_COLUMNS`; ``event_id``
    and ``user_id`` unmapped = derived / placeholder). ``timezone`` (IANA) applies to timestamps without
    an offset, ``hub_timezones`` overrides it per hub. Raises :class:`HistoryImportError` before writing
    anything when the file, the mapping, a value or an existing different file is in the way.
    """
    path = Path(path)
    landing = Path(landing)
    hub_timezones = _check_arguments(timezone, hub_timezones)
    frame, mapped, skipped_blank = _read_records(path, columns)
    frame = _parse_values(frame)
    _check_values(path, frame, mapped)
    hubs = _check_hub_timezones(path, frame, hub_timezones)
    frame = _fill_ids(_format_utc(_localize_timestamps(path, frame, timezone, hub_timezones)), mapped)
    rows = _upload_rows(frame)
    planned = _plan_files(rows, landing)
    if not overwrite:
        _refuse_conflicts(planned, landing)
    written = _write_files(planned)
    return _summarize(
        frame, rows, planned, written, hubs=hubs, mapped=mapped, skipped_blank=skipped_blank, landing=landing
    )
