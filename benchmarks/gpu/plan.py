"""What benchmarks/gpu_check.py runs: the model shapes, sizes, layouts and time budget of each mode."""

from __future__ import annotations

from dataclasses import dataclass, replace

ANCHOR_ID = 1
BACKEND_ORDER = ("sdpa_mask", "flex", "flash_varlen", "blockwise")


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
FULL = Plan(
    name="full",
    big=BIG,
    small=SMALL,
    tokens_per_step=32768,
    windows=(8192, 16384, 32768),
    warmup=2,
    timed=4,
    small_window=1024,
    small_batch=2,
    doc_median=1000.0,
    doc_sigma=1.5,
    small_doc_median=100.0,
    check_layouts=("full", "anchor", "anchor_interleaved"),
    check_precisions=("bf16", "bf16-mixed"),
    peak_n=8192,
    budget_s=450.0,
)
PLANS = {
    "full": FULL,
    "quick": replace(
        FULL,
        name="quick",
        windows=(16384,),
        warmup=1,
        timed=2,
        check_layouts=("full", "anchor"),
        check_precisions=("bf16",),
        budget_s=150.0,
    ),
    # every CPU path at tiny sizes; document lengths and interleave cuts scaled to the small windows. A CPU
    # without native bf16 emulates its matmuls: the step (512 tokens, vocab 512) is kept that small
    "smoke": replace(
        FULL,
        name="smoke",
        big=ModelSpec(96, 2, 4, 2, 192, 512),
        small=ModelSpec(64, 2, 4, 2, 128, 512),
        tokens_per_step=512,
        windows=(256, 512),
        warmup=1,
        timed=2,
        small_window=128,
        doc_median=24.0,
        doc_sigma=1.0,
        small_doc_median=12.0,
        peak_n=256,
        budget_s=120.0,
        interleave={"min_tokens": 8, "max_tokens": 512, "chunks": [2, 3], "cut_range": [0.2, 0.8]},
    ),
}
