"""Publish one run's ingested and featurized data into ``data/``, the folder DVC versions.

The stages themselves read their inputs from the stage store, so another run replacing ``data/``
later cannot change what this run computed; ``data/`` is the versioned copy of the latest run's
data. Callers hold the store's ``data`` lock across publishing and ``dvc add`` (two runs never
interleave their copies).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from molgnn.data.stage_store import MANIFEST
from molgnn.stages.common import RunContext, StageResult

DATA_LOCK = ("publish-data", "data")   # (stage, key) of the store lock that guards data/


def _replace_dir(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` without its manifest (its timings would change the md5)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.publish-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(MANIFEST))
    if target.exists():
        trash = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(staging, target)


def publish_data(ctx: RunContext, ingest: StageResult, featurize: StageResult) -> list[Path]:
    """Copy the ingest and featurize outputs to ``data.out_dir`` and ``featurize.out_dir``."""
    targets = [(Path(ingest.out_dir), ctx.resolve(ctx.params.data.out_dir)),
               (Path(featurize.out_dir), ctx.resolve(ctx.params.featurize.out_dir))]
    for source, target in targets:
        _replace_dir(source, target)
    return [t for _, t in targets]
