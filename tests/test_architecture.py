"""The layout's rules (docs/architecture.md), checked on the source: imports run one way, from the pure library up
to the tools, with no cycle; the pure library imports no Dagster; the code location imports no tool."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("smart_home_assets", "asset_checks", "resources", "smart_home_tools")
# Lower layers never import higher ones (0 is the bottom).
LAYERS = {"lib": 0, "resources": 1, "assets and checks": 2, "definitions": 3, "tools": 4}


def layer(module: str) -> str:
    if module.startswith("smart_home_assets.lib"):
        return "lib"
    if module.split(".")[0] == "resources":
        return "resources"
    if module == "smart_home_assets.definitions":
        return "definitions"
    if module.split(".")[0] == "smart_home_tools":
        return "tools"
    return "assets and checks"  # smart_home_assets.* (assets, sensors, automation, ...), asset_checks.*


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (a lazy import is still a dependency)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def project_edges() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path) if m in known and m != name} for name, path in known.items()}


def test_imports_never_point_up_a_layer():
    upward = [
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in project_edges().items()
        for target in sorted(targets)
        if LAYERS[layer(target)] > LAYERS[layer(source)]
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = {
        source: {t for t in targets if not source.startswith(t + ".")}  # a module importing its own package
        for source, targets in project_edges().items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_pure_library_imports_no_dagster():
    offending = [
        f"{name} imports {m}"
        for name, path in modules().items()
        if layer(name) == "lib"
        for m in sorted(imports(path))
        if m.split(".")[0].startswith("dagster")
    ]
    assert not offending, "\n".join(offending)
    # and at run time: importing every library module loads no Dagster module
    script = (
        "import importlib, sys\n"
        + "".join(f"importlib.import_module({name!r})\n" for name in modules() if layer(name) == "lib")
        + "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


@pytest.mark.parametrize(
    "module, expected",
    [
        ("smart_home_assets.lib.cleaning", "lib"),
        ("resources.warehouse", "resources"),
        ("smart_home_assets.assets.usage", "assets and checks"),
        ("asset_checks.feature_checks", "assets and checks"),
        ("smart_home_assets.definitions", "definitions"),
        ("smart_home_tools.cli", "tools"),
    ],
)
def test_layers_are_named_by_package(module, expected):
    assert layer(module) == expected


def test_an_upward_import_would_be_caught(tmp_path, monkeypatch):
    """The rule is not vacuous: a library module importing a resource is reported."""
    fake = tmp_path / "smart_home_assets" / "lib"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from resources.warehouse import DuckDBWarehouse\n")
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "warehouse.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"smart_home_assets.lib.bad \(lib\) imports resources.warehouse"):
        test_imports_never_point_up_a_layer()
