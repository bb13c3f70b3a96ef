"""One file in a landing day folder, as the landing zone lists it (``resources.landing``) and ingestion reads it
(``smart_home_assets.lib.ingest``): a local path or an object-store key, read as a stream of chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LandingFile:
    """One file in a day folder. ``problem`` is a reason code when the file must not be read."""

    day: str
    name: str
    path: Path | None  # local files; None on an object store (see ``location``)
    size: int
    mtime_ns: int  # on S3: the object's Last-Modified (whole seconds)
    hub_id: str | None
    problem: str | None = None
    location: str | None = None  # on an object store: ``bucket/key`` for ``filesystem``
    filesystem: Any = field(default=None, compare=False, repr=False)
    # A reason for every line of a file that is read but must not reach device_usage (conflicting_upload).
    lines_problem: str | None = None

    @property
    def relative_path(self) -> str:
        return f"{self.day}/{self.name}"

    def read_bytes(self) -> bytes:
        """The file's bytes as stored (no transparent decompression)."""
        return b"".join(self.chunks())

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The file's bytes as stored, ``size`` at a time: ingestion decodes them as a stream and may stop early,
        so a huge upload is never read whole."""
        if self.filesystem is None:
            if self.path is None:  # a problem placeholder (a day folder linked outside the landing zone)
                raise TypeError(f"{self.relative_path} has no local path to read")  # what open(None) raised
            with open(self.path, "rb") as handle:
                while chunk := handle.read(size):
                    yield chunk
            return
        with self.filesystem.open_input_stream(self.location, compression=None) as stream:
            while chunk := stream.read(size):
                yield chunk

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"
