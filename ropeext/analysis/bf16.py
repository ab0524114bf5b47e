"""BF16 relative-position analysis of one model: how much a position shift changes attention.

The same sequences run with ``position_ids = arange(T) + delta``; post-RoPE q and k of every layer are
compared between two shifts: 1. ``shift``: D(delta1, delta2) = sum over layers and heads of
sum_j mean_{i>=j} |P_ij(delta1) - P_ij(delta2)| (column variant; row variant: sum_i mean_{j<=i});
2. ``key_columns``: the column variant at (delta_decompose, delta2) split by key j; 3. ``logits``:
D_logit(T) on pre-softmax logits for the first key and the key at T // 2. Settings: bf16, the same
weights in fp32, a random bf16 copy, and float64 with exact angles (where every deviation must vanish).
Only the reference run's q and k are kept (on the CPU); no T x T matrix of more than one head and block
of query rows ever exists.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from ropeext.analysis.capture import capture_qk, exact_rope_angles
from ropeext.analysis.deviation import check_path, key_logits, layer_deviation, logit_deviation
from ropeext.errors import RopeextError
from ropeext.modeling import load_causal_lm
from ropeext.runtime import resolve_device

# name -> (dtype, weights, exact RoPE angles)
SETTINGS = {
    "bf16": (torch.bfloat16, "pretrained", False),
    "fp32": (torch.float32, "pretrained", False),
    "random-bf16": (torch.bfloat16, "random", False),
    "fp64-exact": (torch.float64, "pretrained", True),
}

# the numeric path's natural attention implementation for the forward pass itself
FORWARD_ATTENTION = {"fa2-like": "sdpa", "eager-bf16": "eager"}


@dataclass
class Spec:
    """What to measure. ``length`` and ``logit_lengths`` are already fitted to the model's window."""

    length: int
    deltas: list[int]
    delta_ref: int = 16
    delta_decompose: int = 0
    logit_lengths: list[int] = field(default_factory=list)
    path: str = "fa2-like"
    chunk_size: int = 512
    forward_attention: str | None = None  # None: FORWARD_ATTENTION[path]

    def __post_init__(self):
        check_path(self.path)
        if self.chunk_size < 1:
            raise RopeextError(f"--chunk-size: must be a positive number of query rows, got {self.chunk_size}")
        if any(d < 0 for d in self.deltas + [self.delta_ref, self.delta_decompose]):
            raise RopeextError(
                f"--deltas: position shifts must be >= 0, got {self.deltas} (reference {self.delta_ref})"
            )
        if self.delta_decompose not in self.deltas:
            self.deltas = sorted(set(self.deltas) | {self.delta_decompose})
        if self.forward_attention is None:
            self.forward_attention = FORWARD_ATTENTION[self.path]

    @property
    def max_length(self) -> int:
        return max([self.length, *self.logit_lengths])


def fit_lengths(
    requested: int, window: int | None, logit_lengths: list[int] | None = None, smallest_logit_length: int = 64
) -> tuple[int, list[int], list[str]]:
    """Fit T and the D_logit lengths to the model's window; return (T, lengths, notes).

    Default D_logit lengths: 64, 128, ... up to the window (the window itself last if it is no
    power-of-two multiple of 64), or up to T when the window is unknown.
    """
    notes = []
    if requested < 2:
        raise RopeextError(f"--length: must be at least 2, got {requested}")
    length = requested
    if window is not None and requested > window:
        length = window
        notes.append(f"requested T={requested} exceeds the model's window {window}; T={window} is used")
    top = window if window is not None else length
    if logit_lengths is None:
        logit_lengths = []
        t = smallest_logit_length
        while t <= top:
            logit_lengths.append(t)
            t *= 2
        if not logit_lengths or logit_lengths[-1] != top:
            logit_lengths.append(top)
    else:
        too_long = [t for t in logit_lengths if t > top]
        if too_long:
            notes.append(f"D_logit lengths {too_long} exceed the model's window {top} and are skipped")
        logit_lengths = sorted({t for t in logit_lengths if t <= top})
        bad = [t for t in logit_lengths if t < 2]
        if bad:
            raise RopeextError(f"--logit-lengths: lengths must be at least 2, got {bad}")
    return length, logit_lengths, notes


def _forward(model, ids: torch.Tensor, delta: int) -> None:
    """The decoder stack without the LM head (a T x vocab logits matrix is never needed)."""
    positions = torch.arange(ids.shape[-1], device=ids.device)[None] + delta
    model.base_model(input_ids=ids, position_ids=positions, use_cache=False)


class _ShiftSinks:
    """Reference run: keep each layer's q, k on the CPU. Other runs: compare layer by layer."""

    def __init__(self, spec: Spec, device: torch.device):
        self.spec = spec
        self.device = device
        self.reference: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.results: dict[int, object] = {}

    def store(self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        self.reference[layer] = (q[0].detach().to("cpu", copy=True), k[0].detach().to("cpu", copy=True))

    def compare(self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        ref_q, ref_k = self.reference[layer]
        self.results[layer] = layer_deviation(
            q[0],
            k[0],
            ref_q.to(self.device),
            ref_k.to(self.device),
            scale=scale,
            path=self.spec.path,
            chunk_size=self.spec.chunk_size,
        )


def measure_shift(model, sequences: torch.Tensor, spec: Spec, progress: Callable[[str], None] | None = None) -> dict:
    """Measurements 1 and 2 on ``sequences`` (N, >= T) cut to ``spec.length``."""
    device = next(model.parameters()).device
    n = sequences.shape[0]
    length = spec.length
    n_layers = model.config.num_hidden_layers
    column = np.zeros((n, len(spec.deltas), n_layers))
    row = np.zeros((n, len(spec.deltas), n_layers))
    contribution = np.zeros(length)
    sinks = _ShiftSinks(spec, device)
    for s in range(n):
        ids = sequences[s : s + 1, :length].to(device)
        sinks.reference.clear()
        with capture_qk(model, sinks.store, inner=spec.forward_attention):
            _forward(model, ids, spec.delta_ref)
        if len(sinks.reference) != n_layers:
            raise RopeextError(f"captured q/k of {len(sinks.reference)} layers, the model has {n_layers}")
        for di, delta in enumerate(spec.deltas):
            sinks.results.clear()
            with capture_qk(model, sinks.compare, inner=spec.forward_attention):
                _forward(model, ids, delta)
            for layer, dev in sinks.results.items():
                column[s, di, layer] = dev.column_total
                row[s, di, layer] = dev.row_total
                if delta == spec.delta_decompose:
                    contribution += dev.column.sum(dim=0).double().numpy()
        if progress:
            progress(
                f"sequence {s + 1}/{n}: D({spec.delta_decompose},{spec.delta_ref}) = "
                f"{column[s, spec.deltas.index(spec.delta_decompose)].sum():.4g}"
            )
    sinks.reference.clear()
    contribution /= n
    total_col = column.sum(axis=2)  # (n, deltas)
    total_row = row.sum(axis=2)
    total = float(contribution.sum())
    top = np.argsort(-contribution)[:10]
    return {
        "shift": {
            "delta1": list(spec.deltas),
            "delta2": spec.delta_ref,
            "column": {"mean": total_col.mean(axis=0), "std": total_col.std(axis=0)},
            "row": {"mean": total_row.mean(axis=0), "std": total_row.std(axis=0)},
            "per_layer_column": column.mean(axis=0),  # (deltas, layers)
            "per_sequence_column": total_col,  # (n, deltas)
        },
        "key_columns": {
            "delta1": spec.delta_decompose,
            "delta2": spec.delta_ref,
            "contribution": contribution,
            "total": total,
            "first_value": float(contribution[0]),
            "first_share": float(contribution[0] / total) if total > 0 else float("nan"),
            "top": [{"key": int(j), "value": float(contribution[j])} for j in top],
        },
    }


def measure_logits(model, sequences: torch.Tensor, spec: Spec, progress: Callable[[str], None] | None = None) -> dict:
    """Measurement 3: D_logit(T) for the first key and the key at T // 2, for each T."""
    device = next(model.parameters()).device
    n_layers = model.config.num_hidden_layers
    first = np.zeros((len(spec.logit_lengths), n_layers))
    mid = np.zeros((len(spec.logit_lengths), n_layers))
    for ti, length in enumerate(spec.logit_lengths):
        key_mid = length // 2
        for s in range(sequences.shape[0]):
            ids = sequences[s : s + 1, :length].to(device)
            captured: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
            for delta in (spec.delta_decompose, spec.delta_ref):
                store = captured.setdefault(delta, {})

                def sink(layer, q, k, scale, store=store):
                    store[layer] = (
                        key_logits(q[0], k[0], 0, scale=scale, path=spec.path),
                        key_logits(q[0], k[0], key_mid, scale=scale, path=spec.path),
                    )

                with capture_qk(model, sink, inner=spec.forward_attention):
                    _forward(model, ids, delta)
            a, b = captured[spec.delta_decompose], captured[spec.delta_ref]
            for layer in range(n_layers):
                first[ti, layer] += float(logit_deviation(a[layer][0], b[layer][0]).sum())
                mid[ti, layer] += float(logit_deviation(a[layer][1], b[layer][1]).sum())
        if progress:
            progress(
                f"logits at T={length}: first {first[ti].sum() / sequences.shape[0]:.4g}, "
                f"mid {mid[ti].sum() / sequences.shape[0]:.4g}"
            )
    first /= sequences.shape[0]
    mid /= sequences.shape[0]
    return {
        "lengths": list(spec.logit_lengths),
        "delta1": spec.delta_decompose,
        "delta2": spec.delta_ref,
        "first": first.sum(axis=1),
        "mid": mid.sum(axis=1),
        "mid_key": [t // 2 for t in spec.logit_lengths],
        "per_layer_first": first,
        "per_layer_mid": mid,
    }


def analyze_model(
    model,
    sequences: torch.Tensor,
    spec: Spec,
    *,
    exact_angles: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """All three measurements on one loaded model (one setting)."""
    if sequences.shape[1] < spec.max_length:
        raise RopeextError(f"sequences have {sequences.shape[1]} tokens, the analysis needs {spec.max_length}")
    model.eval()
    with torch.inference_mode(), exact_rope_angles(model) if exact_angles else contextlib.nullcontext():
        out = measure_shift(model, sequences, spec, progress)
        out["logits"] = measure_logits(model, sequences, spec, progress) if spec.logit_lengths else None
    return out


def load_setting(model_dir: str, setting: str, *, seed: int, device: str, attn_implementation: str):
    """The model of one setting: the weights in a dtype, or a seeded random copy of the architecture."""
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy: the report imports summary_row from here

    if setting not in SETTINGS:
        raise RopeextError(f"--settings: {setting!r} is not one of {', '.join(SETTINGS)}")
    dtype, weights, _ = SETTINGS[setting]
    if weights == "pretrained":
        model = load_causal_lm(model_dir, dtype=dtype, attn_implementation=attn_implementation)
    else:
        config = AutoConfig.from_pretrained(model_dir)
        config.use_cache = False
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device)


def analyze(
    model_dir: str,
    sequences: np.ndarray,
    spec: Spec,
    *,
    settings: list[str],
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run every setting (config ``analysis.bf16.settings``) on ``sequences`` (N, >= spec.max_length)
    and collect one result dict."""
    settings = list(settings)
    if not settings:
        raise RopeextError("--settings: name at least one of " + ", ".join(SETTINGS))
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise RopeextError(f"--settings: {unknown} not among {', '.join(SETTINGS)}")
    device = resolve_device(device)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    ids = torch.as_tensor(sequences, dtype=torch.long)
    result = {
        "model": str(model_dir),
        "numeric_path": spec.path,
        "forward_attention": spec.forward_attention,
        "spec": asdict(spec),
        "num_sequences": int(ids.shape[0]),
        "device": device,
        "settings": {},
    }
    for setting in settings:
        dtype, weights, exact = SETTINGS[setting]
        log(f"[{setting}] loading ({weights} weights, {str(dtype).removeprefix('torch.')})")
        model = load_setting(model_dir, setting, seed=seed, device=device, attn_implementation=spec.forward_attention)
        started = time.perf_counter()
        out = analyze_model(model, ids, spec, exact_angles=exact, progress=lambda m: log(f"[{setting}] {m}"))
        out.update(
            {
                "dtype": str(dtype).removeprefix("torch."),
                "weights": weights,
                "exact_angles": exact,
                "seconds": time.perf_counter() - started,
            }
        )
        result["settings"][setting] = out
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    result["summary"] = summary_row(result)
    return result


def _finite(x: float) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")


def summary_row(result: dict) -> dict[str, float]:
    """Headline numbers of one model, one flat row (settings x measures) for a variants table.

    Keys, for each setting s measured (bf16, fp32, random-bf16, ...), with d1/d2 the decomposition
    and reference shifts (default 0 and 16) and Tmax the longest D_logit length:
      ``s.D_d1_d2``           D(d1, d2), column variant
      ``s.D_row_d1_d2``       D(d1, d2), row variant
      ``s.D_max``             the largest D(delta1, d2) over the measured delta1
      ``s.first_key_share``   share of D(d1, d2) due to key column 0
      ``s.D_logit_first``     D_logit(Tmax) on the first key
      ``s.D_logit_mid``       D_logit(Tmax) on the key at Tmax // 2
    plus ``bf16_over_fp32`` = bf16.D_d1_d2 / fp32.D_d1_d2 where both were measured.
    """
    row: dict[str, float] = {}
    headline = None
    for name, out in result["settings"].items():
        shift = out["shift"]
        d1 = out["key_columns"]["delta1"]
        d2 = shift["delta2"]
        i = list(shift["delta1"]).index(d1)
        col = list(shift["column"]["mean"])
        headline = f"D_{d1}_{d2}"
        row[f"{name}.{headline}"] = _finite(col[i])
        row[f"{name}.D_row_{d1}_{d2}"] = _finite(list(shift["row"]["mean"])[i])
        row[f"{name}.D_max"] = _finite(max(col))
        row[f"{name}.first_key_share"] = _finite(out["key_columns"]["first_share"])
        logits = out.get("logits")
        if logits and len(logits["lengths"]):
            row[f"{name}.D_logit_first"] = _finite(list(logits["first"])[-1])
            row[f"{name}.D_logit_mid"] = _finite(list(logits["mid"])[-1])
    bf16, fp32 = row.get(f"bf16.{headline}"), row.get(f"fp32.{headline}")
    if bf16 is not None and fp32 is not None and fp32 > 0:
        row["bf16_over_fp32"] = bf16 / fp32
    return row


def jsonable(obj):
    """Arrays to lists, non-finite floats to None: strict JSON for any reader."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return jsonable(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
