import numpy as np
import pytest
import torch

from ropeext.errors import RopeextError
from ropeext.train.data import PackedData, batch_indices
from ropeext.train.loop import TrainSettings, lr_at, train


def _packed(n=12, w=16, vocab=300, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.tile(rng.integers(3, 40, size=(1, w + 1)), (n, 1))  # one repeated sequence: easy to learn
    return PackedData({
        "input_ids": ids[:, :-1], "labels": ids[:, 1:].copy(),
        "position_ids": np.tile(np.arange(w), (n, 1)), "doc_ids": np.ones((n, w), dtype=np.int64)})


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


def test_bad_settings_are_named():
    with pytest.raises(RopeextError, match="batch_size 6 does not divide into grad_accum 4"):
        TrainSettings(steps=1, batch_size=6, lr=1e-3, grad_accum=4)
    with pytest.raises(RopeextError, match="precision"):
        TrainSettings(steps=1, batch_size=1, lr=1e-3, precision="fp8")


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16"])
def test_training_lowers_the_loss(tiny_model_dir, precision):
    model = _model(tiny_model_dir)
    summary = train(model, _packed(), TrainSettings(steps=25, batch_size=4, lr=3e-3, precision=precision),
                    progress=False)
    assert summary["final_loss"] < 0.7 * summary["first_loss"]
    assert next(model.parameters()).dtype == torch.float32  # saved in fp32 whatever the training precision
    assert summary["numeric_path"]["precision"] == precision


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
