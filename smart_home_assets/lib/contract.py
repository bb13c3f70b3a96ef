"""The upload contract between hubs and the platform: one source of truth for file layout and fields.

Hubs upload one file per hub per day to ``<landing>/<YYYY-MM-DD>/<hub_id>.jsonl.gz`` (plain ``.jsonl``
is accepted too); each line is one JSON object with the fields below. Unknown extra fields are tolerated.
"""

from __future__ import annotations

import datetime as dt
import re

# Field name -> JSON type the hub must send. Order is the column order of raw_usage.
UPLOAD_FIELDS: dict[str, str] = {
    "event_id": "string",
    "hub_id": "string",
    "user_id": "string",
    "device_id": "string",
    "device_type": "string",
    "event_timestamp": "string",  # ISO-8601 with a UTC offset
    "duration_s": "number",  # >= 0
    "energy_wh": "number",  # >= 0
}
STRING_FIELDS = tuple(k for k, v in UPLOAD_FIELDS.items() if v == "string")
NUMBER_FIELDS = tuple(k for k, v in UPLOAD_FIELDS.items() if v == "number")

UPLOAD_SUFFIXES = (".jsonl.gz", ".jsonl")
DATE_FOLDER_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A hub id as it may appear in a file name: no path separators, no leading dot, no "..".
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$")


def upload_relative_path(day: dt.date, hub_id: str) -> str:
    """Where a hub's gzipped upload for ``day`` goes, relative to the landing zone: ``YYYY-MM-DD/<hub_id>.jsonl.gz``
    (the simulator and the history importer write it; the landing zone lists it)."""
    return f"{day.isoformat()}/{hub_id}{UPLOAD_SUFFIXES[0]}"


# The user id written for events whose export had none (history imports): a documented placeholder, so
# user_id is never null; the user-id check counts rows carrying it.
PLACEHOLDER_USER_ID = "unknown-user"

# Plausible ranges for one event; beyond them a row is quarantined (see docs/data-quality.md).
MAX_EVENT_DURATION_S = 86_400.0  # an event cannot last longer than the day it belongs to
MAX_EVENT_ENERGY_WH = 25_000.0  # 25 kWh in one event: beyond any household appliance incl. EV charging

# Limits on one upload, far above what a hub sends in a day (a contract line is about 250 bytes; 500,000 events is
# about 6 a second all day long): a file past one is cut there, so what one upload can make a step hold is bounded.
# Each is configuration: SMART_HOME_MAX_FILE_BYTES, SMART_HOME_MAX_FILE_LINES, SMART_HOME_MAX_LINE_BYTES.
MAX_FILE_BYTES = 128 * 2**20  # decompressed
MAX_FILE_LINES = 500_000
MAX_LINE_BYTES = 2**20  # one line, without its newline
