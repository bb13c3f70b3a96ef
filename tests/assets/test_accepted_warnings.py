"""The Dagster warnings the project accepts are silenced where the code location loads, and each entry of the
list still matches a warning Dagster really raises (a stale entry would hide nothing and mislead)."""

import subprocess
import sys

from smart_home_assets.accepted_warnings import ACCEPTED

LOAD = "import smart_home_assets.definitions"
RECORD = """
import json, warnings
import smart_home_assets  # installs the filters; then they are dropped, to see what Dagster raises
warnings.resetwarnings()
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import smart_home_assets.definitions
print(json.dumps([str(w.message) for w in seen]))
"""


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True)


def test_loading_the_code_location_prints_none_of_the_accepted_warnings():
    stderr = python(LOAD).stderr
    assert not [message for message, _ in ACCEPTED if message in stderr], stderr[-2000:]


def test_every_accepted_warning_is_one_dagster_raises_and_says_why():
    import json

    raised = json.loads(python(RECORD).stdout.strip().splitlines()[-1])
    for message, why in ACCEPTED:
        assert why.strip(), message
        assert any(message in text for text in raised), f"no longer raised: {message}"


def test_the_dagster_processes_smart_home_starts_print_none_of_them(tmp_path, monkeypatch):
    """The environment ``smart-home`` gives its dagster subprocesses: the CLI's own supersession warning too."""
    from smart_home_assets.accepted_warnings import ACCEPTED_BY_THE_CLI
    from smart_home_tools.cli import dagster_bin, dagster_env

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SMART_HOME_DATA_DIR", str(tmp_path / "data"))
    env = dagster_env()
    # a selection that matches nothing: the command runs (and warns), loads the code location, starts no run
    command = [dagster_bin(), "asset", "materialize", "-m", "smart_home_assets.definitions", "--select", "no_such"]
    shown = subprocess.run(command, env={**env, "PYTHONWARNINGS": "default"}, capture_output=True, text=True).stderr
    assert any(message in shown for message, _ in ACCEPTED_BY_THE_CLI), "the CLI no longer raises it: drop the entry"
    silenced = subprocess.run(command, env=env, capture_output=True, text=True).stderr
    assert "no_such" in silenced  # it did fail on the selection, after loading the code
    assert not [m for m, _ in (*ACCEPTED_BY_THE_CLI, *ACCEPTED) if m in silenced], silenced[-2000:]
