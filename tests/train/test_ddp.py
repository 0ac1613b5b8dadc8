"""The DDP entry point: torchrun -m molgnn.train.ddp_finetune, 2 CPU processes over gloo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molgnn.train.checkpoints import load_model

REPO = Path(__file__).resolve().parents[2]


def _npz(path: Path, n_mol: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = rng.integers(3, 9, n_mol)
    ptr = np.concatenate([[0], np.cumsum(n)])
    z = rng.choice([1, 6, 7, 8], ptr[-1]).astype(np.uint8)
    r = rng.uniform(0, 2.5, (ptr[-1], 3)).astype(np.float32)
    y = np.array([[z[a:b].mean() / 4 + r[a:b, 0].std()] for a, b in zip(ptr[:-1], ptr[1:])])
    np.savez(path, Z=z, R=r, ptr=ptr, y=y, target_names=np.array(["gap"]),
             mol_ids=np.array([f"m{i}" for i in range(n_mol)]), train_idx=np.arange(36),
             val_idx=np.arange(36, 42), test_idx=np.arange(42, 48))
    return path


def _torchrun(tmp_path: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    npz = _npz(tmp_path / "tiny.npz")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
           "-m", "molgnn.train.ddp_finetune", "--npz", str(npz), "--out", str(tmp_path / "out"),
           "--n-atom-basis", "8", "--n-interactions", "1", "--n-rbf", "6", "--cutoff", "3.0",
           "--batch-size", "6", "--lr", "2e-3", "--backend", "gloo", "--eval-batch-size", "16", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow   # about 30 s on 2 shared cores: torchrun starts two training processes
def test_ddp_two_processes_gloo(tmp_path):
    proc = _torchrun(tmp_path, "--epochs", "3", "--device-batches", "--state", str(tmp_path / "state.pt"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == "gloo"
    assert metrics["ranks_in_sync"] and metrics["completed"]
    assert len(metrics["history"]) == 3 and np.isfinite(metrics["test_metrics"]["gap"]["mae"])
    # each rank saw half of each epoch: 36 molecules / 2 ranks = 18 per rank, 3 batches of 6
    assert all(h["molecules_per_second"] > 0 for h in metrics["history"])
    model = load_model(tmp_path / "out" / "model.pt")
    assert model.targets == ["gap"]
    assert (tmp_path / "state.pt").exists()
    # relaunching with the completed state trains nothing more and reports the same result
    again = _torchrun(tmp_path, "--epochs", "3", "--device-batches", "--state", str(tmp_path / "state.pt"))
    assert again.returncode == 0, again.stderr[-3000:]
    metrics2 = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics2["test_metrics"] == metrics["test_metrics"]


@pytest.mark.parametrize("bad", [["--npz", "missing.npz"]])
def test_ddp_entry_point_fails_loudly(tmp_path, bad):
    proc = _torchrun(tmp_path, "--epochs", "1", *bad, nproc=1)
    assert proc.returncode != 0
