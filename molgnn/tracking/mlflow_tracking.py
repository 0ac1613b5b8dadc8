"""The one module that talks to MLflow.

Runs are driven through ``MlflowClient`` with explicit run ids rather than MLflow's thread-local
"active run": Prefect may execute tasks on worker threads, where the fluent API would lose the
parent run (see shared/STACK.md).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow checks the literal string "true"; there is no network here.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from molgnn.config import TrackingConfig  # noqa: E402
from molgnn.data.owner import Owner  # noqa: E402

# Tag names put on every stage run.
TAG_DATA_MD5 = "molgnn.data_md5"
TAG_PARAMS_HASH = "molgnn.params_hash"
TAG_GIT_COMMIT = "molgnn.git_commit"
TAG_FLOW_RUN = "molgnn.prefect_flow_run"
TAG_STAGE = "molgnn.stage"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_DIR = "molgnn.run_dir"
TAG_EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock beside a sqlite store's file (other stores: none needed)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    lock = Path(uri[len(prefix):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ArtifactLocationError(ValueError):
    """The experiment in the store keeps its artifacts somewhere other than the params say."""


def resolve_uri(uri: str, root: Path) -> str:
    """Make a relative ``sqlite:///relative/path.db`` absolute against the repository root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        db = (root / uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(db)
    return uri


def _moved_checkout(location: str, artifacts: Path) -> bool:
    """The experiment's artifact folder is gone and this folder's artifact root holds artifacts: the
    checkout (store and artifacts together) was moved or copied here."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(location)
    if parsed.scheme not in ("", "file") or location.rstrip("/") == artifacts.as_uri().rstrip("/"):
        return False
    old = Path(url2pathname(parsed.path))
    return not old.exists() and artifacts.is_dir() and any(artifacts.iterdir())


def _relocate_artifacts(uri: str, experiment_id: str, old: str, new: str) -> None:
    """Point an experiment and its runs' (and logged models') artifact locations at ``new``.

    MLflow stores them as absolute URIs and offers no call to change them, so this rewrites the
    prefix in the sqlite store, in one transaction (other stores: not done, the caller refuses).
    Model versions are ``runs:/`` URIs and follow their runs."""
    import sqlite3
    import warnings

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    old, new = old.rstrip("/"), new.rstrip("/")
    with contextlib.closing(sqlite3.connect(uri[len(prefix):])) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id))
        for table, column in (("runs", "artifact_uri"), ("logged_models", "artifact_location")):
            db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                       f"WHERE experiment_id = ? AND substr({column}, 1, ?) = ?",
                       (new, len(old) + 1, experiment_id, len(old), old))
    warnings.warn(f"MLflow experiment {experiment_id}: artifacts moved from {old} to {new} (checkout moved); "
                  f"the store now points there", stacklevel=3)


@dataclass
class Tracker:
    """An MLflow experiment plus the tags every run of one pipeline invocation carries."""

    client: MlflowClient
    experiment_id: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def connect(cls, cfg: TrackingConfig, root: Path, tags: dict[str, str] | None = None) -> "Tracker":
        uri = resolve_uri(cfg.mlflow_uri, root)
        mlflow.set_tracking_uri(uri)
        artifacts = (root / cfg.artifact_root).resolve()
        # Two runs starting together would both create (migrate) a new sqlite store and its
        # experiment, and collide; the first to take the lock does it, the other finds it made.
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)   # opening a new store creates its tables
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                artifacts.mkdir(parents=True, exist_ok=True)
                client.create_experiment(cfg.experiment, artifact_location=artifacts.as_uri())
                exp = client.get_experiment_by_name(cfg.experiment)
            if _moved_checkout(exp.artifact_location, artifacts):
                _relocate_artifacts(uri, exp.experiment_id, exp.artifact_location, artifacts.as_uri())
                exp = client.get_experiment(exp.experiment_id)
        # MLflow keeps artifacts per experiment: a second folder sharing the store under the same
        # experiment name would silently write into the first folder's artifact root.
        if exp.artifact_location.rstrip("/") != artifacts.as_uri().rstrip("/"):
            raise ArtifactLocationError(
                f"tracking.experiment {cfg.experiment!r} in {uri} keeps its artifacts at {exp.artifact_location}, "
                f"but tracking.artifact_root is {artifacts}: give this folder its own experiment name "
                f"(tracking.experiment) or the same artifact_root")
        if exp.tags.get(TAG_EXPERIMENT_KIND) != MODEL_TRAINING:
            # MLflow 3's UI opens an experiment without this tag in its GenAI view (traces), hiding the runs
            client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
        return cls(client=client, experiment_id=exp.experiment_id, tags=dict(tags or {}))

    def start(self, name: str, parent_run_id: str | None = None, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None) -> "StageRun":
        # the owning process: a run left RUNNING by a killed process is found and closed later
        all_tags = {**self.tags, **Owner.current().to_tags(), **(tags or {}), TAG_STAGE: name}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        stage = StageRun(self.client, run.info.run_id)
        if params:
            stage.log_params(params)
        return stage

    def close_dangling(self) -> list[str]:
        """Mark KILLED every RUNNING run of this experiment whose process is gone (a ``kill -9``, a
        lost machine): they would otherwise stay RUNNING forever. Returns their ids."""
        closed = []
        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
        for run in runs:
            owner = Owner.from_tags(run.data.tags)
            if owner is not None and owner.is_dead():
                self.client.set_terminated(run.info.run_id, status="KILLED")
                closed.append(run.info.run_id)
        return closed


@dataclass
class StageRun:
    client: MlflowClient
    run_id: str

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            p.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(p))

    def log_figure(self, fig, name: str) -> None:
        self.client.log_figure(self.run_id, fig, name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("FAILED" if exc_type else "FINISHED")
