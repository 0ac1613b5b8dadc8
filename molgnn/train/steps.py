"""Shared by pretraining, fine-tuning and the CUDA-graph step: the masked fine-tuning loss, one optimizer
step (backward, optional AMP scaling, clipping), the learning rate of a cosine schedule over a wall-clock
budget, and setting it."""
from __future__ import annotations

import math

import torch


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, grad_clip: float | None) -> None:
    """Backward and step; with a scaler, gradients are unscaled before clipping (fp16 AMP)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


def cosine_time_lr(base_lr: float, spent: float, budget: float, step: int, warmup_steps: int,
                   min_ratio: float) -> float:
    """Cosine from ``base_lr`` to ``base_lr * min_ratio`` over ``budget`` seconds (``spent`` so far), after
    ``warmup_steps`` of linear warm-up."""
    frac = min(1.0, max(0.0, spent / budget))
    lr = base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if warmup_steps and step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its ``lr_scale`` (default 1); a tensor lr is filled in place."""
    for group in optimizer.param_groups:
        value = lr * group.get("lr_scale", 1.0)
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)  # in place: a CUDA graph reads this tensor
        else:
            group["lr"] = value


def masked_scaled_mse(pred: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """Mean of ((pred - y) / scale)^2 over the entries whose label is not NaN (zero gradient elsewhere).

    ``check=False`` skips the host-side test for a batch without labels (a device sync); such a
    batch then gives a zero loss instead of an error."""
    valid = ~torch.isnan(y)
    if check and not bool(valid.any()):
        raise ValueError("batch has no labelled entries")
    residual = (pred - torch.where(valid, y, pred.detach())) / scale
    return residual.pow(2).sum() / valid.sum().clamp_min(1)
