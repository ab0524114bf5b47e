"""Layers point down: nothing below the command layer imports ``ropeext.commands`` or ``ropeext.cli``.

The scan reads every module's syntax tree, so it sees imports inside functions (the lazy imports
the package uses everywhere) as well as module-level ones, relative imports (resolved against the
module's package) and ``importlib.import_module("ropeext.commands...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ropeext"
FORBIDDEN = ("ropeext.commands", "ropeext.cli")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from ropeext import commands`` / ``from ropeext import cli``
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def _lower_modules() -> list[Path]:
    return [
        p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "cli.py" and PACKAGE / "commands" not in p.parents
    ]


def _violations(paths, root: Path = REPO) -> list[str]:
    out = []
    for path in paths:
        for line, name in _imported_names(path, root):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                out.append(f"{path.relative_to(root)}:{line} imports {name}")
    return out


def test_nothing_below_the_commands_imports_them():
    paths = _lower_modules()
    assert len(paths) > 40  # the scan really covers the package
    bad = _violations(paths)
    assert not bad, "lower layers import the command layer:\n" + "\n".join(bad)


def test_the_scan_catches_every_import_form(tmp_path):
    """The checker itself: each way of importing the command layer is reported."""
    pkg = tmp_path / "ropeext" / "eval"
    pkg.mkdir(parents=True)
    (tmp_path / "ropeext" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    forms = {
        "top.py": "import ropeext.commands._common\n",
        "inner.py": "def f():\n    from ropeext.commands._common import read_json\n",
        "relative.py": "def f():\n    from ..commands import solve\n",
        "package.py": "from ropeext import cli\n",
        "dynamic.py": "import importlib\nimportlib.import_module('ropeext.commands.solve')\n",
        "fine.py": "from ropeext.io import read_json\nimport ropeext.config\n",
    }
    for name, text in forms.items():
        (pkg / name).write_text(text)
    bad = _violations(sorted(pkg.glob("*.py")), root=tmp_path)
    flagged = {line.split(":")[0].rsplit("/", 1)[-1] for line in bad}
    assert flagged == set(forms) - {"fine.py"}, bad
