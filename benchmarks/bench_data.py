"""Data path throughput and peak memory: corpus + tokenize + pack at growing corpus sizes, new path vs old.

The corpus is real text: the interpreter's standard library files, shuffled and repeated into
JSONL shards (one record per file, with a domain field) of 100 MB, 400 MB and 1.6 GB under a temp
folder. Each size runs ``ropeext corpus``, ``ropeext tokenizer`` (a byte-level BPE of 2048 tokens
trained once beforehand and given as ``tokenizer.path``, so both paths only tokenize) and ``ropeext
pack`` of the train split (layout anchor, window --window, 8192 by default) in subprocesses. Per
stage: seconds, MB/s (text MB of the corpus for corpus and tokenize, of the train split for pack)
and peak RSS, the largest sum of the process tree's resident memory (sampled every 50 ms); the
path's peak is the largest of its stages'.

Baseline (same run): the implementation before the streaming data path, taken from git history
(``git archive OLD_REV ropeext``) and run the same way on the sizes it survives; a size whose
peak, extrapolated linearly from the largest size it ran, would exceed --old-limit-gb is reported
as not run, and a stage that fails (e.g. killed for memory) as failed. Goal: peak RSS flat in
corpus size (< 2 GB at 1.6 GB of text for the whole path) and throughput that grows with worker
cores (tokenize-only comparison of 1 vs all cores at the smallest size).

    .venv/bin/python benchmarks/bench_data.py [--quick] [--sizes 100,400,1600] [--old-limit-gb 8] [--window 8192]

``--long-document [MB]`` measures instead the case where memory used to follow the longest document:
one text file of MB (50 by default) megabytes without a newline (standard-library text, whitespace
collapsed to single spaces), and the same text as 500 JSONL records, through ``ropeext corpus`` and
``ropeext tokenizer`` (a BPE of 2048 tokens trained on the train split, then every split tokenized),
with this checkout and with LONG_OLD_REV, the commit before long documents were encoded in pieces.
It prints seconds and peak RSS per stage and whether both give the same tokenizer and token ids
(``--new-only`` skips the old one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OLD_REV = "b1b096df53a5bcb821dd3bc69e5e61cba18924f0"  # the last commit before the streaming data path
LONG_OLD_REV = "6517728714e56cb8fab3c2776267698a68b12e99"  # the last commit before long documents went in pieces
MB = 1_000_000


def build_jsonl(folder: Path, size_mb: int, seed: int = 0, shard_mb: int = 64) -> int:
    """Standard-library files, shuffled and repeated, as JSONL shards of about ``shard_mb``; bytes of text written."""
    from ropeext.data.corpus import stdlib_domain, stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for p in stdlib_files(root):
        try:
            texts.append((stdlib_domain(p.relative_to(root).as_posix()), p.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written, shard, n, fh = 0, 0, 0, None
    while written < size_mb * MB:
        rng.shuffle(texts)
        for domain, text in texts:
            if fh is None or fh.tell() > shard_mb * MB:
                if fh:
                    fh.close()
                fh = open(folder / f"part-{shard:04d}.jsonl", "w", encoding="utf-8")
                shard += 1
            fh.write(json.dumps({"text": text, "meta": {"module": domain}, "n": n}) + "\n")
            written += len(text.encode())
            n += 1
            if written >= size_mb * MB:
                break
    fh.close()
    return written


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant, pool workers included
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """(seconds, peak RSS of the process tree in bytes, CPU seconds of the tree) of one command."""
    import psutil

    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    # cwd outside the repository: `python -m` puts the working folder first on sys.path, and the old
    # implementation must be imported from PYTHONPATH, not from a checkout that happens to be the cwd
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir()
    )
    ps, peak, done = psutil.Process(proc.pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            try:
                total = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} failed ({proc.returncode}):\n{err[-2000:]}")
    return seconds, float(peak[0]), _children_cpu() - cpu0


def pipeline(package_root: Path, data: Path, tokenizer: Path, work: Path, threads: int | None, window: int) -> dict:
    import yaml

    cfg = {
        "corpus": {"source": "jsonl", "path": str(data / "*.jsonl"), "min_chars": 1},
        "tokenizer": {"path": str(tokenizer)},
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(
        os.environ,
        PYTHONPATH=str(package_root),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    where = subprocess.run(
        [sys.executable, "-c", "import ropeext; print(ropeext.__file__)"],
        env=env,
        text=True,
        capture_output=True,
        cwd=tempfile.gettempdir(),
    ).stdout.strip()
    if not where.startswith(str(package_root)):
        raise RuntimeError(f"ropeext imported from {where}, not from {package_root}")
    py = [sys.executable, "-m", "ropeext.cli"]
    c_s, c_rss, c_cpu = run_measured(
        py + ["corpus", "--config", str(work / "config.yaml"), "--output-dir", str(work / "corpus"), "--no-mlflow"], env
    )
    tok_cmd = py + [
        "tokenizer",
        "--config",
        str(work / "config.yaml"),
        "--corpus-dir",
        str(work / "corpus"),
        "--tokenizer-dir",
        str(work / "tok"),
        "--tokens-dir",
        str(work / "tokens"),
        "--no-mlflow",
    ]
    if threads is not None:
        tok_cmd += ["--threads", str(threads)]
    t_s, t_rss, t_cpu = run_measured(tok_cmd, env)
    stats = json.loads((work / "tokens" / "stats.json").read_text())
    tokens = sum(stats[s]["tokens"] for s in ("train", "validation", "test"))
    out = {
        "corpus_s": c_s,
        "tokenize_s": t_s,
        "corpus_peak": c_rss,
        "tokenize_peak": t_rss,
        "tokens": tokens,
        "train_share": stats["train"]["tokens"] / max(tokens, 1),
        "cpu": c_cpu + t_cpu,
    }
    shutil.rmtree(work / "corpus")  # the disk the pack stage's output needs
    try:
        p_s, p_rss, p_cpu = run_measured(
            py
            + [
                "pack",
                "--tokens",
                str(work / "tokens" / "train.parquet"),
                "--tokenizer",
                str(tokenizer),
                "--window",
                str(window),
                "--layout",
                "anchor",
                "--output",
                str(work / "packed" / "anchor.parquet"),
                "--no-mlflow",
            ],
            env,
        )
        out.update(pack_s=p_s, pack_peak=p_rss, cpu=out["cpu"] + p_cpu)
    except RuntimeError as exc:
        print(f"  pack failed: {str(exc).splitlines()[0]}", flush=True)
        out.update(pack_s=None, pack_peak=None)
    shutil.rmtree(work)
    out["seconds"] = c_s + t_s + (out["pack_s"] or 0.0)
    out["peak"] = max(c_rss, t_rss, out["pack_peak"] or 0.0)
    return out


_ENCODE = """
import sys, time
from pathlib import Path
from ropeext.data.tokenizer import load_tokenizer
from ropeext.data.tokens import tokenize_split
tok = load_tokenizer(sys.argv[1])
t0 = time.perf_counter()
tokenize_split(tok, [Path(sys.argv[2])], sys.argv[3], threads=int(sys.argv[4]), batch_chars=int(sys.argv[5]))
print(time.perf_counter() - t0)
"""


def encoder_comparison(data: Path, tokenizer: Path, work: Path, cores: int) -> list[tuple[str, float, float]]:
    """Tokenize-only MB/s of the train split: one single-threaded process, the tokenizers library's own
    threads (TOKENIZERS_PARALLELISM=true, RAYON_NUM_THREADS=cores) in one process, and ``cores`` workers."""
    import pyarrow.parquet as pq
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(
        yaml.safe_dump({"corpus": {"source": "jsonl", "path": str(data / "*.jsonl"), "min_chars": 1}})
    )
    base = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ropeext.cli",
            "corpus",
            "--config",
            str(work / "config.yaml"),
            "--output-dir",
            str(work / "corpus"),
            "--no-mlflow",
        ],
        env=base,
        check=True,
        capture_output=True,
        cwd=tempfile.gettempdir(),
    )
    split = work / "corpus" / "train.parquet"
    mb = sum(len(t.encode()) for t in pq.read_table(split, columns=["text"]).column("text").to_pylist()) / MB
    out = []
    for label, parallel, threads, chars in (
        ("1 process, 1 thread", "false", 1, 1 << 20),
        (f"1 process, library threads x{cores}", "true", 1, 8 << 20),
        (f"{cores} worker processes", "false", cores, 1 << 20),
    ):
        env = dict(base, TOKENIZERS_PARALLELISM=parallel, RAYON_NUM_THREADS=str(cores))
        cpu0 = _children_cpu()
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                _ENCODE,
                str(tokenizer),
                str(split),
                str(work / "t.parquet"),
                str(threads),
                str(chars),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        cpu = _children_cpu() - cpu0
        out.append((label, mb / float(res.stdout.strip().splitlines()[-1]), mb / cpu))
        print(f"  encoder {label}: {out[-1][1]:.2f} MB/s, {out[-1][2]:.2f} MB per CPU-second", flush=True)
    shutil.rmtree(work)
    return out


def old_package(dest: Path, rev: str) -> Path | None:
    """The ``ropeext`` package (and its config schema) at ``rev``, unpacked under ``dest``; None if unavailable."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "ropeext", "workflow/schemas"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"old implementation {rev[:10]} not available ({exc}); baseline not run")
        return None
    return dest


def build_long_document(folder: Path, size_mb: int, records: int = 500) -> tuple[Path, Path]:
    """One line of about ``size_mb`` MB of standard-library text (a ``.txt`` whose path the split hash puts
    in train) and the same text cut into ``records`` JSONL records; (text file, JSONL folder)."""
    from ropeext.data.corpus import split_of, stdlib_files
    from ropeext.data.pieces import text_pieces

    root = Path(sysconfig.get_paths()["stdlib"])
    parts, n = [], 0
    while n < size_mb * MB:
        for p in stdlib_files(root):
            try:
                text = " ".join(p.read_text(encoding="utf-8").split())
            except (UnicodeDecodeError, OSError):
                continue
            parts.append(text)
            n += len(text) + 1
            if n >= size_mb * MB:
                break
    text = " ".join(parts)[: size_mb * MB]
    folder.mkdir(parents=True, exist_ok=True)
    # a text document's id is its path: pick a name that lands in train, as a one-document corpus must
    name = next(
        f"long-{i}.txt" for i in range(1000) if split_of((folder / f"long-{i}.txt").as_posix(), 0.05, 0.1) == "train"
    )
    (folder / name).write_text(text, encoding="utf-8")
    many = folder / "records"
    many.mkdir()
    with open(many / "part.jsonl", "w", encoding="utf-8") as fh:
        for piece in text_pieces(text, len(text) // records + 1):
            fh.write(json.dumps({"text": piece}) + "\n")
    return folder / name, many


def long_document_run(package_root: Path, corpus_cfg: dict, work: Path) -> dict:
    """``ropeext corpus`` then ``ropeext tokenizer`` (BPE training and tokenizing) of one corpus, measured."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump({"corpus": corpus_cfg, "tokenizer": {"vocab_size": 2048}}))
    env = dict(os.environ, PYTHONPATH=str(package_root), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    py = [sys.executable, "-m", "ropeext.cli"]
    cfg = ["--config", str(work / "config.yaml"), "--no-mlflow"]
    c_s, c_rss, _ = run_measured(py + ["corpus", *cfg, "--output-dir", str(work / "corpus")], env)
    t_s, t_rss, _ = run_measured(
        py
        + [
            "tokenizer",
            *cfg,
            "--corpus-dir",
            str(work / "corpus"),
            "--tokenizer-dir",
            str(work / "tok"),
            "--tokens-dir",
            str(work / "tokens"),
        ],
        env,
    )
    stats = json.loads((work / "tokens" / "stats.json").read_text())
    return {"corpus_s": c_s, "corpus_peak": c_rss, "tokenizer_s": t_s, "tokenizer_peak": t_rss, "stats": stats}


def _same_output(a: Path, b: Path) -> bool:
    """Whether two runs wrote the same tokenizer and the same token ids for every split."""
    import pyarrow.parquet as pq

    if (a / "tok" / "tokenizer.json").read_text() != (b / "tok" / "tokenizer.json").read_text():
        return False
    return all(
        pq.read_table(a / "tokens" / f"{s}.parquet", columns=["input_ids"]).equals(
            pq.read_table(b / "tokens" / f"{s}.parquet", columns=["input_ids"])
        )
        for s in ("train", "validation", "test")
    )


def long_document_bench(size_mb: int, new_only: bool, tmp_root: str | None) -> None:
    from ropeext.data.tokens import available_cores

    print(
        f"machine: {os.cpu_count()} cores ({available_cores()} usable), load average {os.getloadavg()[0]:.1f}; "
        f"one {size_mb} MB line vs the same text as 500 records"
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench_long_") as tmp:
        tmp = Path(tmp)
        text_file, records = build_long_document(tmp / "data", size_mb)
        old = None if new_only else old_package(tmp / "old", LONG_OLD_REV)
        corpora = (
            ("1 document", {"source": "text", "path": str(text_file), "min_chars": 1}),
            ("500 documents", {"source": "jsonl", "path": str(records / "*.jsonl"), "min_chars": 1}),
        )
        for label, cfg in corpora:
            outs = {}
            for path, root in (("new", REPO), ("old", old)):
                if root is None:
                    continue
                work = tmp / f"work-{path}"
                r = long_document_run(root, cfg, work)
                outs[path] = work
                rows.append({"corpus": label, "path": path, **r})
                print(
                    f"  {label}, {path}: tokenizer {r['tokenizer_s']:.1f} s, "
                    f"peak {r['tokenizer_peak'] / 2**30:.2f} GiB",
                    flush=True,
                )
            same = _same_output(outs["new"], outs["old"]) if len(outs) == 2 else None
            for r in rows[-len(outs) :]:
                r["same"] = same
            for work in outs.values():
                shutil.rmtree(work)
    print(f"\n{size_mb} MB of text: ropeext corpus + ropeext tokenizer (BPE 2048 trained, every split tokenized)")
    print(f"{'corpus':<14} {'path':<5} {'stage':<10} {'seconds':>8} {'peak RSS':>9} {'tokens':>12}  same ids as old")
    for r in rows:
        tokens = sum(r["stats"][s]["tokens"] for s in ("train", "validation", "test"))
        same = "-" if r["same"] is None else ("yes" if r["same"] else "NO")
        for stage in ("corpus", "tokenizer"):
            print(
                f"{r['corpus']:<14} {r['path']:<5} {stage:<10} {r[f'{stage}_s']:>8.1f} "
                f"{r[f'{stage}_peak'] / 2**30:>7.2f}GB {tokens if stage == 'tokenizer' else '':>12}  "
                f"{same if stage == 'tokenizer' else ''}"
            )
    print("peak RSS: largest sum of resident memory of the stage's process tree (workers included).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 and 20 MB instead of 100, 400 and 1600 MB")
    ap.add_argument("--sizes", default=None, help="comma-separated corpus sizes in MB")
    ap.add_argument("--threads", type=int, default=None, help="worker cores of the new path (default: all)")
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--old-limit-gb", type=float, default=8.0, help="skip old-path sizes expected above this peak")
    ap.add_argument(
        "--new-only", action="store_true", help="measure the new path only (no baseline, no core comparison)"
    )
    ap.add_argument("--tmp", default=None, help="folder for the generated corpora (default: the system temp)")
    ap.add_argument("--window", type=int, default=8192, help="packing window of the pack stage (layout anchor)")
    ap.add_argument(
        "--long-document",
        type=int,
        nargs="?",
        const=50,
        default=None,
        metavar="MB",
        help="measure one MB-megabyte line (default 50) against the same text as 500 records, new vs old",
    )
    args = ap.parse_args()
    if args.long_document is not None:
        long_document_bench(args.long_document, args.new_only, args.tmp)
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([5, 20] if args.quick else [100, 400, 1600])
    from ropeext.data.corpus import iter_stdlib
    from ropeext.data.tokenizer import train_bpe
    from ropeext.data.tokens import available_cores

    cores = args.threads or available_cores()
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores ({available_cores()} usable), load average {load:.1f} at start "
        f"(shared machine: other jobs may take cores; compare ratios, not seconds)"
    )
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        tok_dir = tmp / "tokenizer"
        train_bpe((d.text for d in iter_stdlib(definitions=False)), vocab_size=2048).save_pretrained(tok_dir)
        old = None if args.new_only else old_package(tmp / "old", args.old_rev)
        rows, encoders = [], []
        old_per_mb = None
        for size in sizes:
            data = tmp / f"data{size}"
            text_bytes = build_jsonl(data, size)
            mb = text_bytes / MB
            runs = [("new", cores)]  # 1 vs all cores: the tokenize-only comparison below
            for name, threads in runs:
                r = pipeline(REPO, data, tok_dir, tmp / "work", threads, args.window)
                rows.append({"size": size, "path": f"new, {threads} core{'s' if threads > 1 else ''}", **r, "mb": mb})
                print(f"  {size} MB new/{threads}: {r['seconds']:.1f} s, peak {r['peak'] / 2**30:.2f} GiB", flush=True)
            if old is not None:
                need = None if old_per_mb is None else old_per_mb * mb
                if need is not None and need > args.old_limit_gb * 2**30:
                    rows.append({"size": size, "path": "old", "mb": mb, "skipped": need})
                else:
                    r = pipeline(old, data, tok_dir, tmp / "work", None, args.window)
                    old_per_mb = r["peak"] / mb
                    rows.append({"size": size, "path": "old", **r, "mb": mb})
                    print(f"  {size} MB old: {r['seconds']:.1f} s, peak {r['peak'] / 2**30:.2f} GiB", flush=True)
            if size == sizes[0] and cores > 1 and not args.new_only:
                encoders = encoder_comparison(data, tok_dir, tmp / "work", cores)
            shutil.rmtree(data)

    print(
        f"\ncorpus + tokenize + pack (anchor, window {args.window}, train split) of JSONL text (stdlib files "
        f"repeated), vocab 2048; load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"{'size':>7} {'path':<14} {'stage':<9} {'seconds':>8} {'MB/s':>7} {'peak RSS':>9}")
    for r in rows:
        if "skipped" in r:
            print(
                f"{r['size']:>5}MB {r['path']:<14} not run (would need ~{r['skipped'] / 2**30:.0f} GB, "
                f"extrapolated from the largest size it ran)"
            )
            continue
        for stage, mb in (("corpus", r["mb"]), ("tokenize", r["mb"]), ("pack", r["mb"] * r["train_share"])):
            sec, peak = r[f"{stage}_s"], r[f"{stage}_peak"]
            if sec is None:
                print(f"{r['size']:>5}MB {r['path']:<14} {stage:<9} {'failed':>8}")
                continue
            print(f"{r['size']:>5}MB {r['path']:<14} {stage:<9} {sec:>8.1f} {mb / sec:>7.2f} {peak / 2**30:>7.2f}GB")
    print("\nwhole path (corpus + tokenize + pack)")
    print(
        f"{'size':>7} {'path':<14} {'seconds':>8} {'MB/s':>7} {'MB/CPU-s':>8} {'peak RSS':>9} {'tokens':>12} "
        f"{'speed vs old':>12} {'peak vs old':>11}"
    )
    for r in rows:
        if "skipped" in r:
            continue
        old_row = next((x for x in rows if x["size"] == r["size"] and x["path"] == "old" and "skipped" not in x), None)
        comparable = old_row is not None and old_row["pack_s"] is not None and r["pack_s"] is not None
        ratio = (
            f"{old_row['seconds'] / r['seconds']:>11.2f}x {r['peak'] / old_row['peak']:>10.2f}x"
            if comparable
            else f"{'-':>12} {'-':>11}"
        )
        note = "" if r["pack_s"] is not None else "  (pack failed: corpus + tokenize only)"
        print(
            f"{r['size']:>5}MB {r['path']:<14} {r['seconds']:>8.1f} {r['mb'] / r['seconds']:>7.2f} "
            f"{r['mb'] / r['cpu']:>8.2f} {r['peak'] / 2**30:>7.2f}GB {r['tokens']:>12,} {ratio}{note}"
        )
    print("peak RSS: largest sum of resident memory of the stage's process tree (workers included).")
    if encoders:
        print(
            f"\ntokenize only, train split of the {sizes[0]} MB corpus: how to use {cores} cores "
            "(MB per CPU-second: the work each way costs, whatever the machine's load)"
        )
        for label, rate, per_cpu in encoders:
            print(f"  {label:<36} {rate:>6.2f} MB/s {rate / encoders[0][1]:>6.2f}x   {per_cpu:>6.2f} MB/CPU-s")


if __name__ == "__main__":
    main()
