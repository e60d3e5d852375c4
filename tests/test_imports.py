"""Every module of nasprune imports on its own, and the packages import each other without
cycles.

The first test imports each module in a fresh state (all ``nasprune`` modules dropped from
``sys.modules`` before each), in one subprocess so the suite pays for one interpreter
start. The second builds the import graph statically with :mod:`ast`: module-level *and*
function-level imports of ``nasprune`` modules (a lazy import inside a function is still a
dependency), skipping ``if TYPE_CHECKING:`` blocks (never run) and the lazy ``__getattr__``
compatibility hooks of package ``__init__`` files (old names kept working on purpose), and
asserts that no two top-level packages (``cli``, ``data``, ``search``, … and the top-level
modules such as ``checkpoint``) depend on each other, directly or through others.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "nasprune"

# Modules that do something when imported, on purpose.
RUNS_ON_IMPORT = {"nasprune.cli.__main__"}  # python -m nasprune.cli: runs the CLI


def _modules() -> dict[str, Path]:
    """Every module under src/nasprune: dotted name -> file."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()

_IMPORT_EACH = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "nasprune" or m.startswith("nasprune.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


@pytest.mark.slow  # ~20 s: every module re-imports its parents from scratch
def test_every_module_imports_on_its_own() -> None:
    names = sorted(set(MODULES) - RUNS_ON_IMPORT)
    assert len(names) > 50 and "nasprune.search.space" in names  # the walk found the tree
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{n}:\n{tb}" for n, tb in failures.items())


# --- the static import graph -------------------------------------------------------------
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, in_init: bool):
    """Import statements under ``node``, outside TYPE_CHECKING blocks and lazy hooks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from (n for stmt in child.orelse for n in _import_nodes_of(stmt, in_init))
            continue
        if (in_init and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                and child.name == "__getattr__"):
            continue  # a package's lazy compatibility hook (old names, on purpose)
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child, in_init)


def _import_nodes_of(stmt: ast.stmt, in_init: bool):
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        yield stmt
    yield from _import_nodes(stmt, in_init)


def _imported_modules(name: str, path: Path) -> set[str]:
    """The nasprune modules that module ``name`` (file ``path``) imports."""
    is_init = path.name == "__init__.py"
    package = name if is_init else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8")), is_init):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from .x import y / from .. import y
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *filter(None, [base])])
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.add(sub if sub in MODULES else base)
    return {m for m in found if m == "nasprune" or m.startswith("nasprune.")}


def _package(module: str) -> str | None:
    """Top-level unit of a module: nasprune.search.space -> search; None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the "module -> module" imports behind that edge."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, path in MODULES.items():
        src = _package(name)
        for target in sorted(_imported_modules(name, path)):
            dst = _package(target)
            # The root package re-exports the public API: an edge to it says nothing about
            # layering (and `import nasprune` alone is how lazy callers reach it).
            if src and dst and src != dst:
                edges[src][dst].append(f"{name} -> {target}")
    return edges


def test_the_graph_sees_module_and_function_level_imports() -> None:
    """The static reading itself: a few imports known to be in the tree."""
    search_run = _imported_modules("nasprune.search.run", MODULES["nasprune.search.run"])
    assert "nasprune.search.space" in search_run or "nasprune.search.study" in search_run
    graph = package_graph()
    assert "errors" in graph["search"] and "train" in graph["cli"]
    # inside run_search_command():
    assert "nasprune.cli.search -> nasprune.search" in graph["cli"]["search"]
    tiny = ast.parse("def f():\n    from nasprune.metrics import size\n"
                     "if TYPE_CHECKING:\n    import nasprune.train\n")
    assert [n.module for n in _import_nodes(tiny, False)] == ["nasprune.metrics"]


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    cycles = _cycles(graph)
    report = []
    for component in cycles:
        report.append(" <-> ".join(component) + ":")
        for a in component:
            for b in component:
                report.extend(f"    {why}" for why in graph.get(a, {}).get(b, []))
    assert not cycles, "import cycles between packages:\n" + "\n".join(report)
