"""Imports stand at the top of each module, and the package's modules import one another without a circle.

An import inside a function is allowed only for a dependency that must stay lazy (heavy to import, such
as torch or a package module that imports torch at its top while ``ropeext --help`` imports every
command; or optional), and a comment on that line or the line above says why. The circle scan counts
imports wherever they stand, so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ropeext"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / "ropeext").rglob("*.py"))}


def _targets(node: ast.AST, name: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules an import statement names (``from a import b`` names ``a.b`` where it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = name if is_package else name.rpartition(".")[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    subs = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
    return subs or [module]


def _commented_block(lines: list[str], index: int) -> bool:
    """A comment among the import and comment lines right above line ``index`` (0-based): the why of a lazy
    import block, whose imports a sorter may reorder under it."""
    for text in reversed(lines[:index]):
        text = text.strip()
        if text.startswith("#"):
            return True
        if not text.startswith(("import ", "from ")):
            return False
    return False


def _scan(root: Path):
    """(graph of package-internal imports, imports found inside functions or classes)."""
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    nested: list[tuple[Path, int, str, bool]] = []
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        top = {id(n) for n in tree.body}
        for stmt in tree.body:  # `if TYPE_CHECKING:` / `try: import x except ImportError:` at the top count as top
            if isinstance(stmt, (ast.If, ast.Try)):
                top |= {id(n) for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = _targets(node, name, path.name == "__init__.py", known)
            internal = [t for t in targets if t == "ropeext" or t.startswith("ropeext.")]
            graph[name] |= {t for t in internal if t in known and t != name}
            if id(node) not in top:
                line = node.lineno
                said = "#" in lines[line - 1] or _commented_block(lines, line - 1)
                nested.append((path, line, ",".join(targets), not said))
    return graph, nested


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return found


def test_no_import_circles():
    graph, _ = _scan(REPO)
    assert len(graph) > 40  # the scan covers the package
    circles = _circles(graph)
    assert not circles, "modules importing one another in a circle:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_imports_stand_at_the_top():
    _, nested = _scan(REPO)
    bad = [f"{p.relative_to(REPO)}:{line} imports {what}" for p, line, what, wrong in nested if wrong]
    assert not bad, (
        "imports inside functions without a comment saying why they must stay lazy (heavy or optional):\n"
        + "\n".join(bad)
    )


def test_the_scan_finds_circles_and_nested_imports(tmp_path):
    """The checker itself: a circle hidden in a function, and an unexplained lazy import, are reported."""
    pkg = tmp_path / "ropeext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ropeext.b import g\n\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from ropeext import a\n    import json\n    return a, json\n")
    (pkg / "c.py").write_text(
        "def h():\n    # heavy: imported only when plotting\n    import matplotlib\n    return matplotlib\n"
    )
    graph, nested = _scan(tmp_path)
    assert _circles(graph) == [["ropeext.a", "ropeext.b"]]
    flagged = {(p.name, what) for p, _, what, wrong in nested if wrong}
    assert flagged == {("b.py", "ropeext.a"), ("b.py", "json")}
    assert ("c.py", "matplotlib") in {(p.name, what) for p, _, what, _ in nested}
