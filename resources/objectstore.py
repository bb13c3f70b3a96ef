"""Object storage: one place that turns an ``s3://bucket/prefix`` location into a file system and options.

The landing zone lists and reads uploads through ``pyarrow.fs`` (already installed with polars/mlflow, no extra
client); the Delta warehouse hands the same settings to delta-rs as ``storage_options``. Credentials and the
endpoint come from the standard AWS variables, never from code or logs:

``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` (optional), ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``, default ``us-east-1``), ``AWS_ENDPOINT_URL`` for an S3-compatible store (MinIO, Ceph,
a test server); ``http://`` endpoints are allowed only when named explicitly that way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pyarrow.fs as pafs


S3_SCHEME = "s3://"


class ObjectStoreError(RuntimeError):
    pass


def is_object_store(location: str) -> bool:
    return location.startswith(S3_SCHEME)


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (``bucket``, ``a/b``)."""
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ObjectStoreError(f"not an s3://bucket/prefix location: {location!r}")
    return parsed.netloc, parsed.path.strip("/")


def _region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_filesystem(env: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    """A pyarrow S3 file system configured from the AWS variables (``env`` defaults to the process's)."""
    env = os.environ if env is None else env
    kwargs: dict = {"region": _region(env)}
    if env.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs.update(endpoint_override=parsed.netloc or endpoint, scheme=parsed.scheme or "https")
    import pyarrow.fs as pafs  # imported when an object store is used, not when the definitions load

    return pafs.S3FileSystem(**kwargs)


def delta_storage_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """delta-rs ``storage_options`` for S3 from the same AWS variables (only those that are set)."""
    env = os.environ if env is None else env
    options = {"AWS_REGION": _region(env)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if env.get(name):
            options[name] = env[name]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options
