"""The checks' registry and aggregator: ``@check`` registers a function of the resolved config yielding
problem messages in ``CHECKS``, in the order they run; ``problems`` runs them, ``raise_problems`` raises them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

from ropeext.errors import RopeextError


@dataclass(frozen=True)
class Check:
    name: str  # what it looks at (config keys)
    rejects: str  # one line: what it rejects
    paths: bool  # whether it reads the file system
    run: Callable[[dict], Iterable[str]]  # the problems it finds in a resolved config


CHECKS: list[Check] = []


def check(name: str, rejects: str, *, paths: bool = False):
    """Register a check: a function of the resolved config yielding problem messages."""

    def register(fn):
        CHECKS.append(Check(name, rejects, paths, fn))
        return fn

    return register


def selected_checks(config: dict) -> list[Check]:
    """The checks that run for ``config``: all of them, or the value checks alone without ``check_paths``."""
    with_paths = config.get("check_paths", True)
    return [c for c in CHECKS if with_paths or not c.paths]


def problems(config: dict, checks: Iterable[Check] | None = None) -> list[str]:
    """Every problem the checks (``checks``, or those ``selected_checks`` picks) find in a resolved config
    (``ropeext.config.resolve_config``)."""
    found: list[str] = []
    for c in selected_checks(config) if checks is None else checks:
        try:
            found.extend(c.run(config))
        except RopeextError as exc:
            found.append(f"{c.name}: {exc}")
        except OSError as exc:
            found.append(f"{c.name}: {exc.filename or ''} {exc.strerror or exc}".strip())
    return found


def raise_problems(config: dict, source: str = "config", checks: Iterable[Check] | None = None) -> None:
    """One RopeextError listing every problem of ``config`` (of ``checks`` alone when given); nothing when
    there is none."""
    found = problems(config, checks)
    if found:
        lines = "\n  - ".join(found)
        raise RopeextError(
            f"{source}: {len(found)} problem{'s' * (len(found) != 1)} found before any job runs "
            f"(`ropeext check --config FILE` lists them too):\n  - {lines}"
        )


def head_dim(config: dict) -> int:
    """The head dimension of model.architecture."""
    arch = config["model"]["architecture"]
    return arch["hidden_size"] // arch["num_attention_heads"]


def offline() -> bool:
    """Whether downloads are off (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or HF_DATASETS_OFFLINE)."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    )
