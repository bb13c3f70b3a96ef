"""Warehouse table names: one place, so no SQL anywhere spells a table name of its own."""

RAW_USAGE = "raw_usage"
RAW_USAGE_FILES = "raw_usage_files"
DEVICE_USAGE = "device_usage"
DEVICE_USAGE_QUARANTINE = "device_usage_quarantine"

# Every asset and check that opens the DuckDB file runs in this pool; dagster.yaml limits every pool
# (default_limit) to 1 slot,
# because DuckDB allows one writer per file.
DUCKDB_POOL = "duckdb"
USAGE_FEATURES = "usage_features"
USAGE_PREDICTIONS = "usage_predictions"
PREDICTION_FEEDBACK = "prediction_feedback"
ONLINE_PREDICTIONS = "online_predictions"
USAGE_MODEL = "usage_model"  # an asset, not a table (MLflow holds it): named here so that checks and sensors agree

# The `--select` strings of the CLI backfills (dagster / dg), so the CLI, the benchmarks and the tests agree:
# ingestion of a day (the two tables and the quarantine, with their checks), and ingestion plus its features.
INGEST_SELECTION = ",".join((RAW_USAGE, DEVICE_USAGE, DEVICE_USAGE_QUARANTINE))
INGEST_AND_FEATURES_SELECTION = f"{INGEST_SELECTION},{USAGE_FEATURES}"
