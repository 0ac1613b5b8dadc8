"""One folder per pipeline invocation: ``runs/<run id>/``, and ``runs/latest`` for the newest finished one.

A run folder holds ``run.json`` (status, owner process, MLflow run, times), the effective
``params.yaml``, one link per stage to that stage's folder in the content-addressed store, and the
run's report. Nothing in it is shared with another run, so two runs started together cannot mix
their outputs. A run whose process died without saying so (``kill -9``) is marked ``killed`` by
the next listing.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from molgnn.data.artifacts import atomic_path
from molgnn.data.owner import Owner

RUNS_DIR = "runs"          # relative to the repository root
LATEST = "latest"
RUN_FILE = "run.json"
RUNNING, FINISHED, FAILED, KILLED = "running", "finished", "failed", "killed"


@dataclass
class RunRecord:
    run_id: str
    status: str
    started: str
    host: str
    pid: int
    pid_started: float
    ended: str = ""
    mlflow_run_id: str = ""
    params_hash: str = ""
    extra: dict = field(default_factory=dict)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunFolder:
    def __init__(self, path: Path, record: RunRecord):
        self.path = Path(path)
        self.record = record

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @classmethod
    def create(cls, root: Path, params_hash: str = "") -> "RunFolder":
        """A new, empty run folder under ``root/runs`` (ids sort by start time)."""
        runs = Path(root) / RUNS_DIR
        owner = Owner.current()
        while True:
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            path = runs / run_id
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        folder = cls(path, RunRecord(run_id=run_id, status=RUNNING, started=_now(), host=owner.host,
                                     pid=owner.pid, pid_started=owner.started, params_hash=params_hash))
        folder.save()
        return folder

    def save(self) -> None:
        with atomic_path(self.path / RUN_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self.record), indent=2))

    def update(self, **fields) -> None:
        for k, v in fields.items():
            setattr(self.record, k, v)
        self.save()

    def finish(self, status: str, latest: bool = True) -> None:
        """Record the end; a finished run becomes ``runs/latest`` unless ``latest`` is False (a design
        run: ``runs/latest`` names the newest pipeline run, which screen, explain and compare read)."""
        self.update(status=status, ended=_now())
        if status == FINISHED and latest:
            point_latest(self.path.parent, self.run_id)

    @classmethod
    def load(cls, path: Path) -> "RunFolder | None":
        try:
            return cls(path, RunRecord(**json.loads((Path(path) / RUN_FILE).read_text())))
        except (OSError, json.JSONDecodeError, TypeError):
            return None


def point_latest(runs: Path, run_id: str) -> None:
    """``runs/latest`` -> ``run_id``, replaced atomically; never moved back to an older run."""
    link = runs / LATEST
    current = os.readlink(link) if link.is_symlink() else ""
    if current and current > run_id and (runs / current).is_dir():
        return   # a run that started later has already finished
    tmp = runs / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    os.replace(tmp, link)


def list_runs(root: Path) -> list[RunFolder]:
    """Every run folder, oldest first; a ``running`` one whose process is gone is marked ``killed``."""
    runs = Path(root) / RUNS_DIR
    out = []
    for path in sorted(runs.glob("*/" + RUN_FILE)):
        if path.parent.is_symlink():   # runs/latest
            continue
        folder = RunFolder.load(path.parent)
        if folder is None:
            continue
        r = folder.record
        if r.status == RUNNING and Owner(r.host, r.pid, r.pid_started).is_dead():
            folder.update(status=KILLED, ended=_now())
        out.append(folder)
    return out


def resolve_run(root: Path, run: str | None = None) -> Path:
    """A run folder from an id, a path, or (None) ``runs/latest``."""
    runs = Path(root) / RUNS_DIR
    if run is None:
        path = runs / LATEST
        if not path.exists():
            raise FileNotFoundError(f"no finished run under {runs}: run `molgnn run` first")
        return path.resolve()
    path = Path(run)
    if not path.is_dir():
        path = runs / run
    if not (path / RUN_FILE).is_file():
        raise FileNotFoundError(f"no run folder {run!r} (looked in {runs}); `molgnn runs` lists them")
    return path.resolve()
