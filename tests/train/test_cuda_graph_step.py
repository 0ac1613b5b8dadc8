"""The CUDA-graph training step: its bookkeeping (static inputs, one graph per shape, eager first step)
emulated on CPU, and padded fine-tuning training the same model as unpadded fine-tuning."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import DeviceBatcher
from molgnn.models.property_model import PropertyModel
from molgnn.train.cuda_graph_step import GraphedStep
from molgnn.train.finetune import finetune
from molgnn.train.steps import masked_scaled_mse, optimizer_step, set_lr

CFG = ModelConfig(n_atom_basis=8, n_interactions=2, n_rbf=6, cutoff=3.0)
SPLIT = (np.arange(28), np.arange(28, 34), np.arange(34, 40))


def _model_and_opt(lr_tensor: bool):
    torch.manual_seed(0)
    model = PropertyModel(CFG, ["gap", "U0"])
    lr = torch.tensor(3e-3) if lr_tensor else 3e-3
    return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2, foreach=False)


def test_graphed_step_bookkeeping_matches_eager_unpadded_steps(synthetic_atomistic):
    ds = synthetic_atomistic(40, min_atoms=3)
    batcher = DeviceBatcher(ds, CFG.cutoff)
    order = np.random.default_rng(0).permutation(28)
    scale = torch.tensor([0.5, 3.0])

    ref_model, ref_opt = _model_and_opt(lr_tensor=False)
    ref_losses = []
    for _ in range(2):
        for batch in batcher.batches(order, 6):
            y = torch.stack([batch[t] for t in ["gap", "U0"]], -1).float()
            loss = masked_scaled_mse(ref_model(batch), y, scale)
            ref_opt.zero_grad(set_to_none=True)
            optimizer_step(loss, ref_model, ref_opt, None, 1.0)
            ref_losses.append(float(loss.detach()))

    model, opt = _model_and_opt(lr_tensor=True)
    step = GraphedStep(model, model, opt, ["gap", "U0"], scale, 1.0, emulate=True)
    losses = [float(step(b)) for _ in range(2) for b in batcher.batches(order, 6, pad=(16, 64))]
    # 5 batches per epoch, the last one short: a few shapes, each captured once and replayed
    assert 1 <= step.n_graphs <= 5
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)



def test_graphed_step_times_its_warm_ups_only(synthetic_atomistic):
    """warmup_seconds grows with the eager first step and each new shape's capture, not with replays."""
    ds = synthetic_atomistic(40, min_atoms=3)
    batches = list(DeviceBatcher(ds, CFG.cutoff).batches(np.arange(28), 6, pad=(16, 64)))
    model, opt = _model_and_opt(lr_tensor=True)
    step = GraphedStep(model, model, opt, ["gap", "U0"], torch.tensor([0.5, 3.0]), 1.0, emulate=True)
    step(batches[0])
    assert step.warmup_seconds > 0 and step.n_graphs == 0  # the eager first step
    for b in batches:
        before, n = step.warmup_seconds, step.n_graphs
        step(b)
        assert (step.warmup_seconds > before) == (step.n_graphs > n)
    before = step.warmup_seconds
    for b in batches:  # every shape captured by now: replays only
        step(b)
    assert step.warmup_seconds == before


def test_warmup_outside_budget_keeps_the_first_compiled_step_off_the_clock(finetune_cfg,
                                                                           synthetic_atomistic, monkeypatch):
    """A slow first compiled step (standing in for torch.compile's compilation) is timed into the
    history's warmup_seconds either way; only warmup_outside_budget takes it off elapsed_seconds."""
    def slow_first_call(model, **_):
        calls = []

        def forward(batch):
            if not calls:
                time.sleep(1.0)
            calls.append(1)
            return model(batch)
        return forward

    monkeypatch.setattr(torch, "compile", slow_first_call)
    ds = synthetic_atomistic(40, min_atoms=3)
    runs = {flag: finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1), seed=0, compile_model=True,
                           warmup_outside_budget=flag).history[0] for flag in (False, True)}
    for h in runs.values():
        assert h["warmup_seconds"] >= 1.0
    assert runs[False]["elapsed_seconds"] >= 1.0 and runs[False]["seconds"] >= 1.0
    assert runs[True]["elapsed_seconds"] < 1.0 and runs[True]["seconds"] < 1.0


def test_graphed_step_needs_capturable_optimizer_and_cuda():
    model, opt = _model_and_opt(lr_tensor=False)
    with pytest.raises(ValueError, match="tensor lr"):
        GraphedStep(model, model, opt, ["gap"], torch.ones(1), None, emulate=True)
    model, opt = _model_and_opt(lr_tensor=True)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedStep(model, model, opt, ["gap"], torch.ones(1), None)


def test_padded_finetuning_trains_the_same_model(finetune_cfg, synthetic_atomistic):
    ds = synthetic_atomistic(40, min_atoms=3)
    base = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0)
    padded = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, pad_buckets=(16, 64), check_every=0)
    for k, v in base.checkpoint["state_dict"].items():
        torch.testing.assert_close(padded.checkpoint["state_dict"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    for a, b in zip(base.history, padded.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_score"] == pytest.approx(b["val_score"], rel=1e-4)


def test_cuda_graphs_refuse_cpu(finetune_cfg, synthetic_atomistic):
    ds = synthetic_atomistic(40, min_atoms=3)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1), seed=0, cuda_graphs=True)


def test_tensor_lr_is_set_in_place_and_saved_as_float():
    import molgnn.train.finetune as ft

    model, opt = _model_and_opt(lr_tensor=True)
    lr = opt.param_groups[0]["lr"]
    set_lr(opt, 1e-4)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(1e-4)  # the tensor a graph reads
    saved = ft._optimizer_state(opt)
    assert saved["param_groups"][0]["lr"] == pytest.approx(1e-4) and saved["param_groups"][0]["capturable"] is False
    assert torch.is_tensor(opt.param_groups[0]["lr"])  # the live optimizer keeps its tensor
    _, fresh = _model_and_opt(lr_tensor=False)
    fresh.load_state_dict(saved)
    ft._make_capturable(fresh, torch.device("cpu"))
    group = fresh.param_groups[0]
    assert group["capturable"] and torch.is_tensor(group["lr"]) and float(group["lr"]) == pytest.approx(1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_train_like_eager_with_a_slower_pretrained_encoder(finetune_cfg, synthetic_atomistic):
    """Two parameter groups (encoder at lr x 0.3): each group's tensor lr is what the graph replays."""
    from molgnn.config import PretrainConfig
    from molgnn.train.pretrain import pretrain

    ds = synthetic_atomistic(40, min_atoms=3)
    pre = pretrain(ds, CFG, PretrainConfig(epochs=1, batch_size=8, eht_weight=0.0), seed=0).checkpoint  # no RDKit on GPU hosts
    kw = dict(seed=0, device="cuda", pretrained=pre, pad_buckets=(16, 64), check_every=0,
              scheduler="cosine-time", time_budget_s=600.0, warmup_steps=3)
    cfg = finetune_cfg(targets=["gap"], encoder_lr_scale=0.3)  # gap alone: the form that ran on an H200
    eager = finetune(ds, None, SPLIT, CFG, cfg, **kw)
    graphed = finetune(ds, None, SPLIT, CFG, cfg, cuda_graphs=True, **kw)
    for k, v in eager.checkpoint["state_dict"].items():
        torch.testing.assert_close(graphed.checkpoint["state_dict"][k], v, rtol=1e-3, atol=1e-5, msg=k)
