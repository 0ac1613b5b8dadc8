"""Any torch-serializable object as a folder of size-capped shards, each verified by its SHA-256.

Checkpoints and training states must travel through channels with a per-file limit (the GPU
machine returns files of at most 16 MB), and a truncated or mixed-up piece must never load as a
model. The object is serialized once (``torch.save``), cut into pieces of at most ``max_bytes``, and
described by ``manifest.json``: the format, each piece's name, size and SHA-256, and the SHA-256 of
the whole. Reading checks every piece and the whole before unpickling (``weights_only``: no code
runs). The folder is written beside its final place and renamed into it, so a killed write leaves
no half folder under the final name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

SHARDS_FORMAT = "molgnn-shards/1"
MANIFEST = "manifest.json"
DEFAULT_MAX_BYTES = 15 * 1024 * 1024   # under the 16 MB a file that comes back from the GPU machine


class ShardError(ValueError):
    """A shard folder is incomplete, altered or not a shard folder."""


def is_shard_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def key_file(path: str | Path) -> Path:
    """The file whose content stands for a checkpoint in a content key: a plain file itself, or a shard
    folder's manifest (it holds the SHA-256 of every shard and of the whole; a folder has no digest)."""
    path = Path(path)
    return path / MANIFEST if is_shard_folder(path) else path


def write_shards(obj: Any, folder: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 meta: dict[str, Any] | None = None) -> Path:
    """Serialize ``obj`` into ``folder`` (replaced if it exists) as shards of at most ``max_bytes``;
    ``meta`` (JSON) is kept in the manifest for readers that need no torch. Returns ``folder``."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(obj, buf)
    blob = buf.getvalue()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        os.chmod(staging, 0o755)   # mkdtemp's 0700 would hide a shipped or shared model from other users
        pieces = []
        for i, start in enumerate(range(0, max(len(blob), 1), max_bytes)):
            piece = blob[start:start + max_bytes]
            name = f"shard_{i:03d}.bin"
            (staging / name).write_bytes(piece)
            pieces.append({"file": name, "bytes": len(piece), "sha256": hashlib.sha256(piece).hexdigest()})
        manifest = {"format": SHARDS_FORMAT, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                    "shards": pieces, "meta": meta or {}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            trash = folder.parent / f".trash-{folder.name}-{os.getpid()}"
            os.replace(folder, trash)
            os.replace(staging, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"{folder}: no readable {MANIFEST} ({exc})") from exc
    if manifest.get("format") != SHARDS_FORMAT:
        raise ShardError(f"{folder}: not a shard folder (format {manifest.get('format')!r}, "
                         f"expected {SHARDS_FORMAT!r})")
    return manifest


def read_shards(folder: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The object written by :func:`write_shards`, after checking every shard's size and SHA-256
    and the whole's; a missing, truncated or altered shard raises ShardError naming it."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    parts = []
    for piece in manifest["shards"]:
        path = folder / piece["file"]
        if not path.is_file():
            raise ShardError(f"{folder}: shard {piece['file']} is missing")
        data = path.read_bytes()
        if len(data) != piece["bytes"] or hashlib.sha256(data).hexdigest() != piece["sha256"]:
            raise ShardError(f"{folder}: shard {piece['file']} is damaged ({len(data)} bytes, expected "
                             f"{piece['bytes']}; SHA-256 differs)")
        parts.append(data)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        raise ShardError(f"{folder}: the shards do not add up to the object written (SHA-256 of the whole differs)")
    return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
