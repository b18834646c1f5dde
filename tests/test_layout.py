"""The package layout holds: the bound code apart from the harness, no import cycle, small modules.

* The core (every module of genbounds/ but the harness `data/`, `train/`, `experiments/` and the
  test namespace `internal.py`) imports neither the harness nor its dependencies (scikit-learn,
  mnist1d, rich, matplotlib): checked in a fresh interpreter that imports every core module.
* No cycle among the module-level imports of genbounds' modules (imports inside functions run
  on first call and do not count), parsed with `ast`.
* No core module is longer than 600 lines.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import genbounds

PACKAGE = Path(genbounds.__file__).resolve().parent
ROOT = PACKAGE.parent
HARNESS = ("data", "train", "experiments")
CORE_PACKAGES = ("core", "files", "losses", "linalg", "network", "bounds", "pacbayes", "measures",
                 "adversarial", "spectra", "cmi",
                 "compression", "verify")
FORBIDDEN = ("sklearn", "mnist1d", "rich", "matplotlib", "genbounds.data", "genbounds.train",
             "genbounds.experiments")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_core(name: str) -> bool:
    parts = name.split(".")
    return not (len(parts) > 1 and (parts[1] in HARNESS or parts[1] == "internal"))


def _core_modules() -> list[str]:
    return [name for name in _all_modules() if _is_core(name)]


def test_every_core_package_is_listed():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages - set(HARNESS) <= set(CORE_PACKAGES), (
        f"a new subpackage {sorted(packages - set(HARNESS) - set(CORE_PACKAGES))}: say here "
        "whether it is core or harness")


def test_core_imports_neither_the_harness_nor_its_dependencies():
    modules = ["genbounds", *(f"genbounds.{p}" for p in CORE_PACKAGES), *_core_modules()]
    code = textwrap.dedent(f"""
        import importlib, json, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print(json.dumps(sorted(m for m in sys.modules
                                if any(m == f or m.startswith(f + ".") for f in {FORBIDDEN!r}))))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "JAX_PLATFORMS": "cpu", "GENBOUNDS_JAX_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the core loaded {loaded}"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import,
             known: set[str]) -> list[str]:
    """The genbounds modules a module-level import statement runs."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    out = []
    for alias in node.names:  # `from pkg import sub` runs the module pkg.sub
        if f"{target}.{alias.name}" in known:
            out.append(f"{target}.{alias.name}")
        elif target in known:
            out.append(target)
    return out


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: its top-level statements and those in
    top-level if/try blocks, but not ``if TYPE_CHECKING:`` blocks nor function bodies."""
    found = []

    def visit(stmts):
        for s in stmts:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                found.append(s)
            elif isinstance(s, ast.If):
                test = ast.unparse(s.test)
                if "TYPE_CHECKING" not in test:
                    visit(s.body)
                visit(s.orelse)
            elif isinstance(s, ast.Try):
                visit(s.body)
                for h in s.handlers:
                    visit(h.body)
                visit(s.orelse)
                visit(s.finalbody)

    visit(tree.body)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _all_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {t for node in _module_level_imports(tree)
                       for t in _resolve(name, is_package, node, known) if t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_cycle_finder_and_resolver_on_a_small_graph():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    known = {"genbounds", "genbounds.core", "genbounds.core._bound", "genbounds.bounds._vc"}
    rel = ast.parse("from ..core import _bound, Bound").body[0]
    assert _resolve("genbounds.bounds._vc", False, rel, known) == [
        "genbounds.core._bound", "genbounds.core"]
    pkg = ast.parse("from ._bound import Bound").body[0]
    assert _resolve("genbounds.core", True, pkg, known) == ["genbounds.core._bound"]
    lazy = ast.parse("import os\nif TYPE_CHECKING:\n    import a\ndef f():\n    import b\n")
    assert [ast.unparse(n) for n in _module_level_imports(lazy)] == ["import os"]


def test_no_module_level_import_cycle():
    cycles = _cycles(_import_graph())
    assert cycles == [], f"module-level import cycles: {cycles}"


def test_no_core_module_is_over_600_lines():
    modules = _all_modules()
    long = {name: n for name in _core_modules()
            if (n := len(modules[name].read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"core modules over {MAX_LINES} lines: {long}"
