"""A content-addressed store of finished stage outputs: ``<store>/<stage>/<key>/``.

A stage computes into a staging folder of its own key and publishes it with one ``rename`` once its
manifest (``stage.json``) is written: a folder under its key is therefore always whole, and a
killed attempt leaves at most a staging folder that the next attempt discards. A lock per key
(``flock``, released by the kernel when its holder dies, even by ``kill -9``) makes a second
process computing the same key wait, then find the first one's result.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from molgnn.data.artifacts import atomic_path

MANIFEST = "stage.json"
LOCKS = ".locks"


@dataclass
class StageResult:
    """Typed result of a stage: where its outputs are, what it measured, whether it was cached."""

    stage: str
    key: str
    out_dir: str
    outputs: dict[str, str] = field(default_factory=dict)   # logical name -> path
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)      # counts, reasons, anything JSON-able
    cached: bool = False
    seconds: float = 0.0

    def path(self, name: str) -> Path:
        return Path(self.outputs[name])


def save_manifest(result: StageResult) -> None:
    """Write ``stage.json`` into the result's folder, output paths relative to it (the folder moves)."""
    out_dir = Path(result.out_dir)
    data = asdict(result)
    data["outputs"] = {k: os.path.relpath(v, out_dir) for k, v in result.outputs.items()}
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def read_manifest(out_dir: Path) -> StageResult | None:
    """The result recorded in ``out_dir/stage.json`` with absolute output paths, or None."""
    out_dir = Path(out_dir)
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    data["out_dir"] = str(out_dir)
    data["outputs"] = {k: str(out_dir / v) if not Path(v).is_absolute() else v
                       for k, v in data.get("outputs", {}).items()}
    try:
        return StageResult(**data)
    except TypeError:
        return None


class StageStore:
    """Finished stage outputs under ``root``, one folder per (stage, key)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def final_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def staging_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / f".staging-{key}"

    @contextlib.contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold the (stage, key) lock: one process computes a key at a time; others wait."""
        path = self.root / LOCKS / f"{stage}-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, stage: str, key: str) -> StageResult | None:
        """The finished result of (stage, key), or None. A folder whose manifest or outputs are
        missing (edited by hand) does not count as finished."""
        result = read_manifest(self.final_dir(stage, key))
        if result is None or result.stage != stage or result.key != key:
            return None
        if not all(Path(p).exists() for p in result.outputs.values()):
            return None
        result.cached = True
        return result

    def begin(self, stage: str, key: str) -> Path:
        """A fresh, empty staging folder for (stage, key); call under :meth:`lock`. What a killed
        attempt left there is discarded: nothing half-written is ever taken as finished."""
        staging = self.staging_dir(stage, key)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        return staging

    def publish(self, result: StageResult) -> StageResult:
        """Write the manifest into the staging folder and move it under its key (one rename)."""
        staging = Path(result.out_dir)
        final = self.final_dir(result.stage, result.key)
        save_manifest(result)
        if final.exists():   # an unfinished or hand-edited folder (load() refused it): replace it
            trash = final.parent / f".trash-{final.name}-{os.getpid()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging, final)
        published = read_manifest(final)
        assert published is not None, f"manifest of {final} unreadable right after writing it"
        published.cached = False
        return published
