"""Multi-GPU (or multi-process CPU) fine-tuning, launched as its own entry point:

    torchrun --nproc_per_node 4 -m molgnn.train.ddp_finetune --npz .bench/qm9/qm9.npz \\
        --targets gap --out runs/ddp --epochs 100 --batch-size 100 --amp bf16 --device-batches

Each rank runs :func:`molgnn.train.finetune.finetune` (the stage code) on its shard of every
epoch's shuffled training set through DistributedDataParallel; ``--batch-size`` is per rank. The
dataset is an npz as written by ``benchmarks/prepare_qm9.py`` (``Z``, ``R``, ``ptr``, ``y``,
``target_names``, ``mol_ids``, ``train_idx``/``val_idx``/``test_idx``). Rank 0 writes
``<out>/model.pt`` (a property checkpoint) and ``<out>/metrics.json``; ``--state`` makes the run
resumable across launches (``--max-seconds`` per launch). Lightning-style re-execution of a flow
script per rank is avoided on purpose: launch this module from a task, not inside a flow.

Backend: NCCL when CUDA is available (one GPU per rank, ``LOCAL_RANK``), else gloo on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as tdist

from molgnn.config import FinetuneConfig, ModelConfig
from molgnn.featurize.atomistic import AtomisticDataset
from molgnn.train.checkpoints import save_checkpoint
from molgnn.train.finetune import AMP_DTYPES, SCHEDULERS, finetune


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m molgnn.train.ddp_finetune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", required=True, help="packed dataset with its split (benchmarks/prepare_qm9.py)")
    ap.add_argument("--out", required=True, help="folder for model.pt and metrics.json (rank 0)")
    ap.add_argument("--targets", nargs="+", default=["gap"])
    ap.add_argument("--n-atom-basis", type=int, default=128)
    ap.add_argument("--n-interactions", type=int, default=3)
    ap.add_argument("--n-rbf", type=int, default=20)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100, help="molecules per rank and step")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scheduler", choices=SCHEDULERS, default="plateau")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=None, help="total training seconds")
    ap.add_argument("--max-seconds", type=float, default=None, help="this launch's training seconds")
    ap.add_argument("--state", default=None, help="resumable training state file")
    ap.add_argument("--amp", choices=[a for a in AMP_DTYPES if a], default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device-batches", action="store_true")
    ap.add_argument("--check-every", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--eval-batch-size", type=int, default=1000)
    ap.add_argument("--max-train", type=int, default=None, help="use the first N training molecules (tests)")
    ap.add_argument("--backend", choices=["nccl", "gloo"], default=None)
    return ap.parse_args(argv)


def _split(npz: str, max_train: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(npz) as d:
        if not {"train_idx", "val_idx", "test_idx"} <= set(d.files):
            raise SystemExit(f"{npz} holds no split (train_idx, val_idx, test_idx)")
        train, val, test = d["train_idx"], d["val_idx"], d["test_idx"]
    return (train if max_train is None else train[:max_train]), val, test


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    tdist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    try:
        rank, world = tdist.get_rank(), tdist.get_world_size()
        dataset = AtomisticDataset.from_npz(args.npz)
        split = _split(args.npz, args.max_train)
        model_cfg = ModelConfig(args.n_atom_basis, args.n_interactions, args.n_rbf, args.cutoff)
        ft_cfg = FinetuneConfig(targets=list(args.targets), epochs=args.epochs, batch_size=args.batch_size,
                                lr=args.lr, patience=args.patience, split="random", ensemble_size=1,
                                atom_features=None)  # an npz has no SMILES: element-only inputs
        t0 = time.perf_counter()
        res = finetune(dataset, None, split, model_cfg, ft_cfg, seed=args.seed, device=device,
                       scheduler=args.scheduler, warmup_steps=args.warmup_steps, time_budget_s=args.time_budget,
                       max_seconds=args.max_seconds, state_path=args.state, amp=args.amp,
                       compile_model=args.compile, device_batches=args.device_batches,
                       check_every=args.check_every, eval_every=args.eval_every,
                       eval_batch_size=args.eval_batch_size)
        wall = time.perf_counter() - t0
        # every rank must end with the same weights: compare a checksum over ranks
        flat = torch.cat([v.detach().double().reshape(-1) for v in res.checkpoint["state_dict"].values()])
        checksum = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64, device=device)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        tdist.all_gather(gathered, checksum)
        in_sync = all(torch.equal(g, gathered[0]) for g in gathered)
        if rank == 0:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(res.checkpoint, out / "model.pt")
            metrics = {"world_size": world, "backend": backend, "ranks_in_sync": in_sync,
                       "completed": res.completed, "train_seconds": res.train_seconds, "wall_seconds": wall,
                       "test_metrics": res.test_metrics, "val_metrics": res.val_metrics,
                       "history": res.history, "args": vars(args)}
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
            print(json.dumps({k: metrics[k] for k in ("world_size", "ranks_in_sync", "completed", "test_metrics")},
                             default=float))
        return 0 if in_sync else 1
    finally:
        tdist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
