"""The throughput phase of benchmarks/gpu_check.py: timed ``train`` steps per window, backend and layout,
their FLOPs and MFU, and the anchor-vs-full step-time ratios."""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.flops import attended_pairs, count_params, step_flops
from benchmarks.gpu.plan import Plan
from benchmarks.gpu.runtime import Corpus, Runtime, Snapshot, error_row, progress


def timed_pairs(data, layout: str, batch: int, plan: Plan) -> float:
    """Mean attended pairs per step over the batches the timed steps train on (the loop's own order)."""
    from ropeext.train.data import batch_indices

    per_window = attended_pairs(data.arrays["doc_ids"], layout)
    steps = range(plan.warmup, plan.warmup + plan.timed)
    return float(np.mean([per_window[batch_indices(k, batch, data.windows, 0)].sum() for k in steps]))


def throughput(
    rt: Runtime, model, snap: Snapshot, corpus: Corpus, precision: str, peak: float, nominal, results: dict
) -> None:
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
                flops, attn = step_flops(n_params, spec.layers, spec.hidden, B * W, pairs)
                row = {
                    "window": W,
                    "batch": B,
                    "backend": backend,
                    "layout": layout,
                    "precision": precision,
                    "flops": flops,
                    "attn_share": attn / flops,
                    "pairs_per_window": pairs / B,
                }
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
                    s = TrainSettings(
                        steps=plan.warmup + plan.timed,
                        batch_size=B,
                        lr=1e-5,
                        warmup_steps=0,
                        schedule="constant",
                        precision=precision,
                        layout=layout,
                        backend=backend,
                        seed=0,
                        max_grad_norm=1.0,
                    )  # seed 0: the batches timed_pairs counted
                    stamps.append(time.perf_counter())
                    summary = train(model, data, s, progress=False, on_step=tick)
                    steps = np.diff(stamps)[plan.warmup :]
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
                    rows.append(
                        {
                            **row,
                            "step_s": sec,
                            "steps_s": steps.tolist(),
                            "tok_s": B * W / sec,
                            "flop_s": flops / sec,
                            "mfu": flops / sec / peak,
                            "mfu_datasheet": flops / sec / nominal[1] if nominal else None,
                            "inputs_s": statistics.median(build),
                            "peak_gib": rt.peak_memory_gib(),
                            "loss_first": summary.get("first_loss"),
                            "loss_last": summary.get("final_loss"),
                            "numeric_path": (summary.get("numeric_path") or {}).get("observed"),
                            "status": "ok",
                        }
                    )
                except Exception as exc:  # noqa: BLE001
                    rows.append({**row, **error_row(exc)})
                finally:
                    model.zero_grad(set_to_none=True)
                    rt.reset_memory()
                last = rows[-1]
                progress(
                    f"gpu_check: W={W} {backend} {layout}: "
                    + (f"{last['step_s'] * 1e3:.1f} ms/step" if last["status"] == "ok" else last["status"])
                )
    snap.restore(model, torch.float32)


def throughput_setup(plan: Plan, corpus: Corpus, model, precision: str) -> dict:
    """What the throughput table was measured on: the model, and per window how packed it is."""
    mix = {}
    for W in plan.windows:
        full = attended_pairs(corpus.packed(W, "full").arrays["doc_ids"], "full").mean()
        doc = corpus.packed(W, "anchor").arrays["doc_ids"]
        mix[W] = {
            "docs_per_window": float(doc.max(axis=1).mean()),
            "anchor_pairs_over_full": float(attended_pairs(doc, "anchor").mean() / full),
        }
    b = plan.big
    return {
        "model": f"Llama hidden {b.hidden}, {b.layers} layers, {b.heads} heads / {b.kv_heads} KV, "
        f"MLP {b.intermediate}, vocab {b.vocab}",
        "params": count_params(model),
        "precision": precision,
        "mix": mix,
    }


def anchor_ratios(rows: list) -> list:
    out = []
    done = {(r["window"], r["backend"], r["layout"]): r for r in rows if r.get("status") == "ok"}
    for (W, backend, layout), a in done.items():
        f = done.get((W, backend, "full"))
        if layout != "anchor" or f is None:
            continue
        out.append(
            {
                "window": W,
                "backend": backend,
                "full_s": f["step_s"],
                "anchor_s": a["step_s"],
                "time_ratio": a["step_s"] / f["step_s"],
                "flop_ratio": a["flops"] / f["flops"],
                "pair_ratio": a["pairs_per_window"] / f["pairs_per_window"],
            }
        )
    return out
