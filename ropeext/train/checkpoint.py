"""Training checkpoints that a crash can never leave half-taken.

Layout of one checkpoint (``<dir>/step-0000040/``)::

    model.pt         the unwrapped model's state dict (bf16 weights in precision ``bf16``)
    masters.pt       fp32 master weights (precision ``bf16`` only)
    optimizer.pt     the optimizer's state dict (fp32 moments, step counts)
    rng-<rank>.pt    python, numpy, torch CPU and (where present) CUDA generator states of each process
    state.json       steps done (= data position, batches are a pure function of the step), tokens
                     seen, per-step loss history, the settings that shaped the run
    manifest.json    written last: every file above with its size

Everything is written under ``step-0000040.tmp`` and the folder is renamed when the manifest is on
disk. A folder counts as complete only when its name has no suffix, its manifest parses and every
file has the size the manifest gives, so neither a killed writer nor a truncated copy is ever
resumed from. Under FSDP or DeepSpeed the engine's own sharded ``save_state`` takes the place of
model.pt / optimizer.pt inside the same folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ropeext.errors import RopeextError

FORMAT = 1
_NAME = re.compile(r"^step-(\d{7})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoints_dir_for(output: str | Path) -> Path:
    """Where the checkpoints of a run writing ``output`` live: ``OUTPUT.checkpoints`` beside it.

    A sibling, not a child: the final model folder is written as OUTPUT.partial and renamed, and
    Snakemake deletes a failed job's declared output (OUTPUT) before rerunning it.
    """
    output = Path(output)
    return output.with_name(output.name + ".checkpoints")


# ----------------------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """Every generator a training step may draw from, in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------------- discovery


@dataclass
class Found:
    path: Path
    step: int
    state: dict


def _complete(path: Path) -> dict | None:
    """The state of a complete checkpoint folder, or None."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        for name, size in manifest["files"].items():
            if (path / name).stat().st_size != size:
                return None
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state.get("format") != FORMAT:
        return None
    return state


def list_checkpoints(directory: str | Path) -> list[Found]:
    """Complete checkpoints under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if not (m and p.is_dir()):
            continue
        state = _complete(p)
        if state is not None and state.get("step") == int(m.group(1)):
            found.append(Found(p, int(m.group(1)), state))
    return sorted(found, key=lambda f: f.step)


def latest_checkpoint(directory: str | Path) -> Found | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def clear_incomplete(directory: str | Path) -> list[Path]:
    """Remove leftovers of interrupted writes (``*.tmp`` folders, folders failing their manifest)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    complete = {f.path for f in list_checkpoints(directory)}
    removed = []
    for p in directory.iterdir():
        if p.is_dir() and p not in complete and (p.name.endswith(".tmp") or _NAME.match(p.name)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def prune(directory: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints (``keep`` <= 0 keeps all)."""
    if keep <= 0:
        return
    for f in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(f.path, ignore_errors=True)


# ------------------------------------------------------------------------------- write / read


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def begin(directory: Path, step: int, *, is_main: bool) -> Path:
    """Create (on the main process) the empty temporary folder for the checkpoint of ``step``."""
    tmp = directory / (checkpoint_name(step) + ".tmp")
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    return tmp


def write_rank_files(tmp: Path, rank: int) -> None:
    _save(rng_state(), tmp / f"rng-{rank}.pt")


def write_main_files(
    tmp: Path, *, model_state: dict | None, optimizer_state: dict | None, masters: list | None, state: dict
) -> None:
    if model_state is not None:
        _save(model_state, tmp / "model.pt")
    if optimizer_state is not None:
        _save(optimizer_state, tmp / "optimizer.pt")
    if masters is not None:
        _save([m.detach() for m in masters], tmp / "masters.pt")
    (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **state}, indent=1))


def finish(tmp: Path, step: int, keep: int) -> Path:
    """Write the manifest, rename the folder into place, prune old checkpoints (main process only)."""
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = tmp / "manifest.json"
    with open(manifest, "w") as fh:
        json.dump({"format": FORMAT, "step": step, "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    final = tmp.with_name(checkpoint_name(step))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(final.parent)
    prune(final.parent, keep)
    return final


def load(path: Path, name: str):
    file = path / name
    if not file.is_file():
        return None
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is a user-visible problem
        raise RopeextError(
            f"checkpoint file {file} cannot be read ({exc}); delete {path} to resume from an older checkpoint"
        ) from None


def load_rng(path: Path, rank: int) -> dict | None:
    own = load(path, f"rng-{rank}.pt")
    return own if own is not None else load(path, "rng-0.pt")
