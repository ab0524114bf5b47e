"""The fine-tune's held-out loss: fixed validation windows (the full layout's packing of the first held-out
documents), scored like an independent mean cross-entropy, the same for every variant given the same
weights, falling on a model that learns the text, logged to MLflow and the summary, and leaving the
training trajectory (and its resumption) exactly as it is without it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ropeext.cli import main
from ropeext.config import resolve_config
from ropeext.data.packing import pack_documents
from ropeext.data.tokens import write_tokens
from ropeext.errors import RopeextError
from ropeext.modeling import load_causal_lm
from ropeext.train.data import PackedData
from ropeext.train.heldout import heldout_windows, padded_rows, take_rows
from ropeext.train.loop import TrainSettings, heldout_loss, train
from tests.test_train_cli import _args, _packed, finetune_inputs  # noqa: F401 - fixture

ANCHOR = 1  # the tiny tokenizer's <s>


def _docs(n=40, lo=5, hi=30, seed=0, vocab=300):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(rng.integers(lo, hi))).tolist() for _ in range(n)]


@pytest.fixture
def val_tokens(tmp_path):
    path = tmp_path / "validation.parquet"
    write_tokens(path, _docs())
    return path


# ------------------------------------------------------------------------------------------- windows


def test_windows_are_the_full_packing_of_the_first_documents(val_tokens, tmp_path):
    docs = _docs()
    val = heldout_windows(val_tokens, window=16, count=3, anchor_id=ANCHOR, seed=0)
    assert val.windows == 3 and val.window == 16
    a = val.arrays
    assert (a["input_ids"][:, 0] == ANCHOR).all() and (a["position_ids"] == np.arange(16)).all()
    # deterministic, and the same windows whatever the caller (the variants of a run)
    again = heldout_windows(val_tokens, window=16, count=3, anchor_id=ANCHOR, seed=0)
    assert all((again.arrays[k] == a[k]).all() for k in a)
    # only as many documents as 3 windows need are read: their tokens come from the first documents
    need, used = 3 * 15, 0
    first = 0
    while used < need:
        used += len(docs[first])
        first += 1
    ref = pack_documents(docs[:first], 16, "full", ANCHOR, 0)
    assert all((ref[k][:3] == a[k]).all() for k in a)
    # a label is the next token unless it crosses a document boundary or is the last column
    inside = a["labels"][:, :-1] != -100
    assert (a["labels"][:, :-1][inside] == a["input_ids"][:, 1:][inside]).all() and (a["labels"][:, -1] == -100).all()

    small = tmp_path / "small.parquet"
    write_tokens(small, docs[:3])
    assert heldout_windows(small, window=16, count=50, anchor_id=ANCHOR, seed=0).windows < 50
    write_tokens(small, [[5, 6, 7]])
    with pytest.raises(RopeextError, match="too few for one validation window of 16 tokens.*finetune.val_windows: 0"):
        heldout_windows(small, window=16, count=2, anchor_id=ANCHOR, seed=0)


@pytest.mark.parametrize(("n", "groups", "per"), [(5, 2, 2), (3, 2, 1), (8, 4, 2), (1, 3, 1), (7, 1, 3)])
def test_padded_rows_give_each_group_the_same_forwards_and_every_window_once(n, groups, per):
    rows = padded_rows(n, groups, per)
    assert rows.shape[0] == groups and rows.shape[1] % per == 0
    real = rows[rows >= 0]
    assert sorted(real.tolist()) == list(range(n))
    assert rows.shape[1] == math.ceil(n / (groups * per)) * per  # no forward pass more than needed


def test_padding_rows_carry_no_label(val_tokens):
    val = heldout_windows(val_tokens, window=16, count=2, anchor_id=ANCHOR, seed=0)
    batch = take_rows(val, np.array([1, -1]))
    assert (batch["input_ids"][1] == val.arrays["input_ids"][0]).all() and (batch["labels"][1] == -100).all()
    assert (batch["labels"][0] == val.arrays["labels"][1]).all()


# ------------------------------------------------------------------------------------------- the loss


def _reference_loss(model, val: PackedData) -> float:
    """Mean next-token cross-entropy over every labelled position, one window at a time, through stock
    transformers' attention (no mask argument: plain causal) and an explicit log-softmax."""
    model.set_attn_implementation("eager")
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(val.windows):
            ids = torch.as_tensor(val.arrays["input_ids"][i : i + 1], dtype=torch.long)
            labels = torch.as_tensor(val.arrays["labels"][i], dtype=torch.long)
            logits = model(input_ids=ids).logits[0].double()
            logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            for t in range(len(labels)):
                if labels[t] != -100:
                    total -= float(logp[t, labels[t]])
                    count += 1
    return total / count


@pytest.mark.parametrize(
    ("backend", "chunk", "per_forward"),
    [("sdpa_mask", None, 1), ("blockwise", None, 2), ("blockwise", 7, 3), ("sdpa_mask", 5, 2)],
)
def test_heldout_loss_is_the_mean_cross_entropy_over_the_windows(
    tiny_model_dir, val_tokens, backend, chunk, per_forward
):
    from ropeext.attention import set_backend
    from ropeext.train.loss import ChunkedLossModule

    val = heldout_windows(val_tokens, window=32, count=5, anchor_id=ANCHOR, seed=0)
    ref = _reference_loss(load_causal_lm(tiny_model_dir), val)
    model = load_causal_lm(tiny_model_dir)
    set_backend(model, backend, training=True)
    model.train()
    wrapped = ChunkedLossModule(model, chunk) if chunk else model
    s = TrainSettings(steps=1, batch_size=1, lr=1e-3, precision="fp32", backend=backend, loss_chunk_tokens=chunk)
    got = heldout_loss(wrapped, val, s, torch.device("cpu"), per_forward=per_forward)
    assert got == pytest.approx(ref, rel=1e-5)
    assert model.training  # the training mode comes back


def _train(model, data, val, **over):
    settings = dict(steps=8, batch_size=4, lr=3e-3, precision="fp32", eval_every=3, backend="sdpa_mask")
    settings.update(over)
    return train(model, data, TrainSettings(**settings), progress=False, val=val)


def _full_windows(docs, window=32, seed=0) -> PackedData:
    return PackedData(pack_documents(docs, window, "full", ANCHOR, seed))


def test_heldout_loss_falls_on_a_model_that_learns_the_text(tiny_model_dir, tmp_path):
    docs = [[3 + (7 * j + i) % 37 for j in range(20 + i)] for i in range(12)]  # a rule the model can learn
    path = tmp_path / "same.parquet"
    write_tokens(path, docs)
    val = heldout_windows(path, window=32, count=4, anchor_id=ANCHOR, seed=0)
    summary = _train(load_causal_lm(tiny_model_dir), _full_windows(docs), val, steps=30, eval_every=10)
    history = summary["val_loss_history"]
    assert [step for step, _ in history] == [0, 10, 20, 30]
    assert summary["first_val_loss"] == history[0][1] and summary["final_val_loss"] == history[-1][1]
    assert summary["final_val_loss"] < 0.5 * summary["first_val_loss"]
    assert summary["val_windows"] == 4 and summary["heldout_seconds"] > 0


def test_heldout_loss_leaves_the_training_trajectory_unchanged(tiny_model_dir, val_tokens):
    """With attention dropout on, training draws random numbers and depends on the training mode: the
    held-out evaluation must restore both (generators and mode) for the weights to come out the same."""
    data = _full_windows(_docs(n=30, seed=1))
    val = heldout_windows(val_tokens, window=32, count=3, anchor_id=ANCHOR, seed=0)

    def model(dropout):
        m = load_causal_lm(tiny_model_dir)
        m.config.attention_dropout = dropout
        for layer in m.model.layers:
            layer.self_attn.attention_dropout = dropout
        return m

    runs = {}
    for name, dropout, v in (("plain", 0.3, None), ("heldout", 0.3, val), ("no_dropout", 0.0, None)):
        m = model(dropout)
        runs[name] = (_train(m, data, v, eval_every=1), {k: t.clone() for k, t in m.state_dict().items()})
    (plain, w_plain), (held, w_held), (_, w_nodrop) = runs["plain"], runs["heldout"], runs["no_dropout"]
    assert any(not torch.equal(w_plain[k], w_nodrop[k]) for k in w_plain)  # dropout does act in training
    assert all(torch.equal(w_plain[k], w_held[k]) for k in w_plain)
    assert plain["loss_history"] == held["loss_history"]
    assert [s for s, _ in held["val_loss_history"]] == list(range(9)) and plain["val_loss_history"] == []
    assert plain["final_val_loss"] is None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_resumed_run_has_the_uninterrupted_runs_weights_and_heldout_curve(
    tiny_model_dir, val_tokens, tmp_path, precision
):
    data = _full_windows(_docs(n=30, seed=2))
    val = heldout_windows(val_tokens, window=32, count=3, anchor_id=ANCHOR, seed=0)
    s = TrainSettings(
        steps=8, batch_size=4, lr=3e-3, precision=precision, eval_every=3, checkpoint_every=2, backend="sdpa_mask"
    )
    ref_model = load_causal_lm(tiny_model_dir)
    ref = train(ref_model, data, s, progress=False, val=val, checkpoint_dir=tmp_path / "ref.ck")

    def stop(done):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            load_causal_lm(tiny_model_dir),
            data,
            s,
            progress=False,
            val=val,
            checkpoint_dir=tmp_path / "ck",
            on_step=stop,
        )
    model = load_causal_lm(tiny_model_dir)
    got = train(model, data, s, progress=False, val=val, checkpoint_dir=tmp_path / "ck")
    assert got["resumed_from_step"] == 4
    assert got["val_loss_history"] == ref["val_loss_history"]
    assert [step for step, _ in got["val_loss_history"]] == [0, 3, 6, 8]
    assert got["loss_history"] == ref["loss_history"]
    a, b = ref_model.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- command and MLflow


def test_finetune_logs_the_heldout_loss_the_same_for_two_layouts(finetune_inputs, tmp_path, monkeypatch):  # noqa: F811
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    val = tmp_path / "validation.parquet"
    write_tokens(val, _docs(n=60, seed=5))
    full = _packed(tmp_path / "full.parquet", finetune_inputs["tokenizer"], 64, "full")
    summaries = {}
    for layout, train_file in (("anchor", finetune_inputs["train"]), ("full", full)):
        out = tmp_path / layout
        argv = _args(finetune_inputs, out, "--val", str(val), "--set", "eval_every=3", "--set", "val_windows=3")
        argv += ["--variant", f"tiny-pi-64-{layout}"]
        argv[argv.index("--train") + 1] = str(train_file)
        argv[argv.index("--layout") + 1] = layout
        assert main(argv) == 0
        summaries[layout] = json.loads((out / "training_summary.json").read_text())

    anchor, full_s = summaries["anchor"], summaries["full"]
    for s in (anchor, full_s):
        assert [step for step, _ in s["val_loss_history"]] == [0, 3, 4]  # steps 4, every 3, and the end
        assert s["final_val_loss"] == s["val_loss_history"][-1][1] and s["val_windows"] == 3
        assert s["val_tokens"] == str(val)
    # the same base weights, the same windows: the same held-out loss before training, whatever the layout
    assert anchor["val_loss_history"][0] == full_s["val_loss_history"][0]
    assert anchor["final_val_loss"] != full_s["final_val_loss"]  # trained on different windows

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`ropeext.stage` = 'finetune'"
    )
    assert len(runs) == 2
    for run in runs:
        layout = run.data.tags["ropeext.layout"]
        loss = client.get_metric_history(run.info.run_id, "val.loss")
        ppl = client.get_metric_history(run.info.run_id, "val.ppl")
        assert [(m.step, m.value) for m in loss] == [tuple(p) for p in summaries[layout]["val_loss_history"]]
        assert [m.value for m in ppl] == pytest.approx([math.exp(m.value) for m in loss])
        assert run.data.metrics["final_val_loss"] == summaries[layout]["final_val_loss"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train.loss")] == [1, 2, 3, 4]


def test_without_val_or_with_no_windows_there_is_no_heldout_loss(finetune_inputs, tmp_path):  # noqa: F811
    val = tmp_path / "validation.parquet"
    write_tokens(val, _docs(n=60, seed=5))
    for name, extra in (("none", []), ("zero", ["--val", str(val), "--set", "val_windows=0"])):
        out = tmp_path / name
        assert main(_args(finetune_inputs, out, "--no-mlflow", *extra)) == 0
        s = json.loads((out / "training_summary.json").read_text())
        assert s["val_loss_history"] == [] and s["final_val_loss"] is None and s["val_windows"] == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eval_every", -1, "finetune.eval_every: -1 is less than the minimum of 0"),
        ("eval_every", 2.5, "finetune.eval_every: 2.5 is not of type 'integer'"),
        ("val_windows", "many", "finetune.val_windows: 'many' is not of type 'integer'"),
    ],
)
def test_bad_heldout_settings_name_the_key(key, value, message):
    with pytest.raises(RopeextError, match=message):
        resolve_config({"finetune": {key: value}})


def test_bad_heldout_settings_stop_the_command(finetune_inputs, tmp_path, capsys):  # noqa: F811
    assert main(_args(finetune_inputs, tmp_path / "m", "--set", "eval_every=-3", "--no-mlflow")) == 2
    assert "finetune.eval_every: -3 is less than the minimum of 0" in capsys.readouterr().err
    assert main(_args(finetune_inputs, tmp_path / "m", "--val", str(tmp_path / "nope.parquet"), "--no-mlflow")) == 2
    assert "nope.parquet" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------- report


def test_the_report_states_the_heldout_loss_and_labels_the_training_loss():
    from ropeext.report.provenance import finetuning_lines, training_table

    base = {
        "settings": {"layout": "anchor", "batch_size": 3, "precision": "bf16-mixed"},
        "steps": 40,
        "tokens": 40 * 3 * 1024,
        "scaling": {"method": "dprope"},
        "first_loss": 3.773,
        "final_loss": 3.348,
        "loss_history": [3.773] * 40,
    }
    held = {**base, "val_windows": 4, "val_loss_history": [[0, 3.9], [40, 3.5]]}
    held |= {"first_val_loss": 3.9, "final_val_loss": 3.5}
    lines = finetuning_lines({"a": held, "b": base}, None, str)
    text = "\n".join(lines)
    a_line = "- `a`: dprope with the anchor layout, held-out loss 3.900 -> 3.500 (-0.400) on 4 validation windows."
    assert a_line in text
    assert (
        "- `b`: dprope with the anchor layout, training loss 3.773 at step 1, 3.348 as the mean of the last steps "
        "(no held-out loss)." in text
    )
    assert "the same windows for every variant" in text and "3.773 -> 3.348" not in text
    table = training_table({"a": held, "b": base})
    assert table.loc["a", "val_loss_step0"] == 3.9 and table.loc["a", "val_loss_final"] == 3.5
    assert table.loc["b", "train_loss_last_steps_mean"] == 3.348 and table.loc["b", "train_loss_step1"] == 3.773
    assert "final_loss" not in table.columns and table.loc["b", "val_windows"] == 0
