"""The landing zone: the folder hubs upload to, ``<landing>/<YYYY-MM-DD>/<hub_id>.jsonl[.gz]``.

Only this module turns names found on disk into paths the pipeline opens, so a file name or a folder
name never reaches a path or SQL unchecked. Files that break the naming contract are not skipped in
silence: they are listed with the reason, and raw_usage records them (see ``LandingFile.problem``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from dagster import ConfigurableResource

from resources.settings import default_landing_dir
from smart_home_assets.contract import DATE_FOLDER_RE, HUB_ID_RE, UPLOAD_SUFFIXES


class LandingZoneError(RuntimeError):
    pass


@dataclass(frozen=True)
class LandingFile:
    """One file in a day folder. ``problem`` is a reason code when the file must not be read."""

    day: str
    name: str
    path: Path
    size: int
    mtime_ns: int
    hub_id: str | None
    problem: str | None = None

    @property
    def relative_path(self) -> str:
        return f"{self.day}/{self.name}"

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


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
            problem = "symlink_outside_landing"
        else:
            try:
                stat = target.stat()
            except OSError:
                problem = problem or "broken_symlink"
            else:
                if not S_ISREG(stat.st_mode):  # a folder or a FIFO (reading one would block the run)
                    problem = problem or "unreadable_file"
    elif not entry.is_file():
        return None
    hub_id = hub_id_from_file_name(name)
    if problem is None and hub_id is None:
        problem = "bad_file_name"
    return LandingFile(day=day, name=name, path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                       hub_id=hub_id, problem=problem)


class LandingZone(ConfigurableResource):
    """A local folder of hub uploads. ``path`` defaults to ``$SMART_HOME_LANDING_DIR`` or ``<data>/landing``."""

    path: str = ""

    def root(self) -> Path:
        return Path(self.path).resolve() if self.path else default_landing_dir()

    def exists(self) -> bool:
        return self.root().is_dir()

    def day_folders(self) -> dict[str, Path]:
        """Valid day folders by partition key. Raises LandingZoneError when the landing zone is missing."""
        root = self.root()
        if not root.is_dir():
            raise LandingZoneError(f"landing zone {root} does not exist or is not a folder")
        return {
            entry.name: Path(entry.path)
            for entry in os.scandir(root)
            if entry.is_dir(follow_symlinks=False) and parse_day_folder(entry.name) is not None
        }

    def invalid_day_folders(self) -> list[str]:
        root = self.root()
        return sorted(
            entry.name for entry in os.scandir(root)
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
            and parse_day_folder(entry.name) is None
        )

    def files_for_day(self, day: str) -> list[LandingFile]:
        """Every file of one day folder (sorted by name), with a ``problem`` for those that break the contract."""
        if parse_day_folder(day) is None:
            raise LandingZoneError(f"partition key {day!r} is not a YYYY-MM-DD date")
        root = self.root()
        folder = root / day
        if not folder.is_dir():
            return []
        files = [f for entry in os.scandir(folder) if (f := _classify(root, day, entry)) is not None]
        return sorted(files, key=lambda f: f.name)

    def scan(self) -> dict[str, list[LandingFile]]:
        """All day folders and their files: what the landing sensor compares with its cursor."""
        return {day: self.files_for_day(day) for day in sorted(self.day_folders())}
