"""Save and load generators as plain dicts: loading runs no pickled code (``weights_only=True``).

A checkpoint is one ``.pt`` file, or a shard folder (``molgnn.data.shards``: pieces under 16 MB,
each verified by SHA-256) that can come back from the GPU machine and ship with the package; with
``half`` its float32 weights are stored as float16 (half the size) and loaded back as float32.
Training states travel the same way (:func:`export_training_state`), so training spans commands,
machines and sessions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from molgnn.data.artifacts import atomic_path
from molgnn.data.shards import DEFAULT_MAX_BYTES, ShardError, is_shard_folder, read_shards, write_shards
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


def _cast_floats(tree: Any, src: torch.dtype, dst: torch.dtype) -> Any:
    """``tree`` (dicts, lists, tensors) with every ``src`` tensor cast to ``dst``."""
    if torch.is_tensor(tree):
        return tree.to(dst) if tree.dtype == src else tree
    if isinstance(tree, dict):
        return {k: _cast_floats(v, src, dst) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(v, src, dst) for v in tree)
    return tree


def save_generator(trained: TrainedGenerator, path: str | Path, *, half: bool = False,
                   shards: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Write the checkpoint atomically: a ``.pt`` file, or with ``shards`` a shard folder at ``path``;
    ``half`` stores float32 weights as float16. Returns the path."""
    path = Path(path)
    ckpt = generator_checkpoint(trained)
    if half:
        ckpt["state_dict"] = _cast_floats(ckpt["state_dict"], torch.float32, torch.float16)
        ckpt["stored_half"] = True
    if shards:
        return write_shards(ckpt, path, max_bytes=max_bytes,
                            meta={"what": CHECKPOINT_FORMAT, "kind": trained.kind, "half": half})
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> TrainedGenerator:
    """Rebuild the model from its hparams and weights. The checkpoint keeps only the number of
    training rejects (``n_rejects``), so the loaded object's ``rejects`` list is empty."""
    path = Path(path)
    if is_shard_folder(path):
        try:
            ckpt = read_shards(path)
        except ShardError as exc:
            raise CheckpointError(str(exc)) from exc
    elif not path.is_file():
        raise CheckpointError(f"generator checkpoint not found: {path}")
    else:
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
        state = ckpt["state_dict"]
        if ckpt.get("stored_half"):
            state = _cast_floats(state, torch.float16, torch.float32)
        model.load_state_dict(state)
    except (KeyError, VocabError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {kind} generator: {exc}") from exc
    model.to(torch.device(device)).eval()
    return TrainedGenerator(kind=kind, model=model, vocab=vocab, history=list(ckpt.get("history", [])),
                            rejects=[], train_seconds=float(ckpt.get("train_seconds", 0.0)),
                            n_train=int(ckpt.get("n_train", 0)), steps=int(ckpt.get("steps", 0)),
                            stop_reason=str(ckpt.get("stop_reason", "epochs")), ema_decay=ckpt.get("ema_decay"))


def export_training_state(state_path: str | Path, folder: str | Path, *, half: bool = True,
                          max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """A training-state file (``train_generator_on_graphs(state_path=...)``) as a shard folder that can
    leave the GPU machine. ``half`` stores float32 tensors (weights, EMA, Adam moments) as bfloat16:
    a quarter of the float32 state plus its moments fits where the state would not, at the cost of a
    resume that is close to, not bit-identical with, an uninterrupted run."""
    state = torch.load(Path(state_path), map_location="cpu", weights_only=True)
    if half:
        state = _cast_floats(state, torch.float32, torch.bfloat16)
        state["stored_half"] = True
    return write_shards(state, folder, max_bytes=max_bytes, meta={"what": "generator training state", "half": half})


def import_training_state(folder: str | Path, state_path: str | Path) -> Path:
    """The shard folder of :func:`export_training_state` back as a training-state file (float32)."""
    try:
        state = read_shards(folder)
    except ShardError as exc:
        raise CheckpointError(str(exc)) from exc
    if state.pop("stored_half", False):
        state = _cast_floats(state, torch.bfloat16, torch.float32)
    with atomic_path(Path(state_path)) as tmp:
        torch.save(state, tmp)
    return Path(state_path)
