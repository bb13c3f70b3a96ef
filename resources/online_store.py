"""The prediction service's own store: every answered request, appended durably before its response is sent.

It never touches the warehouse (DuckDB allows one writer per file; the pipeline holds it for minutes), and the
``online_predictions`` asset brings each day's requests into the warehouse from it. One setting selects it:
``SMART_HOME_ONLINE_STORE``, a folder (default ``<data>/online_predictions``) or a ``postgresql://`` URL.

- **Local log** (embedded default): one append-only JSON-lines file per service process and UTC day,
  ``<folder>/<YYYY-MM-DD>/<host>-<pid>-<started>.jsonl``. An append is one ``write`` of whole lines followed by
  ``fdatasync`` (and, for a new file, an ``fsync`` of its folder): once it returns, a SIGKILL or a power cut
  loses nothing. A process killed inside a write leaves at most a torn last line, never answered, which the
  reader counts and leaves out.
- **PostgreSQL** (production profile): one ``INSERT`` of the request's rows, committed (synchronous commit)
  before the response.

A record is the JSON object of :func:`record_fields`: the request id (a client may send its own with
``X-Request-ID``, so a retried request is one request), the row of a batch, when, the input row as the model saw
it, the answer and the model version. User ids are not among them: the service takes device and hub ids and
feature rows only (an unknown field is refused, never stored).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import polars as pl

from resources.settings import data_dir

ONLINE_STORE_ENV_VAR = "SMART_HOME_ONLINE_STORE"

# The columns of a stored record, as the warehouse's online_predictions table has them (plus partition_date).
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "row": pl.Int32(),  # the row's index in a batch; 0 for a single request
    "requested_at": pl.Datetime("us", "UTC"),
    "endpoint": pl.String(),  # predict | predict/batch
    "device_id": pl.String(),
    "hub_id": pl.String(),
    "device_type": pl.String(),
    "source": pl.String(),  # latest_features (looked up by device) | request_row (sent by the client)
    "features_date": pl.Date(),  # the feature row's day D, when it came from usage_features
    "for_day": pl.Date(),  # the day predicted
    "input_json": pl.String(),  # the model's input row (feature columns), JSON
    "prediction_wh": pl.Float64(),
    "p10_wh": pl.Float64(),
    "p90_wh": pl.Float64(),
    "model_name": pl.String(),
    "model_kind": pl.String(),
    "model_version": pl.String(),
}


class OnlineStoreError(RuntimeError):
    pass


def record_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as stored: exactly the columns of :data:`RECORD_SCHEMA` (dates and times as ISO strings)."""
    unknown = set(record) - set(RECORD_SCHEMA)
    if unknown:
        raise ValueError(f"not a column of an online prediction record: {sorted(unknown)}")
    out = {}
    for name in RECORD_SCHEMA:
        value = record.get(name)
        out[name] = value.isoformat() if isinstance(value, dt.date) else value
    return out


def records_frame(lines: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Stored records (JSON objects) as a typed frame."""
    rows = list(lines)
    if not rows:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    raw = pl.DataFrame(
        rows,
        schema={c: pl.String() if t in (pl.Date(), pl.Datetime("us", "UTC")) else t for c, t in RECORD_SCHEMA.items()},
        strict=False,
    )
    return raw.with_columns(
        requested_at=pl.col("requested_at").str.to_datetime(time_zone="UTC", time_unit="us"),
        features_date=pl.col("features_date").str.to_date(),
        for_day=pl.col("for_day").str.to_date(),
    )


class OnlineStore(Protocol):
    kind: str

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Store ``records`` durably; return only once they are (raise OnlineStoreError otherwise)."""

    def read_day(self, day: str) -> tuple[pl.DataFrame, int]:
        """The records of one UTC day (``YYYY-MM-DD``) and how many torn lines were left out."""

    def fingerprints(self) -> dict[str, str]:
        """Per day, a value that changes whenever the day's records do (what the ingest sensor compares)."""

    def writable(self) -> tuple[bool, str]:
        """Whether an append would be accepted now, and why not."""

    def describe(self) -> str:
        """Where it stores, with no secret in it."""

    def close(self) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLogStore:
    """Append-only JSON-lines files under ``folder``, one per process and UTC day (see the module's docs)."""

    kind = "local_log"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fd: int | None = None
        self._name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"

    def describe(self) -> str:
        return str(self.folder)

    def _file_for(self, day: str) -> int:
        if self._day == day and self._fd is not None:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        folder = self.folder / day
        new_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if new_folder:
            _fsync_dir(folder.parent)
        self._fd = os.open(folder / self._name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        _fsync_dir(folder)  # the file's name is durable before its first record is acknowledged
        self._day = day
        return self._fd

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        by_day: dict[str, list[bytes]] = {}
        for record in records:
            fields = record_fields(record)
            line = json.dumps(fields, separators=(",", ":"), allow_nan=False) + "\n"
            by_day.setdefault(fields["requested_at"][:10], []).append(line.encode())
        with self._lock:
            try:
                for day, lines in by_day.items():
                    fd = self._file_for(day)
                    data = b"".join(lines)
                    written = os.write(fd, data)
                    while written < len(data):  # a short write (signal, nearly full disk): finish it
                        written += os.write(fd, data[written:])
                    os.fdatasync(fd)
            except OSError as exc:
                if self._fd is not None:
                    os.close(self._fd)
                self._fd, self._day = None, None
                raise OnlineStoreError(f"cannot append to the prediction log in {self.folder}: {exc}") from exc

    def read_day(self, day: str) -> tuple[pl.DataFrame, int]:
        lines, torn = [], 0
        for path in sorted((self.folder / day).glob("*.jsonl")):
            data = path.read_bytes()
            complete, _, tail = data.rpartition(b"\n")
            torn += bool(tail.strip())  # a write cut by a kill: that request was never answered
            for number, line in enumerate(complete.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    lines.append(json.loads(line))
                except ValueError as exc:
                    raise OnlineStoreError(f"{path}, line {number}: not a JSON record ({exc})") from None
        return records_frame(lines), torn

    def fingerprints(self) -> dict[str, str]:
        if not self.folder.exists():
            return {}  # nothing answered yet
        if not self.folder.is_dir():
            raise OnlineStoreError(f"prediction log {self.folder} is not a folder")
        out = {}
        for folder in sorted(self.folder.iterdir()):
            files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
            if files:
                out[folder.name] = ",".join(f"{f.name}:{f.stat().st_size}" for f in files)
        return out

    def writable(self) -> tuple[bool, str]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return False, f"{self.folder}: {exc.strerror or exc}"
        return True, ""

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._day = None, None


POSTGRES_TABLE = "online_prediction_log"


class PostgresStore:
    """The production store: a PostgreSQL table, one committed INSERT per request. Many service replicas can
    share it; the ``id`` column keeps the order of arrival."""

    kind = "postgresql"

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._conn = None

    def describe(self) -> str:
        from resources.tracking import redact_uri

        return redact_uri(self.url)

    def _connection(self):
        import psycopg2

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg2.connect(self.url, connect_timeout=5)
            except psycopg2.Error as exc:
                raise OnlineStoreError(
                    f"prediction store {self.describe()} is unreachable: {type(exc).__name__}"
                ) from None
            with self._conn, self._conn.cursor() as cur:
                cur.execute(f"""CREATE TABLE IF NOT EXISTS {POSTGRES_TABLE} (
                    id BIGSERIAL PRIMARY KEY, day DATE NOT NULL, record JSONB NOT NULL)""")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {POSTGRES_TABLE}_day ON {POSTGRES_TABLE} (day, id)")
        return self._conn

    def _run(self, work):
        import psycopg2

        with self._lock:
            try:
                conn = self._connection()
                with conn, conn.cursor() as cur:  # commits on success, rolls back on error
                    return work(cur)
            except psycopg2.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise OnlineStoreError(
                    f"prediction store {self.describe()}: {type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                ) from None

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        from psycopg2.extras import execute_values

        rows = [
            (fields["requested_at"][:10], json.dumps(fields, allow_nan=False))
            for fields in (record_fields(r) for r in records)
        ]
        if rows:
            self._run(
                lambda cur: execute_values(
                    cur, f"INSERT INTO {POSTGRES_TABLE} (day, record) VALUES %s", rows, page_size=1000
                )
            )

    def read_day(self, day: str) -> tuple[pl.DataFrame, int]:
        def read(cur):
            cur.execute(f"SELECT record FROM {POSTGRES_TABLE} WHERE day = %s ORDER BY id", (day,))
            return [r[0] for r in cur.fetchall()]

        return records_frame(self._run(read)), 0

    def fingerprints(self) -> dict[str, str]:
        def read(cur):
            cur.execute(f"SELECT day, count(*), max(id) FROM {POSTGRES_TABLE} GROUP BY day ORDER BY day")
            return {str(day): f"{count}:{last}" for day, count, last in cur.fetchall()}

        return self._run(read)

    def writable(self) -> tuple[bool, str]:
        try:
            self._run(lambda cur: cur.execute("SELECT 1"))
        except OnlineStoreError as exc:
            return False, str(exc)
        return True, ""

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def default_online_store_location() -> str:
    return os.environ.get(ONLINE_STORE_ENV_VAR) or str(data_dir() / "online_predictions")


def online_store(location: str | None = None) -> OnlineStore:
    """The store at ``location`` (default ``$SMART_HOME_ONLINE_STORE`` or ``<data>/online_predictions``)."""
    location = location or default_online_store_location()
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresStore(location)
    if "://" in location:
        raise ValueError(
            f"{ONLINE_STORE_ENV_VAR}: expected a folder or a postgresql:// URL, not {location.split('://')[0]}://..."
        )
    return LocalLogStore(location)


class OnlineStoreResource(dg.ConfigurableResource):
    """The prediction service's store, read by the ``online_predictions`` asset and its sensor.
    ``location`` defaults to ``$SMART_HOME_ONLINE_STORE`` or ``<data>/online_predictions``."""

    location: str = ""

    def open(self) -> OnlineStore:
        return online_store(self.location or None)
