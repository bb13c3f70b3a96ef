"""The session guards (tests/session_guards.py), each proven on a tiny test suite in a temporary folder run by a
pytest subprocess that loads the project's tests/conftest.py as a plugin: with the guards removed from the
conftest, these runs pass and so these tests fail. Plus the required-tests list checked against the test files
and against docs/reliability.md."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.session_guards import SCREENSHOTS_DIR_VAR, is_required, load_required_tests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REQUIRED_TESTS = PROJECT_ROOT / "tests" / "required_tests.txt"


def write_suite(folder: Path, files: dict[str, str], required: str = "") -> Path:
    """A tiny test suite: its own pytest.ini naming its own required-tests list."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\nrequired_tests = required.txt\n")
    (folder / "required.txt").write_text(required)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def run_suite(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """pytest on ``folder`` with the project's conftest (so its guards) loaded, as `make test` loads it."""
    environ = {k: v for k, v in os.environ.items() if k != SCREENSHOTS_DIR_VAR}
    environ.update({"PYTHONPATH": str(PROJECT_ROOT), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(folder / "pytest.ini"),
            "--rootdir",
            str(folder),
            "-q",
            *args,
        ],
        cwd=folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def guard_report(result: subprocess.CompletedProcess) -> str:
    """The guards' section of the output (empty when they found nothing)."""
    _, _, section = result.stdout.partition("session guards failed")
    return section


SKIPPING = {
    "test_disk.py": """
        import pytest

        @pytest.fixture
        def data():
            pytest.skip("real data not found")

        def test_needs_mount():
            pytest.skip("cannot mount here")

        def test_needs_data(data):
            pass

        def test_optional():
            pytest.skip("not needed here")
    """,
    "test_gone.py": """
        import pytest
        pytest.skip("module needs a server", allow_module_level=True)

        def test_server():
            pass
    """,
    "test_other.py": """
        def test_fine():
            pass
    """,
}
REQUIRED = """\
# a comment line
test_disk.py::test_needs_mount  # the docs say it runs
test_disk.py::test_needs_data   # the docs say it runs on real data
test_gone.py::*                 # the docs say the server tests run
"""


def test_a_skipped_required_test_fails_the_session_naming_it_its_reason_and_why_it_is_required(tmp_path):
    result = run_suite(write_suite(tmp_path, SKIPPING, REQUIRED))
    assert result.returncode == 1, result.stdout
    report = guard_report(result)
    for nodeid, reason, why in [
        ("test_disk.py::test_needs_mount", "cannot mount here", "the docs say it runs"),
        ("test_disk.py::test_needs_data", "real data not found", "on real data"),
        ("test_gone.py", "module needs a server", "the server tests run"),
    ]:
        assert re.search(
            rf"required test skipped: {re.escape(nodeid)}\n\s+skip reason: {reason}\n"
            rf"\s+required because: .*{why}",
            report,
        ), report
    assert "test_optional" not in report  # a skip of a test not listed is allowed


def test_a_run_of_other_files_or_with_no_required_skip_passes(tmp_path):
    suite = write_suite(tmp_path, SKIPPING, REQUIRED)
    assert run_suite(suite, "test_other.py").returncode == 0
    assert run_suite(suite, "test_disk.py::test_optional", "test_other.py").returncode == 0


def test_an_entry_without_its_reason_is_refused(tmp_path):
    listing = tmp_path / "required.txt"
    listing.write_text("tests/test_a.py::*  # why\ntests/test_b.py::*\n")
    with pytest.raises(pytest.UsageError, match=r"required.txt:2: 'tests/test_b.py::\*' needs a '# why"):
        load_required_tests(listing)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git checkout holding a tiny suite, a tracked file, an ignored folder and a file already edited."""
    repo = write_suite(
        tmp_path / "repo",
        {
            "test_writes.py": """
        import os
        from pathlib import Path

        HERE = Path(__file__).parent

        def test_writes():
            for name in os.environ["WRITE"].split(","):
                (HERE / name).parent.mkdir(parents=True, exist_ok=True)
                (HERE / name).write_text("written by a test")
    """
        },
    )
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "tracked.txt").write_text("tracked\n")
    (repo / "edited.txt").write_text("committed\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "suite")
    (repo / "edited.txt").write_text("edited before the run\n")
    return repo


def test_files_the_tests_create_or_change_in_the_checkout_fail_the_session_naming_them(repo):
    result = run_suite(repo, env={"WRITE": "left-behind.txt,tracked.txt,edited.txt,ignored/cache.bin"})
    assert result.returncode == 1, result.stdout
    report = guard_report(result)
    assert "changed or created files of the git checkout" in report
    assert re.findall(r"^ {4}(\S+)$", report, re.MULTILINE) == ["left-behind.txt", "tracked.txt"], report


def test_a_session_writing_only_outside_the_checkout_or_where_make_screenshots_asked_passes(repo):
    assert run_suite(repo, env={"WRITE": "ignored/cache.bin"}).returncode == 0
    assert run_suite(repo, env={"WRITE": "img/shot.png", SCREENSHOTS_DIR_VAR: str(repo / "img")}).returncode == 0


def test_the_checkout_guard_does_nothing_outside_a_git_checkout(tmp_path):
    suite = write_suite(
        tmp_path,
        {
            "test_writes.py": """
        from pathlib import Path

        def test_writes():
            (Path(__file__).parent / "new.txt").write_text("x")
    """
        },
    )
    assert run_suite(suite).returncode == 0


ENV_TESTS = {
    "test_env.py": """
    import os

    def test_uses_monkeypatch(monkeypatch):
        monkeypatch.setenv("DAGSTER_HOME", "/elsewhere")
        monkeypatch.delenv("SMART_HOME_DATA_DIR")

    def test_pops_dagster_home():
        os.environ.pop("DAGSTER_HOME")

    def test_after():
        pass
"""
}
MAKE_TEST_ENV = {"DAGSTER_HOME": "/checkout/dagster_home", "SMART_HOME_DATA_DIR": "/checkout/data"}


def test_a_test_that_leaves_dagster_home_changed_fails_the_session_naming_it(tmp_path):
    result = run_suite(write_suite(tmp_path, ENV_TESTS), env=MAKE_TEST_ENV)
    assert result.returncode == 1, result.stdout
    report = guard_report(result)
    assert (
        "DAGSTER_HOME is None at the end of the session, was '/checkout/dagster_home' at its start: "
        "last changed by test_env.py::test_pops_dagster_home"
    ) in report, report
    assert "SMART_HOME_DATA_DIR" not in report  # monkeypatch restored it
    assert run_suite(tmp_path, "-k", "monkeypatch", env=MAKE_TEST_ENV).returncode == 0


def required_patterns() -> list[str]:
    return [pattern for pattern, _ in load_required_tests(REQUIRED_TESTS)]


def defined_tests(path: Path) -> set[str]:
    """The test functions a test module defines at its top level (without importing it: no Dagster import)."""
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


@pytest.mark.parametrize("pattern", required_patterns())
def test_every_required_pattern_names_existing_tests(pattern):
    """A renamed or moved test would otherwise drop out of the list in silence."""
    module = pattern.partition("::")[0]
    path = PROJECT_ROOT / module
    assert path.is_file(), f"{REQUIRED_TESTS.name}: {module} does not exist"
    assert any(is_required(f"{module}::{test}", pattern) for test in defined_tests(path)), (
        f"{REQUIRED_TESTS.name}: {pattern} matches no test of {module}"
    )


def test_every_test_file_docs_reliability_names_is_required():
    """docs/reliability.md says every test of its table runs in `make test`: each of its files is in the list."""
    named = set(re.findall(r"tests/test_\w+\.py", (PROJECT_ROOT / "docs" / "reliability.md").read_text()))
    assert named, "docs/reliability.md names no test file"
    listed = {pattern.partition("::")[0] for pattern in required_patterns() if pattern.endswith("::*")}
    assert named - listed == set(), f"add them to {REQUIRED_TESTS.relative_to(PROJECT_ROOT)}"
