"""What every stage shares: its result type, its content-hash cache, the run context.

A stage writes into its own output folder and finishes by writing ``stage.json`` there (atomically,
last). A rerun whose inputs and parameters hash to the same key finds that manifest, checks that
its outputs still exist, and returns it without recomputing: an interrupted pipeline, rerun, redoes
only the stages that had not finished.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from molgnn import __version__
from molgnn.config import Params
from molgnn.data.artifacts import atomic_path, content_hash

MANIFEST = "stage.json"


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


@dataclass
class RunContext:
    """Everything a stage needs besides its own parameters."""

    params: Params
    root: Path                       # repository root: relative paths in params resolve here
    tracker: Any = None              # molgnn.tracking.mlflow_tracking.Tracker, or None (no tracking)
    parent_run_id: str | None = None

    def resolve(self, rel: str | Path) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def device(self) -> str:
        import torch

        want = self.params.device
        if want == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return want


def stage_key(stage: str, *parts: object) -> str:
    """Content key of a stage: its name, code version, input file contents and parameters."""
    return content_hash(stage, __version__, *parts)


def load_cached(stage: str, out_dir: Path, key: str) -> StageResult | None:
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return None
    if data.get("key") != key or data.get("stage") != stage:
        return None
    if not all(Path(p).exists() for p in data.get("outputs", {}).values()):
        return None
    data["cached"] = True
    return StageResult(**data)


def save_manifest(result: StageResult) -> None:
    with atomic_path(Path(result.out_dir) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2, default=str))


def run_cached(ctx: RunContext, stage: str, out_dir: Path, key: str,
               compute: Callable[[Any], StageResult], params: dict[str, Any] | None = None,
               log: Callable[[Any, StageResult], None] | None = None) -> StageResult:
    """Run ``compute(stage_run)`` unless a finished result with this key exists.

    Either way the stage gets an MLflow run (nested under the pipeline's) carrying its params,
    metrics and a ``molgnn.cached`` tag, so the tracked history shows every pipeline invocation whole.
    ``log(stage_run, result)`` logs the stage's artifacts once computed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run = None
    if ctx.tracker is not None:
        run = ctx.tracker.start(stage, ctx.parent_run_id, params=params, tags={"molgnn.stage_key": key})
    try:
        cached = load_cached(stage, out_dir, key)
        if cached is not None:
            result = cached
        else:
            start = time.perf_counter()
            # Outputs of an interrupted attempt are stale: the manifest goes first, written last.
            (out_dir / MANIFEST).unlink(missing_ok=True)
            result = compute(run)
            result.seconds = time.perf_counter() - start
            # The run that produced the outputs; cached reruns keep pointing at it (provenance).
            result.info["produced_by_run"] = run.run_id if run is not None else ""
            save_manifest(result)
        if run is not None:
            run.set_tags({"molgnn.cached": str(result.cached).lower()})
            run.log_metrics({**result.metrics, "stage_seconds": result.seconds})
            if log is not None and not result.cached:
                log(run, result)
            run.log_artifact(out_dir / MANIFEST)
    except BaseException:
        if run is not None:
            run.finish("FAILED")
        raise
    if run is not None:
        run.finish()
        result.info["mlflow_run_id"] = run.run_id
    return result


def worker_count(requested: int | None) -> int:
    return max(1, requested or os.cpu_count() or 1)
