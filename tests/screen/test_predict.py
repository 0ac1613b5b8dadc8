"""Ensemble prediction: mean/std columns, spread across members, checkpoint validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import AtomisticDataset
from molgnn.models.pretraining import PretrainingModel
from molgnn.models.property_model import PropertyModel, predict_properties
from molgnn.screen.predict import predict_ensemble
from molgnn.train.checkpoints import CheckpointError, checkpoint_from_model

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)


def _member(seed: int, targets=("gap", "homo")) -> dict:
    torch.manual_seed(seed)
    model = PropertyModel(CFG, list(targets))
    model.set_target_stats(torch.tensor([6.0, -7.0][:len(targets)]), torch.tensor([1.2, 0.5][:len(targets)]))
    return checkpoint_from_model(model, seed=seed)


@pytest.fixture(scope="module")
def structures(embed_structures):
    return embed_structures(["CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F"])


def test_identical_members_have_zero_spread(structures):
    member = _member(0)
    out = predict_ensemble([member, member, member], structures, batch_size=2)
    assert list(out.columns) == ["mol_id", "gap_mean", "gap_std", "homo_mean", "homo_std"]
    assert out["mol_id"].tolist() == structures["mol_id"].tolist()
    assert (out[["gap_std", "homo_std"]].to_numpy() == 0).all()
    # one member reproduces the predictions of the model the checkpoint was taken from
    torch.manual_seed(0)
    source = PropertyModel(CFG, ["gap", "homo"])
    source.set_target_stats(torch.tensor([6.0, -7.0]), torch.tensor([1.2, 0.5]))
    direct = predict_properties(source, AtomisticDataset.from_frames(structures)).double().numpy()
    alone = predict_ensemble([member], structures)
    np.testing.assert_allclose(alone[["gap_mean", "homo_mean"]].to_numpy(), direct, rtol=1e-6)


def test_different_seeds_spread_and_mean(structures):
    a, b = _member(0), _member(1)
    out = predict_ensemble([a, b], structures)
    pa, pb = predict_ensemble([a], structures), predict_ensemble([b], structures)
    assert (out["gap_std"] > 0).all() and (out["homo_std"] > 0).all()
    np.testing.assert_allclose(out["gap_mean"], (pa["gap_mean"] + pb["gap_mean"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out["gap_std"], np.abs(pa["gap_mean"] - pb["gap_mean"]) / 2, rtol=1e-5)


def test_rejects_incompatible_checkpoints(structures):
    with pytest.raises(CheckpointError, match="at least one"):
        predict_ensemble([], structures)
    with pytest.raises(CheckpointError, match="predicts"):
        predict_ensemble([_member(0), _member(1, targets=("gap",))], structures)
    pre = checkpoint_from_model(PretrainingModel(CFG, [1, 6, 7, 8, 9]))
    with pytest.raises(CheckpointError, match="not a fine-tuned"):
        predict_ensemble([pre], structures)


def test_empty_structures_give_empty_frame():
    empty = pd.DataFrame(columns=["mol_id", "atomic_numbers", "positions"])
    out = predict_ensemble([_member(0)], empty)
    assert len(out) == 0 and list(out.columns) == ["mol_id", "gap_mean", "gap_std", "homo_mean", "homo_std"]
