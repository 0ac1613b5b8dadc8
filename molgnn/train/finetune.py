"""Supervised fine-tuning of the property model, single seed or as a seed ensemble.

Loss: MSE of residuals divided by each target's training-set std (so targets weigh equally), over
labelled entries only (NaN labels are masked). Model selection: early stopping on the validation
score (mean over targets of MAE / std), keeping the best-validation weights.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import schnetpack.properties as props
import torch
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from molgnn.config import FinetuneConfig, ModelConfig
from molgnn.data import schema
from molgnn.featurize.atomistic import AtomisticDataset, iterate_batches
from molgnn.models.property_model import (PropertyModel, element_counts, fit_atom_refs, predict_properties,
                                          target_statistics)
from molgnn.train.checkpoints import checkpoint_from_model
from molgnn.train.pretrain import LogFn, TrainingDivergedError, as_dataset, sync

SCHEDULERS = ("plateau", "cosine")


class SplitError(ValueError):
    """The train/validation/test indices are malformed, overlap or leave a needed part empty."""


@dataclass
class FinetuneResult:
    checkpoint: dict[str, Any]
    history: list[dict[str, float]]
    test_metrics: dict[str, dict[str, float]]   # {target: {mae, rmse, r2, n}} physical units
    val_metrics: dict[str, dict[str, float]]
    test_predictions: pd.DataFrame              # mol_id, target, y_true, y_pred


@dataclass
class EnsembleResult:
    members: list[FinetuneResult]
    test_metrics: dict[str, dict[str, float]]   # of the ensemble mean
    test_predictions: pd.DataFrame              # mol_id, target, y_true, y_pred (mean), y_std

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return [m.checkpoint for m in self.members]


def resolve_split(split: Any, dataset: AtomisticDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) dataset positions from a 3-sequence or an object with train/val/test
    attributes; each part holds integer positions or mol_id strings."""
    if all(hasattr(split, a) for a in ("train", "val", "test")):
        parts = [split.train, split.val, split.test]
    else:
        parts = list(split)
        if len(parts) != 3:
            raise SplitError(f"split must have three parts (train, val, test), got {len(parts)}")
    lookup = pd.Index(dataset.mol_ids)
    out = []
    for name, part in zip(("train", "val", "test"), parts):
        arr = np.asarray(part if part is not None else [])
        if arr.size == 0:
            arr = np.zeros(0, dtype=np.int64)
        elif arr.dtype.kind in "OUS":
            pos = lookup.get_indexer(arr.astype(str))
            if (pos < 0).any():
                raise SplitError(f"{name} split names mol_ids not in the structures: {list(arr[pos < 0][:5])}")
            arr = pos
        elif arr.dtype.kind in "iu":
            if arr.min() < 0 or arr.max() >= len(dataset):
                raise SplitError(f"{name} split indices must be in [0, {len(dataset)})")
        else:
            raise SplitError(f"{name} split must hold integer positions or mol_ids, got dtype {arr.dtype}")
        if len(np.unique(arr)) != len(arr):
            raise SplitError(f"{name} split repeats molecules")
        out.append(arr.astype(np.int64))
    for (a, x), (b, y) in [((0, out[0]), (1, out[1])), ((0, out[0]), (2, out[2])), ((1, out[1]), (2, out[2]))]:
        if np.intersect1d(x, y).size:
            names = ("train", "val", "test")
            raise SplitError(f"{names[a]} and {names[b]} splits share {np.intersect1d(x, y).size} molecules")
    return out[0], out[1], out[2]


def regression_metrics(y_true: torch.Tensor, y_pred: torch.Tensor) -> dict[str, float]:
    """MAE, RMSE, R^2 over labelled entries (NaN y_true skipped); NaN where undefined."""
    valid = ~torch.isnan(y_true)
    t, p = y_true[valid].double(), y_pred[valid].double()
    n = int(valid.sum())
    if n == 0:
        return {"mae": math.nan, "rmse": math.nan, "r2": math.nan, "n": 0}
    r2 = float(r2_score(p, t)) if n >= 2 and float(t.var()) > 0 else math.nan
    return {"mae": float(mean_absolute_error(p, t)), "rmse": float(mean_squared_error(p, t, squared=False)),
            "r2": r2, "n": n}


def masked_scaled_mse(pred: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of ((pred - y) / scale)^2 over the entries whose label is not NaN (zero gradient elsewhere)."""
    valid = ~torch.isnan(y)
    if not bool(valid.any()):
        raise ValueError("batch has no labelled entries")
    residual = (pred - torch.where(valid, y, pred.detach())) / scale
    return residual.pow(2).sum() / valid.sum()


def _labels(dataset: AtomisticDataset, targets: Sequence[str]) -> torch.Tensor:
    cols = [dataset.target_names.index(t) for t in targets]
    return dataset.targets[:, cols].cpu().double()


def _metrics(y_true: torch.Tensor, y_pred: torch.Tensor, targets: Sequence[str]) -> dict[str, dict[str, float]]:
    return {t: regression_metrics(y_true[:, k], y_pred[:, k]) for k, t in enumerate(targets)}


def _long_predictions(mol_ids: np.ndarray, targets: Sequence[str], y_true: torch.Tensor,
                      y_pred: torch.Tensor, y_std: torch.Tensor | None = None) -> pd.DataFrame:
    m, t = len(mol_ids), len(targets)
    df = pd.DataFrame({schema.MOL_ID: np.repeat(mol_ids, t), "target": np.tile(np.asarray(targets, dtype=object), m),
                       "y_true": y_true.double().reshape(-1).numpy(), "y_pred": y_pred.double().reshape(-1).numpy()})
    if y_std is not None:
        df["y_std"] = y_std.double().reshape(-1).numpy()
    return df


def finetune(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None, split: Any,
             model_cfg: ModelConfig, finetune_cfg: FinetuneConfig, *, seed: int, device: str | torch.device = "cpu",
             pretrained: Mapping[str, Any] | None = None, log_fn: LogFn | None = None,
             scheduler: str = "plateau", weight_decay: float = 1e-2, lr_patience: int | None = None,
             aggregation: Mapping[str, str] | None = None, head_hidden: int | None = None,
             head_layers: int = 2, eval_batch_size: int = 256, grad_clip: float | None = 10.0,
             atom_refs: bool = True) -> FinetuneResult:
    """Train a PropertyModel on ``finetune_cfg.targets``; ``pretrained`` (a pretrain checkpoint) seeds
    the encoder, None trains from scratch.

    ``atom_refs`` fits per-element references for sum-aggregated targets on the training set (the
    loss scale is then the std of what remains). ``structures`` may be an AtomisticDataset that
    already carries the targets (then ``targets_df`` must be None). ``split`` indexes the structures
    (positions or mol_ids); molecules of the train split without any label are skipped; test may be empty.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    targets = list(finetune_cfg.targets)
    device = torch.device(device)
    dataset = _dataset_with_targets(structures, targets_df, targets).to(device)
    train_idx, val_idx, test_idx = resolve_split(split, dataset)
    labels = _labels(dataset, targets)
    has_label = ~torch.isnan(labels).all(dim=1).numpy()
    train_idx = train_idx[has_label[train_idx]]  # molecules without any label add nothing to the loss
    if len(train_idx) == 0:
        raise SplitError("the train split has no labelled molecules")
    if not has_label[val_idx].any():
        raise SplitError("the validation split has no labelled molecules: early stopping needs some")

    torch.manual_seed(seed)
    model = PropertyModel(model_cfg, targets, aggregation=aggregation, head_hidden=head_hidden,
                          head_layers=head_layers)
    y_train = labels[train_idx]
    ref = None
    if atom_refs and any(a == "sum" for a in model.aggregation.values()):
        ref = fit_atom_refs(dataset, train_idx, targets, model.aggregation)
        model.set_atom_refs(ref)
        y_train = y_train - element_counts(dataset, train_idx) @ ref  # the part the network must learn
    model.set_target_stats(*target_statistics(dataset, train_idx, targets, model.aggregation, ref))
    if pretrained is not None:
        model.load_encoder(pretrained)
    model.to(device)
    scale = torch.tensor([_nanstd(y_train[:, k]) for k in range(len(targets))], dtype=torch.float32)

    optimizer = torch.optim.AdamW(model.parameters(), lr=finetune_cfg.lr, weight_decay=weight_decay)
    if scheduler == "plateau":
        sched: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=lr_patience if lr_patience is not None else max(1, finetune_cfg.patience // 2))
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, finetune_cfg.epochs))
    order_gen = torch.Generator().manual_seed(seed)
    scale_dev = scale.to(device)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = math.inf, 0, _snapshot(model)

    for epoch in range(1, finetune_cfg.epochs + 1):
        model.train()
        sync(device)
        start = time.perf_counter()
        loss_sum, n_mol = 0.0, 0
        for step, batch in enumerate(iterate_batches(dataset, train_idx, batch_size=finetune_cfg.batch_size,
                                                     cutoff=model.cutoff, shuffle=True, generator=order_gen,
                                                     device=device)):
            y = torch.stack([batch[t] for t in targets], dim=-1).to(torch.float32)
            loss = masked_scaled_mse(model(batch), y, scale_dev)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDivergedError(f"fine-tuning loss is {value} at epoch {epoch}, batch {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            b = batch[props.n_atoms].numel()
            loss_sum, n_mol = loss_sum + value * b, n_mol + b
        sync(device)
        seconds = time.perf_counter() - start

        val_pred = predict_properties(model, dataset, val_idx, batch_size=eval_batch_size, device=device)
        val_m = _metrics(labels[val_idx], val_pred, targets)
        score = float(np.nanmean([val_m[t]["mae"] / float(scale[k]) for k, t in enumerate(targets)]))
        lr = optimizer.param_groups[0]["lr"]
        if scheduler == "plateau":
            sched.step(score)
        else:
            sched.step()
        metrics = {"train_loss": loss_sum / n_mol, "val_score": score, "lr": lr, "seconds": seconds,
                   "molecules_per_second": n_mol / seconds if seconds > 0 else math.nan,
                   **{f"val_mae_{t}": val_m[t]["mae"] for t in targets}}
        history.append({"epoch": epoch, **metrics})
        if log_fn is not None:
            log_fn({f"finetune/{k}": v for k, v in metrics.items()}, epoch)
        if score < best_score:
            best_score, best_epoch, best_state = score, epoch, _snapshot(model)
        elif epoch - best_epoch >= finetune_cfg.patience:
            break

    model.load_state_dict(best_state)
    val_pred = predict_properties(model, dataset, val_idx, batch_size=eval_batch_size, device=device)
    test_pred = predict_properties(model, dataset, test_idx, batch_size=eval_batch_size, device=device)
    val_metrics = _metrics(labels[val_idx], val_pred, targets)
    test_metrics = _metrics(labels[test_idx], test_pred, targets)
    ckpt = checkpoint_from_model(
        model, seed=seed, init="pretrained" if pretrained is not None else "scratch", best_epoch=best_epoch,
        finetune_config=dataclasses.asdict(finetune_cfg), val_metrics=val_metrics, test_metrics=test_metrics,
        history=history)
    return FinetuneResult(ckpt, history, test_metrics, val_metrics,
                          _long_predictions(dataset.mol_ids[test_idx], targets, labels[test_idx], test_pred))


def finetune_ensemble(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None, split: Any,
                      model_cfg: ModelConfig, finetune_cfg: FinetuneConfig, *, seed: int,
                      device: str | torch.device = "cpu", pretrained: Mapping[str, Any] | None = None,
                      log_fn: LogFn | None = None, ensemble_size: int | None = None,
                      **kwargs: Any) -> EnsembleResult:
    """``ensemble_size`` (default ``finetune_cfg.ensemble_size``) members with seeds seed, seed+1, ...;
    test metrics are those of the ensemble mean, ``y_std`` the spread over members (ddof=0)."""
    k = finetune_cfg.ensemble_size if ensemble_size is None else ensemble_size
    if k < 1:
        raise ValueError(f"ensemble_size must be at least 1, got {k}")
    dataset = _dataset_with_targets(structures, targets_df, list(finetune_cfg.targets)).to(device)
    members = []
    for m in range(k):
        member_log = None if log_fn is None else (
            lambda metrics, step, m=m: log_fn({f"member_{m}/{key}": v for key, v in metrics.items()}, step))
        members.append(finetune(dataset, None, split, model_cfg, finetune_cfg, seed=seed + m, device=device,
                                pretrained=pretrained, log_fn=member_log, **kwargs))
    first = members[0].test_predictions
    preds = torch.tensor(np.stack([r.test_predictions["y_pred"].to_numpy() for r in members]))
    mean, std = preds.mean(0), preds.std(0, unbiased=False)
    table = first[[schema.MOL_ID, "target", "y_true"]].assign(y_pred=mean.numpy(), y_std=std.numpy())
    targets = list(finetune_cfg.targets)
    t = len(targets)
    y_true = torch.tensor(table["y_true"].to_numpy()).reshape(-1, t)
    metrics = _metrics(y_true, mean.reshape(-1, t), targets)
    return EnsembleResult(members, metrics, table)


def _dataset_with_targets(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None,
                          targets: Sequence[str]) -> AtomisticDataset:
    if isinstance(structures, AtomisticDataset):
        if targets_df is not None:
            raise ValueError("pass targets_df=None with an AtomisticDataset: it already carries its targets")
        missing = [t for t in targets if t not in structures.target_names]
        if structures.targets is None or missing:
            raise ValueError(f"dataset lacks target(s) {missing or targets}")
        return structures
    if targets_df is None:
        raise ValueError("fine-tuning needs a targets table (mol_id + target columns)")
    return as_dataset(structures, targets=targets_df, target_columns=targets)


def _nanstd(y: torch.Tensor) -> float:
    y = y[~torch.isnan(y)].double()
    s = float(y.std(unbiased=False)) if y.numel() > 1 else 0.0
    return s if s > 0 else 1.0


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
