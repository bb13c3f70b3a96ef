"""Session-wide guards of the test suite, wired in by tests/conftest.py, each turning a silent problem into a failed
session (non-zero exit) that names its cause:

- a required test was skipped: docs/reliability.md says its tests run in `make test` (so in CI), and a skip would
  otherwise pass unnoticed (tests/required_tests.txt lists them, each with why);
- the tests changed or created files of the git checkout: a test must write into temporary folders only;
- a test left DAGSTER_HOME or SMART_HOME_DATA_DIR (what `make test` exports) changed: later tests would use the
  wrong instance or data directory.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path

import pytest

REQUIRED_TESTS_INI = "required_tests"
# The one folder a run may be asked to write into: `make screenshots` points it at docs/img/ (tests/system/test_ui.py).
SCREENSHOTS_DIR_VAR = "SMART_HOME_SCREENSHOTS_DIR"
# What the Makefile exports for `make test`.
EXPORTED_VARS = ("DAGSTER_HOME", "SMART_HOME_DATA_DIR")


def requested_screenshots_dir() -> Path | None:
    """Where `make screenshots` asked the UI test to save the README's images, or None (then: a temporary folder)."""
    value = os.environ.get(SCREENSHOTS_DIR_VAR)
    return Path(value).resolve() if value else None


# --- required tests ---------------------------------------------------------------------------------------------


def load_required_tests(path: Path) -> list[tuple[str, str]]:
    """(pattern, why) per entry of the list; an entry without its reason is refused, so that the list stays a
    record of which document promises the test runs."""
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, why = line.partition("#")
        if not why.strip():
            raise pytest.UsageError(f"{path}:{number}: '{pattern.strip()}' needs a '# why it is required' comment")
        entries.append((pattern.strip(), why.strip()))
    return entries


def is_required(nodeid: str, pattern: str) -> bool:
    """A test matches with or without its parameters; a module (a module-level skip) matches its tests' patterns."""
    if "::" not in nodeid:
        return fnmatch.fnmatchcase(nodeid, pattern.split("::")[0])
    return fnmatch.fnmatchcase(nodeid, pattern) or fnmatch.fnmatchcase(nodeid.split("[")[0], pattern)


def skip_reason(report) -> str:
    """The reason pytest shows for a skip (or an expected failure, which proves no more than a skip)."""
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}"
    if isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    return str(report.longrepr)


def required_skip_problems(skipped: dict[str, str], required: list[tuple[str, str]]) -> list[str]:
    problems = []
    for nodeid, reason in skipped.items():
        why = next(why for pattern, why in required if is_required(nodeid, pattern))
        reason = reason.replace("\n", "\n" + " " * 17)  # continuation lines under the reason's first line
        problems.append(f"required test skipped: {nodeid}\n    skip reason: {reason}\n    required because: {why}")
    return problems


# --- the git checkout ---------------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str | None:
    """git's output in ``root``, or None when git is missing or ``root`` is not in a checkout."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def dirty_paths(root: Path) -> set[str] | None:
    """Changed, staged, deleted and untracked files of the checkout (git-ignored ones excluded), relative to its
    top; None outside a checkout. Both sides of a rename count."""
    status = git(root, "status", "--porcelain", "-z", "--untracked-files=all")
    if status is None:
        return None
    paths, fields = set(), iter(status.split("\0"))
    for entry in fields:
        if entry:
            paths.add(entry[3:])
            if entry[0] in "RC":
                paths.add(next(fields))
    return paths


SNAPSHOT_UPDATE_VAR = "SMART_HOME_UPDATE_SNAPSHOTS"
SPEC_SNAPSHOT = "tests/assets/asset_specs.snapshot.json"


def snapshot_update_requested() -> bool:
    return os.environ.get(SNAPSHOT_UPDATE_VAR, "").strip().lower() not in ("", "0", "false", "no")


def allowed_to_change(top: Path, path: str) -> bool:
    """Only the folder `make screenshots` asked for may be written into, and the spec snapshot when
    ``SMART_HOME_UPDATE_SNAPSHOTS`` asks for its update (tests/assets/test_spec_snapshot.py)."""
    if path == SPEC_SNAPSHOT and snapshot_update_requested():
        return True
    screenshots = requested_screenshots_dir()
    return screenshots is not None and (top / path).resolve().is_relative_to(screenshots)


def checkout_problems(root: Path, before: set[str] | None) -> list[str]:
    """Files the session changed or created. Paths already dirty at its start are left out (someone is editing
    them); a file someone else edits during the run cannot be told apart, and is listed too."""
    after = dirty_paths(root)
    if before is None or after is None:
        return []
    toplevel = git(root, "rev-parse", "--show-toplevel")
    if toplevel is None:  # git answered the status just before: not expected
        return []
    top = Path(toplevel.strip())
    new = sorted(p for p in after - before if not allowed_to_change(top, p))
    if not new:
        return []
    return [
        "the tests changed or created files of the git checkout (write into tmp_path instead):\n"
        + "".join(f"    {path}\n" for path in new)
        + "  (in a shared checkout, a file someone else edited during the run is listed too)"
    ]


# --- the environment `make test` exported ----------------------------------------------------------------------


def exported_env() -> dict[str, str | None]:
    return {var: os.environ.get(var) for var in EXPORTED_VARS}


def env_problems(at_start: dict[str, str | None], changed_by: dict[str, str]) -> list[str]:
    problems = []
    for var, value in exported_env().items():
        if value != at_start[var]:
            problems.append(
                f"{var} is {value!r} at the end of the session, was {at_start[var]!r} at its start: "
                f"last changed by {changed_by.get(var, 'a session-scoped fixture')} "
                "(use monkeypatch, or restore it in a finally)"
            )
    return problems


# --- the hooks -------------------------------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addini(
        REQUIRED_TESTS_INI,
        "file listing tests that must not be skipped (node id patterns, '# why')",
        default="tests/required_tests.txt",
    )


def pytest_configure(config):
    config.pluginmanager.register(SessionGuards(config), "session-guards")


class SessionGuards:
    """What the guards remember from the session's start to its end, and the hooks that feed and judge it."""

    def __init__(self, config):
        self.config = config
        self.required = load_required_tests(config.rootpath / config.getini(REQUIRED_TESTS_INI))
        self.skipped: dict[str, str] = {}  # node id -> skip reason
        self.dirty_before: set[str] | None = None  # None: not in a git checkout
        self.env_at_start = self.env_now = exported_env()
        self.env_changed_by: dict[str, str] = {}  # variable -> the last test after which it changed
        self.problems: list[str] = []

    def pytest_sessionstart(self, session):
        self.dirty_before = dirty_paths(self.config.rootpath)

    def pytest_collectreport(self, report):
        """Module-level skips (pytest.skip(allow_module_level=True), importorskip) are reported at collection."""
        self.record_skip(report)

    def pytest_runtest_logreport(self, report):
        self.record_skip(report)
        if report.when == "teardown":
            self.record_env_change(report.nodeid)

    def record_skip(self, report) -> None:
        """Remember a skip of a required test; only tests this session collected can be seen, so a run of a few
        files is judged on those files only."""
        if report.skipped and any(is_required(report.nodeid, pattern) for pattern, _ in self.required):
            self.skipped.setdefault(report.nodeid, skip_reason(report))

    def record_env_change(self, nodeid: str) -> None:
        """After each test's teardown: note which test last changed an exported variable, to name it at the end
        (a module-scoped fixture may change one for its tests and restore it after the last)."""
        now = exported_env()
        for var, value in now.items():
            if value != self.env_now[var]:
                self.env_changed_by[var] = nodeid
        self.env_now = now

    def pytest_sessionfinish(self, session):
        self.problems = (
            required_skip_problems(self.skipped, self.required)
            + checkout_problems(self.config.rootpath, self.dirty_before)
            + env_problems(self.env_at_start, self.env_changed_by)
        )
        if self.problems and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.problems:
            terminalreporter.write_sep("=", "session guards failed (tests/session_guards.py)", red=True, bold=True)
            for problem in self.problems:
                terminalreporter.write_line(problem, red=True)
