"""Every quarantine reason code, in one place: ingestion, the landing zone and cleaning decide them, the
simulator injects faults named after them, the checks and the report count rows by them (docs/data-quality.md
describes each). A code is a stable public name: dashboards and alert rules select on it."""

# --- the landing zone: entries that are not readable uploads (raw_usage keeps each as one line) ----------------
NOT_A_FILE = "not_a_file"  # a folder, FIFO, socket or device named like an upload
SUBFOLDER = "subfolder_in_day_folder"  # a folder inside a day folder: uploads belong directly in the day folder
SYMLINK_OUTSIDE_LANDING = "symlink_outside_landing"  # a file or a day folder that resolves outside the zone
CONFLICTING_UPLOAD = "conflicting_upload"  # a hub's day uploaded twice (hub.jsonl and hub.jsonl.gz)

# --- ingestion: a file that cannot be read whole -----------------------------------------------------------------
NOT_UTF8 = "not_utf8"
TRUNCATED_GZIP = "truncated_gzip"
NOT_GZIP = "not_gzip"
UNREADABLE_FILE = "unreadable_file"
# A file past one of its limits (UploadLimits): cut there, the reason names the limit.
FILE_TOO_LARGE = "file_too_large"
TOO_MANY_LINES = "too_many_lines"
LINE_TOO_LONG = "line_too_long"

# --- ingestion: a line that is not a record ----------------------------------------------------------------------
NOT_JSON = "not_json"
# DuckDB's JSON reader accepts more than RFC 8259; a line must be strict JSON, or another reader (Python's,
# JavaScript's) could see other values than the ones stored. Trailing commas: not_strict_json. Repeated keys
# at the top level, where the contract's fields are (DuckDB keeps the first, most readers the last):
# duplicate_key, with the names as detail.
NOT_STRICT_JSON = "not_strict_json"
DUPLICATE_KEY = "duplicate_key"
NOT_OBJECT = "not_object"
EMPTY_LINE = "empty_line"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"

# --- cleaning: a record that breaks the contract -----------------------------------------------------------------
NULL_USER_ID = "null_user_id"
EMPTY_FIELD = "empty_field"
HUB_MISMATCH = "hub_mismatch"
UNKNOWN_DEVICE_TYPE = "unknown_device_type"
TIMESTAMP_WITHOUT_OFFSET = "timestamp_without_offset"
BAD_TIMESTAMP = "bad_timestamp"
TIMESTAMP_OUTSIDE_DAY = "timestamp_outside_day"
NON_FINITE_NUMBER = "non_finite_number"
NEGATIVE_ENERGY = "negative_energy"
NEGATIVE_DURATION = "negative_duration"
IMPLAUSIBLE_ENERGY = "implausible_energy"
IMPLAUSIBLE_DURATION = "implausible_duration"
DUPLICATE_EVENT_ID = "duplicate_event_id"
CONFLICTING_EVENT_ID = "conflicting_event_id"
