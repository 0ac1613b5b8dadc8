"""What every stage shares: its content key, the run context, and running a stage through the store.

A stage's outputs live in the content-addressed stage store (``molgnn.data.stage_store``) under a
key of everything that decides them: the content of its inputs, its parameters and its code
(``molgnn.stages.code_key``). A rerun whose key is already there returns at once without
recomputing; an interrupted pipeline, rerun, redoes only the stages that had not finished. Each
pipeline invocation links the store folders it used into its own run folder.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from molgnn.config import Params
from molgnn.data.artifacts import content_hash
from molgnn.data.stage_store import MANIFEST, StageResult, StageStore
from molgnn.stages.code_key import code_hash, stage_module

__all__ = ["MANIFEST", "RunContext", "StageResult", "interrupted", "run_cached", "stage_key", "worker_count"]

STORE_DIR = "runs/store"   # relative to the repository root


@dataclass
class RunContext:
    """Everything a stage needs besides its own parameters."""

    params: Params
    root: Path                       # repository root: relative paths in params resolve here
    tracker: Any = None              # molgnn.tracking.mlflow_tracking.Tracker, or None (no tracking)
    parent_run_id: str | None = None
    run_dir: Path | None = None      # this invocation's run folder: each stage's store folder is linked there
    store_dir: Path | None = None    # default: <root>/runs/store

    def resolve(self, rel: str | Path) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def store(self) -> StageStore:
        return StageStore(self.store_dir or self.root / STORE_DIR)

    @property
    def device(self) -> str:
        import torch

        want = self.params.device
        if want == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return want


def interrupted(exc: BaseException) -> bool:
    """Stopped from outside (Ctrl-C, SIGTERM, an orchestrator's termination signal), not failed:
    every such exception derives from BaseException but not from Exception."""
    return not isinstance(exc, Exception)


def stage_key(stage: str, *parts: object) -> str:
    """Content key of a stage: its name, its code, input file contents (Path parts) and parameters."""
    return content_hash(stage, code_hash(stage_module(stage)), *parts)


def link_into_run(run_dir: Path, name: str, target: Path) -> None:
    """``run_dir/name`` -> ``target`` as a relative symlink, replaced atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    link = run_dir / name
    tmp = run_dir / f".{name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, run_dir))
    os.replace(tmp, link)


def run_cached(ctx: RunContext, stage: str, key: str, compute: Callable[[Any, Path], StageResult],
               params: dict[str, Any] | None = None,
               log: Callable[[Any, StageResult], None] | None = None) -> StageResult:
    """Run ``compute(stage_run, out_dir)`` unless the store holds a finished result under ``key``.

    ``compute`` writes into ``out_dir`` (a fresh staging folder) and returns its result; the folder
    is published under its key only once the manifest is written. Either way the stage gets an
    MLflow run (nested under the pipeline's) carrying its params, metrics and a ``molgnn.cached``
    tag, so the tracked history shows every pipeline invocation whole. ``log(stage_run, result)``
    logs the stage's artifacts once computed.
    """
    store = ctx.store
    run = None
    if ctx.tracker is not None:
        run = ctx.tracker.start(stage, ctx.parent_run_id, params=params, tags={"molgnn.stage_key": key})
    try:
        with store.lock(stage, key):   # a concurrent run computing the same key waits, then finds it
            result = store.load(stage, key)
            if result is None:
                start = time.perf_counter()
                result = compute(run, store.begin(stage, key))
                result.seconds = time.perf_counter() - start
                # The run that produced the outputs; cached reruns keep pointing at it (provenance).
                result.info["produced_by_run"] = run.run_id if run is not None else ""
                result = store.publish(result)
        if ctx.run_dir is not None:
            link_into_run(ctx.run_dir, stage, Path(result.out_dir))
        if run is not None:
            run.set_tags({"molgnn.cached": str(result.cached).lower()})
            run.log_metrics({**result.metrics, "stage_seconds": result.seconds})
            if log is not None and not result.cached:
                log(run, result)
            run.log_artifact(Path(result.out_dir) / MANIFEST)
    except BaseException as exc:
        if run is not None:
            run.finish("KILLED" if interrupted(exc) else "FAILED")
        raise
    if run is not None:
        run.finish()
        result.info["mlflow_run_id"] = run.run_id
    return result


def worker_count(requested: int | None) -> int:
    return max(1, requested or os.cpu_count() or 1)
