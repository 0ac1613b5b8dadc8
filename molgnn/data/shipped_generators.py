"""Pretrained generators that ship inside the package, by name (``molgnn generate --model NAME``,
``generate.diffusion.init_from``).

Each is a shard folder (``molgnn.data.shards``: half-precision weights in pieces under 16 MB, each
checked by SHA-256 when loaded) at ``molgnn/resources/generators/<name>/`` beside ``<name>.json``, its
card: what it was trained on, how long, on which machine, the command and commit, and what it scored
(``benchmarks/results/generation_moses.json``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from molgnn.data.shards import is_shard_folder

GENERATORS_DIR = Path(__file__).resolve().parents[1] / "resources" / "generators"


class GeneratorNotFoundError(FileNotFoundError):
    """A name that is neither a shipped generator nor an existing checkpoint path."""


def shipped_generators() -> list[str]:
    """Names of the generators shipped with this installation."""
    if not GENERATORS_DIR.is_dir():
        return []
    return sorted(p.stem for p in GENERATORS_DIR.glob("*.json") if is_shard_folder(GENERATORS_DIR / p.stem))


def generator_card(name: str) -> dict[str, Any]:
    path = GENERATORS_DIR / f"{name}.json"
    if not path.is_file():
        raise GeneratorNotFoundError(f"no shipped generator {name!r}; shipped: {', '.join(shipped_generators()) or 'none'}")
    return json.loads(path.read_text())


def resolve_generator(value: str, root: str | Path = ".") -> Path:
    """The checkpoint ``value`` names: a shipped generator's shard folder, or a path (a ``.pt`` file or
    a shard folder; relative paths under ``root``)."""
    if value in shipped_generators():
        return GENERATORS_DIR / value
    path = Path(value) if Path(value).is_absolute() else Path(root) / value
    if path.is_file() or is_shard_folder(path):
        return path
    raise GeneratorNotFoundError(f"{value!r} is neither a shipped generator ({', '.join(shipped_generators()) or 'none'}) "
                                 f"nor a generator checkpoint ({path} not found)")
