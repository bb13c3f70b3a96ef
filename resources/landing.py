"""The landing zone: the folder hubs upload to, ``<landing>/<YYYY-MM-DD>/<hub_id>.jsonl[.gz]``.

Only this module turns names found on disk into paths the pipeline opens, so a file name or a folder
name never reaches a path or SQL unchecked. Files that break the naming contract are not skipped in
silence: they are listed with the reason, and raw_usage records them (see ``LandingFile.problem``).

The landing zone is a local folder or an object-store prefix ``s3://bucket/prefix`` (listed and read through
``pyarrow.fs``, see ``resources.objectstore``): both give the same ``LandingFile`` records, whose
``read_bytes()`` is all that ingestion calls, so the sensor, its cursor and ``raw_usage`` do not know which.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from dagster import ConfigurableResource

from resources.objectstore import is_object_store, s3_filesystem, split_s3
from resources.settings import landing_location
from smart_home_assets.lib.contract import DATE_FOLDER_RE, HUB_ID_RE, UPLOAD_SUFFIXES
from smart_home_assets.lib.landing_file import LandingFile
from smart_home_assets.lib.reasons import (  # noqa: F401 (re-exported: callers name them here)
    CONFLICTING_UPLOAD,
    NOT_A_FILE,
    SUBFOLDER,
    SYMLINK_OUTSIDE_LANDING,
)

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class LandingZoneError(RuntimeError):
    pass


def flag_conflicting_uploads(files: list[LandingFile]) -> list[LandingFile]:
    """Two readable uploads of one hub for one day (``hub.jsonl`` and ``hub.jsonl.gz``): neither is trusted over
    the other by an accident of sort order. Both are read and kept in raw_usage, and every line of both is
    quarantined as ``conflicting_upload`` until the hub re-uploads one of them (see ``LandingFile.lines_problem``)."""
    hubs = [f.hub_id for f in files if f.problem is None and f.hub_id]
    twice = {h for h in hubs if hubs.count(h) > 1}
    return [
        dataclasses.replace(f, lines_problem=CONFLICTING_UPLOAD) if f.problem is None and f.hub_id in twice else f
        for f in files
    ]


def parse_day_folder(name: str) -> dt.date | None:
    """The date a folder name stands for, or None for a name that is not a real ``YYYY-MM-DD`` date."""
    if not DATE_FOLDER_RE.match(name):
        return None
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


def hub_id_from_file_name(name: str) -> str | None:
    for suffix in UPLOAD_SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if HUB_ID_RE.fullmatch(stem) else None  # fullmatch: "$" alone lets a final "\n" in
    return None


def _classify(root: Path, day: str, entry: os.DirEntry) -> LandingFile | None:
    name = entry.name
    if name.startswith("."):
        return None  # uploads in progress are written as dot-files and renamed when complete
    path = Path(entry.path)
    try:
        stat = entry.stat(follow_symlinks=False)
    except OSError:
        return None  # vanished between listing and stat: the next scan sees the final state
    problem = None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in the name: recorded with them escaped, never read
        name = os.fsencode(name).decode("utf-8", errors="backslashreplace")
        problem = "bad_file_name"
    if entry.is_symlink():
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            target = None
        if target is None:
            problem = problem or "broken_symlink"
        elif not target.is_relative_to(root):
            problem = SYMLINK_OUTSIDE_LANDING
        else:
            try:
                stat = target.stat()
            except OSError:
                problem = problem or "broken_symlink"
            else:
                if not S_ISREG(stat.st_mode):  # a folder or a FIFO (reading one would block the run)
                    problem = problem or "unreadable_file"
    elif entry.is_dir(follow_symlinks=False):
        # Never read, never silent: a folder named like an upload, or a subfolder holding uploads.
        problem = problem or (NOT_A_FILE if hub_id_from_file_name(name) else SUBFOLDER)
        return LandingFile(
            day=day, name=name + "/", path=path, size=0, mtime_ns=stat.st_mtime_ns, hub_id=None, problem=problem
        )
    elif not entry.is_file(follow_symlinks=False):  # a FIFO, socket or device: opening one could block the run
        problem = problem or NOT_A_FILE
    hub_id = hub_id_from_file_name(name)
    if problem is None and hub_id is None:
        problem = "bad_file_name"
    return LandingFile(
        day=day, name=name, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, hub_id=hub_id, problem=problem
    )


class _ObjectStoreLanding:
    """The landing zone's listing on ``s3://bucket/prefix``: the same naming rules, no symlinks on a store."""

    def __init__(self, location: str):
        self.location = location
        self.bucket, prefix = split_s3(location)
        self.base = f"{self.bucket}/{prefix}" if prefix else self.bucket
        self.fs = s3_filesystem()

    def exists(self) -> bool:
        import pyarrow.fs as pafs  # only object-store landings need pyarrow's file systems (load time)

        return self.fs.get_file_info(self.bucket).type == pafs.FileType.Directory

    def _entries(self, base: str, recursive: bool) -> list[pafs.FileInfo]:
        import pyarrow.fs as pafs

        if not self.exists():
            raise LandingZoneError(
                f"landing zone {self.location}: bucket {self.bucket!r} does not exist or is not reachable"
            )
        return self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))

    def folders(self) -> list[str]:
        import pyarrow.fs as pafs

        return [
            info.base_name for info in self._entries(self.base, recursive=False) if info.type == pafs.FileType.Directory
        ]

    def files(self, day: str | None = None) -> dict[str, list[LandingFile]]:
        """Files one level below each day folder (or of ``day`` only), by day; one LIST for the whole scan."""
        import pyarrow.fs as pafs

        base = f"{self.base}/{day}" if day else self.base
        by_day: dict[str, list[LandingFile]] = {}
        for info in self._entries(base, recursive=day is None):
            parts = info.path[len(self.base) + 1 :].split("/")
            if len(parts) == 1:  # a day folder (or a file at the top level)
                if info.type == pafs.FileType.Directory and parse_day_folder(parts[0]) is not None:
                    by_day.setdefault(parts[0], [])
                continue
            if parse_day_folder(parts[0]) is None or parts[1].startswith("."):
                continue  # not a day folder; or an upload in progress
            folder, name = parts[0], parts[1]
            if len(parts) > 2 or info.type != pafs.FileType.File:
                # A "folder" inside a day folder (a prefix with keys below it), recorded once, never read.
                entry = name + "/"
                if all(f.name != entry for f in by_day.get(folder, [])):
                    by_day.setdefault(folder, []).append(
                        LandingFile(
                            day=folder,
                            name=entry,
                            path=None,
                            size=0,
                            mtime_ns=0,
                            hub_id=None,
                            problem=NOT_A_FILE if hub_id_from_file_name(name) else SUBFOLDER,
                            location=None,
                        )
                    )
                continue
            hub_id = hub_id_from_file_name(name)
            by_day.setdefault(folder, []).append(
                LandingFile(
                    day=folder,
                    name=name,
                    path=None,
                    size=info.size,
                    mtime_ns=info.mtime_ns,
                    hub_id=hub_id,
                    problem=None if hub_id else "bad_file_name",
                    location=info.path,
                    filesystem=self.fs,
                )
            )
        return {d: flag_conflicting_uploads(sorted(files, key=lambda f: f.name)) for d, files in sorted(by_day.items())}


class LandingZone(ConfigurableResource):
    """Hub uploads in a local folder or under ``s3://bucket/prefix``. ``path`` defaults to
    ``$SMART_HOME_LANDING_DIR`` or ``<data>/landing``."""

    path: str = ""

    def location(self) -> str:
        """The configured landing zone: an absolute local path or an ``s3://bucket/prefix`` URI."""
        if self.path:
            return self.path.rstrip("/") if is_object_store(self.path) else str(Path(self.path).resolve())
        return landing_location()

    def is_object_store(self) -> bool:
        return is_object_store(self.location())

    def _store(self) -> _ObjectStoreLanding | None:
        return _ObjectStoreLanding(self.location()) if self.is_object_store() else None

    def root(self) -> Path | str:
        """The local folder (a Path), or the ``s3://`` URI (a str) of an object-store landing zone."""
        location = self.location()
        return location if is_object_store(location) else Path(location)

    def _local_root(self) -> Path:
        """``root()`` of a landing zone that is not an object store."""
        return Path(self.location())

    def exists(self) -> bool:
        store = self._store()
        return store.exists() if store else self._local_root().is_dir()

    def day_folders(self) -> dict[str, Path | str]:
        """Valid day folders by partition key. Raises LandingZoneError when the landing zone is missing."""
        store = self._store()
        if store:
            return {name: f"{store.location}/{name}" for name in store.folders() if parse_day_folder(name)}
        root = self._local_root()
        if not root.is_dir():
            raise LandingZoneError(f"landing zone {root} does not exist or is not a folder")
        return {
            entry.name: Path(entry.path)
            for entry in os.scandir(root)
            if entry.is_dir(follow_symlinks=False) and parse_day_folder(entry.name) is not None
        }

    def invalid_day_folders(self) -> list[str]:
        store = self._store()
        if store:
            return sorted(n for n in store.folders() if not n.startswith(".") and parse_day_folder(n) is None)
        root = self.root()
        return sorted(
            entry.name
            for entry in os.scandir(root)
            if entry.is_dir(follow_symlinks=False)
            and not entry.name.startswith(".")
            and parse_day_folder(entry.name) is None
        )

    def files_for_day(self, day: str) -> list[LandingFile]:
        """Every file of one day folder (sorted by name), with a ``problem`` for those that break the contract."""
        if parse_day_folder(day) is None:
            raise LandingZoneError(f"partition key {day!r} is not a YYYY-MM-DD date")
        store = self._store()
        if store:
            return store.files(day).get(day, [])
        root = self._local_root()
        folder = root / day
        if folder.is_symlink():
            # The day folder itself may point elsewhere: resolved against the landing root like a file.
            try:
                target = folder.resolve()
            except (OSError, RuntimeError):
                target = None
            if target is None or not target.is_relative_to(root.resolve()):
                return [
                    LandingFile(
                        day=day, name="", path=None, size=0, mtime_ns=0, hub_id=None, problem=SYMLINK_OUTSIDE_LANDING
                    )
                ]
        if not folder.is_dir():
            return []
        files = [f for entry in os.scandir(folder) if (f := _classify(root, day, entry)) is not None]
        return flag_conflicting_uploads(sorted(files, key=lambda f: f.name))

    def scan(self) -> dict[str, list[LandingFile]]:
        """All day folders and their files: what the landing sensor compares with its cursor."""
        store = self._store()
        if store:
            return store.files()
        return {day: self.files_for_day(day) for day in sorted(self.day_folders())}
