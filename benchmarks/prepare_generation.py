"""Export the SMILES the generation benchmarks need into a small, git-ignored folder (default .bench/gen).

    .venv/bin/python benchmarks/prepare_generation.py

QM9: the 130,831 standardized molecules of the ``qm9`` source (benchmarks/prepare_qm9.py writes
.bench/qm9/ingest/molecules.parquet and .bench/qm9/split.csv) -> qm9_train.txt.gz (110,000, what
the generators train on and novelty is measured against) and qm9_test.txt.gz (10,831, the FCD
reference). MOSES: train.csv.gz is hard-linked (or copied) from the shared MOSES folder. The GPU
side (benchmarks/generation_train.py) needs qm9_train.txt.gz and moses_train.csv.gz only (~11 MB).
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
from pathlib import Path

import pandas as pd

from common import REPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qm9-dir", type=Path, default=REPO / ".bench" / "qm9")
    parser.add_argument("--moses-dir", type=Path, default=Path("/work/shared/datasets/moses"))
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "gen")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    mols = pd.read_parquet(args.qm9_dir / "ingest" / "molecules.parquet", columns=["mol_id", "smiles"])
    split = pd.read_csv(args.qm9_dir / "split.csv")
    merged = mols.merge(split, on="mol_id", how="inner", validate="one_to_one")
    for part in ("train", "test"):
        smiles = merged.loc[merged["split"] == part, "smiles"].tolist()
        with gzip.open(args.out / f"qm9_{part}.txt.gz", "wt", compresslevel=9) as fh:
            fh.write("\n".join(smiles) + "\n")
        print(f"qm9 {part}: {len(smiles)} SMILES")
    src, dst = args.moses_dir / "train.csv.gz", args.out / "moses_train.csv.gz"
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    print(f"moses train: {dst} ({dst.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
