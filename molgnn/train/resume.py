"""Training state that survives the process: save a run mid-way, resume it later, bit for bit.

A training run can outlive one process (a GPU lease of a few minutes, a pre-empted job): the loop
saves a *state file* when its time budget for this call ends and, given the same ``state_path``
again, continues from it. The state holds everything the next step depends on:

    {"format", "kind": "finetune-state" | "pretrain-state", "fingerprint": str,
     "model": state_dict, "optimizer": state_dict, "scheduler": state_dict | None,
     "scaler": state_dict | None, "epoch": int (the epoch in progress, 1-based),
     "step": int (batches of that epoch already done), "epoch_order_rng": ByteTensor (the shuffling
     generator as it was when that epoch began), "torch_rng", "cuda_rng": ByteTensors,
     "best": {"score", "epoch", "state"}, "history": [...], "train_seconds": float,
     "global_step": int, "running": {...sums of the epoch in progress...}, "completed": bool}

The file is written atomically (it is the old state or the new one, never half of either) and read
with ``torch.load(weights_only=True)``. ``fingerprint`` hashes what must not change between the
saving and the resuming call (model and training configuration, targets, split, seed); resuming
with a different one raises :class:`ResumeMismatchError` instead of silently mixing two runs.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from molgnn.data.artifacts import atomic_path

STATE_FORMAT = 1


class ResumeError(ValueError):
    """A state file is unreadable or not a training state."""


class ResumeMismatchError(ResumeError):
    """A state file belongs to a different run (configuration, targets, split or seed differ)."""


def fingerprint(**parts: Any) -> str:
    """A stable hash of JSON-able parts; numpy arrays and tensors are hashed by content."""
    h = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            h.update(str(value.dtype).encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """The global torch RNG states (CPU, and the CUDA device's when training there)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    out: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_available():
        out["cuda_rng"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _cpu(obj: Any) -> Any:
    """Deep copy with every tensor moved to the CPU (so a state saved on a GPU loads anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a training state atomically (tensors moved to the CPU)."""
    if "kind" not in state or "fingerprint" not in state:
        raise ResumeError("a training state needs 'kind' and 'fingerprint'")
    path = Path(path)
    payload = _cpu(dict(state))
    payload["format"] = STATE_FORMAT
    payload["saved_at"] = time.time()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_state(path: str | Path, *, kind: str, fingerprint_: str | None = None) -> dict[str, Any] | None:
    """The state at ``path``, or None if there is none; checks its kind and fingerprint."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip errors of many types
        raise ResumeError(f"cannot read training state {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not a training state of format {STATE_FORMAT}")
    if state.get("kind") != kind:
        raise ResumeError(f"{path} holds a {state.get('kind')!r} state, expected {kind!r}")
    if fingerprint_ is not None and state.get("fingerprint") != fingerprint_:
        raise ResumeMismatchError(
            f"{path} belongs to another run (fingerprint {state.get('fingerprint')} != {fingerprint_}): "
            "the model/training configuration, targets, split or seed differ; delete it or pass another state_path")
    return state


class Deadline:
    """Wall-clock budget of one call: ``expired()`` is a host-side clock read, no device sync."""

    def __init__(self, max_seconds: float | None):
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.max_seconds = max_seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def expired(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds
