"""MOSES reference row: score a seeded sample of MOSES train against MOSES test / scaffold test.

A sample of the training set is the best possible "generator", so its scores must land on the
"Train" row MOSES published (molecularsets/moses README). Writes one JSON record per figure, ours
("molgnn") and the published ones ("MOSES (published)"), to benchmarks/results/moses_reference.json,
then regenerates benchmarks/results/README.md.

    .venv/bin/python benchmarks/moses_reference.py                 # n=30,000, seed 0, 2 workers
    .venv/bin/python benchmarks/moses_reference.py --n 5000 --cache-dir ~/.cache/molgnn/moses

Without --cache-dir every run recomputes the reference statistics of both 176k-molecule test sets
(RDKit + ChemNet, most of the time); with it, reruns load them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO, RESULTS, command_line, load_average, provenance, record, worktree_dirty, write_records
from molgnn.generate.metrics import METRIC_GROUPS, METRICS_VERSION, moses_metrics, reference_cache_path
from molgnn.generate.metrics_fcd import FCD_PACKAGE, FCD_PACKAGE_VERSION

BENCHMARK = "moses-reference-train-row"
PUBLISHED_SOURCE = "https://github.com/molecularsets/moses (README, metrics table, row 'Train')"

# metric -> (published Train-row value, unit, higher_is_better). Values as printed in the README.
PUBLISHED = {
    "valid": (1.0, "fraction", True),
    "unique@1000": (1.0, "fraction", True),
    "unique@10000": (1.0, "fraction", True),
    "FCD/Test": (0.008, "FCD", False),
    "FCD/TestSF": (0.4755, "FCD", False),
    "SNN/Test": (0.6419, "Tanimoto", True),
    "SNN/TestSF": (0.5859, "Tanimoto", True),
    "Frag/Test": (1.0, "cosine", True),
    "Frag/TestSF": (0.9986, "cosine", True),
    "Scaf/Test": (0.9907, "cosine", True),
    "Scaf/TestSF": (0.0, "cosine", True),
    "IntDiv": (0.8567, "1 - Tanimoto", True),
    "IntDiv2": (0.8508, "1 - Tanimoto", True),
    "Filters": (1.0, "fraction", True),
    "Novelty": (1.0, "fraction", True),
}
NOTES = {
    "Novelty": "The README prints 1.0 for the Train row; a sample of the training set has novelty 0 by "
               "definition, so the published cell is not a measurement. Ours must be 0.",
}


def read_smiles(path: Path) -> list[str]:
    return pd.read_csv(path, usecols=["SMILES"])["SMILES"].tolist()


def moses_shipped_checks(stats_dir: Path, sample_canonical: list[str], device: str) -> dict:
    """Optional: FCD of our sample against the test statistics MOSES itself shipped (molsets 0.3.1
    wheel, ``moses/dataset/data/*_stats.npz``; pickled objects, so only load a file you trust)."""
    from molgnn.generate.metrics_fcd import activation_statistics, chemnet_activations, frechet_distance

    mu, sigma = activation_statistics(chemnet_activations(sample_canonical, device=device))
    out = {}
    for split, name in (("test", "Test"), ("test_scaffolds", "TestSF")):
        path = stats_dir / f"{split}_stats.npz"
        if path.exists():
            shipped = np.load(path, allow_pickle=True)["stats"].item()["FCD"]
            out[f"FCD/{name}"] = frechet_distance(shipped["mu"], shipped["sigma"], mu, sigma)
    return out


def column_order(record: dict) -> tuple[int, float]:
    """Published first, then ours by sample size ("all" last), then the cross-check columns."""
    rank = {"MOSES (published)": 0, "molgnn": 1}.get(record["system"], 2)
    sample = record.get("sample", "")
    match = re.match(r"n=([\d,]+)", sample)
    return rank, float(match.group(1).replace(",", "")) if match else float("inf") if sample else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30_000,
                        help="training molecules to sample (default 30,000 as MOSES recommends; 0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", default=",".join(METRIC_GROUPS),
                        help=f"comma-separated metric groups (default all: {','.join(METRIC_GROUPS)})")
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/datasets/moses"),
                        help="folder with train.csv.gz, test.csv.gz, test_scaffolds.csv.gz (column SMILES)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for ChemNet and Tanimoto (default: torch's choice); 1 is "
                             "faster on a CPU shared with other jobs")
    parser.add_argument("--cache-dir", type=Path, default=None, help="reuse reference statistics from here")
    parser.add_argument("--moses-stats", type=Path, default=None,
                        help="folder with MOSES's shipped test_stats.npz / test_scaffolds_stats.npz: adds "
                             "FCD of the sample against MOSES's own precomputed test statistics")
    parser.add_argument("--out", type=Path, default=RESULTS / "moses_reference.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the records of other sample sizes already in --out (replace only this one's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("moses_reference")
    groups = [g.strip() for g in args.metrics.split(",") if g.strip()]

    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    train = read_smiles(args.data_dir / "train.csv.gz")
    test = read_smiles(args.data_dir / "test.csv.gz")
    test_sf = read_smiles(args.data_dir / "test_scaffolds.csv.gz")
    if args.n and args.n < len(train):
        rng = np.random.default_rng(args.seed)
        sample = [train[i] for i in rng.choice(len(train), size=args.n, replace=False)]
        label = f"n={len(sample):,}, seed {args.seed}"
    else:
        sample, label = list(train), f"all {len(train):,}"
    log.info("train %d, test %d, test_scaffolds %d; sample %s", len(train), len(test), len(test_sf), label)

    cached = {name: args.cache_dir is not None and reference_cache_path(ref, args.cache_dir).exists()
              for name, ref in (("Test", test), ("TestSF", test_sf))}
    timings: dict[str, float] = {}
    scores = moses_metrics(sample, test=test, test_scaffolds=test_sf, train=train, n_jobs=args.n_jobs,
                         device=args.device, metrics=groups, cache_dir=args.cache_dir, timings=timings)
    wall = time.perf_counter() - started
    load_after = load_average()
    log.info("metrics: %s", json.dumps(scores, indent=1))

    shipped = {}
    if args.moses_stats is not None and "FCD" in groups:
        from molgnn.chem.canonical import canonical_smiles
        shipped = moses_shipped_checks(args.moses_stats, [canonical_smiles(s) for s in sample], args.device)

    context = provenance(command=command_line(argv))
    if args.device != "cpu":
        context["machine"] += f", metrics device {args.device}"
    ours = {"sample": label,
            "worktree_dirty": worktree_dirty("molgnn/generate", "benchmarks/moses_reference.py"),
            "setup": (f"{label} MOSES train SMILES vs the full test ({len(test):,}) and scaffold test "
                      f"({len(test_sf):,}) sets, novelty vs train ({len(train):,}); metrics v{METRICS_VERSION}, "
                      f"{FCD_PACKAGE}=={FCD_PACKAGE_VERSION} ChemNet weights")}
    records = []
    for metric, (published, unit, higher) in PUBLISHED.items():
        note = {"note": NOTES[metric]} if metric in NOTES else {}
        if metric in scores:
            records.append(record(BENCHMARK, "molgnn", metric, float(scores[metric]), unit, higher, context,
                                  **ours, **note))
        records.append(record(BENCHMARK, "MOSES (published)", metric, published, unit, higher,
                              source=PUBLISHED_SOURCE, date="2020", **note))
    for metric, value in shipped.items():
        records.append(record(BENCHMARK, "molgnn activations vs MOSES-shipped test stats", metric, float(value),
                              "FCD", False, context, **ours,
                              note="ChemNet activations of our sample against the FCD mu/sigma that MOSES "
                                   "precomputed and shipped in the molsets 0.3.1 wheel: checks our reference statistics"))
    cache = "reference statistics " + ", ".join(
        f"{name} {'loaded from cache' if hit else 'computed (cold)'}" for name, hit in cached.items())
    records.append(record(BENCHMARK, "molgnn", "wall time", round(wall, 1), "s", False, context, **ours,
                          note=f"{cache}; metric groups {','.join(groups)}; n_jobs={args.n_jobs}, device={args.device}, "
                               f"torch threads {args.torch_threads or 'default'}; load average at start "
                               f"{load_before:.1f} (1 min), at end {load_after} (1/5/15 min; the CPU is shared)",
                          stages_s={k: round(v, 1) for k, v in timings.items()}))

    if args.merge and args.out.exists():
        records += [r for r in json.loads(args.out.read_text())
                    if r.get("system") != "MOSES (published)" and r.get("sample") != label]
    records.sort(key=column_order)  # stable: published, ours by sample size, then the cross-check
    write_records(args.out, records, indent=1)
    log.info("wrote %s (%d records) in %.0f s", args.out, len(records), wall)
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_table.py")], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
