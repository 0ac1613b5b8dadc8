"""Runs you can trust, checked with real processes: two runs at once in one folder, a ``kill -9``
in the middle of fine-tuning, and an edited stage module. Each `molgnn run` is a subprocess with
its own Prefect server, MLflow sqlite store and DVC, as a user would start it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def small_params(tiny_params: dict, **changes) -> dict:
    p = json.loads(json.dumps(tiny_params))
    p["generate"]["guidance"] = {"enabled": False}
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        node = p
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return p


def start_run(root: Path, params_file: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molgnn.cli", "run", "--params", params_file], cwd=root,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    summary, _ = json.JSONDecoder().raw_decode(out[out.index("{\n"):])   # the summary JSON, logs after it
    return summary


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def tracker(root: Path):
    from molgnn.config import load_params
    from molgnn.tracking.mlflow_tracking import Tracker

    return Tracker.connect(load_params(root / "params.yaml").tracking, root)


def child_run(t, parent_id: str, stage: str):
    return t.client.search_runs([t.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                   f"tags.`molgnn.stage` = '{stage}'")[0]


def init_root(root: Path, params: dict) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_two_runs_at_once_in_one_folder_keep_their_own_outputs(tmp_path, tiny_params):
    init_root(tmp_path, small_params(tiny_params))
    (tmp_path / "s1.yaml").write_text(yaml.safe_dump(small_params(tiny_params, seed=1)))
    procs = [start_run(tmp_path, "params.yaml"), start_run(tmp_path, "s1.yaml")]
    s0, s1 = [finish(p) for p in procs]
    assert s0["run_dir"] != s1["run_dir"]
    t = tracker(tmp_path)
    members = {}
    for summary, seed in ((s0, 0), (s1, 1)):
        run = Path(summary["run_dir"])
        assert yaml.safe_load((run / "params.yaml").read_text())["seed"] == seed
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        members[seed] = md5(run / "finetune/member_0.pt")
        # the MLflow record of this run's fine-tuning holds this run's weights and metrics
        ft = child_run(t, summary["mlflow_run_id"], "finetune")
        logged = Path(t.client.download_artifacts(ft.info.run_id, "model/member_0.pt", str(tmp_path / f"dl{seed}")))
        assert md5(logged) == members[seed]
        manifest = json.loads((run / "finetune/stage.json").read_text())
        assert ft.data.metrics["test_mae_gap"] == pytest.approx(manifest["metrics"]["test_mae_gap"])
        # its screen names its own property model
        preds = pd.read_csv(run / "screen/candidates.csv")
        if len(preds):   # tiny generators may yield no valid candidate
            assert set(preds["property_model_run"]) == {manifest["info"]["produced_by_run"]}
    assert members[0] != members[1]


def test_kill_minus_9_during_finetuning_leaves_no_dangling_run(tmp_path, tiny_params):
    init_root(tmp_path, small_params(tiny_params, finetune__epochs=100, finetune__patience=100))
    proc = start_run(tmp_path, "params.yaml")
    deadline = time.time() + 300
    while not list((tmp_path / "runs/store/finetune").glob(".staging-*")):
        assert proc.poll() is None and time.time() < deadline, "fine-tuning never started"
        time.sleep(0.1)
    time.sleep(0.5)                                   # inside the training loop
    os.killpg(proc.pid, signal.SIGKILL)               # the run, its Prefect server: all gone at once
    proc.wait()
    killed = next(p for p in (tmp_path / "runs").iterdir() if p.name[0].isdigit())
    assert json.loads((killed / "run.json").read_text())["status"] == "running"   # nobody could say otherwise
    assert not (killed / "finetune").exists() and not list((tmp_path / "runs/store/finetune").glob("[!.]*"))

    rerun = finish(start_run(tmp_path, "params.yaml"))
    assert {n: s["cached"] for n, s in rerun["stages"].items() if n in ("ingest", "featurize", "pretrain")} == \
        {"ingest": True, "featurize": True, "pretrain": True}
    assert rerun["stages"]["finetune"]["cached"] is False
    assert not list((tmp_path / "runs/store/finetune").glob(".staging-*"))
    # the killed invocation is closed everywhere: its run folder, its MLflow pipeline and stage runs
    assert json.loads((killed / "run.json").read_text())["status"] == "killed"
    t = tracker(tmp_path)
    statuses = {r.data.tags.get("molgnn.stage"): r.info.status
                for r in t.client.search_runs([t.experiment_id], "attributes.status != 'FINISHED'")}
    assert statuses == {"pipeline": "KILLED", "finetune": "KILLED"}
    listing = subprocess.run([sys.executable, "-m", "molgnn.cli", "runs"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout
    assert f"{killed.name}   killed" in listing


def test_an_edited_stage_is_recomputed_and_nothing_else(tmp_path, tiny_params):
    code = tmp_path / "code"
    for pkg in ("molgnn", "flows"):
        shutil.copytree(REPO / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "root"
    root.mkdir()
    init_root(root, small_params(tiny_params))
    env = {"PYTHONPATH": str(code)}                 # this copy is the code that runs
    first = finish(start_run(root, "params.yaml", env))
    assert not any(s["cached"] for s in first["stages"].values())
    with open(code / "molgnn/stages/filter.py", "a") as fh:
        fh.write("\n\ndef _a_behaviour_change():\n    return None\n")
    second = finish(start_run(root, "params.yaml", env))
    cached = {n: s["cached"] for n, s in second["stages"].items()}
    assert cached.pop("filter") is False
    # the filter's output did not change, so the screen of it is found again as well
    assert all(cached.values()), cached


def test_sigterm_marks_the_run_killed_at_once(tmp_path, tiny_params):
    init_root(tmp_path, small_params(tiny_params, finetune__epochs=100, finetune__patience=100))
    proc = start_run(tmp_path, "params.yaml")
    deadline = time.time() + 300
    while not list((tmp_path / "runs/store/finetune").glob(".staging-*")):
        assert proc.poll() is None and time.time() < deadline, "fine-tuning never started"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)                  # what a scheduler or `kill` sends
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    run = next(p for p in (tmp_path / "runs").iterdir() if p.name[0].isdigit())
    assert json.loads((run / "run.json").read_text())["status"] == "killed"
    t = tracker(tmp_path)
    statuses = {r.data.tags.get("molgnn.stage"): r.info.status for r in t.client.search_runs([t.experiment_id])}
    assert statuses == {"ingest": "FINISHED", "featurize": "FINISHED", "pretrain": "FINISHED",
                        "finetune": "KILLED", "pipeline": "KILLED"}
