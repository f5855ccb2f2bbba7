"""The code's shape: no import cycles between dagnn's own modules, and no module too long to read.

import-linter (pyproject.toml) checks the layers between the three packages, but its graph, like Python
itself, tolerates a cycle hidden behind imports inside functions. Such a cycle still ties the modules
together (neither can be understood, tested or moved without the other), so this check counts every import
statement, wherever it is, except those under ``if TYPE_CHECKING:``, which never run. Imports made by
``importlib`` (the lazy attributes of ``dagnn_runtime/__init__.py``) are not statements and do not count.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"dagnn_runtime": REPO / "runtime", "dagnn_export": REPO / "dagnn_export", "dagnn_cli": REPO / "cli"}
MAX_LINES = 300


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name → file, for every ``.py`` file of the packages (a folder's ``__init__.py`` is the package)."""
    found = {}
    for name, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((name, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, outside ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node, module: str, is_package: bool, known) -> set[str]:
    """The modules of ``known`` that one import statement in ``module`` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:max(0, len(base) - (node.level - 1))]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module
    targets = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        # `from pkg import sub` imports the submodule; `from pkg import name` runs (and needs) pkg/__init__
        targets.add(submodule if submodule in known else source)
    return targets & known


def import_graph(packages: dict[str, Path]) -> dict[str, dict[str, list[str]]]:
    """module → {imported module → ["file:line", ...]} for the imports between the packages' own modules.
    Importing ``a.b.c`` counts as importing ``a.b.c`` only: the parents Python runs first are not edges, or
    every package that imports its submodules would be a cycle."""
    files = module_files(packages)
    known = set(files)
    graph: dict[str, dict[str, list[str]]] = {name: {} for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            where = path.relative_to(packages[name.split(".")[0]].parent).as_posix()
            for target in _targets(node, name, path.name == "__init__.py", known) - {name}:
                graph[name].setdefault(target, []).append(f"{where}:{node.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(graph, component: list[str]) -> str:
    members = set(component)
    edges = [f"    {a} -> {b} ({', '.join(graph[a][b])})" for a in component for b in sorted(graph[a]) if b in members]
    return f"  {', '.join(component)}:\n" + "\n".join(edges)


def test_no_import_cycles_counting_imports_inside_functions():
    graph = import_graph(PACKAGES)
    assert len(graph) > 50 and graph["dagnn_export.train"], "the checker found too few modules or imports"
    found = cycles(graph)
    assert not found, "import cycles (imports inside functions included):\n" + "\n".join(
        describe(graph, c) for c in found)


def test_no_module_over_300_lines():
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines())
               for path in module_files(PACKAGES).values()}
    long = sorted(f"{path.relative_to(REPO)} ({n} lines)" for path, n in lengths.items() if n > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them by what they are for): " + ", ".join(long)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cycle_check_catches_a_cycle_behind_function_level_imports(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "def f():\n    from .b import g\n    return g\n",
        "b.py": "def g():\n    from . import a\n    return a\n",
        "c.py": "from .a import f\n",
    })
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.a"] == {"pkg.b": ["pkg/a.py:2"]} and graph["pkg.b"] == {"pkg.a": ["pkg/b.py:2"]}
    found = cycles(graph)
    assert found == [["pkg.a", "pkg.b"]]
    assert "pkg.a -> pkg.b (pkg/a.py:2)" in describe(graph, found[0])


def test_cycle_check_skips_type_checking_and_importlib_but_counts_the_package_init(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "import importlib\nfrom .sub import x\n"
                       "def __getattr__(n):\n    return importlib.import_module('.a', __name__)\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import g\nelse:\n    g = None\n",
        "b.py": "from .a import g\n",
        "sub/__init__.py": "x = 1\n",
        "sub/deep.py": "def h():\n    from .. import a, b\n    from ..sub import x\n",
    })
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg"] == {"pkg.sub": ["pkg/__init__.py:2"]} and graph["pkg.a"] == {}
    assert set(graph["pkg.sub.deep"]) == {"pkg.a", "pkg.b", "pkg.sub"}
    assert cycles(graph) == []
    # `from .. import name` (not a submodule) runs the package's __init__, which imports sub: a real cycle
    _write(tmp_path / "pkg", {"sub/__init__.py": "from .. import importlib\nx = 1\n"})
    assert cycles(import_graph({"pkg": tmp_path / "pkg"})) == [["pkg", "pkg.sub"]]
