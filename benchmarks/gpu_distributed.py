"""Multi-process fine-tuning on this machine, in one command: the GPU check, then short fine-tunes of a tiny
model launched as the workflow launches them, compared with one process; prints a table.

    .venv/bin/python benchmarks/gpu_distributed.py [--json PATH]          # a node with 1-8 GPUs, < 10 min
    .venv/bin/python benchmarks/gpu_distributed.py --cpu                  # 2 CPU processes over gloo

Steps:
1. ``benchmarks/gpu_check.py --quick`` (attention backends against the dense reference, bf16 throughput);
   left out with ``--cpu`` or ``--skip-gpu-check``.
2. A tiny Llama (4 heads of 32, 256-token window, anchor layout) fine-tuned for 8 steps
   through ``python -m ropeext.launch`` with config/accelerate/ddp.yaml and fsdp.yaml: one process,
   then N (the largest of 2, 4, 8 that the GPUs allow; 2 with ``--cpu``) in fp32, whose loss curve must
   equal the one-process curve within 1e-5 per step; FSDP again in bf16 (its rotary cos/sin dtype is
   reported); with N > 1, DDP with ``finetune.sequence_parallel`` 2 (DeepSpeed Ulysses).
3. With 2 GPUs or more: ``pytest -m gpu tests/test_sequence_parallel.py`` (flex and flash_varlen under
   sequence parallelism: one GPU per process, since NCCL refuses two processes on one GPU).

Exit status 1 when a run fails or a loss curve differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = 8
TOLERANCE = 1e-5  # per step, fp32
CONFIG = """
seed: 0
model: {{train_length: 128}}
attention: {{backend: blockwise}}
finetune: {{steps: {steps}, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, precision: fp32, checkpoint_every: 100,
            log_every: 1}}
"""


def build_inputs(folder: Path) -> dict:
    """A tiny tokenizer and model, packed anchor windows of random documents, and a PI scaling to 256."""
    import numpy as np

    from ropeext.cli import main as cli
    from ropeext.commands.pack import write_packed
    from ropeext.data.packing import pack_documents
    from ropeext.data.tokenizer import train_bpe
    from ropeext.modeling import build_tiny_llama

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "key", "value", "pass", "return", "def", "class"]
    tok = train_bpe([" ".join(rng.choice(words, 40)) for _ in range(200)], vocab_size=300)
    model = build_tiny_llama(
        len(tok),
        128,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    base = folder / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    docs = [list(rng.integers(3, len(tok), size=int(rng.integers(20, 200)))) for _ in range(200)]
    write_packed(folder / "train.parquet", pack_documents(docs, 256, "anchor", tok.bos_token_id, 0), "anchor")
    (folder / "config.yaml").write_text(CONFIG.format(steps=STEPS))
    solve = ["solve", "--rope-theta", "10000", "--head-dim", "32", "--train-length", "128", "--target-length", "256"]
    if cli([*solve, "--method", "pi", "--output", str(folder / "scaling.json"), "--no-mlflow"]) != 0:
        raise SystemExit("could not write the scaling file")
    return {"folder": folder, "base": base}


def launch(inp: dict, name: str, accelerate: str, processes: int, *extra: str) -> dict:
    """One fine-tune through ropeext.launch; its training summary, wall time and status."""
    out = inp["folder"] / name
    cmd = [sys.executable, "-m", "ropeext.launch", "--config_file", str(ROOT / "config/accelerate" / accelerate)]
    cmd += ["--num_processes", str(processes), "--", "finetune", "--config", str(inp["folder"] / "config.yaml")]
    cmd += ["--base", str(inp["base"]), "--scaling", str(inp["folder"] / "scaling.json")]
    cmd += ["--train", str(inp["folder"] / "train.parquet"), "--layout", "anchor", "--output", str(out)]
    cmd += ["--no-mlflow", *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    row = {"run": name, "seconds": time.perf_counter() - t, "ok": done.returncode == 0}
    if done.returncode:
        said = [line for line in done.stderr.splitlines() if line.startswith(("error:", "  "))]
        row["error"] = "\n".join(said) or done.stderr[-2000:]
        return row
    summary = json.loads((out / "training_summary.json").read_text())
    keys = ("processes", "strategy", "sequence_parallel", "rope_dtype", "loss_history", "tokens_per_s")
    return {**row, **{k: summary.get(k) for k in keys}, "precision": summary["settings"]["precision"]}


def compare(rows: list[dict]) -> None:
    """Each fp32 row's largest per-step loss difference to the one-process run."""
    ref = next(r for r in rows if r["run"] == "1 process")
    for r in rows:
        if r.get("ok") and r["precision"] == "fp32" and ref.get("ok"):
            r["max_dloss"] = max(abs(a - b) for a, b in zip(r["loss_history"], ref["loss_history"]))
            r["ok"] = r["max_dloss"] <= TOLERANCE


def table(rows: list[dict]) -> str:
    lines = [
        "| run | processes | strategy | per window | precision | first loss | last loss | max dloss vs 1 | "
        "rope dtype | s | status |",
        "|---|---:|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        losses = r.get("loss_history") or [float("nan")]
        d = r.get("max_dloss")
        lines.append(
            f"| {r['run']} | {r.get('processes', '?')} | {r.get('strategy', '?')} | {r.get('sequence_parallel', '?')} "
            f"| {r.get('precision', '?')} | {losses[0]:.6f} | {losses[-1]:.6f} | {'—' if d is None else f'{d:.1e}'} "
            f"| {r.get('rope_dtype', '?')} | {r['seconds']:.0f} | {'ok' if r['ok'] else 'FAILED'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="2 CPU processes over gloo (no GPU needed)")
    ap.add_argument("--skip-gpu-check", action="store_true", help="leave out benchmarks/gpu_check.py --quick")
    ap.add_argument("--json", default=None, help="write the rows as JSON to this path")
    args = ap.parse_args(argv)
    import torch

    gpus = 0 if args.cpu else torch.cuda.device_count()
    if not gpus and not args.cpu:
        print("gpu_distributed: no CUDA GPU visible; run with --cpu for CPU processes over gloo")
        return 0
    failed = False
    if gpus and not args.skip_gpu_check:
        failed |= (
            subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--quick"], cwd=ROOT).returncode != 0
        )
    n = 2 if args.cpu else max([k for k in (1, 2, 4, 8) if k <= gpus])
    with tempfile.TemporaryDirectory(prefix="ropeext-dist-") as tmp:
        inp = build_inputs(Path(tmp))
        rows = [launch(inp, "1 process", "ddp.yaml", 1)]
        if n > 1:
            rows += [launch(inp, f"ddp x {n}", "ddp.yaml", n), launch(inp, f"fsdp x {n}", "fsdp.yaml", n)]
            rows.append(launch(inp, f"ddp x {n}, 2 per window", "ddp.yaml", n, "--set", "sequence_parallel=2"))
        rows.append(launch(inp, f"fsdp x {n} bf16", "fsdp.yaml", n, "--set", "precision=bf16"))
    compare(rows)
    device = "CPU processes over gloo" if args.cpu else f"{gpus} x {torch.cuda.get_device_name(0)}"
    print(f"\nMulti-process fine-tunes ({STEPS} steps, batch 8 x 256 tokens, anchor layout) on {device}:\n")
    print(table(rows))
    for r in rows:
        if r.get("error"):
            print(f"\n{r['run']} failed:\n{r['error']}")
    if gpus >= 2:
        sp = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            "tests/test_sequence_parallel.py",
        ]
        failed |= subprocess.run(sp, cwd=ROOT).returncode != 0
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 1 if failed or not all(r["ok"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
