"""Ingest: landing files -> raw_usage rows. Every line of every file becomes one row, kept as it came.

Reading a file is the only per-file Python; splitting lines and parsing JSON are vectorized (polars for
lines, DuckDB's JSON functions for parsing). A line that is not a valid record is kept with a
``parse_error`` code (see docs/data-quality.md) so cleaning can quarantine it with that reason.
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass

import duckdb
import polars as pl

from smart_home_assets.lib.contract import (
    MAX_FILE_BYTES,
    MAX_FILE_LINES,
    MAX_LINE_BYTES,
    NUMBER_FIELDS,
    STRING_FIELDS,
    UPLOAD_FIELDS,
)
from smart_home_assets.lib.landing_file import LandingFile
from smart_home_assets.lib.reasons import (  # noqa: F401 (re-exported: callers name them here)
    DUPLICATE_KEY,
    EMPTY_LINE,
    FILE_TOO_LARGE,
    LINE_TOO_LONG,
    MISSING_FIELD,
    NOT_GZIP,
    NOT_JSON,
    NOT_OBJECT,
    NOT_STRICT_JSON,
    NOT_UTF8,
    TOO_MANY_LINES,
    TRUNCATED_GZIP,
    UNREADABLE_FILE,
    WRONG_TYPE,
)

RAW_USAGE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "file_hub_id": pl.String(),
    "line_number": pl.Int64(),
    "raw_line": pl.String(),
    "parse_error": pl.String(),
    "parse_error_detail": pl.String(),
    **{f: pl.String() for f in STRING_FIELDS},
    **{f: pl.Float64() for f in NUMBER_FIELDS},
    "ingested_at": pl.Datetime("us", "UTC"),
}

RAW_USAGE_FILES_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "size_bytes": pl.Int64(),
    "mtime_ns": pl.Int64(),
    "lines": pl.Int64(),
    "problem": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}

_JSON_NUMBER_TYPES = ("BIGINT", "UBIGINT", "HUGEINT", "DOUBLE")


@dataclass(frozen=True)
class FileRead:
    """The text recovered from one file and what went wrong reading it."""

    text: str
    problem: str | None = None  # file-level: truncated_gzip, not_gzip, not_utf8, unreadable_file, or a landing problem
    tail: str | None = None  # for a truncated gzip: the partial last line that could not be completed
    invalid_utf8: bool = False  # some bytes were not UTF-8: the lines holding them are marked not_utf8
    # With invalid_utf8: the text decoded with backslash escapes instead of U+FFFD. Its lines differ from
    # ``text``'s exactly where invalid bytes were (a U+FFFD the hub really sent is the same in both).
    escaped_text: str | None = None


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold (decompressed): past a limit the file is cut (see :func:`bounded_bytes`)."""

    max_bytes: int = MAX_FILE_BYTES
    max_lines: int = MAX_FILE_LINES
    max_line_bytes: int = MAX_LINE_BYTES

    @classmethod
    def from_environment(cls) -> UploadLimits:
        """``$SMART_HOME_MAX_FILE_BYTES``, ``$SMART_HOME_MAX_FILE_LINES``, ``$SMART_HOME_MAX_LINE_BYTES``; the
        contract's limits where unset."""
        values = []
        for name, default in (
            ("SMART_HOME_MAX_FILE_BYTES", MAX_FILE_BYTES),
            ("SMART_HOME_MAX_FILE_LINES", MAX_FILE_LINES),
            ("SMART_HOME_MAX_LINE_BYTES", MAX_LINE_BYTES),
        ):
            value = int(os.environ.get(name) or default)
            if value < 1:
                raise ValueError(f"{name}={value}: at least 1")
            values.append(value)
        return cls(*values)


_PIECE = 1 << 20  # decompressed bytes per step: what a stream holds beyond the kept lines
_TAIL_BYTES = 1024  # how much of a cut file's remainder raw_usage keeps as its last line


def gunzip_pieces(chunks: Iterable[bytes]) -> Generator[bytes, None, str | None]:
    """Decompress gzip data arriving in ``chunks`` at most ``_PIECE`` bytes at a time; returns truncated_gzip /
    not_gzip or None when the stream is done.

    Every member is read (appending to a .gz adds one); trailing zero padding is ignored, as gzip does. Bytes
    after a complete member that are neither another member nor padding are ``not_gzip``: the members before
    them are kept. An empty file is ``truncated_gzip``.
    """
    decompressor = zlib.decompressobj(wbits=31)
    in_member = started = padding = False
    for chunk in chunks:
        data = chunk
        while data:
            if padding:
                if data.strip(b"\0"):
                    return NOT_GZIP
                break
            try:
                out = decompressor.decompress(data, _PIECE)
            except zlib.error:
                return NOT_GZIP
            in_member = started = True
            if out:
                yield out
            if decompressor.eof:
                data = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=31)
                in_member = False
                if data and not data.strip(b"\0"):
                    padding = True
                    break
            else:
                data = decompressor.unconsumed_tail
    if padding or (started and not in_member):
        return None
    if in_member:
        out = decompressor.flush()
        if out:
            yield out
    return TRUNCATED_GZIP


def gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Every member of gzip ``data`` and truncated_gzip / not_gzip or None (see :func:`gunzip_pieces`)."""
    pieces: list[bytes] = []
    stream = gunzip_pieces([data])
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            return b"".join(pieces), done.value


def _plain(chunks: Iterable[bytes]) -> Generator[bytes, None, None]:
    yield from chunks
    return None


def _nth_newline(data: bytes | bytearray, n: int, start: int = 0) -> int:
    """Index of the ``n``-th newline of ``data`` from ``start`` (n >= 1; the caller knows there are that many)."""
    pos = start - 1
    for _ in range(n):
        pos = data.find(b"\n", pos + 1)
    return pos


def bounded_bytes(
    stream: Generator[bytes, None, str | None],
    limits: UploadLimits,
) -> tuple[bytes, str | None, str | None]:
    """(bytes, problem, tail) of a decompressed stream, never holding more than ``limits`` allow.

    The rule when a limit is passed: the complete lines before the point where it is passed are kept and judged
    like any others; reading stops there (the stream is closed, the rest never decompressed), and the file gets
    the reason ``line_too_long`` (a line longer than ``max_line_bytes``), ``too_many_lines`` (more than
    ``max_lines`` lines) or ``file_too_large`` (more than ``max_bytes`` bytes), with the first kilobyte after
    the cut as its tail. Without a limit passed, the stream's own problem (truncated_gzip, not_gzip) is returned.
    """
    kept = bytearray()
    lines = 0
    current = 0  # bytes of the unfinished last line
    problem = None
    cut = None
    while True:
        try:
            piece = next(stream)
        except StopIteration as done:
            return bytes(kept), done.value, None
        newlines = piece.count(b"\n")
        if newlines == 0:
            longest_end = current + len(piece)
        else:
            inner = piece.split(b"\n")
            longest_end = max(current + len(inner[0]), max((len(x) for x in inner[1:-1]), default=0))
        if longest_end > limits.max_line_bytes:
            problem = LINE_TOO_LONG
            # cut before the first line that is too long (the unfinished one carried over counts from its start)
            offset = 0
            for k, part in enumerate(inner if newlines else [piece]):
                if (current + len(part) if k == 0 else len(part)) > limits.max_line_bytes:
                    cut = len(kept) - current if k == 0 else len(kept) + offset
                    break
                offset += len(part) + 1
            kept += piece
        elif lines + newlines > limits.max_lines:
            problem = TOO_MANY_LINES
            cut = (
                len(kept) + _nth_newline(piece, limits.max_lines - lines) + 1
                if limits.max_lines > lines
                else len(kept) - current
            )
            kept += piece
        elif len(kept) + len(piece) > limits.max_bytes:
            problem = FILE_TOO_LARGE
            room = piece[: limits.max_bytes - len(kept)]
            last = room.rfind(b"\n")
            cut = len(kept) + last + 1 if last >= 0 else len(kept) - current
            kept += piece
        else:
            kept += piece
            lines += newlines
            current = current + len(piece) if newlines == 0 else len(piece) - piece.rfind(b"\n") - 1
            continue
        stream.close()  # stop reading: the rest of the file is never decompressed
        assert cut is not None  # each branch that passes a limit has set where to cut
        tail = bytes(kept[cut : cut + _TAIL_BYTES])
        del kept[cut:]
        return bytes(kept), problem, tail.decode("utf-8", errors="replace")


def decode_upload(data: bytes | Iterable[bytes], gzipped: bool, limits: UploadLimits | None = None) -> FileRead:
    """Decompress (tolerating truncation), bound (see :func:`bounded_bytes`) and decode one upload's bytes
    (all of them, or an iterable of chunks read as a stream)."""
    chunks = [data] if isinstance(data, bytes | bytearray) else data
    stream = gunzip_pieces(chunks) if gzipped else _plain(chunks)
    data, problem, tail = bounded_bytes(stream, limits or UploadLimits())
    if problem == NOT_GZIP and not data:
        return FileRead(text="", problem=NOT_GZIP)
    if problem == TRUNCATED_GZIP:
        cut = data.rfind(b"\n") + 1
        data, tail_bytes = data[:cut], data[cut:]
        tail = tail_bytes.decode("utf-8", errors="replace")
    try:
        return FileRead(text=data.decode("utf-8").removeprefix("\ufeff"), problem=problem, tail=tail)
    except UnicodeDecodeError:
        return FileRead(
            text=data.decode("utf-8", errors="replace").removeprefix("\ufeff"),
            problem=problem or NOT_UTF8,
            tail=tail,
            invalid_utf8=True,
            escaped_text=data.decode("utf-8", errors="backslashreplace").removeprefix("\ufeff"),
        )


def read_upload(file: LandingFile, limits: UploadLimits | None = None) -> FileRead:
    if file.problem:
        return FileRead(text="", problem=file.problem)
    try:
        # a local file or an object-store key (resources.landing), read as a stream of chunks
        return decode_upload(file.chunks(), gzipped=file.name.endswith(".gz"), limits=limits)
    except OSError as exc:
        return FileRead(text="", problem=UNREADABLE_FILE, tail=f"{type(exc).__name__}: {exc.strerror or exc}")


def split_lines(text: str) -> pl.Series:
    """Lines of a text: ``\\n`` or ``\\r\\n`` endings; a final newline does not start another line."""
    if not text:
        return pl.Series("raw_line", [], dtype=pl.String)
    lines = pl.Series("raw_line", [text.removesuffix("\n")]).str.split("\n").explode()
    return lines.str.strip_suffix("\r")


_LINES_SCHEMA = {
    "raw_line": pl.String,
    "source_file": pl.String,
    "file_hub_id": pl.String,
    "line_number": pl.Int64,
    "line_problem": pl.String,
}
_MANIFEST_COLUMNS = ("source_file", "size_bytes", "mtime_ns", "lines", "problem")


def file_lines(
    files: Iterable[LandingFile],
    limits: UploadLimits | None = None,
) -> Iterator[tuple[pl.DataFrame, dict]]:
    """Each file's lines (one row per line, file-level problems attached) and its manifest row, one file at a
    time; ``limits`` default to the environment's (:meth:`UploadLimits.from_environment`)."""
    limits = limits or UploadLimits.from_environment()
    for file in files:
        read = read_upload(file, limits)
        lines = split_lines(read.text)
        invalid = (
            (lines != split_lines(read.escaped_text)) if read.invalid_utf8 and read.escaped_text is not None else None
        )  # escaped_text comes with it
        frame = pl.DataFrame({"raw_line": lines}).with_columns(
            source_file=pl.lit(file.relative_path),
            file_hub_id=pl.lit(file.hub_id, dtype=pl.String),
            line_number=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
            line_problem=(
                # a file read but not trusted (conflicting_upload): every line keeps that reason
                pl.lit(file.lines_problem, dtype=pl.String)
                if file.lines_problem
                else pl.when(pl.lit(invalid)).then(pl.lit(NOT_UTF8))
                if invalid is not None
                else pl.lit(None, dtype=pl.String)
            ),
        )
        if read.problem and read.problem != NOT_UTF8:
            # The unreadable remainder of the file is one more raw line, so the failure reaches quarantine.
            frame = pl.concat(
                [
                    frame,
                    pl.DataFrame(
                        {
                            "raw_line": [read.tail or ""],
                            "source_file": [file.relative_path],
                            "file_hub_id": [file.hub_id],
                            "line_number": [lines.len() + 1],
                            "line_problem": [read.problem],
                        },
                        schema=frame.schema,
                    ),
                ]
            )
        yield (
            frame,
            {
                "source_file": file.relative_path,
                "size_bytes": file.size,
                "mtime_ns": file.mtime_ns,
                "lines": frame.height,
                "problem": read.problem or file.lines_problem,
            },
        )


def _frames(partition_key: str, frames: list[pl.DataFrame], manifest: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    date = dt.date.fromisoformat(partition_key)
    lines_df = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=_LINES_SCHEMA)
    manifest_df = pl.DataFrame(
        manifest, schema={k: v for k, v in RAW_USAGE_FILES_SCHEMA.items() if k in _MANIFEST_COLUMNS}
    )
    return lines_df.with_columns(partition_date=pl.lit(date)), manifest_df.with_columns(partition_date=pl.lit(date))


def _parse_sql() -> str:
    """Three JSON parses per line: ``json_valid``, then the types of the line itself and of every field as one
    list (``json_type`` with the paths ``$``, ``$.event_id``, ...), then the texts of every field as one list
    (``json_extract_string``), instead of one parse per field and function."""
    fields = [f"'$.\"{f}\"'" for f in UPLOAD_FIELDS]
    selects = []
    for i, field in enumerate(UPLOAD_FIELDS, start=1):
        selects.append(f"types[{i + 1}] AS {field}__type")
        if field in NUMBER_FIELDS:
            selects.append(
                f"CASE WHEN types[{i + 1}] IN {_JSON_NUMBER_TYPES} THEN TRY_CAST(texts[{i}] AS DOUBLE) END AS {field}"
            )
        else:
            selects.append(f"CASE WHEN types[{i + 1}] = 'VARCHAR' THEN texts[{i}] END AS {field}")
    # A comma before a closing bracket, outside string literals: the cheap test first (no string can hide it
    # when the raw line has none), then again with every string literal emptied.
    trailing = r"',\s*[\]}]'"
    strings = """'"(?:[^"\\\\]|\\\\.)*"'"""
    return f"""
        WITH valid AS (
            SELECT _row, raw_line, raw_line <> '' AND json_valid(raw_line) AS is_json FROM lines
        ), typed AS (
            SELECT _row, raw_line, is_json,
                CASE WHEN is_json THEN json_type(raw_line, ['$', {", ".join(fields)}]) END AS types,
                -- CASE, not AND: DuckDB evaluates every operand of an AND, and emptying the strings of every line
                -- is the expensive part; CASE runs it only on the few lines the cheap test lets through
                CASE WHEN is_json AND regexp_matches(raw_line, {trailing})
                    THEN regexp_matches(regexp_replace(raw_line, {strings}, '""', 'g'), {trailing})
                    ELSE false END AS trailing_comma
            FROM valid
        ), parsed AS (
            SELECT _row, is_json, types, types[1] AS top_type, trailing_comma,
                CASE WHEN types[1] = 'OBJECT' THEN json_extract_string(raw_line, [{", ".join(fields)}]) END AS texts,
                CASE WHEN types[1] = 'OBJECT' THEN json_keys(raw_line) END AS keys
            FROM typed
        )
        SELECT _row, is_json, top_type, trailing_comma,
            CASE WHEN len(keys) <> len(list_distinct(keys)) THEN array_to_string(list_sort(list_distinct(
                list_filter(keys, k -> len(list_filter(keys, j -> j = k)) > 1))), ',') END AS duplicate_keys,
            {", ".join(selects)} FROM parsed
    """


def parse_lines(lines: pl.DataFrame, ingested_at: dt.datetime) -> pl.DataFrame:
    """Parse raw lines into contract fields; rows that are not valid records get a ``parse_error``.

    Never drops or reorders a line. ``user_id`` may be JSON null here (cleaning quarantines it);
    any other field that is absent or null is ``missing_field``; a value of the wrong JSON type is
    ``wrong_type``. The detail names the fields.
    """
    # Only the parse results come back from DuckDB, not the lines themselves: the text is the bulk of the
    # memory, and a copy of it per round trip is what limits the partition size a run can hold.
    con = duckdb.connect()
    try:
        con.register("lines", lines.select("raw_line").with_row_index("_row"))
        derived = con.execute(_parse_sql()).pl()
    finally:
        con.close()
    if not derived["_row"].is_sorted():
        derived = derived.sort("_row")
    parsed = pl.concat([lines, derived.drop("_row")], how="horizontal")
    # The fields at fault, comma-joined ("" when none): one string pass each instead of list columns.
    missing = pl.concat_str(
        [
            pl.when(pl.col(f"{f}__type").is_null() | ((pl.col(f"{f}__type") == "NULL") & pl.lit(f != "user_id"))).then(
                pl.lit(f)
            )
            for f in UPLOAD_FIELDS
        ],
        separator=",",
        ignore_nulls=True,
    )
    wrong = pl.concat_str(
        [
            pl.when(
                pl.col(f"{f}__type").is_not_null()
                & (pl.col(f"{f}__type") != "NULL")
                & ~pl.col(f"{f}__type").is_in(_JSON_NUMBER_TYPES if f in NUMBER_FIELDS else ("VARCHAR",))
            ).then(pl.lit(f))
            for f in UPLOAD_FIELDS
        ],
        separator=",",
        ignore_nulls=True,
    )
    parsed = parsed.with_columns(missing_fields=missing, wrong_fields=wrong)
    missing, wrong = pl.col("missing_fields"), pl.col("wrong_fields")
    parse_error = (
        pl.when(pl.col("line_problem").is_not_null())
        .then(pl.col("line_problem"))
        .when(pl.col("raw_line") == "")
        .then(pl.lit(EMPTY_LINE))
        .when(~pl.col("is_json"))
        .then(pl.lit(NOT_JSON))
        .when(pl.col("trailing_comma"))
        .then(pl.lit(NOT_STRICT_JSON))
        .when(pl.col("top_type") != "OBJECT")
        .then(pl.lit(NOT_OBJECT))
        .when(pl.col("duplicate_keys").is_not_null())
        .then(pl.lit(DUPLICATE_KEY))
        .when(missing != "")
        .then(pl.lit(MISSING_FIELD))
        .when(wrong != "")
        .then(pl.lit(WRONG_TYPE))
    )
    detail = (
        pl.when(pl.col("line_problem").is_not_null() | ~pl.col("is_json"))
        .then(pl.lit(None, dtype=pl.String))
        .when(pl.col("trailing_comma"))
        .then(pl.lit("trailing comma"))
        .when(pl.col("top_type") != "OBJECT")
        .then(pl.concat_str(pl.lit("JSON "), pl.col("top_type").str.to_lowercase()))
        .when(pl.col("duplicate_keys").is_not_null())
        .then(pl.col("duplicate_keys"))
        .when(missing != "")
        .then(missing)
        .when(wrong != "")
        .then(wrong)
    )
    return parsed.with_columns(
        parse_error=parse_error,
        parse_error_detail=detail,
        ingested_at=pl.lit(ingested_at, dtype=pl.Datetime("us", "UTC")),
    ).select([pl.col(c).cast(t) for c, t in RAW_USAGE_SCHEMA.items()])


def _ingest(lines: pl.DataFrame, manifest: pl.DataFrame, ingested_at: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = parse_lines(lines, ingested_at)
    manifest = manifest.with_columns(ingested_at=pl.lit(ingested_at, dtype=pl.Datetime("us", "UTC")))
    return raw, manifest.select(list(RAW_USAGE_FILES_SCHEMA))


def ingest_partitions_in_batches(
    days: Iterable[tuple[str, list[LandingFile]]], ingested_at: dt.datetime, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """The raw_usage rows and file manifests of several days' files, in batches that may hold several days: a
    batch is closed once it holds ``batch_rows`` lines or more and the next file is another hub's or another
    day's. Many small days (a household's history) are parsed a batch at a time, not a day at a time, while a
    big day is still split into batches of whole hubs; concatenated, the batches are the same rows whatever
    ``batch_rows`` is. Yields at least one (possibly empty) batch."""
    lines: list[pl.DataFrame] = []
    manifests: list[pl.DataFrame] = []
    frames: list[pl.DataFrame] = []
    manifest: list[dict] = []
    held, last, yielded = 0, None, False

    def close_day(key: str) -> None:
        nonlocal frames, manifest
        if frames or manifest:
            day_lines, day_manifest = _frames(key, frames, manifest)
            lines.append(day_lines)
            manifests.append(day_manifest)
        frames, manifest = [], []

    def batch() -> tuple[pl.DataFrame, pl.DataFrame]:
        nonlocal lines, manifests, held
        if not lines:  # no file at all: the empty frames, with their schemas
            empty_lines, empty_manifest = _frames("1970-01-01", [], [])
            lines, manifests = [empty_lines], [empty_manifest]
        out = _ingest(pl.concat(lines, how="vertical"), pl.concat(manifests, how="vertical"), ingested_at)
        lines, manifests, held = [], [], 0
        return out

    for key, files in days:
        for file, (frame, row) in zip(files, file_lines(files), strict=True):  # one (frame, row) per file
            if held >= batch_rows and (file.hub_id is None or (key, file.hub_id) != last):
                close_day(key)
                yield batch()
                yielded = True
            frames.append(frame)
            manifest.append(row)
            held += frame.height
            last = (key, file.hub_id)
        close_day(key)
    if lines or not yielded:
        yield batch()
