"""Pretrain the encoder that ships with molgnn (``pretrain.init_from: druglike-v1``) on a GPU.

    python3 benchmarks/pretrain_druglike.py --npz .bench/pretrain/moses_50000.npz --seconds 420 --out OUT

Trains ``molgnn.train.pretrain.pretrain`` (coordinate denoising + masked atom types + extended-Hueckel
HOMO/LUMO/gap, the pipeline's own objectives) on the corpus of ``prepare_pretrain_corpus.py`` with the
default ``params.yaml`` model (the shipped encoder must fit the default recipe), a masked-type
vocabulary wide enough for drug-like data (H B C N O F Si P S Cl Se Br I), cosine-decayed lr over
``--seconds`` of training. 2 % of the corpus is held out: its losses, measured before and after, say
whether the encoder learned something that transfers beyond the molecules it saw.

Writes to ``--out``: ``druglike-v1.pt`` (a "pretrain" checkpoint, float32, < 1 MB), ``druglike-v1.json``
(what it is: corpus, hash, settings, history, held-out losses, machine, commit, command); copy both to
``molgnn/resources/encoders/``. ``--init`` continues an earlier call's checkpoint (a later command).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import command_line, git_commit, machine
from molgnn.config import ModelConfig, PretrainConfig
from molgnn.featurize.atomistic import AtomisticDataset, gather_atoms, iterate_batches
from molgnn.models.pretraining import pretraining_loss
from molgnn.train.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from molgnn.train.pretrain import pretrain

NAME = "druglike-v1"
VOCABULARY = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53)


def held_out_losses(ckpt: dict, data: AtomisticDataset, idx: np.ndarray, cfg: PretrainConfig, device) -> dict:
    """Per-molecule mean losses of ``ckpt`` on molecules ``idx`` (fixed noise and masks: seed 0)."""
    model = model_from_checkpoint(ckpt, device)
    gen = torch.Generator(device=device).manual_seed(0)
    sums, n = {"loss": 0.0, "denoise": 0.0, "mask_accuracy": 0.0, "eht": 0.0}, 0
    with torch.no_grad():
        for batch in iterate_batches(data, idx, batch_size=512, cutoff=model.cutoff, shuffle=False, device=device):
            out = pretraining_loss(model, batch, noise_std=cfg.noise_std, mask_rate=cfg.mask_rate,
                                   denoise_weight=cfg.denoise_weight, mask_weight=cfg.mask_weight,
                                   eht_weight=cfg.eht_weight, generator=gen)
            b = int(batch["_n_atoms"].numel())
            sums["loss"] += float(out.loss) * b
            sums["denoise"] += float(out.denoise_loss) * b
            sums["mask_accuracy"] += float(out.mask_accuracy) * b
            sums["eht"] += float(out.eht_loss) * b if out.eht_loss is not None else float("nan")
            n += b
    return {k: v / n for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=420.0, help="training seconds (cosine lr over them)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, default=None, help="continue this pretraining checkpoint")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False   # fp32 throughout: the encoder is fine-tuned on CPUs in fp32

    data = AtomisticDataset.from_npz(str(args.npz))
    n = len(data)
    perm = np.random.default_rng(args.seed).permutation(n)
    n_val = max(1, n // 50)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    model_cfg = ModelConfig()   # params.yaml's defaults
    cfg = PretrainConfig(epochs=100_000, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine-time",
                         time_budget_s=args.seconds, eht_weight=1.0, init_from=None)
    # the held-out molecules never reach pretrain()
    atoms, _, counts = gather_atoms(data.ptr, torch.as_tensor(train_idx))
    ptr = torch.zeros(len(train_idx) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(counts, 0)
    train = AtomisticDataset(data.mol_ids[train_idx], data.z[atoms], data.positions[atoms], ptr,
                             data.targets[torch.as_tensor(train_idx)], list(data.target_names))
    init = load_checkpoint(args.init) if args.init else None
    started = time.perf_counter()
    res = pretrain(train, model_cfg, cfg, seed=args.seed, device=device, init_from=init, elements=VOCABULARY,
                   **cfg.train_options(), check_every=0)
    seconds = time.perf_counter() - started
    held = held_out_losses(res.checkpoint, data.to(device), val_idx, cfg, device)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{NAME}.pt"
    save_checkpoint(res.checkpoint, path)
    corpus_md5 = hashlib.md5(args.npz.read_bytes()).hexdigest()
    meta = {
        "name": NAME, "file": path.name, "md5": hashlib.md5(path.read_bytes()).hexdigest(),
        "what": "PaiNN encoder (params.yaml model) pretrained by denoising (0.05 A), 15 % masked types and "
                "extended-Hueckel HOMO/LUMO/gap on ETKDGv3+MMFF conformers of MOSES train molecules",
        "corpus": {"npz": args.npz.name, "md5": corpus_md5, "molecules": n, "train": len(train_idx),
                   "held_out": n_val},
        "model": dataclasses.asdict(model_cfg), "pretrain": dataclasses.asdict(cfg),
        "elements": list(res.checkpoint["element_vocab"]), "seconds": round(seconds, 1),
        "epochs": len(res.history), "history": res.history, "held_out": held,
        "machine": machine(device), "date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
        "command": command_line(), "continued_from": str(args.init) if args.init else None,
    }
    (args.out / f"{NAME}.json").write_text(json.dumps(meta, indent=1))
    last = res.history[-1]
    print(f"{len(res.history)} epochs in {seconds:.0f} s; last epoch {last}; held-out {held}")


if __name__ == "__main__":
    main()
