"""The UI as its users see it, and the GraphQL API as an external scheduler uses it.

A small simulated fleet is ingested, cleaned, featurized, trained, predicted and scored through the real CLI
(`smart-home pipeline`) into a temporary instance; then `dagster dev` serves it on loopback and:
- headless Chromium (Debian's `chromium`, driven by Playwright; .ci/run installs it) reads the asset graph, the
  checks of device_usage, the sensors and the model's materialization, and saves the README's screenshots
  into a temporary folder (into docs/img/ only for `make screenshots`, which sets SMART_HOME_SCREENSHOTS_DIR);
- Dagster's Python GraphQL client reads the model's latest metadata and launches a partition run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_home_tools.simulate import simulate_fleet
from tests.session_guards import requested_screenshots_dir

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("SMART_HOME_CHROMIUM", "/usr/bin/chromium")
# Without these, headless Chromium on a closed network stalls on sandboxing, GPU and background fetches.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST, DAYS, HUBS = dt.date(2026, 6, 1), 20, 6
LAST = FIRST + dt.timedelta(days=DAYS - 1)
# 20 days leave 13 labeled days: too few for the default backtest (4 folds of 7 days after 7 to train), enough
# for 2 folds of 3 days; a smaller forest is enough here.
MODEL_CONFIG = {"ops": {"usage_model": {"config": {"backtest_folds": 2, "fold_days": 3, "n_estimators": 100}}}}
LOCATION = "smart_home_assets"
SENSORS = ("landing_zone_sensor", "automation_sensor")
# Every project asset the issue names, in the order data moves.
ASSETS = (
    "raw_usage",
    "device_usage",
    "device_usage_quarantine",
    "usage_features",
    "usage_model",
    "usage_predictions",
    "prediction_feedback",
)
GROUPS_LEFT_TO_RIGHT = ("ingestion", "cleaning", "features", "training", "scoring")
SERVER_START_TIMEOUT_S = 300  # a bound to fail with the server's log, not a performance assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_graph():
    """(assets, edges) of the code location, from the definitions themselves."""
    from smart_home_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    edges = {
        (p.to_user_string(), k.to_user_string()) for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys
    }
    return keys, edges


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """A temporary instance and data directory holding every asset of a 6-hub, 20-day simulated fleet."""
    root = tmp_path_factory.mktemp("ui")
    env = {
        **os.environ,
        "SMART_HOME_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in (
        "SMART_HOME_PSEUDONYM_KEY",
        "SMART_HOME_ENV",
        "SMART_HOME_LANDING_DIR",
        "SMART_HOME_WAREHOUSE",
        "SMART_HOME_DEVICE_CATALOG",
        "SMART_HOME_PARTITIONS_START",
        "MLFLOW_TRACKING_URI",
    ):
        env.pop(var, None)
    (root / "home").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", root / "home" / "dagster.yaml")
    simulate_fleet(
        root / "data" / "landing", hubs=HUBS, days=DAYS, start=FIRST, fault_rate=0.01, seed=5, events_per_hub=150
    )
    result = subprocess.run(
        [
            str(BIN / "smart-home"),
            "pipeline",
            "--from",
            str(FIRST),
            "--to",
            str(LAST),
            "--model-config",
            json.dumps(MODEL_CONFIG),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "promoted=True" in result.stdout, result.stdout[-3000:]
    return {"root": root, "env": env}


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory) -> Path:
    """A temporary folder, unless `make screenshots` asks for docs/img/: a test run must not rewrite tracked files."""
    folder = requested_screenshots_dir() or tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(materialized):
    """`dagster dev` (webserver + daemon) on a free loopback port, in its own process group, killed at the end."""
    from dagster_graphql import DagsterGraphQLClient

    port = free_port()
    log_path = materialized["root"] / "dagster-dev.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            env=materialized["env"],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                entries = client._execute(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                    " locationOrLoadError { __typename } } } } }"
                )["workspaceOrError"]
                status = {
                    e["name"]: e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"]
                    for e in entries["locationEntries"]
                }
                if status.get(LOCATION) == "RepositoryLocation":
                    break
            except Exception as exc:  # not listening yet
                status = repr(exc)
            time.sleep(2)
        else:
            pytest.fail(f"dagster dev did not serve {LOCATION} (last status {status}):\n{log_path.read_text()[-4000:]}")
        # The "join the community" dialog is shown once per instance; dismiss it as a user would (Skip).
        client._execute("mutation { setNuxSeen }")
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "client": client, "log": log_path, **materialized}
    finally:
        # STACK-NOTES: dagster dev does not stop on SIGTERM; kill the whole group (webserver, daemon, code
        # server and the runs they started).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    with sync_playwright() as playwright:
        # Playwright starts it with a fresh temporary profile (user data dir) every time.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, server, path: str, width: int = 1600, height: int = 1000):
    # English dates and relative times ("Dec 1, 1:27 PM", "2 minutes ago") whatever the machine's locale.
    page = browser.new_page(viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC")
    page.set_default_timeout(60_000)
    # Should the onboarding dialog show anyway, close it whenever it gets in the way.
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    page.goto(server["url"] + path)
    return page


def gql(server, query: str, variables: dict | None = None) -> dict:
    return server["client"]._execute(query, variables or {})


# Asset nodes and lineage edges as drawn: each node is a foreignObject of the graph's SVG, each edge an SVG
# path from the right side of its upstream node to the left side of its downstream node, at their middles.
GRAPH_JS = """() => {
  const nodes = Array.from(document.querySelectorAll('svg foreignObject'))
    .filter(f => f.querySelector('[class*=AssetNode_assetNodeContainer]'))
    .map(f => ({x: +f.getAttribute('x'), y: +f.getAttribute('y'), w: +f.getAttribute('width'),
                h: +f.getAttribute('height'), name: f.querySelector('[class*=AssetNode_assetName]')?.textContent,
                text: f.textContent}));
  const groups = Array.from(document.querySelectorAll('svg foreignObject.group'))
    .map(f => ({x: +f.getAttribute('x'), text: f.textContent}));
  const edges = Array.from(document.querySelectorAll('svg path[marker-end]')).map(p => p.getAttribute('d'));
  return {nodes, groups, edges};
}"""


def edges_between(nodes: list[dict], paths: list[str]) -> set[tuple[str | None, str | None]]:
    def node_at(x: float, y: float, side: str) -> str | None:
        for n in nodes:
            edge_x = n["x"] + n["w"] if side == "right" else n["x"]
            if abs(x - edge_x) <= 20 and abs(y - (n["y"] + n["h"] / 2)) <= 2:
                return n["name"]
        return None

    found = set()
    for d in paths:
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
        (x0, y0), (x1, y1) = numbers[:2], numbers[-2:]
        found.add((node_at(x0, y0, "right"), node_at(x1, y1, "left")))
    return found


def test_asset_graph_shows_every_asset_and_its_lineage_left_to_right(browser, server, screenshots_dir):
    from smart_home_assets.definitions import defs

    keys, edges = expected_graph()
    assert set(ASSETS) <= keys
    # Wide enough for the full nodes (name, checks, partitions, kinds) at the fitted zoom.
    page = open_page(browser, server, "/asset-groups", width=2200, height=1000)
    page.get_by_role("button", name="Hide navigation").click()
    page.get_by_text("ingestion").first.wait_for()
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups" (its settings menu shows the shortcut)
    # Full nodes (untruncated names) once the groups are open and the zoom is fitted.
    page.wait_for_function(
        f"() => JSON.stringify(({GRAPH_JS})().nodes.map(n => n.name).sort()) === "
        f"{json.dumps(json.dumps(sorted(keys), separators=(',', ':')))}"
    )
    # Each node loads its status (latest event, checks, partitions) on its own.
    page.wait_for_function(f"() => ({GRAPH_JS})().nodes.every(n => !n.text.includes('Loading'))")
    for _ in range(30):  # edges are laid out after the nodes: read again until the drawing settles
        drawn = page.evaluate(GRAPH_JS)
        if edges_between(drawn["nodes"], drawn["edges"]) == edges:
            break
        page.wait_for_timeout(1000)
    nodes = {n["name"]: n for n in drawn["nodes"]}
    assert set(nodes) == keys
    assert edges_between(drawn["nodes"], drawn["edges"]) == edges, drawn
    # Every node shows it was materialized, and its kinds.
    for name, node in nodes.items():
        assert re.search(r"Latest event\s*(\d+|an?|a few|less than)[^–]*? ago", node["text"]), (name, node["text"])
    checks = sum(
        1 for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key.to_user_string() == "device_usage"
    )
    assert re.search(rf"Asset checks\s*\d+ / {checks} Passed", nodes["device_usage"]["text"]), nodes["device_usage"][
        "text"
    ]
    assert "lightgbm" in nodes["usage_model"]["text"] and "ML Flow" in nodes["usage_model"]["text"]
    assert "DuckDB" in nodes["device_usage"]["text"] and "Polars" in nodes["device_usage"]["text"]
    # The graph reads left to right in the order data moves, one group per stage.
    xs = [min(g["x"] for g in drawn["groups"] if g["text"].startswith(group)) for group in GROUPS_LEFT_TO_RIGHT]
    assert xs == sorted(xs) and len(set(xs)) == len(xs), dict(zip(GROUPS_LEFT_TO_RIGHT, xs, strict=True))
    assert [
        nodes[a]["x"] for a in ("raw_usage", "device_usage", "usage_features", "usage_model", "usage_predictions")
    ] == sorted(
        nodes[a]["x"] for a in ("raw_usage", "device_usage", "usage_features", "usage_model", "usage_predictions")
    )

    box = page.evaluate("""() => {
      const rs = Array.from(document.querySelectorAll('svg foreignObject.group')).map(f => f.getBoundingClientRect());
      return {x: Math.min(...rs.map(r => r.left)), y: Math.min(...rs.map(r => r.top)),
              r: Math.max(...rs.map(r => r.right)), b: Math.max(...rs.map(r => r.bottom))};
    }""")
    margin = 24
    page.screenshot(
        path=screenshots_dir / "asset-graph.png",
        clip={
            "x": max(box["x"] - margin, 0),
            "y": max(box["y"] - margin, 0),
            "width": box["r"] - box["x"] + 2 * margin,
            "height": box["b"] - box["y"] + 2 * margin,
        },
    )
    page.close()


CHECKS_QUERY = """query ($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetChecksOrError {
  ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } } } } }"""


def test_device_usage_page_shows_its_checks_with_their_latest_results(browser, server):
    import dagster as dg

    from smart_home_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    names = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("device_usage")}
    assert "freshness_check" in names  # the day's deadline (asset_checks/freshness_checks.py) is one of them
    checks = gql(server, CHECKS_QUERY, {"keys": [{"path": ["device_usage"]}]})["assetNodes"][0]
    latest = {
        c["name"]: c["executionForLatestMaterialization"]["status"] for c in checks["assetChecksOrError"]["checks"]
    }
    assert set(latest) == names
    # The fixture's data passes every blocking check (the quality score only warns).
    assert all(
        latest[n] == "SUCCEEDED"
        for n in names
        if graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey("device_usage"), n)).blocking
    ), latest

    page = open_page(browser, server, "/assets/device_usage?view=checks")
    page.get_by_text(f"Checks ({len(names)})").wait_for()
    for name in sorted(names):
        row = page.locator("[class*=checkRow]").filter(has=page.locator(f'[title="{name}"]'))
        row.wait_for()
        shown = row.inner_text()
        assert latest[name].lower() in shown.lower(), (name, latest[name], shown)
    page.close()


def test_sensors_page_shows_both_sensors_running(browser, server):
    from playwright.sync_api import expect

    page = open_page(browser, server, "/automation")
    for name in SENSORS:
        row = page.locator("[data-index]").filter(has=page.locator(f'a[href$="/sensors/{name}"]'))
        row.wait_for()
        # Two checkboxes: the first selects the row, the second is the on/off switch (drawn once the state loads).
        expect(row.locator("input[type=checkbox]")).to_have_count(2, timeout=60_000)
        expect(row.locator("input[type=checkbox]").last).to_be_checked(timeout=60_000)
    for name in SENSORS:
        # The sensor's own page: running, and the daemon has evaluated it (a latest tick).
        page.goto(f"{server['url']}/locations/{LOCATION}/sensors/{name}")
        page.get_by_text("Running", exact=True).first.wait_for()
        page.get_by_text("Latest tick").wait_for()
        ticked = r"Latest tick\s+[A-Z][a-z]{2} \d"  # e.g. "Latest tick  Dec 1, 1:27:05 PM"
        for _ in range(30):  # the daemon ticks each sensor every 15 s
            if re.search(ticked, page.inner_text("body")):
                break
            page.wait_for_timeout(5000)
            page.reload()
            page.get_by_text("Latest tick").wait_for()
        body = page.inner_text("body")
        assert re.search(ticked, body), body[:1500]
    page.close()


METADATA_QUERY = """query ($assetKey: AssetKeyInput!) { assetOrError(assetKey: $assetKey) { ... on Asset {
  assetMaterializations(limit: 1) { runId partition metadataEntries { __typename label
    ... on BoolMetadataEntry { boolValue } ... on FloatMetadataEntry { floatValue }
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url }
    ... on MarkdownMetadataEntry { mdStr } ... on TableSchemaMetadataEntry { schema { columns { name } } } } } } } }"""


def latest_metadata(server, asset: str) -> tuple[str, dict]:
    """(run id, {label: value}) of ``asset``'s latest materialization, through the GraphQL API."""
    found = gql(server, METADATA_QUERY, {"assetKey": {"path": [asset]}})["assetOrError"]["assetMaterializations"]
    assert found, f"{asset} has no materialization"
    values = {}
    for entry in found[0]["metadataEntries"]:
        values[entry["label"]] = next(
            (entry[k] for k in ("boolValue", "floatValue", "intValue", "text", "url", "mdStr") if k in entry), entry
        )
    return found[0]["runId"], values


def test_model_materialization_metadata_in_the_ui(browser, server, screenshots_dir):
    run_id, meta = latest_metadata(server, "usage_model")
    page = open_page(browser, server, "/assets/usage_model?view=events", width=1600, height=1300)
    page.get_by_role("button", name="Hide navigation").click()
    page.get_by_text("Metadata", exact=True).first.wait_for()
    page.get_by_text(f"Materialized in run {run_id[:8]}").wait_for()
    body = page.inner_text("body")
    for label in (
        "model_version",
        "promoted",
        "backtest_mae",
        "backtest_skill",
        "best_baseline_mae",
        "mlflow_run_url",
        "training_rows",
    ):
        assert label in body, label
    assert meta["mlflow_run_id"] in body and meta["decision_reason"] in body
    bottom = page.get_by_text("Tags", exact=True).first.bounding_box()
    page.screenshot(
        path=screenshots_dir / "model-materialization.png",
        clip={"x": 0, "y": 0, "width": 1600, "height": bottom["y"] + bottom["height"] + 16},
    )
    page.close()


def test_graphql_reads_the_models_latest_metadata(server):
    """What a CI job reads before deploying: was the newest model promoted, and with which metrics."""
    import mlflow

    _, meta = latest_metadata(server, "usage_model")
    assert meta["promoted"] is True
    assert 0 < meta["backtest_mae"] < meta["best_baseline_mae"] and meta["backtest_skill"] > 0
    assert meta["champion_version"] == meta["model_version"]
    assert meta["mlflow_run_url"].endswith(f"/runs/{meta['mlflow_run_id']}")
    assert "@" not in meta["mlflow_tracking_uri"]
    # The same numbers as in MLflow itself.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{server['root'] / 'data' / 'mlflow.db'}")
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.metrics["backtest_mae"] == pytest.approx(meta["backtest_mae"])
    assert str(client.get_model_version_by_alias("smart_home_usage", "champion").version) == meta["model_version"]
    # Warehouse tables carry their column schema, and device_usage its quarantine rate and a preview.
    _, clean = latest_metadata(server, "device_usage")
    assert 0 < clean["quarantine_rate"] < 1 and clean["dagster/row_count"] > 0
    assert "| partition_date |" in clean["preview"]


def test_graphql_launches_a_partition_run_and_waits_for_success(server):
    """As an external scheduler would: launch the ingest_and_clean job for one day and wait for it."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClientError

    client = server["client"]
    partition = str(FIRST + dt.timedelta(days=4))
    run_id = client.submit_job_execution(
        "ingest_and_clean", repository_location_name=LOCATION, tags={"dagster/partition": partition}
    )
    status = None
    for _ in range(300):  # the queue, the duckdb pool and the run itself: minutes at most on 2 cores
        try:
            status = client.get_run_status(run_id)
        except DagsterGraphQLClientError:
            status = None
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            break
        time.sleep(2)
    assert status == dg.DagsterRunStatus.SUCCESS, (status, server["log"].read_text()[-3000:])
    # The run wrote that day's device_usage (automation may add later materializations of its own).
    found = gql(
        server,
        """query ($assetKey: AssetKeyInput!, $partitions: [String!]) {
      assetOrError(assetKey: $assetKey) {
      ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } } } }""",
        {"assetKey": {"path": ["device_usage"]}, "partitions": [partition]},
    )["assetOrError"]
    assert {"runId": run_id, "partition": partition} in found["assetMaterializations"]
