"""Build the drug-like pretraining corpus once: MOSES molecules with conformers and EHT orbital targets.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/prepare_pretrain_corpus.py [--n 50000] [--seed 0] \\
        [--out .bench/pretrain]

Draws ``--n`` SMILES from MOSES train (seeded), embeds each with the pipeline's own conformer method
(``molgnn.chem.conformers.embed_many``: ETKDGv3 + MMFF94, 10 s time-out, 200 iterations, as the
featurize stage) and computes its extended-Hueckel HOMO/LUMO/gap (``molgnn.chem.eht``, the pretraining
stage's third objective) here, because the GPU machine has no RDKit. Work goes in chunks of
``--chunk`` molecules, each saved as it finishes, so an interrupted run resumes where it stopped.

Writes ``<out>/moses_<n>.npz`` in the layout of ``AtomisticDataset.from_npz`` (``Z`` uint8, ``R``
float32 Angstrom, ``ptr``, ``y`` = EHT targets in eV with NaN where EHT failed, ``target_names``,
``mol_ids`` = the SMILES) and ``<out>/moses_<n>.json``: counts, every rejected molecule with its
reason, seconds, file hash. The corpus is what ``benchmarks/pretrain_druglike.py`` trains on, on a GPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO
from molgnn.chem.conformers import Conformer, embed_many
from molgnn.chem.eht import EHT_TARGETS, eht_targets
from molgnn.data.sources import shared_datasets_dir


def build_chunk(smiles: list[str], seed: int, workers: int) -> dict:
    results = embed_many(smiles, seed=seed, timeout_s=10.0, max_iterations=200, workers=workers)
    kept = [(s, r) for s, r in zip(smiles, results) if isinstance(r, Conformer)]
    rejected = [{"smiles": s, "reason": r.reason} for s, r in zip(smiles, results) if not isinstance(r, Conformer)]
    z = np.concatenate([r.atomic_numbers for _, r in kept]).astype(np.uint8)
    pos = np.concatenate([r.positions for _, r in kept]).astype(np.float32)
    ptr = np.zeros(len(kept) + 1, np.int64)
    np.cumsum([len(r.atomic_numbers) for _, r in kept], out=ptr[1:])
    y, failed = eht_targets(z, pos, ptr, workers=workers, chunk_size=250)
    return {"Z": z, "R": pos, "ptr": ptr, "y": y, "smiles": [s for s, _ in kept], "rejected": rejected,
            "eht_failed": [{"smiles": kept[m][0], "reason": why} for m, why in failed]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=2_500)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "pretrain")
    args = ap.parse_args()
    import os

    workers = args.workers or os.cpu_count() or 1
    parts = args.out / f"moses_{args.n}_parts"
    parts.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(shared_datasets_dir() / "moses" / "train.csv.gz")["SMILES"]
    smiles = train.sample(args.n, random_state=args.seed).tolist()
    started = time.perf_counter()
    for k, lo in enumerate(range(0, args.n, args.chunk)):
        path = parts / f"{k:04d}.npz"
        if path.exists():
            continue
        t = time.perf_counter()
        c = build_chunk(smiles[lo:lo + args.chunk], args.seed, workers)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, Z=c["Z"], R=c["R"], ptr=c["ptr"], y=c["y"], smiles=np.array(c["smiles"]),
                 rejected=json.dumps(c["rejected"]), eht_failed=json.dumps(c["eht_failed"]))
        tmp.replace(path)   # a chunk exists whole or not at all
        print(f"chunk {k}: {len(c['smiles'])} molecules in {time.perf_counter() - t:.0f} s", flush=True)

    zs, rs, ys, ids, ptrs, rejected, eht_failed, offset = [], [], [], [], [np.zeros(1, np.int64)], [], [], 0
    for k in range(len(range(0, args.n, args.chunk))):
        with np.load(parts / f"{k:04d}.npz") as d:
            zs.append(d["Z"]); rs.append(d["R"]); ys.append(d["y"]); ids.extend(d["smiles"].tolist())
            ptrs.append(d["ptr"][1:] + offset)
            offset += int(d["ptr"][-1])
            rejected += json.loads(str(d["rejected"])); eht_failed += json.loads(str(d["eht_failed"]))
    out = args.out / f"moses_{args.n}.npz"
    np.savez(out, Z=np.concatenate(zs), R=np.concatenate(rs), ptr=np.concatenate(ptrs), y=np.concatenate(ys),
             target_names=np.array(EHT_TARGETS), mol_ids=np.array(ids))
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    meta = {"source": "MOSES train (../shared/datasets/moses/train.csv.gz)", "drawn": args.n, "seed": args.seed,
            "molecules": len(ids), "atoms": offset, "rejected": rejected, "eht_failed": eht_failed,
            "conformers": "ETKDGv3 + MMFF94 (UFF fallback), seed 0, 10 s time-out, 200 iterations",
            "seconds_this_call": round(time.perf_counter() - started, 1), "npz": out.name, "md5": digest}
    assert len(ids) + len(rejected) == args.n, "every drawn molecule is kept or rejected with a reason"
    (args.out / f"moses_{args.n}.json").write_text(json.dumps(meta, indent=1))
    print(f"{out}: {len(ids)} molecules, {len(rejected)} rejected, {len(eht_failed)} without EHT targets, "
          f"{out.stat().st_size / 1e6:.1f} MB, md5 {digest}")


if __name__ == "__main__":
    main()
