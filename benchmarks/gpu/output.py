"""The tables benchmarks/gpu_check.py prints, and the failures it exits 1 on."""

from __future__ import annotations

from benchmarks.gpu.correctness import BF16_FACTOR, BF16_FLOOR, FP32_TOL
from benchmarks.gpu.runtime import Runtime


def flop_rate(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.2f} GFLOP/s"


def sci(x, spec=".1e"):
    return "-" if x is None else format(x, spec)


def print_tables(results: dict, rt: Runtime) -> None:
    plan = rt.plan
    p = print
    rows = results["fp32_check"]
    if rows:
        s = plan.small
        p(
            f"\n== fp32 check: model hidden {s.hidden}, {s.layers} layers, {s.heads} heads / {s.kv_heads} KV, vocab "
            f"{s.vocab}; W={plan.small_window} x {plan.small_batch}; TF32 off; vs sdpa_mask (dense mask)"
        )
        p(
            f"   pass: loss rel <= {FP32_TOL['loss']:.0e} and every tensor's gradient rel L2 "
            f"<= {FP32_TOL['grad']:.0e}; "
            "'wrong mask' = the same errors for the masking bug named"
        )
        head = (
            f"{'layout':<21} {'backend':<12} {'loss rel':>8} {'grad rel':>8} {'worst':>8} {'cos min':>9} "
            f"{'wrong mask (loss / worst grad)':>42}  status"
        )
        p(head)
        p("-" * len(head))
        for r in rows:
            wrong = f"{r['wrong_mask']}: {sci(r['wrong_loss_rel'])} / {sci(r['wrong_grad_worst'])}"
            p(
                f"{r['layout']:<21} {r['backend']:<12} {sci(r.get('loss_rel')):>8} {sci(r.get('grad_rel')):>8} "
                f"{sci(r.get('grad_worst')):>8} {sci(r.get('cos_min'), '.6f'):>9} {wrong:>42}  {r['status']}"
            )
    rows = results["bf16_check"]
    if rows:
        W = plan.windows[0]
        p(
            f"\n== bf16 check: throughput model, W={W} x {plan.tokens_per_step // W}; "
            "errors against the fp32 sdpa_mask "
            "result; the sdpa_mask row of each precision is the bf16 noise"
        )
        p(
            f"   pass: loss rel <= {BF16_FACTOR:g} x noise + {BF16_FLOOR['loss']:.0e} and worst-tensor gradient rel L2 "
            f"<= {BF16_FACTOR:g} x noise + {BF16_FLOOR['grad']:.0e} (the tol columns)"
        )
        head = (
            f"{'precision':<10} {'layout':<21} {'backend':<12} {'loss rel':>8} {'worst':>8} {'cos min':>9} "
            f"{'tol loss':>8} {'tol grad':>8} {'vs bf16 ref':>17} {'wrong mask worst':>16}  status"
        )
        p(head)
        p("-" * len(head))
        for r in rows:
            vs = f"{sci(r.get('vs_bf16_loss_rel'))}/{sci(r.get('vs_bf16_grad_worst'))}"
            p(
                f"{r['precision']:<10} {r['layout']:<21} {r['backend']:<12} {sci(r.get('loss_rel')):>8} "
                f"{sci(r.get('grad_worst')):>8} {sci(r.get('cos_min'), '.6f'):>9} {sci(r.get('tol_loss')):>8} "
                f"{sci(r.get('tol_grad')):>8} {vs:>17} {sci(r.get('wrong_grad_worst')):>16}  {r['status']}"
            )
    rows = results["throughput"]
    if rows:
        t = results["throughput_setup"]
        p(
            f"\n== throughput: {t['model']}, {t['params'] / 1e6:.1f}M parameters, {plan.tokens_per_step} tokens/step, "
            f"precision {t['precision']}, median of {plan.timed} steps after {plan.warmup} warm-up"
        )
        for W, d in t["mix"].items():
            p(
                f"   W={W}: {d['docs_per_window']:.1f} documents/window, anchor attends "
                f"{d['anchor_pairs_over_full']:.3f} of full's query-key pairs (all packed windows)"
            )
        head = (
            f"{'W':>6} {'B':>3} {'backend':<12} {'layout':<7} {'step ms':>8} {'tokens/s':>9} {'TFLOP/s':>8} "
            f"{'MFU':>6} {'MFU ds':>6} {'attn %':>6} {'inputs ms':>9} {'peak GiB':>8}  status"
        )
        p(head)
        p("-" * len(head))
        for r in rows:
            if r["status"] != "ok":
                p(
                    f"{r['window']:>6} {r['batch']:>3} {r['backend']:<12} {r['layout']:<7} {'':>8} {'':>9} {'':>8} "
                    f"{'':>6} {'':>6} {r['attn_share']:>6.1%} {'':>9} {'':>8}  {r['status']}"
                )
                continue
            ds = "-" if r["mfu_datasheet"] is None else f"{r['mfu_datasheet']:.1%}"
            mem = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            p(
                f"{r['window']:>6} {r['batch']:>3} {r['backend']:<12} {r['layout']:<7} {r['step_s'] * 1e3:>8.1f} "
                f"{r['tok_s']:>9.0f} {r['flop_s'] / 1e12:>8.2f} {r['mfu']:>6.1%} {ds:>6} {r['attn_share']:>6.1%} "
                f"{r['inputs_s'] * 1e3:>9.2f} {mem:>8}  ok"
            )
    rows = results["anchor_vs_full"]
    if rows:
        p(
            "\n== anchor vs full step time (ratio < 1: anchor is faster; ideal = anchor's share of the step FLOPs; "
            "attn pairs = its share of the query-key pairs, both over the timed batches)"
        )
        head = (
            f"{'W':>6} {'backend':<12} {'full ms':>8} {'anchor ms':>9} {'time ratio':>10} {'ideal':>6} "
            f"{'attn pairs':>10}"
        )
        p(head)
        p("-" * len(head))
        for r in rows:
            p(
                f"{r['window']:>6} {r['backend']:<12} {r['full_s'] * 1e3:>8.1f} {r['anchor_s'] * 1e3:>9.1f} "
                f"{r['time_ratio']:>10.3f} {r['flop_ratio']:>6.3f} {r['pair_ratio']:>10.3f}"
            )


def failures(results: dict) -> list:
    out = [f"{e['phase']}: {e['status']}" for e in results.get("phase_errors", [])]
    for phase in ("fp32_check", "bf16_check", "throughput"):
        for r in results[phase]:
            status = r.get("status", "")
            if status.startswith(("FAIL", "error")):
                out.append(
                    f"{phase} {r.get('precision', '')} {r.get('layout')} {r.get('backend')}"
                    f"{' W=' + str(r['window']) if 'window' in r else ''}: {status}".replace("  ", " ")
                )
    return out
