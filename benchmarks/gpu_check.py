"""GPU check of BF16 fine-tuning: every attention backend against the dense reference, tokens/s and
MFU, and the anchor-vs-full step time at 8k-32k. One command; skips cleanly without a CUDA GPU.

    .venv/bin/python benchmarks/gpu_check.py [--quick] [--json PATH]      # on a GPU node
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke [--json PATH]    # tiny sizes on CPU

Without CUDA (and without ``--cpu-smoke``) it prints one line saying why and exits 0. Exit status 1
means a check failed or a backend raised; the tables say which and the JSON holds the traceback.

Phases, in order (each row goes through ropeext's own pieces: ``set_backend`` / ``model_inputs``
from ropeext.attention, the packing layouts of ropeext.data.packing on a synthetic document-length
mix, ``accumulate_gradients`` and ``train`` from ropeext.train.loop with their precision handling):

1. peak: a large bf16 matrix product measured in the same run (the MFU denominator), beside the
   datasheet dense BF16 peak when the GPU's name is known (H100/H200 989, A100 312 TFLOP/s ...).
2. fp32 check, small model (TF32 off): loss and parameter gradients of one batch with every backend
   against ``sdpa_mask`` (the dense-mask reference), per layout. Tolerance: relative loss error
   <= 1e-5 and, for every parameter tensor, ||g - g_ref|| / ||g_ref|| <= 1e-4 (fp32 reduction-order
   noise is about 1e-6). ``flash_varlen`` has no fp32 kernel and is left out here.
3. bf16 check, the throughput model: per layout, the fp32 ``sdpa_mask`` result is the truth; for
   each precision (``bf16``: bf16 weights, as the paper configs; ``bf16-mixed``: autocast, the CPU
   default) the bf16 ``sdpa_mask`` run measures how far bf16 itself lands from it (the noise), and
   every backend passes when its own loss and worst-tensor gradient errors against the fp32 truth
   are at most 2 x that noise + a floor (loss 1e-3, gradients 5e-3). The ``vs bf16 ref`` column is
   the distance to the bf16 reference itself.
   Both checks print ``wrong mask``: the error the same comparison gives for a plausible masking bug
   (anchor key dropped or leaked in, cross-document keys dropped, interleaved chunks not joined),
   so a reader sees that the tolerance tells a bug from rounding (fp32: by orders of magnitude; in
   bf16 at large windows it may not, which is why the fp32 check exists).
4. throughput: ``ropeext.train.loop.train`` steps (AdamW, clipping, the loop's precision) with each
   backend, ``full`` and ``anchor`` layouts, at each window with a fixed number of tokens per step.
   Step time is the median of the timed steps after warm-up (FlexAttention compiles on its first
   steps). FLOPs per step as benchmarks/bench_train.py counts them: 6 x parameters x tokens (tied
   output projection counted once, embedding lookups not) + 12 x layers x hidden x (query-key pairs
   the layout attends), so ``anchor`` is credited only with the pairs it needs. MFU = achieved
   FLOP/s over the measured peak, and over the datasheet peak where known. ``inputs ms`` is the
   per-step cost of ``model_inputs`` (dense mask, segment plan or BlockMask), included in the step.
   The anchor-vs-full table divides the step times and gives the ideal ratio (step FLOPs) beside it:
   only a backend that skips masked blocks can approach it.

Document-length mix: synthetic log-normal lengths (median 1000 tokens, sigma 1.5: mean ~3.1k, p90
~6.8k, p99 ~33k; capped at 131072), random token ids, packed by ``pack_flat`` at each window with
the schema's ``packing.interleave`` defaults. The small fp32 check uses a median of 100 tokens so
its 1024-token windows hold several documents.

Sizes and time budget (H100-class, estimated: no run on such a GPU has been timed yet):

=========  ===========================================  ==============================================
mode       model                                        runs
=========  ===========================================  ==============================================
full       Llama hidden 2048, 4 layers, 16 heads x 128, fp32 check W=1024 x 2 (small model: hidden 256,
           4 KV heads (GQA), MLP 5632, vocab 32000,     2 layers, 4 heads x 64, 2 KV heads, vocab 4096);
           tied embeddings: 246M parameters             bf16 check W=8192 x 4 in bf16 and bf16-mixed;
                                                        throughput 32768 tokens/step at W = 8k, 16k, 32k,
                                                        4 backends x 2 layouts, 2 warm-up + 4 timed steps
quick      same                                         fp32 and bf16 checks on full/anchor, bf16 only;
                                                        throughput at W = 16k, 1 warm-up + 2 timed steps
=========  ===========================================  ==============================================

Estimate for ``full``: setup and peak ~20 s; FlexAttention compiles (one per dtype x mask rule, plus
one when shapes turn dynamic) ~8 x 15-30 s; fp32/bf16 checks ~20 s of compute; throughput 24 runs x
6 steps of 0.2-0.8 s plus setup ~90 s: about 5-6 minutes. ``quick``: about 2 minutes. A time budget
(``--budget-s``, 450 s full / 150 s quick) skips the remaining throughput runs, named in the
output, rather than overrun 8 minutes.
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANCHOR_ID = 1
BACKEND_ORDER = ("sdpa_mask", "flex", "flash_varlen", "blockwise")
FP32_TOL = {"loss": 1e-5, "grad": 1e-4}
BF16_FLOOR = {"loss": 1e-3, "grad": 5e-3}
BF16_FACTOR = 2.0

# Dense (no sparsity) BF16 tensor-core peak from the vendor datasheets, TFLOP/s; first match wins.
DATASHEET_BF16 = (
    (r"\bH200\b.*\bNVL\b", "H200 NVL", 835.0),
    (r"\bGH200\b|\bH200\b", "H200 / GH200", 989.0),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.0),
    (r"\bH100\b.*\bNVL\b", "H100 NVL", 835.0),
    (r"\bH100\b|\bH800\b", "H100 SXM", 989.0),
    (r"\bB200\b", "B200", 2250.0),
    (r"\bA100\b|\bA800\b", "A100", 312.0),
    (r"\bL40S\b", "L40S", 362.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),
)


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Plan:
    name: str
    big: ModelSpec
    small: ModelSpec
    tokens_per_step: int
    windows: tuple
    warmup: int
    timed: int
    small_window: int
    small_batch: int
    doc_median: float
    doc_sigma: float
    small_doc_median: float
    check_layouts: tuple
    check_precisions: tuple
    peak_n: int
    budget_s: float
    interleave: dict | None = None  # None: the schema's packing.interleave defaults


BIG = ModelSpec(hidden=2048, layers=4, heads=16, kv_heads=4, intermediate=5632, vocab=32000)
SMALL = ModelSpec(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=688, vocab=4096)
FULL = Plan(name="full", big=BIG, small=SMALL, tokens_per_step=32768, windows=(8192, 16384, 32768), warmup=2,
            timed=4, small_window=1024, small_batch=2, doc_median=1000.0, doc_sigma=1.5, small_doc_median=100.0,
            check_layouts=("full", "anchor", "anchor_interleaved"), check_precisions=("bf16", "bf16-mixed"),
            peak_n=8192, budget_s=450.0)
PLANS = {
    "full": FULL,
    "quick": replace(FULL, name="quick", windows=(16384,), warmup=1, timed=2, check_layouts=("full", "anchor"),
                     check_precisions=("bf16",), budget_s=150.0),
    # every CPU path at tiny sizes; document lengths and interleave cuts scaled to the small windows
    "smoke": replace(FULL, name="smoke", big=ModelSpec(96, 2, 4, 2, 192, 1024), small=ModelSpec(64, 2, 4, 2, 128, 512),
                     tokens_per_step=1024, windows=(256, 512), warmup=1, timed=2, small_window=128,
                     doc_median=24.0, doc_sigma=1.0, small_doc_median=12.0, peak_n=256, budget_s=120.0,
                     interleave={"min_tokens": 8, "max_tokens": 512, "chunks": [2, 3], "cut_range": [0.2, 0.8]}),
}


# ------------------------------------------------------------------------------------ pure helpers

def datasheet_peak(name: str):
    """(label, FLOP/s) of the dense BF16 datasheet peak for a GPU name, or None when unknown."""
    for pattern, label, tflops in DATASHEET_BF16:
        if re.search(pattern, name):
            return label, tflops * 1e12
    return None


def attended_pairs(doc_ids: np.ndarray, layout: str) -> np.ndarray:
    """Query-key pairs each window attends to under ``layout`` (the dense mask's True count)."""
    from ropeext.data.packing import PAD_DOC, attention_rule

    rule = attention_rule(layout)
    doc = np.asarray(doc_ids, dtype=np.int64)
    out = np.empty(len(doc), dtype=np.float64)
    for i, row in enumerate(doc):
        pad = int((row == PAD_DOC).sum())
        real = row[row != PAD_DOC]
        if rule == "full":
            n = len(real)
            out[i] = n * (n + 1) / 2 + pad
            continue
        ids, counts = np.unique(real, return_counts=True)
        pairs = (counts * (counts + 1) // 2).sum()
        if rule == "anchor":
            pairs += counts[ids > 0].sum()  # every document token also sees the anchor key
        out[i] = pairs + pad  # a padding query sees itself only
    return out


def step_flops(n_params: int, spec: ModelSpec, tokens: int, pairs: float) -> tuple[float, float]:
    """(total, attention) FLOPs of one training step over ``tokens`` with ``pairs`` attended pairs."""
    attn = 12.0 * spec.layers * spec.hidden * pairs
    return 6.0 * n_params * tokens + attn, attn


def doc_lengths(total: int, median: float, sigma: float, seed: int, cap: int = 131072) -> np.ndarray:
    """Log-normal document lengths (at least 3 tokens, at most ``cap``) summing to at least ``total``."""
    rng = np.random.default_rng(seed)
    out, have = [], 0
    while have < total:
        chunk = np.clip(np.ceil(rng.lognormal(math.log(median), sigma, 4096)), 3, cap).astype(np.int64)
        out.append(chunk)
        have += int(chunk.sum())
    lengths = np.concatenate(out)
    return lengths[:int(np.searchsorted(np.cumsum(lengths), total)) + 1]


def wrong_variant(doc_ids: np.ndarray, layout: str) -> tuple[np.ndarray, str, str]:
    """(doc_ids, layout, bug) of a plausible masking bug, to show the tolerance would catch it."""
    from ropeext.data.packing import INTERLEAVED, PAD_DOC, attention_rule

    rule = attention_rule(layout)
    if layout in INTERLEAVED:
        doc = np.asarray(doc_ids, dtype=np.int64)
        runs = np.zeros_like(doc)
        runs[:, 1:] = np.cumsum(doc[:, 1:] != doc[:, :-1], axis=1)  # every contiguous run its own document
        return np.where(doc == PAD_DOC, PAD_DOC, runs), layout, "chunks not joined"
    if rule == "anchor":
        return doc_ids, "intra_doc", "anchor key dropped"
    if rule == "full":
        return doc_ids, "intra_doc", "cross-document keys dropped"
    return doc_ids, "anchor", "anchor key leaked in"


def compare(loss: float, grads: dict | None, ref_loss: float, ref_grads: dict | None) -> dict:
    """Relative loss error, global and worst-tensor relative L2 gradient error, smallest cosine."""
    out = {"loss_rel": abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)}
    if grads is None or ref_grads is None:
        return out
    import torch

    num = den = 0.0
    worst, worst_name, cos_min = 0.0, "", 1.0
    for name, r in ref_grads.items():
        g = grads.get(name)
        if g is None:
            g = torch.zeros_like(r)
        d2 = float(torch.linalg.vector_norm((g - r).double()) ** 2)
        r2 = float(torch.linalg.vector_norm(r.double()) ** 2)
        g2 = float(torch.linalg.vector_norm(g.double()) ** 2)
        num, den = num + d2, den + r2
        rel = math.sqrt(d2 / r2) if r2 > 0 else (0.0 if d2 == 0 else math.inf)
        if rel > worst:
            worst, worst_name = rel, name
        if r2 > 0 and g2 > 0:
            cos = float((g.double() * r.double()).sum()) / math.sqrt(r2 * g2)
            cos_min = min(cos_min, cos)
    out.update(grad_rel=math.sqrt(num / den) if den > 0 else 0.0, grad_worst=worst, worst_tensor=worst_name,
               cos_min=cos_min)
    return out


def error_row(exc: BaseException) -> dict:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return {"status": f"error: {type(exc).__name__}: {first[:160]}",
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


# ---------------------------------------------------------------------------------- model and data

def build_llama(spec: ModelSpec, max_len: int, seed: int = 0):
    """A Llama with tied embeddings like ``ropeext.modeling.build_tiny_llama``, plus grouped KV heads
    (``num_key_value_heads``), which build_tiny_llama does not take."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=spec.vocab, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                         num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                         intermediate_size=spec.intermediate, max_position_embeddings=max_len,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
                         bos_token_id=ANCHOR_ID, eos_token_id=2, pad_token_id=0, use_cache=False)
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


def count_params(model) -> int:
    """Parameters, a tied matrix once (it counts as the output projection; lookups are free)."""
    return sum(p.numel() for p in model.parameters()) - (
        0 if model.config.tie_word_embeddings else model.model.embed_tokens.weight.numel())


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
        return (f"{len(L)} documents, {int(L.sum()):,} tokens, median {int(np.median(L))}, mean {L.mean():.0f}, "
                f"p90 {int(np.percentile(L, 90))}, max {int(L.max())}")

    def packed(self, window: int, layout: str):
        from ropeext.data.packing import INTERLEAVED, TAGGED, pack_flat
        from ropeext.train.data import PackedData

        key = (window, layout)
        if key not in self._cache:
            cols, _ = pack_flat(self.tokens, self.offsets, window, layout, ANCHOR_ID, seed=0,
                                interleave=self.interleave if layout in INTERLEAVED else None,
                                tags=self.tags if layout in TAGGED else None)
            self._cache[key] = PackedData({k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})
        return self._cache[key]


# ------------------------------------------------------------------------------------------ runtime

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
            out["flex"] = "forward-only" if cpu_flex else (
                "left out on CPU: no FlexAttention backward there, and its forward compiles for ~50 s "
                "(--cpu-flex runs it forward-only)")
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


def loss_and_grads(rt: Runtime, model, batch: dict, layout: str, backend: str, precision: str):
    """Mean token loss and parameter gradients (float32 copies) of one batch, through the loop's
    ``accumulate_gradients`` (its autocast for bf16-mixed); forward only for CPU flex."""
    import torch

    from ropeext.attention import model_inputs, set_backend
    from ropeext.train.loop import TrainSettings, accumulate_gradients, causal_lm_loss

    model.zero_grad(set_to_none=True)
    if rt.forward_only(backend):
        set_backend(model, backend, training=False)
        model.eval()
        part = {k: torch.from_numpy(v).to(rt.device) for k, v in batch.items()}
        with torch.no_grad(), torch.autocast(rt.device.type, dtype=torch.bfloat16,
                                             enabled=precision == "bf16-mixed"):
            logits = model(**model_inputs(part, layout, backend)).logits
            loss_sum, count = causal_lm_loss(logits, part["labels"])
        model.train()
        return float(loss_sum) / max(count, 1), None
    set_backend(model, backend, training=True)
    model.train()
    s = TrainSettings(steps=1, batch_size=len(batch["input_ids"]), lr=1.0, precision=precision, layout=layout,
                      backend=backend)
    loss = accumulate_gradients(model, batch, s, rt.device)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss, grads


def first_windows(data, n: int) -> dict:
    return {k: v[:n] for k, v in data.arrays.items()}


# --------------------------------------------------------------------------------------------- phases

def fp32_check(rt: Runtime, corpus: Corpus, layouts, results: dict) -> None:
    plan = rt.plan
    model = build_llama(plan.small, plan.small_window).to(rt.device)
    rows = results["fp32_check"]
    try:
        for layout in layouts:
            batch = first_windows(corpus.packed(plan.small_window, layout), plan.small_batch)
            ref_loss, ref_grads = loss_and_grads(rt, model, batch, layout, "sdpa_mask", "fp32")
            wdoc, wlayout, bug = wrong_variant(batch["doc_ids"], layout)
            w_loss, w_grads = loss_and_grads(rt, model, {**batch, "doc_ids": wdoc}, wlayout, "sdpa_mask", "fp32")
            wrong = compare(w_loss, w_grads, ref_loss, ref_grads)
            for backend in rt.backends:
                if backend == "sdpa_mask":
                    continue
                row = {"layout": layout, "backend": backend, "tol_loss": FP32_TOL["loss"],
                       "tol_grad": FP32_TOL["grad"], "wrong_mask": bug, "wrong_loss_rel": wrong["loss_rel"],
                       "wrong_grad_worst": wrong["grad_worst"]}
                if not rt.runs(backend):
                    continue  # the backends line says why
                if backend == "flash_varlen":
                    rows.append({**row, "status": "skipped: flash-attn has no fp32 kernel"})
                    continue
                try:
                    loss, grads = loss_and_grads(rt, model, batch, layout, backend, "fp32")
                    cmp = compare(loss, grads, ref_loss, ref_grads)
                    ok = cmp["loss_rel"] <= FP32_TOL["loss"] and cmp.get("grad_worst", 0.0) <= FP32_TOL["grad"]
                    status = ("ok" if ok else "FAIL") + (" (forward only)" if grads is None else "")
                    rows.append({**row, **cmp, "status": status})
                except Exception as exc:  # noqa: BLE001 - a backend that raises is a finding, reported
                    rows.append({**row, **error_row(exc)})
    finally:
        del model
        rt.reset_memory()


def bf16_check(rt: Runtime, model, snap: Snapshot, corpus: Corpus, layouts, precisions, results: dict) -> None:
    torch = rt.torch
    plan = rt.plan
    W = plan.windows[0]
    B = plan.tokens_per_step // W
    rows = results["bf16_check"]

    def restore(dtype):
        snap.restore(model, dtype)

    for layout in layouts:
        batch = first_windows(corpus.packed(W, layout), B)
        restore(torch.float32)
        try:
            ref_loss, ref_grads = loss_and_grads(rt, model, batch, layout, "sdpa_mask", "fp32")
            wdoc, wlayout, bug = wrong_variant(batch["doc_ids"], layout)
            w_loss, w_grads = loss_and_grads(rt, model, {**batch, "doc_ids": wdoc}, wlayout, "sdpa_mask", "fp32")
            wrong = compare(w_loss, w_grads, ref_loss, ref_grads)
            del w_grads
        except Exception as exc:  # noqa: BLE001
            rows.append({"layout": layout, "precision": "fp32", "backend": "sdpa_mask", **error_row(exc)})
            rt.reset_memory()
            continue
        for precision in precisions:
            restore(torch.bfloat16 if precision == "bf16" else torch.float32)
            base = {"layout": layout, "precision": precision, "wrong_mask": bug, "wrong_loss_rel": wrong["loss_rel"],
                    "wrong_grad_worst": wrong["grad_worst"]}
            try:
                p_loss, p_grads = loss_and_grads(rt, model, batch, layout, "sdpa_mask", precision)
            except Exception as exc:  # noqa: BLE001
                rows.append({**base, "backend": "sdpa_mask", **error_row(exc)})
                continue
            noise = compare(p_loss, p_grads, ref_loss, ref_grads)
            tol_loss = BF16_FACTOR * noise["loss_rel"] + BF16_FLOOR["loss"]
            tol_grad = BF16_FACTOR * noise["grad_worst"] + BF16_FLOOR["grad"]
            base.update(tol_loss=tol_loss, tol_grad=tol_grad)
            rows.append({**base, "backend": "sdpa_mask", **noise, "status": "reference"})
            for backend in rt.backends:
                if backend == "sdpa_mask":
                    continue
                if not rt.runs(backend):
                    continue
                try:
                    loss, grads = loss_and_grads(rt, model, batch, layout, backend, precision)
                    cmp = compare(loss, grads, ref_loss, ref_grads)
                    vs_bf16 = compare(loss, grads, p_loss, p_grads)
                    ok = cmp["loss_rel"] <= tol_loss and cmp.get("grad_worst", 0.0) <= tol_grad
                    status = ("ok" if ok else "FAIL") + (" (forward only)" if grads is None else "")
                    rows.append({**base, "backend": backend, **cmp, "vs_bf16_loss_rel": vs_bf16["loss_rel"],
                                 "vs_bf16_grad_worst": vs_bf16.get("grad_worst"), "status": status})
                    del grads
                except Exception as exc:  # noqa: BLE001
                    rows.append({**base, "backend": backend, **error_row(exc)})
                rt.reset_memory()
            del p_grads
        del ref_grads
        rt.reset_memory()
    restore(torch.float32)


def timed_pairs(data, layout: str, batch: int, plan: Plan) -> float:
    """Mean attended pairs per step over the batches the timed steps train on (the loop's own order)."""
    from ropeext.train.data import batch_indices

    per_window = attended_pairs(data.arrays["doc_ids"], layout)
    steps = range(plan.warmup, plan.warmup + plan.timed)
    return float(np.mean([per_window[batch_indices(k, batch, data.windows, 0)].sum() for k in steps]))


def throughput(rt: Runtime, model, snap: Snapshot, corpus: Corpus, precision: str, peak: float,
               nominal, results: dict) -> None:
    torch = rt.torch
    plan = rt.plan
    from ropeext.attention import model_inputs, set_backend
    from ropeext.train.loop import TrainSettings, train

    n_params = count_params(model)
    spec = plan.big
    rows = results["throughput"]
    for W in plan.windows:
        B = plan.tokens_per_step // W
        for backend in rt.backends:
            for layout in ("full", "anchor"):
                data = corpus.packed(W, layout)
                pairs = timed_pairs(data, layout, B, plan)
                flops, attn = step_flops(n_params, spec, B * W, pairs)
                row = {"window": W, "batch": B, "backend": backend, "layout": layout, "precision": precision,
                       "flops": flops, "attn_share": attn / flops, "pairs_per_window": pairs / B}
                if not rt.trains(backend):
                    continue
                if rt.elapsed() > plan.budget_s:
                    rows.append({**row, "status": f"skipped: time budget of {plan.budget_s:.0f} s spent"})
                    continue
                snap.restore(model, torch.float32)
                rt.reset_memory()
                stamps = []

                def tick(done):
                    rt.sync()
                    stamps.append(time.perf_counter())

                try:
                    s = TrainSettings(steps=plan.warmup + plan.timed, batch_size=B, lr=1e-5, warmup_steps=0,
                                      schedule="constant", precision=precision, layout=layout, backend=backend,
                                      seed=0, max_grad_norm=1.0)  # seed 0: the batches timed_pairs counted
                    stamps.append(time.perf_counter())
                    summary = train(model, data, s, progress=False, on_step=tick)
                    steps = np.diff(stamps)[plan.warmup:]
                    sec = float(np.median(steps))
                    set_backend(model, backend, training=True)
                    model.train()
                    sample = {k: torch.from_numpy(v[:B]).to(rt.device) for k, v in data.arrays.items()}
                    build = []
                    for _ in range(3):
                        rt.sync()
                        t = time.perf_counter()
                        model_inputs(sample, layout, backend)
                        rt.sync()
                        build.append(time.perf_counter() - t)
                    model.eval()
                    rows.append({**row, "step_s": sec, "steps_s": steps.tolist(), "tok_s": B * W / sec,
                                 "flop_s": flops / sec, "mfu": flops / sec / peak,
                                 "mfu_datasheet": flops / sec / nominal[1] if nominal else None,
                                 "inputs_s": statistics.median(build), "peak_gib": rt.peak_memory_gib(),
                                 "loss_first": summary.get("first_loss"), "loss_last": summary.get("final_loss"),
                                 "numeric_path": (summary.get("numeric_path") or {}).get("observed"),
                                 "status": "ok"})
                except Exception as exc:  # noqa: BLE001
                    rows.append({**row, **error_row(exc)})
                finally:
                    model.zero_grad(set_to_none=True)
                    rt.reset_memory()
                last = rows[-1]
                progress(f"gpu_check: W={W} {backend} {layout}: " + (
                    f"{last['step_s'] * 1e3:.1f} ms/step" if last["status"] == "ok" else last["status"]))
    snap.restore(model, torch.float32)


def throughput_setup(plan: Plan, corpus: Corpus, model, precision: str) -> dict:
    """What the throughput table was measured on: the model, and per window how packed it is."""
    mix = {}
    for W in plan.windows:
        full = attended_pairs(corpus.packed(W, "full").arrays["doc_ids"], "full").mean()
        doc = corpus.packed(W, "anchor").arrays["doc_ids"]
        mix[W] = {"docs_per_window": float(doc.max(axis=1).mean()),
                  "anchor_pairs_over_full": float(attended_pairs(doc, "anchor").mean() / full)}
    b = plan.big
    return {"model": f"Llama hidden {b.hidden}, {b.layers} layers, {b.heads} heads / {b.kv_heads} KV, "
                     f"MLP {b.intermediate}, vocab {b.vocab}",
            "params": count_params(model), "precision": precision, "mix": mix}


def anchor_ratios(rows: list) -> list:
    out = []
    done = {(r["window"], r["backend"], r["layout"]): r for r in rows if r.get("status") == "ok"}
    for (W, backend, layout), a in done.items():
        f = done.get((W, backend, "full"))
        if layout != "anchor" or f is None:
            continue
        out.append({"window": W, "backend": backend, "full_s": f["step_s"], "anchor_s": a["step_s"],
                    "time_ratio": a["step_s"] / f["step_s"], "flop_ratio": a["flops"] / f["flops"],
                    "pair_ratio": a["pairs_per_window"] / f["pairs_per_window"]})
    return out


# ------------------------------------------------------------------------------------------- output

def _flops(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.2f} GFLOP/s"


def _e(x, spec=".1e"):
    return "-" if x is None else format(x, spec)


def print_tables(results: dict, rt: Runtime) -> None:
    plan = rt.plan
    p = print
    rows = results["fp32_check"]
    if rows:
        s = plan.small
        p(f"\n== fp32 check: model hidden {s.hidden}, {s.layers} layers, {s.heads} heads / {s.kv_heads} KV, vocab "
          f"{s.vocab}; W={plan.small_window} x {plan.small_batch}; TF32 off; vs sdpa_mask (dense mask)")
        p(f"   pass: loss rel <= {FP32_TOL['loss']:.0e} and every tensor's gradient rel L2 <= {FP32_TOL['grad']:.0e}; "
          "'wrong mask' = the same errors for the masking bug named")
        head = (f"{'layout':<21} {'backend':<12} {'loss rel':>8} {'grad rel':>8} {'worst':>8} {'cos min':>9} "
                f"{'wrong mask (loss / worst grad)':>42}  status")
        p(head)
        p("-" * len(head))
        for r in rows:
            wrong = f"{r['wrong_mask']}: {_e(r['wrong_loss_rel'])} / {_e(r['wrong_grad_worst'])}"
            p(f"{r['layout']:<21} {r['backend']:<12} {_e(r.get('loss_rel')):>8} {_e(r.get('grad_rel')):>8} "
              f"{_e(r.get('grad_worst')):>8} {_e(r.get('cos_min'), '.6f'):>9} {wrong:>42}  {r['status']}")
    rows = results["bf16_check"]
    if rows:
        W = plan.windows[0]
        p(f"\n== bf16 check: throughput model, W={W} x {plan.tokens_per_step // W}; errors against the fp32 sdpa_mask "
          "result; the sdpa_mask row of each precision is the bf16 noise")
        p(f"   pass: loss rel <= {BF16_FACTOR:g} x noise + {BF16_FLOOR['loss']:.0e} and worst-tensor gradient rel L2 "
          f"<= {BF16_FACTOR:g} x noise + {BF16_FLOOR['grad']:.0e} (the tol columns)")
        head = (f"{'precision':<10} {'layout':<21} {'backend':<12} {'loss rel':>8} {'worst':>8} {'cos min':>9} "
                f"{'tol loss':>8} {'tol grad':>8} {'vs bf16 ref':>17} {'wrong mask worst':>16}  status")
        p(head)
        p("-" * len(head))
        for r in rows:
            vs = f"{_e(r.get('vs_bf16_loss_rel'))}/{_e(r.get('vs_bf16_grad_worst'))}"
            p(f"{r['precision']:<10} {r['layout']:<21} {r['backend']:<12} {_e(r.get('loss_rel')):>8} "
              f"{_e(r.get('grad_worst')):>8} {_e(r.get('cos_min'), '.6f'):>9} {_e(r.get('tol_loss')):>8} "
              f"{_e(r.get('tol_grad')):>8} {vs:>17} {_e(r.get('wrong_grad_worst')):>16}  {r['status']}")
    rows = results["throughput"]
    if rows:
        t = results["throughput_setup"]
        p(f"\n== throughput: {t['model']}, {t['params'] / 1e6:.1f}M parameters, {plan.tokens_per_step} tokens/step, "
          f"precision {t['precision']}, median of {plan.timed} steps after {plan.warmup} warm-up")
        for W, d in t["mix"].items():
            p(f"   W={W}: {d['docs_per_window']:.1f} documents/window, anchor attends "
              f"{d['anchor_pairs_over_full']:.3f} of full's query-key pairs (all packed windows)")
        head = (f"{'W':>6} {'B':>3} {'backend':<12} {'layout':<7} {'step ms':>8} {'tokens/s':>9} {'TFLOP/s':>8} "
                f"{'MFU':>6} {'MFU ds':>6} {'attn %':>6} {'inputs ms':>9} {'peak GiB':>8}  status")
        p(head)
        p("-" * len(head))
        for r in rows:
            if r["status"] != "ok":
                p(f"{r['window']:>6} {r['batch']:>3} {r['backend']:<12} {r['layout']:<7} {'':>8} {'':>9} {'':>8} "
                  f"{'':>6} {'':>6} {r['attn_share']:>6.1%} {'':>9} {'':>8}  {r['status']}")
                continue
            ds = "-" if r["mfu_datasheet"] is None else f"{r['mfu_datasheet']:.1%}"
            mem = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            p(f"{r['window']:>6} {r['batch']:>3} {r['backend']:<12} {r['layout']:<7} {r['step_s'] * 1e3:>8.1f} "
              f"{r['tok_s']:>9.0f} {r['flop_s'] / 1e12:>8.2f} {r['mfu']:>6.1%} {ds:>6} {r['attn_share']:>6.1%} "
              f"{r['inputs_s'] * 1e3:>9.2f} {mem:>8}  ok")
    rows = results["anchor_vs_full"]
    if rows:
        p("\n== anchor vs full step time (ratio < 1: anchor is faster; ideal = anchor's share of the step FLOPs; "
          "attn pairs = its share of the query-key pairs, both over the timed batches)")
        head = (f"{'W':>6} {'backend':<12} {'full ms':>8} {'anchor ms':>9} {'time ratio':>10} {'ideal':>6} "
                f"{'attn pairs':>10}")
        p(head)
        p("-" * len(head))
        for r in rows:
            p(f"{r['window']:>6} {r['backend']:<12} {r['full_s'] * 1e3:>8.1f} {r['anchor_s'] * 1e3:>9.1f} "
              f"{r['time_ratio']:>10.3f} {r['flop_ratio']:>6.3f} {r['pair_ratio']:>10.3f}")


def failures(results: dict) -> list:
    out = [f"{e['phase']}: {e['status']}" for e in results.get("phase_errors", [])]
    for phase in ("fp32_check", "bf16_check", "throughput"):
        for r in results[phase]:
            status = r.get("status", "")
            if status.startswith(("FAIL", "error")):
                out.append(f"{phase} {r.get('precision', '')} {r.get('layout')} {r.get('backend')}"
                           f"{' W=' + str(r['window']) if 'window' in r else ''}: {status}".replace("  ", " "))
    return out


# --------------------------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~2 minute pass (one window, fewer layouts and steps)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run everything at tiny sizes on CPU (no GPU needed)")
    ap.add_argument("--cpu-flex", action="store_true",
                    help="with --cpu-smoke: also run flex forward-only (compiles for ~50 s on first use)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    ap.add_argument("--backends", default=None, help=f"comma-separated subset of {','.join(BACKEND_ORDER)}")
    ap.add_argument("--layouts", default=None, help="layouts of the correctness checks (comma-separated, or 'all')")
    ap.add_argument("--windows", type=int, nargs="+", default=None,
                    help="throughput windows (default 8192 16384 32768)")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "bf16-mixed"),
                    help="precision of the throughput steps (default bf16, as the paper configs)")
    ap.add_argument("--budget-s", type=float, default=None, help="skip remaining throughput runs after this many s")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of torch (default: torch's own; 1 with --cpu-smoke, which is fastest for its "
                         "tiny sizes and on a busy machine)")
    args = ap.parse_args(argv)
    plan = PLANS["smoke" if args.cpu_smoke else "quick" if args.quick else "full"]
    if args.windows:
        plan = replace(plan, windows=tuple(sorted(args.windows)))
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    if args.layouts:
        from ropeext.data.packing import LAYOUTS

        layouts = LAYOUTS if args.layouts == "all" else tuple(x.strip() for x in args.layouts.split(","))
        bad = [x for x in layouts if x not in LAYOUTS]
        if bad:
            ap.error(f"--layouts: unknown layout(s) {', '.join(bad)}; expected some of {', '.join(LAYOUTS)} or 'all'")
        plan = replace(plan, check_layouts=tuple(layouts))
    if args.backends:
        bad = [b for b in args.backends.split(",") if b.strip() not in BACKEND_ORDER]
        if bad:
            ap.error(f"--backends: unknown backend(s) {', '.join(bad)}; expected some of {', '.join(BACKEND_ORDER)}")
    bad = [w for w in plan.windows if w <= 2 or plan.tokens_per_step % w]
    if bad:
        ap.error(f"--windows: {bad} must divide the {plan.tokens_per_step} tokens of a step")
    if args.cpu_flex and not args.cpu_smoke:
        ap.error("--cpu-flex only applies with --cpu-smoke")
    if args.json and (Path(args.json).is_dir() or (Path(args.json).parent.exists()
                                                   and not Path(args.json).parent.is_dir())):
        ap.error(f"--json: {args.json} cannot be written (a folder, or under a file); give a file path")
    return args, plan


def skip_reason(torch) -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__}"
    if not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(0)} has no bf16 support"
    return None


def describe_device(rt: Runtime) -> tuple[str, str]:
    """(GPU name or "CPU", one line naming the device and the library versions)."""
    torch = rt.torch
    if rt.cuda:
        props = torch.cuda.get_device_properties(rt.device)
        name = props.name
        line = (f"{name} (sm{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB), "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        name = "CPU"
        line = f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}: smoke sizes, timings meaningless"
    try:
        import flash_attn

        line += f", flash-attn {flash_attn.__version__}"
    except ImportError:
        pass
    return name, line


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_phase(results: dict, name: str, fn) -> None:
    """Run one phase; an exception outside the per-row handling is recorded, not fatal to the rest."""
    t = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - reported as a failure, the other phases still run
        results["phase_errors"].append({"phase": name, **error_row(exc)})
    results["phases_s"][name] = time.perf_counter() - t
    progress(f"gpu_check: {name} done ({results['phases_s'][name]:.1f} s)")


def save(path: str | None, results: dict) -> bool:
    """Write the JSON results when asked; False (and a line saying why) when it cannot be written."""
    from ropeext.errors import RopeextError
    from ropeext.io import write_json

    if path is None:
        return True
    try:
        write_json(path, results)
        return True
    except (RopeextError, OSError) as exc:
        print(f"gpu_check: cannot write --json {path}: {exc}")
        return False


def main(argv=None) -> int:
    args, plan = parse_args(argv)
    import torch

    from ropeext.config import validate_config

    if not args.cpu_smoke and (reason := skip_reason(torch)):
        print(f"gpu_check: skipped: {reason} (--cpu-smoke runs it at tiny sizes on CPU)")
        return 0 if save(args.json, {"skipped": reason}) else 1
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda", 0)
    if args.threads or args.cpu_smoke:
        torch.set_num_threads(args.threads or 1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # fp32 means fp32 (no TF32) in the references and the fp32 check; this is torch's default
    torch.set_float32_matmul_precision("highest")
    import torch._dynamo

    # FlexAttention compiles once per dtype x mask rule (x dynamic shapes); the default limit of 8
    # would make later calls fall back to the unfused path that materialises the scores.
    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)

    rt = Runtime(device, args, plan)
    name, line = describe_device(rt)
    results = {"mode": plan.name, "plan": asdict(plan), "device": line,
               "backends": {b: rt.support[b] or "ok" for b in BACKEND_ORDER},
               "fp32_check": [], "bf16_check": [], "throughput": [], "anchor_vs_full": [], "phase_errors": [],
               "phases_s": {}}
    print(f"gpu_check ({plan.name}): {line}")
    print("backends: " + "; ".join(f"{b} {rt.support[b] or 'ok'}" for b in BACKEND_ORDER if b in rt.backends))

    nominal = datasheet_peak(name) if rt.cuda else None
    peak = {}
    run_phase(results, "peak", lambda: peak.update(flop_s=measure_peak(rt, plan.peak_n)))
    if "flop_s" not in peak:
        print(f"FAILED: the peak measurement raised: {results['phase_errors'][0]['status']}")
        save(args.json, results)
        return 1
    results["peak"] = {"measured_flop_s": peak["flop_s"], "gemm": plan.peak_n,
                       "datasheet": None if nominal is None else {"gpu": nominal[0], "flop_s": nominal[1]}}
    print(f"peak: bf16 GEMM {plan.peak_n}^3 measured {_flops(peak['flop_s'])}" + (
        f"; datasheet dense BF16 {nominal[1] / 1e12:.0f} TFLOP/s ({nominal[0]})" if nominal else
        ("; datasheet peak unknown for this GPU" if rt.cuda else "")))

    interleave = plan.interleave or validate_config({})["packing"]["interleave"]
    biggest = max(plan.windows)
    need = max(plan.tokens_per_step * (plan.warmup + plan.timed), 2 * biggest) * 3 // 2 + 8 * biggest
    corpus = Corpus(doc_lengths(need, plan.doc_median, plan.doc_sigma, seed=0), plan.big.vocab, interleave)
    small = Corpus(doc_lengths(plan.small_window * plan.small_batch * 8, plan.small_doc_median, plan.doc_sigma,
                               seed=1), plan.small.vocab, interleave)
    results["mix"] = corpus.describe()
    print(f"mix: {results['mix']} (log-normal, median {plan.doc_median:g}, sigma {plan.doc_sigma:g})")

    run_phase(results, "fp32_check", lambda: fp32_check(rt, small, plan.check_layouts, results))
    held = {}

    def big_model():
        # compiled FlexAttention graphs of the small model would make the big one's shapes dynamic
        # from its first call; start it from static shapes
        torch._dynamo.reset()
        held["model"] = build_llama(plan.big, biggest).to(device)
        held["snap"] = Snapshot(held["model"])
        bf16_check(rt, held["model"], held["snap"], corpus, plan.check_layouts, plan.check_precisions, results)

    run_phase(results, "bf16_check", big_model)
    if "snap" in held:
        results["throughput_setup"] = throughput_setup(plan, corpus, held["model"], args.precision)
        run_phase(results, "throughput", lambda: throughput(rt, held["model"], held["snap"], corpus, args.precision,
                                                            peak["flop_s"], nominal, results))
    results["anchor_vs_full"] = anchor_ratios(results["throughput"])

    print_tables(results, rt)
    failed = failures(results)
    results["failures"] = failed
    results["elapsed_s"] = rt.elapsed()
    skipped = sum(1 for ph in ("fp32_check", "bf16_check", "throughput") for r in results[ph]
                  if r.get("status", "").startswith("skipped"))
    print("\nphases: " + ", ".join(f"{k} {v:.1f} s" for k, v in results["phases_s"].items())
          + f"; total {rt.elapsed():.1f} s; {skipped} rows skipped")
    if failed:
        print(f"FAILED ({len(failed)}):")
        for f in failed:
            print(f"  {f}")
    else:
        print("all checks passed")
    return 1 if not save(args.json, results) or failed else 0


if __name__ == "__main__":
    sys.exit(main())
