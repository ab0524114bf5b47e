"""Where a model runs, in which precision, and how long a sequence it was made for: what every evaluation
asks first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ropeext.errors import RopeextError


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None): cuda when available, else cpu; a named CUDA device must exist."""
    # heavy: torch loads only when a device is picked for a model
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RopeextError(f"--device {device}: CUDA is not available on this machine")
    return device


def model_window(config) -> int | None:
    """A transformers config's ``max_position_embeddings`` (None when it has none)."""
    window = getattr(config, "max_position_embeddings", None)
    return int(window) if window else None


# ----------------------------------------------------------------------------------------- evaluation precision
EVAL_DTYPES = ("auto", "float32", "bfloat16", "float16")
# CPU flags (Linux /proc/cpuinfo) of units that compute bf16 matrix products natively: AMX tiles, AVX-512 BF16
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class DeviceFacts:
    """What decides whether a device computes bf16 natively: its kind and, per kind, the one fact that tells."""

    device: str  # "cpu", "cuda", "cuda:1", "mps", ...
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported() on that CUDA device
    cpu_flags: frozenset[str] = frozenset()  # the CPU's feature flags


def choose_eval_dtype(setting: str, facts: DeviceFacts) -> dict:
    """The dtype an evaluation's forward passes run in, from ``eval.dtype`` and the device.

    Returns ``{"setting", "dtype", "reason"}``. ``auto`` picks bfloat16 where the device computes it
    natively (a CUDA device with bf16 support; a CPU with AMX-BF16 or AVX512-BF16) and float32 elsewhere,
    where bf16 would be emulated and slower; any other setting is taken as given.
    """
    if setting not in EVAL_DTYPES:
        raise RopeextError(f"eval.dtype: {setting!r} is not one of {', '.join(EVAL_DTYPES)}")
    native = native_bf16(facts)
    if setting != "auto":
        caveat = " (no native bf16 on this device: emulated, slower)" if setting == "bfloat16" and not native else ""
        return {"setting": setting, "dtype": setting, "reason": f"set: {setting}{caveat}"}
    dtype = "bfloat16" if native else "float32"
    return {"setting": "auto", "dtype": dtype, "reason": f"auto: {native or 'no native bf16'}"}


def choose_train_precision(setting: str, facts: DeviceFacts) -> tuple[str, str]:
    """(precision, reason) of a training run from ``pretrain.precision`` / ``finetune.precision``: ``auto`` is
    bf16-mixed where the device computes bf16 natively and fp32 elsewhere; any other setting is taken as given."""
    if setting != "auto":
        return setting, f"set: {setting}"
    native = native_bf16(facts)
    return ("bf16-mixed", f"auto: {native}") if native else ("fp32", "auto: no native bf16")


def native_bf16(facts: DeviceFacts) -> str:
    """Why the device computes bf16 natively ("cuda bf16", "amx_bf16, avx512_bf16"), or "" when it does not."""
    kind = facts.device.split(":", 1)[0]
    if kind == "cuda":
        return "cuda bf16" if facts.cuda_bf16 else ""
    if kind == "cpu":
        return ", ".join(f for f in BF16_CPU_FLAGS if f in facts.cpu_flags)
    return ""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of a Linux ``/proc/cpuinfo`` text (its first ``flags`` line; every core lists the same)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def device_facts(device: str) -> DeviceFacts:
    """The facts ``choose_eval_dtype`` reads, of a resolved device ("cpu", "cuda", "cuda:1", ...)."""
    # heavy: torch loads only when a model runs
    import torch

    if device.startswith("cuda"):
        return DeviceFacts(device, cuda_bf16=bool(torch.cuda.is_bf16_supported()))
    if device == "cpu":
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no flags, so auto stays float32
            text = ""
        return DeviceFacts(device, cpu_flags=cpu_flags(text))
    return DeviceFacts(device)


def eval_precision(setting: str, device: str) -> dict:
    """``choose_eval_dtype`` on this machine's facts for ``device`` (resolved, e.g. "cpu" or "cuda")."""
    return choose_eval_dtype(setting, device_facts(device))


def precision_params(precision: dict) -> dict:
    """A precision (``choose_eval_dtype``) as the MLflow params of an evaluation run."""
    return {
        "eval.dtype": precision["setting"],
        "eval.dtype_resolved": precision["dtype"],
        "eval.dtype_reason": precision["reason"],
    }


def given_precision(dtype: str, precision: dict | None = None) -> dict:
    """``precision`` when given (``choose_eval_dtype``), else ``dtype`` as set explicitly: what a library evaluation
    that takes either records."""
    return precision or {"setting": dtype, "dtype": dtype, "reason": f"set: {dtype}"}
