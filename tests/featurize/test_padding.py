"""Padded batches (fixed shapes for CUDA graphs): same loss, gradients and predictions as unpadded ones."""
from __future__ import annotations

import numpy as np
import pytest
import schnetpack.properties as props
import torch

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import DeviceBatcher, make_batch, pad_batch, padded_capacity
from molgnn.models.property_model import PropertyModel
from molgnn.train.steps import masked_scaled_mse

CUTOFF = 3.0
CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=8, cutoff=CUTOFF)


def _model(seed: int = 0) -> PropertyModel:
    torch.manual_seed(seed)
    model = PropertyModel(CFG, ["gap", "U0"])  # gap: mean aggregation, U0: sum
    with torch.no_grad():  # non-trivial statistics and references so every term of forward matters
        model.set_target_stats(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 3.0]))
        ref = torch.zeros(100, 2)
        ref[[1, 6, 7, 8], 1] = torch.tensor([-0.5, -38.0, -54.6, -75.1])
        model.set_atom_refs(ref)
    return model


def _loss_and_grads(model: PropertyModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    pred = model(batch)
    y = torch.stack([batch[t] for t in model.targets], -1).float()
    loss = masked_scaled_mse(pred, y, torch.tensor([0.7, 4.0]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), pred.detach(), grads


@pytest.mark.parametrize("extra_atoms,extra_pairs,extra_slots", [(2, 0, 1), (5, 37, 1), (64, 1000, 4)])
def test_padding_keeps_loss_gradients_and_predictions(extra_atoms, extra_pairs, extra_slots,
                                                      synthetic_atomistic):
    ds = synthetic_atomistic(30, min_atoms=2, missing_gap=[3])
    idx = [4, 3, 17, 0, 9, 22, 11]
    batch = make_batch(ds, idx, cutoff=CUTOFF)
    n, p, b = batch[props.Z].numel(), batch[props.idx_i].numel(), len(idx)
    padded = pad_batch(batch, atoms=n + extra_atoms, pairs=p + extra_pairs, molecules=b + extra_slots,
                       cutoff=CUTOFF, target_names=ds.target_names)
    assert padded[props.Z].shape == (n + extra_atoms,) and padded[props.idx_i].shape == (p + extra_pairs,)
    assert padded[props.n_atoms].shape == (b + extra_slots,) and padded["gap"].shape == (b + extra_slots,)
    # dummy pairs join distinct dummy atoms at least 2 cutoff apart: zero filter, finite direction
    d = padded[props.Rij][p:].norm(dim=-1)
    assert bool((d >= 2 * CUTOFF - 1e-4).all())
    assert bool((padded[props.idx_i][p:] >= n).all()) and bool((padded[props.idx_j][p:] >= n).all())

    model = _model()
    loss, pred, grads = _loss_and_grads(model, batch)
    loss_p, pred_p, grads_p = _loss_and_grads(model, padded)
    assert torch.isfinite(pred_p).all()
    torch.testing.assert_close(loss_p, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred_p[:b], pred, rtol=1e-5, atol=1e-5)
    assert grads.keys() == grads_p.keys()
    for name in grads:
        assert torch.isfinite(grads_p[name]).all(), name
        torch.testing.assert_close(grads_p[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bad_padding_is_refused(synthetic_atomistic):
    ds = synthetic_atomistic(30, min_atoms=2, missing_gap=[3])
    batch = make_batch(ds, [0, 1], cutoff=CUTOFF)
    n, p = batch[props.Z].numel(), batch[props.idx_i].numel()
    with pytest.raises(ValueError, match="cannot pad"):
        pad_batch(batch, atoms=n + 1, pairs=p, molecules=3, cutoff=CUTOFF)  # one dummy atom is too few
    with pytest.raises(ValueError, match="cannot pad"):
        pad_batch(batch, atoms=n + 2, pairs=p, molecules=2, cutoff=CUTOFF)  # no spare slot
    with pytest.raises(ValueError, match="pad multiples"):
        padded_capacity(10, 10, (1, 8))


def test_device_batcher_pads_to_bucketed_shapes(synthetic_atomistic):
    ds = synthetic_atomistic(30, min_atoms=2, missing_gap=[3])
    batcher = DeviceBatcher(ds, CUTOFF)
    order = np.random.default_rng(1).permutation(len(ds))
    plain = list(batcher.batches(order, 7))
    padded = list(batcher.batches(order, 7, pad=(16, 32)))
    assert len(plain) == len(padded) == 5  # the last batch has 2 molecules and 5 empty slots
    for ref, got in zip(plain, padded):
        n, p, b = ref[props.Z].numel(), ref[props.idx_i].numel(), ref[props.n_atoms].numel()
        assert got[props.Z].numel() % 16 == 0 and got[props.Z].numel() >= n + 2
        assert got[props.idx_i].numel() % 32 == 0 and got[props.n_atoms].numel() == 8
        for key in (props.Z, props.R, props.idx_m, props.idx_i, props.idx_j):
            assert torch.equal(got[key][:ref[key].shape[0]], ref[key]), key
        assert torch.equal(got[props.n_atoms][:b], ref[props.n_atoms]) and torch.equal(got[props.idx], ref[props.idx])
        assert bool((got[props.n_atoms][b:] >= 1).all()) and bool(torch.isnan(got["U0"][b:]).all())
        assert bool((got[props.idx_m][n:] == 7).all())
        assert padded_capacity(n, p, (16, 32)) == (got[props.Z].numel(), got[props.idx_i].numel())
