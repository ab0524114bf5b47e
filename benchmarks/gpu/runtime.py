"""The device and the material of benchmarks/gpu_check.py: synthetic documents, the models, the device's
backends, timing, memory and peak, and how a failure is recorded."""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
import traceback

import numpy as np

from benchmarks.gpu.plan import ANCHOR_ID, BACKEND_ORDER, ModelSpec, Plan


def doc_lengths(total: int, median: float, sigma: float, seed: int, cap: int = 131072) -> np.ndarray:
    """Log-normal document lengths (at least 3 tokens, at most ``cap``) summing to at least ``total``."""
    rng = np.random.default_rng(seed)
    out, have = [], 0
    while have < total:
        chunk = np.clip(np.ceil(rng.lognormal(math.log(median), sigma, 4096)), 3, cap).astype(np.int64)
        out.append(chunk)
        have += int(chunk.sum())
    lengths = np.concatenate(out)
    return lengths[: int(np.searchsorted(np.cumsum(lengths), total)) + 1]


def error_row(exc: BaseException) -> dict:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return {
        "status": f"error: {type(exc).__name__}: {first[:160]}",
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }


def build_llama(spec: ModelSpec, max_len: int, seed: int = 0):
    """A Llama with tied embeddings like ``ropeext.modeling.build_tiny_llama``, plus grouped KV heads
    (``num_key_value_heads``), which build_tiny_llama does not take."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=max_len,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=ANCHOR_ID,
        eos_token_id=2,
        pad_token_id=0,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class Snapshot:
    """The model's initial fp32 parameters and buffers. ``model.to(bf16)`` also rounds the rotary
    ``inv_freq`` buffer, which is no part of the state dict: without the buffers, every fp32
    reference after a bf16 run would use bf16-rounded RoPE frequencies."""

    def __init__(self, model):
        self.params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def restore(self, model, dtype) -> None:
        """``model`` in ``dtype`` with the initial values (rounded once from fp32, as the loop does)."""
        import torch

        model.to(dtype)
        model.load_state_dict(self.params)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(self.buffers[name])


class Corpus:
    """Synthetic documents packed on demand per (window, layout)."""

    def __init__(self, lengths: np.ndarray, vocab: int, interleave: dict, seed: int = 0):
        from ropeext.data.packing import Tags

        rng = np.random.default_rng(seed + 1)
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.tokens = rng.integers(3, vocab, int(self.offsets[-1]), dtype=np.int64)
        self.interleave = interleave
        domains = [[3, 4], [5], [6, 7, 8]]
        self.tags = Tags.from_lists([domains[i] for i in rng.integers(0, len(domains), len(lengths))])
        self.lengths = lengths
        self._cache: dict = {}

    def describe(self) -> str:
        L = self.lengths
        return (
            f"{len(L)} documents, {int(L.sum()):,} tokens, median {int(np.median(L))}, mean {L.mean():.0f}, "
            f"p90 {int(np.percentile(L, 90))}, max {int(L.max())}"
        )

    def packed(self, window: int, layout: str):
        from ropeext.data.packing import INTERLEAVED, TAGGED, pack_flat
        from ropeext.train.data import PackedData

        key = (window, layout)
        if key not in self._cache:
            cols, _ = pack_flat(
                self.tokens,
                self.offsets,
                window,
                layout,
                ANCHOR_ID,
                seed=0,
                interleave=self.interleave if layout in INTERLEAVED else None,
                tags=self.tags if layout in TAGGED else None,
            )
            self._cache[key] = PackedData({k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})
        return self._cache[key]


class Runtime:
    """Device, backends it can run, timing and memory, the time budget."""

    def __init__(self, device, args, plan: Plan):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"
        self.plan = plan
        self.t0 = time.perf_counter()
        self.support = backend_support(device, args.cpu_flex)
        wanted = [b.strip() for b in args.backends.split(",")] if args.backends else list(BACKEND_ORDER)
        self.backends = [b for b in BACKEND_ORDER if b in wanted]

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_memory(self) -> None:
        if self.cuda:
            gc.collect()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_memory_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def trains(self, backend: str) -> bool:
        return self.support[backend] is None

    def runs(self, backend: str) -> bool:
        return self.trains(backend) or self.forward_only(backend)

    def forward_only(self, backend: str) -> bool:
        return backend == "flex" and self.support[backend] == "forward-only"


def backend_support(device, cpu_flex: bool) -> dict:
    """backend -> None when it trains on ``device``, "forward-only", or the reason it cannot run."""
    out = {"sdpa_mask": None, "blockwise": None}
    try:
        from torch.nn.attention import flex_attention  # noqa: F401

        if device.type == "cuda":
            out["flex"] = None
        else:
            out["flex"] = (
                "forward-only"
                if cpu_flex
                else (
                    "left out on CPU: no FlexAttention backward there, and its forward compiles for ~50 s "
                    "(--cpu-flex runs it forward-only)"
                )
            )
    except ImportError as exc:
        out["flex"] = f"unavailable: {exc}"
    if device.type != "cuda":
        out["flash_varlen"] = "needs a CUDA GPU"
    else:
        from ropeext.attention.flash import flash_varlen_kernel
        from ropeext.errors import RopeextError

        try:
            flash_varlen_kernel()
            out["flash_varlen"] = None
        except RopeextError:
            out["flash_varlen"] = "flash-attn not installed"
    return out


def measure_peak(rt: Runtime, n: int, reps: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matrix product on the device (median of ``reps``)."""
    torch = rt.torch
    g = torch.Generator(device=rt.device).manual_seed(0)
    a = torch.randn(n, n, device=rt.device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=rt.device, dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        rt.sync()
        t = time.perf_counter()
        a @ b
        rt.sync()
        times.append(time.perf_counter() - t)
    del a, b
    return 2.0 * n**3 / statistics.median(times)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
