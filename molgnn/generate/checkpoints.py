"""Save and load generators as plain dicts: loading runs no pickled code (``weights_only=True``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from molgnn.data.artifacts import atomic_path
from molgnn.featurize.dense_graph import GraphVocab, VocabError
from molgnn.generate.training import GENERATOR_CLASSES, TrainedGenerator, build_generator

CHECKPOINT_FORMAT = "molgnn-generator/1"


class CheckpointError(ValueError):
    """A file is not a readable generator checkpoint."""


def generator_checkpoint(trained: TrainedGenerator) -> dict[str, Any]:
    """The checkpoint dict: kind, hparams, vocabulary, CPU weights and the training record."""
    model = trained.model
    size = getattr(model, "size_distribution", None)
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": trained.kind,
        "hparams": dict(model.hparams),
        "vocab": trained.vocab.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # Also inside state_dict for the diffusion model; listed here so readers need no model code.
        "size_distribution": size.detach().cpu().tolist() if size is not None else None,
        "history": [dict(h) for h in trained.history],
        "n_train": trained.n_train,
        "n_rejects": len(trained.rejects),
        "train_seconds": trained.train_seconds,
        "steps": trained.steps,
        "stop_reason": trained.stop_reason,
        "ema_decay": trained.ema_decay,   # when set, state_dict holds the EMA weights
    }


def save_generator(trained: TrainedGenerator, path: str | Path) -> Path:
    """Write the checkpoint atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(generator_checkpoint(trained), tmp)
    return path


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> TrainedGenerator:
    """Rebuild the model from its hparams and weights. The checkpoint keeps only the number of
    training rejects (``n_rejects``), so the loaded object's ``rejects`` list is empty."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"generator checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a molgnn generator checkpoint (format {CHECKPOINT_FORMAT!r})")
    kind = ckpt.get("kind")
    if kind not in GENERATOR_CLASSES:
        raise CheckpointError(f"{path}: unknown generator kind {kind!r}")
    try:
        vocab = GraphVocab.from_dict(ckpt["vocab"])
        model = build_generator(kind, **ckpt["hparams"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, VocabError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {kind} generator: {exc}") from exc
    model.to(torch.device(device)).eval()
    return TrainedGenerator(kind=kind, model=model, vocab=vocab, history=list(ckpt.get("history", [])),
                            rejects=[], train_seconds=float(ckpt.get("train_seconds", 0.0)),
                            n_train=int(ckpt.get("n_train", 0)), steps=int(ckpt.get("steps", 0)),
                            stop_reason=str(ckpt.get("stop_reason", "epochs")), ema_decay=ckpt.get("ema_decay"))
