"""Task types of fine-tuning targets: regression or binary classification.

A classification target's head predicts a logit; it trains with BCE-with-logits on its labelled
entries and is reported as a probability (sigmoid), scored by ROC-AUC, PR-AUC (average precision)
and expected calibration error. ``auto`` reads the labels: a target whose non-missing labels are
all 0 or 1 is binary classification, anything else is regression.
"""
from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import torch
from torchmetrics.functional.classification import (binary_auroc, binary_average_precision,
                                                    binary_calibration_error)

from molgnn.models.property_model import CLASSIFICATION, REGRESSION

log = logging.getLogger(__name__)
ECE_BINS = 10
CLASS_WEIGHTINGS = ("none", "balanced")


def is_binary(labels: torch.Tensor) -> bool:
    """True when the non-missing labels are all 0 or 1 (and there is at least one)."""
    y = labels[~torch.isnan(labels)]
    return y.numel() > 0 and bool(((y == 0) | (y == 1)).all())


def resolve_task_types(labels: torch.Tensor, targets: Sequence[str],
                       declared: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(task type per target, why per target). ``labels`` is ``[n_molecules, n_targets]`` with NaN
    for missing labels; a declared type wins over ``auto``; a declared classification target must
    have 0/1 labels only."""
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(targets))
    if unknown:
        raise ValueError(f"task_types names unknown target(s) {unknown}; targets are {list(targets)}")
    types, why = {}, {}
    for k, t in enumerate(targets):
        kind = declared.get(t, "auto")
        binary = is_binary(labels[:, k])
        if kind == "auto":
            types[t] = CLASSIFICATION if binary else REGRESSION
            why[t] = ("auto: every label is 0 or 1" if binary else "auto: labels are not all 0/1")
        elif kind in (REGRESSION, CLASSIFICATION):
            if kind == CLASSIFICATION and not binary:
                bad = labels[:, k][~torch.isnan(labels[:, k])]
                bad = bad[(bad != 0) & (bad != 1)][:3].tolist()
                raise ValueError(f"task_types.{t} = 'classification' needs labels 0 or 1 (binary); found {bad}")
            types[t], why[t] = kind, "declared"
        else:
            raise ValueError(f"task_types.{t} = {kind!r}: expected auto, regression or classification")
    return types, why


def log_task_types(types: Mapping[str, str], why: Mapping[str, str]) -> None:
    for t, kind in types.items():
        log.info("target %s: %s (%s)", t, kind, why[t])


def class_weights(labels: torch.Tensor, types: Mapping[str, str], targets: Sequence[str],
                  weighting: str) -> torch.Tensor:
    """``[2, n_targets]`` (weight of label 0, weight of label 1) per target from the training labels;
    ones for regression targets and for ``weighting="none"``. ``balanced``: n / (2 n_class)."""
    if weighting not in CLASS_WEIGHTINGS:
        raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {weighting!r}")
    w = torch.ones(2, len(targets), dtype=torch.float32)
    if weighting == "none":
        return w
    for k, t in enumerate(targets):
        if types[t] != CLASSIFICATION:
            continue
        y = labels[:, k][~torch.isnan(labels[:, k])]
        n, n_pos = y.numel(), int((y == 1).sum())
        n_neg = n - n_pos
        if n_pos and n_neg:
            w[0, k], w[1, k] = n / (2 * n_neg), n / (2 * n_pos)
    return w


def masked_task_loss(pred: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, is_cls: torch.Tensor,
                     weights: torch.Tensor) -> torch.Tensor:
    """Mean over labelled entries of: the squared residual / scale for regression columns, the
    (class-weighted) BCE of the logit for classification columns. NaN labels give no loss and no
    gradient. With no classification column this equals ``masked_scaled_mse``."""
    valid = ~torch.isnan(y)
    y0 = torch.where(valid, y, torch.zeros_like(y))
    sq = ((pred - torch.where(valid, y, pred.detach())) / scale).pow(2)
    w = torch.where(y0 > 0.5, weights[1], weights[0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, y0, reduction="none") * w
    per = torch.where(is_cls, bce, sq)
    per = torch.where(valid, per, torch.zeros_like(per))
    return per.sum() / valid.sum().clamp_min(1)


def classification_metrics(y_true: torch.Tensor, prob: torch.Tensor) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), ECE (10 equal-width bins), Brier score and accuracy at
    0.5 over labelled entries; the AUCs are NaN when only one class is present."""
    valid = ~torch.isnan(y_true)
    t, p = y_true[valid].long(), prob[valid].double().clamp(0, 1)
    n = int(valid.sum())
    if n == 0:
        return {"roc_auc": math.nan, "pr_auc": math.nan, "ece": math.nan, "brier": math.nan,
                "accuracy": math.nan, "n": 0}
    both = 0 < int(t.sum()) < n
    return {"roc_auc": float(binary_auroc(p, t)) if both else math.nan,
            "pr_auc": float(binary_average_precision(p, t)) if both else math.nan,
            "ece": float(binary_calibration_error(p, t, n_bins=ECE_BINS, norm="l1")),
            "brier": float(((p - t.double()) ** 2).mean()),
            "accuracy": float(((p >= 0.5).long() == t).double().mean()), "n": n}


def bce(y_true: torch.Tensor, prob: torch.Tensor) -> float:
    """Mean binary cross-entropy of probabilities over labelled entries (NaN when none)."""
    valid = ~torch.isnan(y_true)
    if not bool(valid.any()):
        return math.nan
    p = prob[valid].double().clamp(1e-7, 1 - 1e-7)
    return float(torch.nn.functional.binary_cross_entropy(p, y_true[valid].double()))
