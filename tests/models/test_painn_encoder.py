"""E(3) behaviour of the PaiNN encoder and the heads built on it (float64 for tight tolerances)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import AtomisticDataset, make_batch
from molgnn.models.painn_encoder import MASK_TOKEN, build_painn, encode
from molgnn.models.pretraining import PretrainingModel
from molgnn.models.property_model import PropertyModel

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)


def _orthogonal(reflect: bool, seed: int = 0) -> torch.Tensor:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return torch.tensor(q)


@pytest.fixture(scope="module")
def batches(embed_structures):
    ds = AtomisticDataset.from_frames(embed_structures(["CCO", "c1ccncc1", "NCC(=O)O"]),
                                      dtype=torch.float64)
    out = {}
    for reflect in (False, True):
        Q = _orthogonal(reflect)
        moved = AtomisticDataset(ds.mol_ids, ds.z, ds.positions @ Q.T + torch.tensor([1.3, -2.0, 0.7],
                                 dtype=torch.float64), ds.ptr)
        out[reflect] = (Q, make_batch(ds, range(len(ds)), cutoff=CFG.cutoff),
                        make_batch(moved, range(len(ds)), cutoff=CFG.cutoff))
    return out


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "rotation+reflection"])
def test_encoder_scalars_invariant_vectors_equivariant(batches, reflect):
    Q, batch, moved = batches[reflect]
    torch.manual_seed(0)
    encoder = build_painn(CFG).double()
    q, mu = encode(encoder, batch)
    q2, mu2 = encode(encoder, moved)
    assert mu.abs().max() > 1e-3  # the vector channel is not trivially zero
    torch.testing.assert_close(q2, q, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(mu2, torch.einsum("ij,njf->nif", Q, mu), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "rotation+reflection"])
def test_denoising_head_rotates_and_type_logits_are_invariant(batches, reflect):
    Q, batch, moved = batches[reflect]
    torch.manual_seed(0)
    model = PretrainingModel(CFG, elements=[1, 6, 7, 8],
                             eht_stats={"mean": [-13.0, -5.0, 8.0], "std": [0.5, 4.0, 4.0]}).double()
    noise, logits, eht = model(batch)
    noise2, logits2, eht2 = model(moved)
    assert noise.shape == (batch["_atomic_numbers"].numel(), 3) and noise.abs().max() > 1e-4
    torch.testing.assert_close(noise2, noise @ Q.T, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(logits2, logits, atol=1e-9, rtol=1e-7)
    assert eht.shape == (batch["_n_atoms"].numel(), 3)
    torch.testing.assert_close(eht2, eht, atol=1e-9, rtol=1e-7)  # orbital energies are E(3)-invariant


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "rotation+reflection"])
def test_property_predictions_invariant(batches, reflect):
    _, batch, moved = batches[reflect]
    torch.manual_seed(0)
    model = PropertyModel(CFG, ["gap", "U0"]).double()
    model.set_target_stats(torch.tensor([6.0, -100.0]), torch.tensor([1.5, 3.0]))
    y, y2 = model(batch), model(moved)
    assert y.shape == (3, 2)
    torch.testing.assert_close(y2, y, atol=1e-9, rtol=1e-9)


def test_encode_builds_its_own_neighbor_list_when_absent(batches):
    _, batch, _ = batches[False]
    encoder = build_painn(CFG).double()
    bare = {k: batch[k] for k in ("_atomic_numbers", "_positions", "_idx_m", "_n_atoms")}
    torch.testing.assert_close(encode(encoder, bare)[0], encode(encoder, batch)[0])


def test_mask_token_row_is_used_only_by_masked_atoms(batches):
    _, batch, _ = batches[False]
    encoder = build_painn(CFG).double()
    assert encoder.embedding.num_embeddings == 100 and int(batch["_atomic_numbers"].min()) >= 1
    encode(encoder, batch)[0].sum().backward()
    assert encoder.embedding.weight.grad[MASK_TOKEN].abs().max() == 0
    encoder.zero_grad()
    masked = dict(batch)
    masked["_atomic_numbers"] = batch["_atomic_numbers"].clone()
    masked["_atomic_numbers"][[0, 5]] = MASK_TOKEN
    encode(encoder, masked)[0].sum().backward()
    assert encoder.embedding.weight.grad[MASK_TOKEN].abs().max() > 0
