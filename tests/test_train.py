import math

import numpy as np
import pytest
import torch

from ropeext.checks import TRAINING, problems
from ropeext.config import resolve_config
from ropeext.errors import RopeextError
from ropeext.modeling import build_tiny_llama
from ropeext.train import checkpoint as ckpt
from ropeext.train.data import PackedData, batch_indices
from ropeext.train.divergence import DivergenceGuard
from ropeext.train.loop import TrainSettings, lr_at, train


def _packed(n=12, w=16, vocab=300, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.tile(rng.integers(3, 40, size=(1, w + 1)), (n, 1))  # one repeated sequence: easy to learn
    return PackedData(
        {
            "input_ids": ids[:, :-1],
            "labels": ids[:, 1:].copy(),
            "position_ids": np.tile(np.arange(w), (n, 1)),
            "doc_ids": np.ones((n, w), dtype=np.int64),
        }
    )


def _model(tiny_model_dir):
    from ropeext.modeling import load_causal_lm

    return load_causal_lm(tiny_model_dir)


def test_batch_order_is_a_pure_function_of_step_and_covers_each_epoch():
    n, bs = 10, 4
    seen = np.concatenate([batch_indices(s, bs, n, seed=3) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert (batch_indices(3, bs, n, 3) == batch_indices(3, bs, n, 3)).all()
    assert not (batch_indices(0, bs, n, 3) == batch_indices(0, bs, n, 4)).all()


def test_lr_schedule():
    s = TrainSettings(steps=100, batch_size=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, s) == pytest.approx(0.1) and lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0) and lr_at(100, s) == pytest.approx(0.1)
    assert TrainSettings(steps=10, batch_size=1, lr=2.0, schedule="constant").lr == 2.0
    assert lr_at(7, TrainSettings(steps=10, batch_size=1, lr=2.0, schedule="constant")) == 2.0


def test_bad_settings_are_named_by_the_config_checks_the_loop_trusts():
    assert problems(resolve_config({"finetune": {"batch_size": 6, "grad_accum": 4}}), TRAINING) == [
        "finetune.batch_size: 6 sequences do not split into finetune.grad_accum 4 micro-batches; expected a "
        "multiple of 4"
    ]
    with pytest.raises(RopeextError, match="finetune.precision: 'fp8' is not one of"):
        resolve_config({"finetune": {"precision": "fp8"}})


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16"])
def test_training_lowers_the_loss(tiny_model_dir, precision):
    model = _model(tiny_model_dir)
    summary = train(
        model, _packed(), TrainSettings(steps=25, batch_size=4, lr=3e-3, precision=precision), progress=False
    )
    assert summary["final_loss"] < 0.7 * summary["first_loss"]
    assert next(model.parameters()).dtype == torch.float32  # saved in fp32 whatever the training precision
    assert summary["numeric_path"]["precision"] == precision
    rotary = {n: b for n, b in model.named_buffers() if "inv_freq" in n}
    assert rotary and all(b.dtype == torch.float32 for b in rotary.values())


def test_bf16_weights_keep_float32_rotary_frequencies(tiny_model_dir):
    """Casting the weights to bf16 (precision bf16) must not round RoPE's inverse frequencies: they are
    not weights, and rounded ones would shift every rotary angle."""
    from ropeext.train.loop import to_dtype_keeping_rope

    model = _model(tiny_model_dir)
    before = {n: b.clone() for n, b in model.named_buffers() if "inv_freq" in n}
    assert before
    to_dtype_keeping_rope(model, torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    after = dict(model.named_buffers())
    for name, value in before.items():
        assert after[name].dtype == torch.float32 and torch.equal(after[name], value), name
    assert not torch.equal(value.to(torch.bfloat16).float(), value)  # what a plain .to(bf16) would have done


def test_gradient_accumulation_equals_the_full_batch(tiny_model_dir):
    from ropeext.train.loop import accumulate_gradients

    data = _packed(n=4)
    data.arrays["labels"][:2, :12] = -100  # micro-batches with unequal label counts: the mean is over the full batch
    data.arrays["input_ids"][::2] = (data.arrays["input_ids"][::2] + 7) % 300
    grads, losses = [], []
    for accum in (1, 2, 4):
        model = _model(tiny_model_dir)
        s = TrainSettings(steps=1, batch_size=4, lr=1e-2, precision="fp32", grad_accum=accum)
        losses.append(accumulate_gradients(model, data.batch(np.arange(4)), s, torch.device("cpu")))
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        for ga, gb in zip(grads[0], other):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) == pytest.approx(losses[2], rel=1e-6)


def test_non_finite_loss_names_the_step(tiny_model_dir):
    model = _model(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(RopeextError, match="non-finite loss .* at step 1"):
        train(model, _packed(), TrainSettings(steps=3, batch_size=2, lr=1e-3, precision="fp32"), progress=False)


def test_process_shards_sum_to_the_full_batch_gradient(tiny_model_dir):
    """What DDP averages (each process's gradient over its rows, scaled by the world size) equals the
    single-process full-batch gradient, with unequal label counts per process and accumulation."""
    from ropeext.train.loop import accumulate_gradients

    data = _packed(n=4)
    data.arrays["labels"][:1, :10] = -100
    data.arrays["input_ids"][1::2] = (data.arrays["input_ids"][1::2] + 5) % 300
    batch = data.batch(np.arange(4))

    def grads(**kw):
        model = _model(tiny_model_dir)
        s = TrainSettings(steps=1, batch_size=4, lr=1e-2, precision="fp32", grad_accum=kw.pop("accum", 1))
        loss = accumulate_gradients(model, batch, s, torch.device("cpu"), **kw)
        return loss, [p.grad.clone() for p in model.parameters()]

    full_loss, full = grads()
    parts = [grads(rank=r, world=2, accum=2) for r in range(2)]
    assert parts[0][0] + parts[1][0] == pytest.approx(full_loss, rel=1e-6)
    for i, g in enumerate(full):
        torch.testing.assert_close((parts[0][1][i] + parts[1][1][i]) / 2, g, rtol=1e-4, atol=1e-7)


def test_non_finite_loss_keeps_the_last_good_checkpoint(tiny_model_dir, tmp_path):
    from ropeext.train import checkpoint as ckpt

    model = _model(tiny_model_dir)
    calls = {"n": 0}

    def poison(module, args, out):  # the 5th forward pass returns NaN
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 5 else out

    model.model.norm.register_forward_hook(poison)
    s = TrainSettings(steps=8, batch_size=2, lr=1e-3, precision="fp32", checkpoint_every=2, keep_checkpoints=1)
    with pytest.raises(
        RopeextError, match=r"non-finite loss \(nan\) at step 5; .*last good checkpoint kept: .*step-0000004"
    ):
        train(model, _packed(), s, checkpoint_dir=tmp_path, progress=False)
    assert [f.step for f in ckpt.list_checkpoints(tmp_path)] == [4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004"]


def test_cut_off_checkpoint_is_never_resumed_from(tiny_model_dir, tmp_path):
    from ropeext.train import checkpoint as ckpt

    s = TrainSettings(steps=6, batch_size=2, lr=1e-3, precision="fp32", checkpoint_every=2, keep_checkpoints=3)
    model = _model(tiny_model_dir)
    stop = RuntimeError("stop after step 4")

    def halt(done):
        if done == 4:
            raise stop

    with pytest.raises(RuntimeError):
        train(model, _packed(), s, checkpoint_dir=tmp_path, progress=False, on_step=halt)
    assert [f.step for f in ckpt.list_checkpoints(tmp_path)] == [2, 4]
    # step 4 truncated as by a copy cut short, a stray temp folder from a killed writer
    opt = tmp_path / "step-0000004" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    (tmp_path / "step-0000006.tmp").mkdir()
    (tmp_path / "step-0000006.tmp" / "model.pt").write_bytes(b"x")
    assert ckpt.latest_checkpoint(tmp_path).step == 2
    summary = train(_model(tiny_model_dir), _packed(), s, checkpoint_dir=tmp_path, progress=False)
    assert summary["resumed_from_step"] == 2
    assert not (tmp_path / "step-0000006.tmp").exists()


def test_shipped_accelerate_configs_parse():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).resolve().parents[1] / "config" / "accelerate"
    kinds = {p.stem: load_config_from_file(str(p)) for p in folder.glob("*.yaml")}
    assert str(kinds["ddp"].distributed_type).endswith("MULTI_GPU") and kinds["ddp"].mixed_precision == "no"
    assert kinds["fsdp"].fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert kinds["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3


def test_keep_checkpoints_zero_keeps_every_checkpoint(tiny_model_dir, tmp_path):
    """The schema accepts 0, which the checkpoint code reads as "keep all" (it used to reject it)."""
    from ropeext.config import resolve_config
    from ropeext.train import checkpoint as ckpt

    assert resolve_config({"finetune": {"keep_checkpoints": 0}})["finetune"]["keep_checkpoints"] == 0
    with pytest.raises(RopeextError, match="keep_checkpoints"):
        resolve_config({"finetune": {"keep_checkpoints": -1}})
    for keep, kept in ((0, [2, 4]), (1, [4])):  # steps 2 and 4 (the last step writes the model, not a checkpoint)
        folder = tmp_path / f"keep{keep}"
        s = TrainSettings(steps=6, batch_size=2, lr=1e-3, precision="fp32", checkpoint_every=2, keep_checkpoints=keep)
        train(_model(tiny_model_dir), _packed(), s, checkpoint_dir=folder, progress=False)
        assert [f.step for f in ckpt.list_checkpoints(folder)] == kept


# ---- a divergence that stays finite ------------------------------------------------------------------

U320 = math.log(320)  # the uniform-prediction loss of the tiny models' 320-token vocabulary


def _guard_stops(losses, factor=3.0, patience=2, vocab=320):
    g = DivergenceGuard(vocab, factor, patience)
    return next((i + 1 for i, loss in enumerate(losses) if g.update(i + 1, loss)), None)


def test_divergence_rules_on_loss_histories():
    u = U320
    # a model from scratch sits at ln(V) and below it only by a little: never armed, never stopped
    assert _guard_stops([u + 0.02, u, u - 0.01, u + 0.01, u, 0.97 * u, u, u, u]) is None
    # once clearly below (< 0.95 ln V), coming back to ln(V) for `patience` steps stops the run
    assert _guard_stops([u, 0.9 * u, u, u, u]) == 4
    assert _guard_stops([u, 0.9 * u, u, 0.8 * u, u, 0.7 * u]) is None  # never twice in a row
    assert _guard_stops([u, 0.9 * u, u, u, u], patience=3) == 5
    # a jump above factor x the best (and 1 nat above it) for `patience` steps
    assert _guard_stops([5.0, 2.0, 7.0, 9.0]) == 4
    assert _guard_stops([5.0, 2.0, 7.0, 2.5, 7.0]) is None
    assert _guard_stops([5.0, 2.0, 7.0, 9.0], factor=None) is None
    assert _guard_stops([5.0, 0.01, 0.05, 0.2, 0.3]) is None  # tiny losses: a factor without a nat
    assert _guard_stops([5.0, 2.0, 1e6, 1e6], patience=0) is None
    # the uniform rule needs the vocabulary; without it only the jump rule acts
    assert _guard_stops([u, 0.9 * u, u, u], vocab=None) is None
    # the state is a function of the history: replaying it (a resumed run) decides as the whole run
    losses = [5.0, 2.0, 1.5, 7.0, 2.0, 9.0, 9.5]
    whole = _guard_stops(losses)
    g = DivergenceGuard(320, 3.0, 2)
    for i, loss in enumerate(losses[:4]):
        g.update(i + 1, loss)
    resumed = next(i + 5 for i, loss in enumerate(losses[4:]) if g.update(i + 5, loss))
    assert whole == resumed == 7


def _one_layer_model():
    return build_tiny_llama(320, 64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def test_a_huge_lr_that_collapses_to_uniform_predictions_stops_the_run():
    """lr 1e6 after some training: finite weights, every prediction uniform, the loss exactly ln(320)."""
    model = _one_layer_model()
    train(model, _packed(), TrainSettings(steps=10, batch_size=4, lr=1e-2, precision="fp32"), progress=False)
    s = TrainSettings(steps=6, batch_size=4, lr=1e6, warmup_steps=1, precision="fp32")
    with pytest.raises(RopeextError) as err:
        train(model, _packed(), s, progress=False)
    message = str(err.value)
    for part in (
        "training diverged at step 3",
        "steps 2-3",
        f"uniform-prediction level ln(320) = {U320:.4g}",
        "stopping at lr",
        "divergence_patience 2",
    ):
        assert part in message, message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # nothing non-finite to catch


def test_a_collapse_names_the_checkpoint_from_before_it(tmp_path):
    """From the 9th forward pass on the model predicts every token alike (a hook zeroes the final norm): the
    run stops at step 10, and the checkpoint of step 8 (the weights step 9 measured) is not the good one."""
    model = _one_layer_model()
    calls = {"n": 0}

    def collapse(module, args, out):
        calls["n"] += 1
        return out * 0 if calls["n"] >= 9 else out

    model.model.norm.register_forward_hook(collapse)
    s = TrainSettings(steps=14, batch_size=4, lr=1e-2, precision="fp32", checkpoint_every=2, keep_checkpoints=2)
    with pytest.raises(RopeextError, match="training diverged at step 10") as err:
        train(model, _packed(), s, checkpoint_dir=tmp_path, progress=False)
    assert f"last good checkpoint kept: {tmp_path / 'step-0000006'}" in str(err.value)
    assert "step-0000008 holds weights from after the divergence began" in str(err.value)
    assert [f.step for f in ckpt.list_checkpoints(tmp_path)] == [6, 8]  # none written during the streak


def test_a_jump_that_stays_finite_stops_the_run(tmp_path):
    """From scratch with lr 10 (warm-up 10): the loss leaves ln(V) upwards, finite, 10x the best and more."""
    s = TrainSettings(steps=12, batch_size=4, lr=10.0, warmup_steps=10, precision="fp32", checkpoint_every=1)
    with pytest.raises(RopeextError) as err:
        train(_one_layer_model(), _packed(), s, checkpoint_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "above divergence_factor 3 x the best loss" in message and "stopping at lr" in message, message
    assert "last good checkpoint kept" in message, message


def test_a_fresh_model_near_the_uniform_level_and_normal_training_are_not_stopped(tiny_model_dir):
    # from scratch the loss starts at ln(V) and stays there at a tiny lr: no divergence
    summary = train(
        _model(tiny_model_dir),
        _packed(),
        TrainSettings(steps=6, batch_size=2, lr=1e-7, precision="fp32"),
        progress=False,
    )
    assert all(abs(x - U320) < 0.01 * U320 for x in summary["loss_history"]), summary["loss_history"]
    # pre-training from scratch at a high lr, through its noisy first steps, with the defaults
    summary = train(
        _one_layer_model(), _packed(), TrainSettings(steps=30, batch_size=4, lr=3e-2, precision="fp32"), progress=False
    )
    assert summary["loss_history"][-1] < 0.5 * U320
