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
   steps). FLOPs per step from benchmarks/flops.py (shared with bench_train.py): 6 x parameters x tokens (tied
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

The parts: benchmarks/gpu/plan.py (the modes), runtime.py (device, data, models), correctness.py
(phases 2 and 3), timing.py (phase 4), output.py (the tables); benchmarks/flops.py (the FLOP model).

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
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.flops import datasheet_peak  # noqa: E402
from benchmarks.gpu.correctness import bf16_check, fp32_check  # noqa: E402
from benchmarks.gpu.output import failures, flop_rate, print_tables  # noqa: E402
from benchmarks.gpu.plan import BACKEND_ORDER, PLANS  # noqa: E402
from benchmarks.gpu.runtime import (  # noqa: E402
    Corpus,
    Runtime,
    Snapshot,
    build_llama,
    doc_lengths,
    error_row,
    measure_peak,
    progress,
)
from benchmarks.gpu.timing import anchor_ratios, throughput, throughput_setup  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~2 minute pass (one window, fewer layouts and steps)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run everything at tiny sizes on CPU (no GPU needed)")
    ap.add_argument(
        "--cpu-flex",
        action="store_true",
        help="with --cpu-smoke: also run flex forward-only (compiles for ~50 s on first use)",
    )
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    ap.add_argument("--backends", default=None, help=f"comma-separated subset of {','.join(BACKEND_ORDER)}")
    ap.add_argument("--layouts", default=None, help="layouts of the correctness checks (comma-separated, or 'all')")
    ap.add_argument(
        "--windows", type=int, nargs="+", default=None, help="throughput windows (default 8192 16384 32768)"
    )
    ap.add_argument(
        "--precision",
        default="bf16",
        choices=("bf16", "bf16-mixed"),
        help="precision of the throughput steps (default bf16, as the paper configs)",
    )
    ap.add_argument("--budget-s", type=float, default=None, help="skip remaining throughput runs after this many s")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch (default: torch's own; 1 with --cpu-smoke, which is fastest for its "
        "tiny sizes and on a busy machine)",
    )
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
    if args.json and (
        Path(args.json).is_dir() or (Path(args.json).parent.exists() and not Path(args.json).parent.is_dir())
    ):
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
        line = (
            f"{name} (sm{props.major}{props.minor}, {props.total_memory / 2**30:.1f} GiB), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    else:
        name = "CPU"
        line = f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}: smoke sizes, timings meaningless"
    try:
        import flash_attn

        line += f", flash-attn {flash_attn.__version__}"
    except ImportError:
        pass
    return name, line


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
    results = {
        "mode": plan.name,
        "plan": asdict(plan),
        "device": line,
        "backends": {b: rt.support[b] or "ok" for b in BACKEND_ORDER},
        "fp32_check": [],
        "bf16_check": [],
        "throughput": [],
        "anchor_vs_full": [],
        "phase_errors": [],
        "phases_s": {},
    }
    print(f"gpu_check ({plan.name}): {line}")
    print("backends: " + "; ".join(f"{b} {rt.support[b] or 'ok'}" for b in BACKEND_ORDER if b in rt.backends))

    nominal = datasheet_peak(name) if rt.cuda else None
    peak = {}
    run_phase(results, "peak", lambda: peak.update(flop_s=measure_peak(rt, plan.peak_n)))
    if "flop_s" not in peak:
        print(f"FAILED: the peak measurement raised: {results['phase_errors'][0]['status']}")
        save(args.json, results)
        return 1
    results["peak"] = {
        "measured_flop_s": peak["flop_s"],
        "gemm": plan.peak_n,
        "datasheet": None if nominal is None else {"gpu": nominal[0], "flop_s": nominal[1]},
    }
    print(
        f"peak: bf16 GEMM {plan.peak_n}^3 measured {flop_rate(peak['flop_s'])}"
        + (
            f"; datasheet dense BF16 {nominal[1] / 1e12:.0f} TFLOP/s ({nominal[0]})"
            if nominal
            else ("; datasheet peak unknown for this GPU" if rt.cuda else "")
        )
    )

    interleave = plan.interleave or validate_config({})["packing"]["interleave"]
    biggest = max(plan.windows)
    need = max(plan.tokens_per_step * (plan.warmup + plan.timed), 2 * biggest) * 3 // 2 + 8 * biggest
    corpus = Corpus(doc_lengths(need, plan.doc_median, plan.doc_sigma, seed=0), plan.big.vocab, interleave)
    small = Corpus(
        doc_lengths(plan.small_window * plan.small_batch * 8, plan.small_doc_median, plan.doc_sigma, seed=1),
        plan.small.vocab,
        interleave,
    )
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
        run_phase(
            results,
            "throughput",
            lambda: throughput(
                rt, held["model"], held["snap"], corpus, args.precision, peak["flop_s"], nominal, results
            ),
        )
    results["anchor_vs_full"] = anchor_ratios(results["throughput"])

    print_tables(results, rt)
    failed = failures(results)
    results["failures"] = failed
    results["elapsed_s"] = rt.elapsed()
    skipped = sum(
        1
        for ph in ("fp32_check", "bf16_check", "throughput")
        for r in results[ph]
        if r.get("status", "").startswith("skipped")
    )
    print(
        "\nphases: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in results["phases_s"].items())
        + f"; total {rt.elapsed():.1f} s; {skipped} rows skipped"
    )
    if failed:
        print(f"FAILED ({len(failed)}):")
        for f in failed:
            print(f"  {f}")
    else:
        print("all checks passed")
    return 1 if not save(args.json, results) or failed else 0


if __name__ == "__main__":
    sys.exit(main())
