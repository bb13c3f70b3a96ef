"""The prediction service's deployment files: the image (deploy/serve/Dockerfile) and its Helm chart
(deploy/k8s/serve/). There is no cluster, no helm binary and usually no Docker daemon here, so:

- the chart is rendered by a small renderer below that knows exactly the template constructs the chart uses (and
  refuses any other), and the Deployment and Service are validated by the `kubernetes` client's own models: what
  a model does not know (a misspelled field) is lost in the round trip and fails the test;
- only where helm is available (a `helm` binary on PATH, or the helm-python-sdk package, Helm's Go SDK) is the
  chart also linted and rendered by Helm and compared with the renderer's output; without it that test is
  skipped, and the tests above it still run;
- the Dockerfile is checked statically, and its HEALTHCHECK command is run against a local HTTP server; the image
  is built and run only where `docker info` reaches a daemon (skipped otherwise).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import uuid
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "serve"
DOCKERFILE = ROOT / "deploy" / "serve" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "serve" / "Dockerfile.dockerignore"
RELEASE = "smart-home-serve"
SERVE = ["smart-home", "serve", "--host", "0.0.0.0", "--port", "8080"]
# What the service reads from the Dagster ConfigMap (the online store comes from a Secret key).
SERVICE_CONFIG = ("MLFLOW_TRACKING_URI", "SMART_HOME_WAREHOUSE_BACKEND", "SMART_HOME_DELTA_URI")


# --- a renderer for the chart's templates ------------------------------------------------------------------------

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)  # {{- trims the whitespace before, -}} after


def lookup(path: str, scope: dict):
    """`.Values.a.b`, `.Release.Name`, `.Chart.Name`: a missing key is an error (helm would print <no value>)."""
    value = scope
    for part in path.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{path}: no such value")
        value = value[part]
    return value


def to_yaml(value) -> str:
    # helm's toYaml: keys sorted, no trailing newline
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).rstrip("\n")


def as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError(f"{value!r} printed as is: use toYaml")


def evaluate(expression: str, scope: dict) -> str:
    """A pipeline of `.Path`, then `quote`, `toYaml`, `nindent N` (first command may be `toYaml .Path`)."""
    commands = [c.split() for c in expression.split("|")]
    first = commands[0]
    if len(first) == 2 and first[0] in ("toYaml", "quote"):
        commands = [[first[1]], [first[0]], *commands[1:]]
    elif len(first) != 1:
        raise ValueError(f"unsupported template command: {expression!r}")
    value = lookup(commands[0][0], scope)
    for command in commands[1:]:
        match command:
            case ["quote"]:
                value = json.dumps(as_text(value))
            case ["toYaml"]:
                value = to_yaml(value)
            case ["nindent", n]:
                value = "\n" + "\n".join(" " * int(n) + line if line else line for line in as_text(value).split("\n"))
            case _:
                raise ValueError(f"unsupported template function {command!r} in {expression!r}")
    return as_text(value)


def render_template(text: str, scope: dict) -> str:
    parts = ACTION.split(text)  # text, (trim left, expression, trim right, text)*
    texts, actions = parts[::4], [parts[i : i + 3] for i in range(1, len(parts), 4)]
    out = []
    for n, (trim_left, expression, trim_right) in enumerate(actions):
        if trim_left:
            texts[n] = texts[n].rstrip()
        if trim_right:
            texts[n + 1] = texts[n + 1].lstrip()
        if expression.startswith("/*"):
            raise ValueError("template comments are not supported")
        out.append(evaluate(expression, scope))
    return "".join(t + v for t, v in zip(texts, out + [""], strict=True))


def chart_scope(values: dict | None = None) -> dict:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return {
        "Values": values if values is not None else yaml.safe_load((CHART / "values.yaml").read_text()),
        "Release": {"Name": RELEASE},
        "Chart": {k[0].upper() + k[1:]: v for k, v in meta.items()},
    }  # .Chart.Name, .Chart.AppVersion


def render_chart() -> list[dict]:
    scope = chart_scope()
    docs = []
    for template in sorted((CHART / "templates").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(render_template(template.read_text(), scope)) if d]
    return docs


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = {d["kind"]: d for d in docs}
    assert len(kinds) == len(docs), "one object of each kind"
    return kinds


class FakeResponse:
    """What ApiClient.deserialize reads: a response with the JSON body in .data."""

    def __init__(self, obj: dict):
        self.data = json.dumps(obj)


def k8s_model(doc: dict, model: str):
    """The object as the kubernetes client's model; what a model lacks (a misspelled field) or types differently
    does not survive the round trip, and neither does a missing required field (the model raises)."""
    api = ApiClient()
    obj = api.deserialize(FakeResponse(doc), model)
    assert api.sanitize_for_serialization(obj) == doc, f"{model}: fields lost or retyped in the round trip"
    return obj


def dagster_manifests() -> dict[str, set[str]]:
    """kind -> names of the ConfigMaps and Secrets of deploy/k8s/smart-home-config.yaml, and their keys."""
    found: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "smart-home-config.yaml").read_text()):
        kind, name = doc["kind"], doc["metadata"]["name"]
        found.setdefault(kind, set()).add(name)
        found[f"{kind}/{name}"] = set(doc.get("data") or doc.get("stringData") or {})
    return found


# --- the chart ---------------------------------------------------------------------------------------------------


def test_the_renderer_refuses_what_it_does_not_know():
    scope = chart_scope({"a": {"b": 1}, "m": {"x": "y"}})
    assert (
        render_template("k: {{ .Values.a.b | quote }}\nm:\n  {{- toYaml .Values.m | nindent 2 }}\n", scope)
        == 'k: "1"\nm:\n  x: y\n'
    )
    for bad in (
        "{{ .Values.missing }}",
        "{{ default 1 .Values.a.b }}",
        "{{ .Values.a.b | upper }}",
        "{{ .Values.m }}",
        '{{ include "x" . }}',
    ):
        with pytest.raises((KeyError, ValueError, TypeError)):
            render_template(bad, scope)


def test_the_deployment_runs_smart_home_serve_with_probes_on_health():
    values = chart_scope()["Values"]
    deployment = k8s_model(by_kind(render_chart())["Deployment"], "V1Deployment")
    assert deployment.metadata.name == RELEASE and deployment.spec.replicas == values["replicaCount"]
    pod = deployment.spec.template
    assert deployment.spec.selector.match_labels.items() <= pod.metadata.labels.items()
    [container] = pod.spec.containers
    assert container.image == f"{values['image']['repository']}:{values['image']['tag']}"
    assert container.command == SERVE and container.args is None
    ports = {p.name: p.container_port for p in container.ports}
    assert ports == {"http": 8080} == {"http": int(container.command[container.command.index("--port") + 1])}
    for name in ("startup_probe", "readiness_probe", "liveness_probe"):
        probe = getattr(container, name)
        assert probe.http_get.path == "/health", name
        assert ports.get(probe.http_get.port, probe.http_get.port) == 8080, name
    window = lambda p: (p.initial_delay_seconds or 0) + p.period_seconds * p.failure_threshold  # noqa: E731
    startup, readiness, liveness = container.startup_probe, container.readiness_probe, container.liveness_probe
    assert window(startup) >= 60  # loading the model takes ~10 s: a slow registry must not kill the pod
    assert window(liveness) > 10 * window(readiness)  # a 503 takes the pod out of the Service long before a restart
    assert container.resources.requests and container.resources.limits["memory"]
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 10001


def test_the_service_sends_port_80_to_the_container_port():
    docs = by_kind(render_chart())
    service = k8s_model(docs["Service"], "V1Service")
    deployment = k8s_model(docs["Deployment"], "V1Deployment")
    ports = {p.name: p.container_port for p in deployment.spec.template.spec.containers[0].ports}
    assert service.spec.type == "ClusterIP"
    [port] = service.spec.ports
    assert port.port == 80 and ports.get(port.target_port, port.target_port) == 8080
    assert service.spec.selector.items() <= deployment.spec.template.metadata.labels.items()


def test_the_service_gets_the_dagster_configuration_and_the_online_store_from_a_secret():
    """The same ConfigMap and Secret as every Dagster component of deploy/k8s/values.yaml, defined in
    deploy/k8s/smart-home-config.yaml; SMART_HOME_ONLINE_STORE (a postgresql:// URL with its password) from a
    Secret key that must exist (not optional: without it the pod does not start, rather than storing the requests
    in a folder that dies with the pod)."""
    container = k8s_model(by_kind(render_chart())["Deployment"], "V1Deployment").spec.template.spec.containers[0]
    dagster = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())["dagsterWebserver"]
    manifests = dagster_manifests()
    config_maps = {e.config_map_ref.name for e in container.env_from if e.config_map_ref}
    secrets = {e.secret_ref.name for e in container.env_from if e.secret_ref}
    assert config_maps == {m["name"] for m in dagster["envConfigMaps"]} and config_maps <= manifests["ConfigMap"]
    assert secrets == {s["name"] for s in dagster["envSecrets"]} and secrets <= manifests["Secret"]
    given = set().union(*(manifests[f"ConfigMap/{name}"] for name in config_maps))
    assert set(SERVICE_CONFIG) <= given
    env = {e.name: e for e in container.env}
    store = env["SMART_HOME_ONLINE_STORE"]
    assert store.value is None and not store.value_from.secret_key_ref.optional
    assert store.value_from.secret_key_ref.name in manifests["Secret"]
    assert env["SMART_HOME_SERVE_POLL_SECONDS"].value == "10"


def helm_render() -> list[dict]:
    """The chart as Helm renders it, once `helm lint --strict` passes (infos allowed, no warning or error); skips
    without a helm binary on PATH or helm-python-sdk (Helm's Go SDK as a library)."""
    if shutil.which("helm"):
        lint = subprocess.run(["helm", "lint", "--strict", str(CHART)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        out = subprocess.run(["helm", "template", RELEASE, str(CHART)], capture_output=True, text=True, check=True)
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    try:
        import helm_python
    except ImportError:
        pytest.skip("neither a helm binary on PATH nor helm-python-sdk: the chart is checked by the renderer only")
    findings = helm_python.lint(str(CHART), strict=True)
    # severities as in helm's lint support package: 1 info, 2 warning, 3 error
    assert not findings["errors"] and all(m["severity"] < 2 for m in findings["messages"]), findings
    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render(name=RELEASE)
    return [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]


def test_helm_lints_and_renders_the_chart_as_the_renderer_does():
    assert by_kind(helm_render()) == by_kind(render_chart())


# --- the image -----------------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()
    ]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def copied_sources() -> list[str]:
    return [src.rstrip("/") for args in instructions("COPY") for src in shlex.split(args)[:-1]]


def test_the_dockerfile_installs_the_locked_project_and_serves_as_a_user():
    assert instructions("FROM") == ["python:3.11-slim"]
    runs = instructions("RUN")
    assert any(re.search(r"pip install (.* )?-r requirements\.lock", r) for r in runs)
    assert any(re.search(r"pip install --no-deps \.(\s|$)", r) for r in runs)
    # the lock is installed before the project is copied (cached layer) and after it is copied itself
    order = [(i, a) for i, a in dockerfile() if i in ("COPY", "RUN")]
    lock_install = next(n for n, (i, a) in enumerate(order) if "requirements.lock" in a and i == "RUN")
    assert all("smart_home_assets" not in a for _, a in order[:lock_install])
    assert instructions("USER")[-1] not in ("root", "0") and dockerfile()[-1][0] == "CMD"
    assert dockerfile().index(("USER", instructions("USER")[-1])) > max(
        n for n, (i, _) in enumerate(dockerfile()) if i == "RUN"
    )  # nothing runs as root after it
    assert instructions("EXPOSE") == ["8080"]
    assert json.loads(instructions("CMD")[-1]) == SERVE
    [check] = instructions("HEALTHCHECK")
    assert "urllib" in check and "http://127.0.0.1:8080/health" in check


def test_the_image_gets_what_the_package_build_needs_and_the_context_leaves_the_rest_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "requirements.lock", project["project"]["readme"]}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    sources = copied_sources()
    assert needed <= set(sources), needed - set(sources)
    assert all((ROOT / s).exists() for s in sources)
    rules = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for excluded in (".git", ".venv", ".venv-moto", "data", "dagster_home/storage", "bench/results"):
        assert any(fnmatch(excluded, rule) for rule in rules if not rule.startswith("!")), excluded
    for source in sources:
        assert not any(fnmatch(source, rule) for rule in rules), f"{source} is copied but ignored"


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


def test_the_healthcheck_fails_on_503_and_on_no_answer():
    """The HEALTHCHECK's own command, pointed at a local server on a free port instead of 8080."""
    command = json.loads(instructions("HEALTHCHECK")[0].split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def probe() -> int:
        return subprocess.run(
            [sys.executable, "-c", command[2].replace(":8080/", f":{port}/")], capture_output=True, timeout=30
        ).returncode

    try:
        Health.status = 200
        assert probe() == 0
        Health.status = 503
        assert probe() != 0
    finally:
        server.shutdown()
        server.server_close()
    assert probe() != 0  # nothing listens any more


def docker_daemon() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not docker_daemon(),
    reason="no Docker daemon reachable (docker info fails): the image is built only where Docker is available",
)
def test_the_image_builds_and_runs_smart_home_serve(tmp_path):
    """With BuildKit (docker buildx) the build context is the repository root, filtered by Dockerfile.dockerignore;
    the legacy builder does not read that file, so it gets a context of only the files the Dockerfile copies."""
    image = f"smart-home-serve:test-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        context = ROOT
    else:
        context = tmp_path / "context"
        context.mkdir()
        for source in copied_sources():
            (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, context / source)
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", image, str(context)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        user = subprocess.run(["docker", "run", "--rm", image, "id", "-u"], capture_output=True, text=True, timeout=120)
        assert user.stdout.strip() == "10001", user.stderr
        run = subprocess.run(
            ["docker", "run", "--rm", image, "smart-home", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0 and "--port" in run.stdout, run.stdout + run.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
