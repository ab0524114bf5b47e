"""The correctness phases of benchmarks/gpu_check.py: every backend's loss and gradients against the
dense-mask reference, in fp32 (fixed tolerances) and in bf16 (tolerances from bf16's own noise), each
beside the error a plausible masking bug gives."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.gpu.runtime import Corpus, Runtime, Snapshot, build_llama, error_row

FP32_TOL = {"loss": 1e-5, "grad": 1e-4}
BF16_FLOOR = {"loss": 1e-3, "grad": 5e-3}
BF16_FACTOR = 2.0


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
    out.update(
        grad_rel=math.sqrt(num / den) if den > 0 else 0.0, grad_worst=worst, worst_tensor=worst_name, cos_min=cos_min
    )
    return out


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
        with torch.no_grad(), torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = model(**model_inputs(part, layout, backend)).logits
            loss_sum, count = causal_lm_loss(logits, part["labels"])
        model.train()
        return float(loss_sum) / max(count, 1), None
    set_backend(model, backend, training=True)
    model.train()
    s = TrainSettings(
        steps=1, batch_size=len(batch["input_ids"]), lr=1.0, precision=precision, layout=layout, backend=backend
    )
    loss = accumulate_gradients(model, batch, s, rt.device)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss, grads


def first_windows(data, n: int) -> dict:
    return {k: v[:n] for k, v in data.arrays.items()}


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
                row = {
                    "layout": layout,
                    "backend": backend,
                    "tol_loss": FP32_TOL["loss"],
                    "tol_grad": FP32_TOL["grad"],
                    "wrong_mask": bug,
                    "wrong_loss_rel": wrong["loss_rel"],
                    "wrong_grad_worst": wrong["grad_worst"],
                }
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
            base = {
                "layout": layout,
                "precision": precision,
                "wrong_mask": bug,
                "wrong_loss_rel": wrong["loss_rel"],
                "wrong_grad_worst": wrong["grad_worst"],
            }
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
                    rows.append(
                        {
                            **base,
                            "backend": backend,
                            **cmp,
                            "vs_bf16_loss_rel": vs_bf16["loss_rel"],
                            "vs_bf16_grad_worst": vs_bf16.get("grad_worst"),
                            "status": status,
                        }
                    )
                    del grads
                except Exception as exc:  # noqa: BLE001
                    rows.append({**base, "backend": backend, **error_row(exc)})
                rt.reset_memory()
            del p_grads
        del ref_grads
        rt.reset_memory()
    restore(torch.float32)
