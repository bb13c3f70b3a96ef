"""What the Dagster UI shows about the assets beyond their data: the owner, previews, rates and MLflow links.

Small pure helpers, so the assets stay thin and the rules (no clear-text user ids, no credentials) live in one
place. Only pseudonymized tables are previewed: raw_usage (clear-text user ids) and the quarantine (its
``detail`` may repeat a raw line) never are.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

import dagster as dg
import polars as pl

# The one owner of every asset (applied in definitions.py), shown in the UI's catalog and asset pages.
OWNERS = ["team:smart-home-data"]
PREVIEW_ROWS = 5


def with_owners(assets: Iterable) -> list:
    """The assets with OWNERS as their owner (every spec of a multi-asset included)."""
    return list(dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=OWNERS), assets))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def preview_table(
    frame: pl.DataFrame,
    of: str,
    rows: int = PREVIEW_ROWS,
    total: int | None = None,
) -> dg.MetadataValue:
    """The first ``rows`` rows of ``frame`` (``of``: which slice it is; ``total``: its row count when ``frame``
    holds only the first of them) as a markdown table the UI renders."""
    if frame.is_empty():
        return dg.MetadataValue.md(f"{of}: no rows")
    head = frame.head(rows)
    lines = [
        f"First {head.height} of {frame.height if total is None else total:,} rows of {of}:",
        "",
        "| " + " | ".join(head.columns) + " |",
        "|" + "---|" * len(head.columns),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


def quarantine_rate(raw_lines: int, quarantined: int) -> float:
    """Share of raw lines that went to quarantine (duplicates included), 0 when there were none."""
    return round(quarantined / raw_lines, 4) if raw_lines else 0.0


def public_uri(uri: str) -> str:
    """``uri`` without user info (``http://user:secret@host`` -> ``http://host``): safe to show and log."""
    parts = urllib.parse.urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# Where `mlflow ui` (README, "MLflow") serves a local store by default.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_run_metadata(
    tracking_uri: str, experiment_id: str, run_id: str, model_name: str, model_version: str
) -> dict[str, dg.MetadataValue]:
    """Where to find a training run and its model in MLflow, with no credentials: the run's page on the
    tracking server (for a local store, on `mlflow ui`'s default address), and the run and model URIs."""
    uri = public_uri(tracking_uri)
    server = uri.rstrip("/") if urllib.parse.urlsplit(uri).scheme in ("http", "https") else LOCAL_MLFLOW_UI
    return {
        "mlflow_run_id": dg.MetadataValue.text(run_id),
        "mlflow_run_url": dg.MetadataValue.url(f"{server}/#/experiments/{experiment_id}/runs/{run_id}"),
        "mlflow_run_uri": dg.MetadataValue.text(f"runs:/{run_id}"),
        "mlflow_model_uri": dg.MetadataValue.text(f"models:/{model_name}/{model_version}"),
        "mlflow_tracking_uri": dg.MetadataValue.text(uri),
    }
