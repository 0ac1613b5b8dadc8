"""Screening with a classification target: probabilities in [0, 1], the ensemble's mean probability
and spread, ranking by probability; the checkpoint says which targets are classification."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.models.property_model import PropertyModel
from molgnn.screen.predict import predict_ensemble
from molgnn.screen.screening import screen_file
from molgnn.train.checkpoints import checkpoint_from_model, load_checkpoint, save_checkpoint

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)
SMILES = ["CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "CCN(C)C"]


def _member(seed: int) -> dict:
    torch.manual_seed(seed)
    model = PropertyModel(CFG, ["toxic", "logS"], task_types={"toxic": "classification"})
    model.set_target_stats(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 1.5]))
    for p in model.heads[0].parameters():  # logits of a few units, so probabilities differ visibly
        p.data.mul_(30.0)
    return checkpoint_from_model(model, seed=seed)


def test_checkpoint_task_types_survive_a_save_and_give_probabilities(embed_structures, tmp_path):
    structures = embed_structures(SMILES)
    path = tmp_path / "m.pt"
    save_checkpoint(_member(0), path)
    ckpt = load_checkpoint(path)
    assert ckpt["config"]["task_types"] == {"toxic": "classification", "logS": "regression"}
    members = [ckpt, _member(1), _member(2)]
    out = predict_ensemble(members, structures)
    assert out["toxic_mean"].between(0, 1).all() and out["toxic_mean"].std() > 0.01
    alone = np.stack([predict_ensemble([m], structures)["toxic_mean"].to_numpy() for m in members])
    assert ((alone >= 0) & (alone <= 1)).all()
    np.testing.assert_allclose(out["toxic_mean"], alone.mean(0), rtol=1e-6)   # mean of probabilities
    np.testing.assert_allclose(out["toxic_std"], alone.std(0), rtol=1e-5, atol=1e-9)
    assert (out["logS_mean"] < 0).any() or (out["logS_mean"] > 1).any()      # regression stays unbounded


def test_screen_ranks_by_probability(embed_structures, tmp_path):
    src = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": SMILES}).to_csv(src, index=False)
    out = tmp_path / "ranked.csv"
    screen_file([str(src)], out, [_member(0), _member(1)], rank_by="toxic", workers=1)
    table = pd.read_csv(out)
    assert len(table) == len(SMILES) and table["toxic_mean"].between(0, 1).all()
    # no applicability domain given: the rank is the probability's order
    assert table.sort_values("rank")["toxic_mean"].is_monotonic_decreasing
    assert table["toxic_mean"].nunique() > 1


def test_screen_states_platt_calibrated_probabilities_from_the_model_folder(embed_structures, tmp_path):
    import json

    from molgnn.screen.fast_tier import TIER_2D, TIER_3D, _calibrated_probabilities
    from molgnn.screen.model_folder import load_screening_model, screen_library
    from molgnn.screen.probability_calibration import apply_platt

    for k in range(2):
        save_checkpoint(_member(k), tmp_path / f"member_{k}.pt")
    platt = {"a": 0.5, "b": -0.3, "n_cal": 80, "fitted": True}
    (tmp_path / "calibration.json").write_text(json.dumps({
        "toxic": {"task_type": "classification", "platt": platt},
        "logS": {"scale": 2.0}}))
    model = load_screening_model(tmp_path)
    assert model.platt == {"toxic": platt} and model.std_scale == {"logS": 2.0}
    lib = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": SMILES}).to_csv(lib, index=False)
    res = screen_library(model, [str(lib)], tmp_path / "ranked.csv", rank_by="toxic", workers=1)
    table = pd.read_csv(res.predictions_path)
    assert "logS_calibrated" not in table.columns
    np.testing.assert_allclose(table["toxic_calibrated"], apply_platt(table["toxic_mean"], platt))
    assert table.sort_values("rank")["toxic_calibrated"].is_monotonic_decreasing   # same ranking
    # two-tier: each row gets its own tier's map, none where its tier has none
    two = pd.DataFrame({"tier": [TIER_3D, TIER_2D], "toxic_mean": [0.8, 0.8]})
    _calibrated_probabilities(two, ["toxic"], {"toxic": platt}, {})
    assert two["toxic_calibrated"][0] == pytest.approx(apply_platt([0.8], platt)[0])
    assert np.isnan(two["toxic_calibrated"][1])
