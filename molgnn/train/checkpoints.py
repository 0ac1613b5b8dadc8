"""Checkpoints: plain dicts of tensors and JSON-able config, loadable with ``weights_only=True``.

Layout::

    {"kind": "pretrain" | "property", "format": 1,
     "config": model.hparams,                # enough to rebuild the module
     "state_dict": {name: cpu tensor},
     "element_vocab": [Z, ...],              # pretrain: classes of the masked-atom head
     "target_stats": {target: {"mean", "std", "aggregation", "atom_ref": {Z: value}}},  # property
     ...any extra JSON-able entries (metrics, seed, init)}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from molgnn.data.artifacts import atomic_path
from molgnn.models.pretraining import PretrainingModel
from molgnn.models.property_model import PropertyModel

FORMAT_VERSION = 1
KINDS = {"pretrain": PretrainingModel, "property": PropertyModel}


class CheckpointError(ValueError):
    """A checkpoint file or dict is unreadable, incomplete or of an unknown kind."""


def checkpoint_from_model(model: PretrainingModel | PropertyModel, **extra: Any) -> dict[str, Any]:
    """Snapshot ``model`` (weights copied to CPU) plus JSON-able ``extra`` entries."""
    if not isinstance(model, tuple(KINDS.values())):
        raise CheckpointError(f"no checkpoint kind for {type(model).__name__}")
    ckpt: dict[str, Any] = {
        "kind": model.kind,
        "format": FORMAT_VERSION,
        "config": model.hparams,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if isinstance(model, PretrainingModel):
        ckpt["element_vocab"] = list(model.elements)
    else:
        refs = model.atom_ref.detach().cpu()
        ckpt["target_stats"] = {
            t: {"mean": float(m), "std": float(s), "aggregation": model.aggregation[t],
                "atom_ref": {str(z): float(refs[z, k]) for z in torch.nonzero(refs[:, k]).flatten().tolist()}}
            for k, (t, m, s) in enumerate(zip(model.targets, model.target_mean.tolist(), model.target_std.tolist()))}
    for key, value in extra.items():
        if key in ckpt:
            raise CheckpointError(f"extra entry {key!r} would overwrite a checkpoint field")
        ckpt[key] = value
    validate_checkpoint(ckpt)
    return ckpt


def validate_checkpoint(ckpt: Mapping[str, Any], where: str = "checkpoint") -> None:
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{where} is a {type(ckpt).__name__}, not a dict")
    missing = {"kind", "config", "state_dict"} - set(ckpt)
    if missing:
        raise CheckpointError(f"{where} lacks {sorted(missing)}")
    if ckpt["kind"] not in KINDS:
        raise CheckpointError(f"{where} has unknown kind {ckpt['kind']!r}; expected one of {sorted(KINDS)}")
    if ckpt.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(f"{where} has format {ckpt.get('format')}, this code reads {FORMAT_VERSION}")
    try:
        json.dumps({k: v for k, v in ckpt.items() if k != "state_dict"})
    except TypeError as exc:
        raise CheckpointError(f"{where}: non-state entries must be JSON-able ({exc})") from exc
    bad = [k for k, v in ckpt["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: state_dict entries {bad[:5]} are not tensors")


def model_from_checkpoint(ckpt: Mapping[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module a checkpoint describes, load its weights, put it in eval mode on ``device``."""
    validate_checkpoint(ckpt)
    cfg = ckpt["config"]
    if ckpt["kind"] == "pretrain":
        model: nn.Module = PretrainingModel(cfg["model"], cfg["elements"], cfg.get("eht_stats"))
    else:
        model = PropertyModel.from_hparams(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit its own config: {exc}") from exc
    return model.to(device).eval()


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> Path:
    """Write atomically: the file is either the complete checkpoint or absent."""
    validate_checkpoint(ckpt)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(ckpt), tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip errors of many types
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    validate_checkpoint(ckpt, where=str(path))
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    return model_from_checkpoint(load_checkpoint(path), device=device)
