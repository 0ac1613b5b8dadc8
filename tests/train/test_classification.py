"""Binary classification targets: auto-detection, BCE on masked labels, probabilities, ROC-AUC/PR-AUC/ECE."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molgnn.config import FinetuneConfig, ModelConfig
from molgnn.featurize.atomistic import AtomisticDataset
from molgnn.train import tasks
from molgnn.train.checkpoints import model_from_checkpoint
from molgnn.train.finetune import finetune, finetune_ensemble
from molgnn.train.steps import masked_scaled_mse

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)
NAN = float("nan")


def _binary_dataset(n_mol: int = 240, seed: int = 0, missing: float = 0.0) -> AtomisticDataset:
    """Random molecules of H/C/N/O; ``active`` = 1 when a molecule has more N than O atoms (a rule a
    per-atom mean of logits can express), ``size`` a regression target; ``missing`` of each column NaN."""
    rng = np.random.default_rng(seed)
    n = rng.integers(3, 9, n_mol)
    ptr = np.concatenate([[0], np.cumsum(n)])
    z = rng.choice([1, 6, 7, 8], ptr[-1]).astype(np.uint8)
    pos = rng.uniform(0, 2.5, (ptr[-1], 3))
    active = np.array([float((z[a:b] == 7).sum() > (z[a:b] == 8).sum()) for a, b in zip(ptr[:-1], ptr[1:])])
    size = np.array([(z[a:b] > 1).sum() + 0.1 * pos[a:b, 0].std() for a, b in zip(ptr[:-1], ptr[1:])])
    for col in (active, size):
        col[rng.random(n_mol) < missing] = NAN
    return AtomisticDataset(np.array([f"m{i}" for i in range(n_mol)]), torch.from_numpy(z),
                            torch.from_numpy(pos).float(), torch.from_numpy(ptr),
                            torch.tensor(np.stack([active, size], 1)), ["active", "size"])


def _split(n: int):
    idx = np.arange(n)
    return idx[: int(0.7 * n)], idx[int(0.7 * n): int(0.85 * n)], idx[int(0.85 * n):]


def test_auto_detects_binary_columns_and_declared_types_win():
    labels = torch.tensor([[0.0, 1.5, 1.0], [1.0, 2.0, NAN], [NAN, 0.0, 0.0]])
    types, why = tasks.resolve_task_types(labels, ["tox", "logS", "flag"], {"flag": "regression"})
    assert types == {"tox": "classification", "logS": "regression", "flag": "regression"}
    assert why["tox"].startswith("auto") and why["flag"] == "declared"
    with pytest.raises(ValueError, match=r"task_types.logS = 'classification' needs labels 0 or 1"):
        tasks.resolve_task_types(labels, ["tox", "logS", "flag"], {"logS": "classification"})
    with pytest.raises(ValueError, match="unknown target"):
        tasks.resolve_task_types(labels, ["tox", "logS", "flag"], {"nope": "regression"})


def test_task_loss_masks_missing_labels_and_equals_mse_without_classification():
    pred = torch.tensor([[0.3, 2.0], [-1.0, 4.0], [2.0, 1.0]], requires_grad=True)
    y = torch.tensor([[1.0, NAN], [NAN, 3.0], [0.0, 1.5]])
    scale = torch.tensor([1.0, 2.0])
    ones = torch.ones(2, 2)
    reg = tasks.masked_task_loss(pred, y, scale, torch.tensor([False, False]), ones)
    assert float(reg) == pytest.approx(float(masked_scaled_mse(pred, y, scale)))
    loss = tasks.masked_task_loss(pred, y, scale, torch.tensor([True, False]), ones)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (bce(torch.tensor(0.3), torch.tensor(1.0)) + bce(torch.tensor(2.0), torch.tensor(0.0))
                + (1.0 / 2) ** 2 + (0.5 / 2) ** 2) / 4
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert pred.grad[1, 0] == 0 and pred.grad[0, 1] == 0 and pred.grad[0, 0] != 0
    # balanced weighting: the rare class weighs more
    w = tasks.class_weights(torch.tensor([[1.0], [0.0], [0.0], [0.0]]), {"t": "classification"}, ["t"], "balanced")
    assert w[:, 0].tolist() == pytest.approx([4 / 6, 4 / 2])


def test_classification_metrics_known_values():
    y = torch.tensor([0.0, 0.0, 1.0, 1.0, NAN])
    m = tasks.classification_metrics(y, torch.tensor([0.1, 0.4, 0.35, 0.8, 0.9]))
    assert m["roc_auc"] == pytest.approx(0.75) and m["n"] == 4
    assert m["pr_auc"] == pytest.approx((1.0 + 2 / 3) / 2)
    perfect = tasks.classification_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]))
    assert perfect["roc_auc"] == 1.0 and perfect["ece"] == pytest.approx(0.0)
    one_class = tasks.classification_metrics(torch.tensor([1.0, 1.0]), torch.tensor([0.2, 0.9]))
    assert math.isnan(one_class["roc_auc"]) and one_class["ece"] == pytest.approx((0.8 + 0.1) / 2)


def test_tiny_model_learns_a_binary_task_and_predicts_probabilities():
    ds = _binary_dataset()
    cfg = FinetuneConfig(targets=["active"], epochs=15, batch_size=16, lr=3e-3, patience=15, ensemble_size=2)
    res = finetune_ensemble(ds, None, _split(len(ds)), CFG, cfg, seed=0)
    assert res.task_types == {"active": "classification"}
    m = res.test_metrics["active"]
    print("held-out binary task:", m)
    assert m["roc_auc"] > 0.85 and m["pr_auc"] > 0.7 and 0 <= m["ece"] <= 0.3
    p = res.test_predictions["y_pred"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and res.test_predictions["y_std"].le(0.5).all()
    # the checkpoint records the task type; a reloaded member predicts the same probabilities
    ckpt = res.members[0].checkpoint
    assert ckpt["config"]["task_types"] == {"active": "classification"}
    model = model_from_checkpoint(ckpt)
    assert model.task_types == {"active": "classification"}
    assert float(model.target_std[0]) == 1.0 and float(model.target_mean[0]) == 0.0  # logits are not standardized


def test_mixed_table_with_missing_labels_trains_both_tasks():
    ds = _binary_dataset(n_mol=160, seed=1, missing=0.3)
    assert torch.isnan(ds.targets).any(dim=0).all()
    cfg = FinetuneConfig(targets=["active", "size"], epochs=6, batch_size=16, lr=3e-3, patience=10,
                         class_weighting="balanced")
    res = finetune(ds, None, _split(len(ds)), CFG, cfg, seed=0)
    assert res.task_types == {"active": "classification", "size": "regression"}
    assert set(res.test_metrics["active"]) >= {"roc_auc", "pr_auc", "ece"}
    assert set(res.test_metrics["size"]) >= {"mae", "rmse", "r2"}
    assert all(math.isfinite(h["val_score"]) for h in res.history)
    assert "val_roc_auc_active" in res.history[-1] and "val_mae_size" in res.history[-1]
    preds = res.test_predictions
    act = preds[preds["target"] == "active"]["y_pred"]
    assert act.between(0, 1).all() and preds[preds["target"] == "size"]["y_pred"].max() > 1.0
    n_test = len(_split(len(ds))[2])
    assert res.test_metrics["active"]["n"] == int((~torch.isnan(ds.targets[-n_test:, 0])).sum())


def test_declaring_a_target_regression_keeps_a_0_1_column_regression():
    ds = _binary_dataset(n_mol=60)
    cfg = FinetuneConfig(targets=["active"], epochs=1, batch_size=16, task_types={"active": "regression"})
    res = finetune(ds, None, _split(len(ds)), CFG, cfg, seed=0)
    assert res.task_types == {"active": "regression"} and "mae" in res.test_metrics["active"]
