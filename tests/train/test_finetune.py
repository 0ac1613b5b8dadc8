"""Fine-tuning: masking of missing labels, overfitting, pretrained init, early stopping, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ConfigError, FinetuneConfig, ModelConfig, PretrainConfig
from molgnn.featurize.atomistic import AtomisticDataset, make_batch
from molgnn.models.property_model import (CheckpointMismatchError, PropertyModel, element_counts, fit_atom_refs,
                                          target_statistics)
from molgnn.train.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from molgnn.train.finetune import SplitError, finetune, finetune_ensemble
from molgnn.train.pretrain import pretrain
from molgnn.train.steps import masked_scaled_mse

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)
SMILES = ("CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "CCOC", "C=CC=O", "CN(C)C", "OC1CC1", "CC(N)=O")
SPLIT = (np.arange(6), np.array([6, 7]), np.array([8, 9]))
ATOM_ENERGY = {1: -0.5, 6: -38.0, 7: -54.6, 8: -75.1, 9: -99.7}


@pytest.fixture(scope="module")
def tables(embed_structures) -> tuple[pd.DataFrame, pd.DataFrame]:
    structures = embed_structures(SMILES)
    labels = []
    for k, (smi, z) in enumerate(zip(structures["mol_id"], structures["atomic_numbers"])):
        # an intensive and an extensive synthetic target
        labels.append({"mol_id": smi, "gap": 5.0 + 0.3 * sum(a > 1 for a in z) - 0.2 * (k % 3),
                       "U0": sum(ATOM_ENERGY[a] for a in z) + 0.01 * k})
    return structures, pd.DataFrame(labels)


def _cfg(**kw) -> FinetuneConfig:
    base = dict(targets=["gap"], epochs=3, batch_size=4, lr=2e-3, patience=10)
    return FinetuneConfig(**{**base, **kw})


def test_masked_loss_ignores_missing_labels():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = torch.tensor([[2.0, float("nan")], [1.0, 4.0]])
    scale = torch.tensor([1.0, 2.0])
    loss = masked_scaled_mse(pred, y, scale)
    assert float(loss.detach()) == pytest.approx((1.0 + 4.0 + 0.0) / 3)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[0, 0] != 0
    with pytest.raises(ValueError, match="no labelled entries"):
        masked_scaled_mse(pred, torch.full((2, 2), float("nan")), scale)


def test_extensive_target_uses_per_atom_statistics(tables):
    structures, targets = tables
    ds = AtomisticDataset.from_frames(structures, targets)
    model = PropertyModel(CFG, ["gap", "U0"])
    assert model.aggregation == {"gap": "mean", "U0": "sum"}
    mean, std = target_statistics(ds, np.arange(len(ds)), ["gap", "U0"], model.aggregation)
    per_atom_u0 = targets["U0"].to_numpy() / ds.n_atoms.numpy()
    assert float(mean[1]) == pytest.approx(per_atom_u0.mean(), rel=1e-5)
    assert float(mean[0]) == pytest.approx(targets["gap"].mean(), rel=1e-5)


def test_atom_references_absorb_composition(tables):
    structures, targets = tables
    ds = AtomisticDataset.from_frames(structures, targets)
    agg = {"gap": "mean", "U0": "sum"}
    ref = fit_atom_refs(ds, np.arange(len(ds)), ["gap", "U0"], agg)
    assert torch.all(ref[:, 0] == 0)  # intensive targets get none
    residual = torch.tensor(targets["U0"].to_numpy()) - element_counts(ds, np.arange(len(ds))) @ ref[:, 1]
    assert targets["U0"].std() > 50 and float(residual.abs().max()) < 0.1
    res = finetune(structures, targets, SPLIT, CFG, _cfg(targets=["U0"], epochs=1), seed=0)
    assert res.test_metrics["U0"]["mae"] < 0.5  # without references it is ~30 units after one epoch
    assert set(res.checkpoint["target_stats"]["U0"]["atom_ref"]) == {"1", "6", "7", "8", "9"}
    no_ref = finetune(structures, targets, SPLIT, CFG, _cfg(targets=["U0"], epochs=1), seed=0, atom_refs=False)
    assert no_ref.checkpoint["target_stats"]["U0"]["atom_ref"] == {}


def test_overfits_one_batch(tables):
    structures, targets = tables
    ds = AtomisticDataset.from_frames(structures, targets)
    batch = make_batch(ds, range(len(ds)), cutoff=CFG.cutoff)
    torch.manual_seed(0)
    model = PropertyModel(CFG, ["gap", "U0"])
    model.set_target_stats(*target_statistics(ds, np.arange(len(ds)), ["gap", "U0"], model.aggregation))
    y = torch.stack([batch["gap"], batch["U0"]], -1).float()
    scale = y.std(0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(200):
        loss = masked_scaled_mse(model(batch), y, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 50


def test_pretrained_encoder_is_loaded(tables):
    structures, targets = tables
    pre = pretrain(structures, CFG, PretrainConfig(epochs=1, batch_size=5), seed=0).checkpoint
    enc = {k: v for k, v in pre["state_dict"].items() if k.startswith("encoder.")}
    # one epoch at lr 1e-30 (the config wants epochs and lr > 0): steps below float32 resolution
    frozen = _cfg(epochs=1, lr=1e-30)
    loaded = finetune(structures, targets, SPLIT, CFG, frozen, seed=1, pretrained=pre).checkpoint
    scratch = finetune(structures, targets, SPLIT, CFG, frozen, seed=1).checkpoint
    assert loaded["init"] == "pretrained" and scratch["init"] == "scratch"
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in enc.items())
    assert not all(torch.equal(scratch["state_dict"][k], v) for k, v in enc.items())
    other = ModelConfig(n_atom_basis=8, n_interactions=2, n_rbf=10, cutoff=4.0)
    with pytest.raises(CheckpointMismatchError, match="differs"):
        finetune(structures, targets, SPLIT, other, frozen, seed=1, pretrained=pre)


def test_encoder_lr_scale_slows_only_a_pretrained_encoder(tables):
    structures, targets = tables
    pre = pretrain(structures, CFG, PretrainConfig(epochs=1, batch_size=5), seed=0).checkpoint
    enc = {k: v for k, v in pre["state_dict"].items() if k.startswith("encoder.")}

    def moved(ckpt, prefix):  # largest absolute weight change of the parameters under prefix
        return max(float((ckpt["state_dict"][k] - v).abs().max()) for k, v in enc.items() if k.startswith(prefix))

    full = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=3), seed=1, pretrained=pre,
                    scheduler="cosine-time", time_budget_s=60.0, warmup_steps=2).checkpoint
    slow = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=3, encoder_lr_scale=1e-3), seed=1, pretrained=pre,
                    scheduler="cosine-time", time_budget_s=60.0, warmup_steps=2)
    assert moved(slow.checkpoint, "encoder.") < moved(full, "encoder.") / 100
    heads = [k for k in full["state_dict"] if not k.startswith("encoder.") and full["state_dict"][k].is_floating_point()]
    assert any(not torch.equal(slow.checkpoint["state_dict"][k], full["state_dict"][k]) for k in heads)
    assert slow.history[-1]["lr"] > 0  # the reported lr is the head's
    # a scratch encoder has nothing to keep: the scale does not apply
    a = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=2), seed=1).checkpoint
    b = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=2, encoder_lr_scale=1e-3), seed=1).checkpoint
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        _cfg(encoder_lr_scale=0.0)


def test_nan_labels_are_masked(tables):
    structures, targets = tables
    targets = targets.copy()
    targets.loc[[0, 3], "U0"] = np.nan                # partly labelled molecules
    targets.loc[1, ["gap", "U0"]] = np.nan           # an unlabelled training molecule
    targets.loc[8, "gap"] = np.nan                   # a test molecule without gap
    res = finetune(structures, targets, SPLIT, CFG, _cfg(targets=["gap", "U0"]), seed=0)
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_score"]) for h in res.history)
    assert res.test_metrics["gap"]["n"] == 1 and res.test_metrics["U0"]["n"] == 2
    p = res.test_predictions
    assert len(p) == 4 and p["y_true"].isna().sum() == 1 and p["y_pred"].notna().all()


def test_early_stopping_keeps_best_weights(tables):
    structures, targets = tables
    # lr 1e-30 (the config wants lr > 0): every step is below float32 resolution, the weights never move
    stalled = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=10, patience=2, lr=1e-30), seed=0)
    assert len(stalled.history) == 3 and stalled.checkpoint["best_epoch"] == 1
    res = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=6, lr=5e-3), seed=0)
    best = min(h["val_mae_gap"] for h in res.history)
    assert res.val_metrics["gap"]["mae"] == pytest.approx(best, rel=1e-6)
    assert res.history[res.checkpoint["best_epoch"] - 1]["val_mae_gap"] == pytest.approx(best, rel=1e-6)


def test_checkpoint_round_trip_and_determinism(tables, tmp_path):
    structures, targets = tables
    res = finetune(structures, targets, SPLIT, CFG, _cfg(targets=["gap", "U0"]), seed=0)
    again = finetune(structures, targets, SPLIT, CFG, _cfg(targets=["gap", "U0"]), seed=0)
    pd.testing.assert_frame_equal(res.test_predictions, again.test_predictions)
    path = save_checkpoint(res.checkpoint, tmp_path / "ft.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ft.pt"]  # no temp file left behind
    ckpt = load_checkpoint(path)
    assert ckpt["target_stats"]["U0"]["aggregation"] == "sum"
    model = model_from_checkpoint(ckpt)
    ds = AtomisticDataset.from_frames(structures)
    with torch.no_grad():
        pred = model(make_batch(ds, SPLIT[2], cutoff=model.cutoff))
    assert np.array_equal(pred.double().numpy().reshape(-1), res.test_predictions["y_pred"].to_numpy())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")


def test_split_by_mol_id_and_bad_splits(tables):
    structures, targets = tables
    by_pos = finetune(structures, targets, SPLIT, CFG, _cfg(epochs=1), seed=0)
    names = tuple(structures["mol_id"].to_numpy()[s] for s in SPLIT)
    by_id = finetune(structures, targets, names, CFG, _cfg(epochs=1), seed=0)
    pd.testing.assert_frame_equal(by_pos.test_predictions, by_id.test_predictions)
    with pytest.raises(SplitError, match="train and val splits share"):
        finetune(structures, targets, (np.arange(6), np.array([5, 6]), np.array([8])), CFG, _cfg(), seed=0)
    with pytest.raises(SplitError, match="not in the structures"):
        finetune(structures, targets, (["CCO"], ["nope"], []), CFG, _cfg(), seed=0)


def test_ensemble_reports_mean_and_spread(tables):
    structures, targets = tables
    logged = []
    ens = finetune_ensemble(structures, targets, SPLIT, CFG, _cfg(epochs=2), seed=0, ensemble_size=2,
                            log_fn=lambda m, s: logged.append(m))
    assert [m.checkpoint["seed"] for m in ens.members] == [0, 1]
    members = np.stack([m.test_predictions["y_pred"].to_numpy() for m in ens.members])
    np.testing.assert_allclose(ens.test_predictions["y_pred"], members.mean(0))
    assert (ens.test_predictions["y_std"] > 0).all()
    mae = np.abs(ens.test_predictions["y_pred"] - ens.test_predictions["y_true"]).mean()
    assert ens.test_metrics["gap"]["mae"] == pytest.approx(mae)
    assert any("member_1/finetune/val_score" in m for m in logged)
