"""Task definitions of the installed lm-eval package, read as data without running its task code.

lm-eval ships benchmark prompts as YAML task files and, for generated tasks such as RULER, as
constants in Python modules. Importing those modules would run their set-up code (downloads,
word lists of millions of entries), so this module finds the package with ``importlib`` and reads
the files: YAML through a safe loader that keeps ``!function`` tags as plain strings and merges
``include:`` files the way lm-eval does (the including file's keys win), Python through ``ast``
(literal constants only). Every failure names the lm-eval version and the file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ropeext.errors import RopeextError

PACKAGE = "lm_eval"


@lru_cache(maxsize=1)
def package_dir() -> Path:
    """The folder of the installed ``lm_eval`` package (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RopeextError(f"lm-eval is not installed (no importable package {PACKAGE!r}); install the version "
                           "pinned in requirements.lock, or choose another prompt source")
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def version() -> str:
    for dist in ("lm_eval", "lm-eval"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def label() -> str:
    return f"lm-eval {version()}"


def error(path: Path | str, what: str) -> RopeextError:
    """A RopeextError naming the lm-eval version and the file it concerns."""
    return RopeextError(f"{label()}: {relative(path)}: {what}")


def relative(path: Path | str) -> str:
    """``lm_eval/...`` for a file inside the package, else the path as given."""
    path = Path(path)
    try:
        return str(Path(PACKAGE) / path.relative_to(package_dir()))
    except ValueError:
        return str(path)


def task_file(folder: str, name: str) -> Path:
    """``lm_eval/tasks/<folder>/<name>``; fails naming the version and the file when it is absent."""
    path = package_dir() / "tasks" / folder / name
    if not path.is_file():
        raise error(path, "not found (this lm-eval version does not ship the file these prompts are read from)")
    return path


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that keeps ``!function module.name`` as the string ``module.name``."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_yaml(path: Path, _seen: tuple = ()) -> dict:
    """A task YAML with its ``include:`` files merged under it (shallowly; the file's own keys win)."""
    if path in _seen:
        raise error(path, "include cycle")
    if not path.is_file():
        raise error(path, "not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(path, f"cannot parse YAML ({exc})") from None
    if not isinstance(data, dict):
        raise error(path, f"expected a mapping, got {type(data).__name__}")
    includes = data.pop("include", None)
    if includes is None:
        return data
    merged: dict = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        merged.update(read_yaml(path.parent / str(inc), _seen + (path,)))
    merged.update(data)
    return merged


def parse_module(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise error(path, f"cannot parse ({exc})") from None


def module_constant(path: Path, name: str) -> Any:
    """The literal value of the top-level assignment ``name = <literal>`` in a Python file."""
    for node in parse_module(path).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise error(path, f"{name} is not a literal constant") from None
    raise error(path, f"no top-level constant {name}")


def function_def(module: ast.Module, name: str, path: Path) -> ast.FunctionDef:
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise error(path, f"no function {name}()")
