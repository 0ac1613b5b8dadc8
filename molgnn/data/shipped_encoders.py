"""Pretrained encoders that ship inside the package, by name (``pretrain.init_from``).

Each lives in ``molgnn/resources/encoders`` as ``<name>.pt`` (a "pretrain" checkpoint) beside
``<name>.json``, its card: what it was trained on, how, the model config it needs, its md5, the command,
machine and commit that made it (``benchmarks/pretrain_druglike.py``). ``pretrain.init_from`` takes
such a name or a path to any pretraining checkpoint (relative to the repository root).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ENCODERS_DIR = Path(__file__).resolve().parents[1] / "resources" / "encoders"


class EncoderNotFoundError(FileNotFoundError):
    """``pretrain.init_from`` names no shipped encoder and no existing file."""


class EncoderIntegrityError(ValueError):
    """A shipped encoder's bytes differ from its card's md5 (a damaged or partial install)."""


def shipped_encoders() -> list[str]:
    """Names of the encoders shipped with this installation."""
    return sorted(p.stem for p in ENCODERS_DIR.glob("*.json") if (ENCODERS_DIR / f"{p.stem}.pt").is_file())


def is_path_like(value: str) -> bool:
    return value.endswith(".pt") or "/" in value or "\\" in value


def encoder_card(name: str) -> dict[str, Any]:
    """The card (``<name>.json``) of a shipped encoder."""
    path = ENCODERS_DIR / f"{name}.json"
    if not path.is_file():
        raise EncoderNotFoundError(f"no shipped encoder {name!r}; shipped: {', '.join(shipped_encoders()) or 'none'}")
    return json.loads(path.read_text())


def resolve_encoder(value: str, root: str | Path = ".") -> Path:
    """The checkpoint file ``pretrain.init_from = value`` means: a shipped encoder's (its md5 checked
    against its card) or a path, relative paths under ``root``."""
    if not is_path_like(value):
        card = encoder_card(value)
        path = ENCODERS_DIR / f"{value}.pt"
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != card["md5"]:
            raise EncoderIntegrityError(f"shipped encoder {value!r} ({path}) has md5 {digest}, its card says "
                                        f"{card['md5']}: reinstall molgnn")
        return path
    path = Path(value) if Path(value).is_absolute() else Path(root) / value
    if not path.is_file():
        raise EncoderNotFoundError(f"pretraining checkpoint {value!r} not found ({path})")
    return path
