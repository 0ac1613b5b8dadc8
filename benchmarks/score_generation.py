"""Score the molecules that benchmarks/generation_train.py sampled on the GPU (runs here, on the CPU).

    .venv/bin/python benchmarks/score_generation.py --runs DIR --dataset qm9 --cache-dir /tmp/molgnn-val/cold
    .venv/bin/python benchmarks/score_generation.py --runs DIR --dataset moses --n 25000 --cache-dir ...

DIR holds <dataset>_<kind>.tar.gz (what benchmarks/run_generation_gpu.sh writes) or the unpacked
folders. QM9: validity (before / after keeping the largest fragment), uniqueness, novelty vs the QM9
train split, FCD vs the QM9 test split. MOSES: molgnn.generate.metrics.moses_metrics (vs test and
scaffold test, novelty vs all of MOSES train) plus MOSES's property distances (W1 of logP, SA, QED,
weight vs test). Both: training time, sampling speed, and per learning-curve point (~1k molecules
sampled during training) validity, uniqueness and FCD/Test (biased high at n=1000: compare points
with each other, not with the final figure). Published rows (DiGress, MOSES VAE, ...) are separate
records with their source. Writes benchmarks/results/generation_<dataset>.json, the curve to
benchmarks/results/detail/generation_<dataset>_curve.json, and regenerates results/README.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO, RESULTS, command_line, provenance, record, write_records
from molgnn.chem.canonical import canonical_smiles
from molgnn.generate.metrics import (METRICS_VERSION, fraction_unique, moses_metrics, property_distances,
                                     property_values, reference_stats)
from molgnn.generate.metrics_fcd import activation_statistics, chemnet_activations, frechet_distance

SYSTEMS = {"vae": "molgnn graph VAE", "diffusion": "molgnn DiGress-style diffusion"}
BENCH_SRC = "shared/BENCHMARKS.md (Generation)"
DIGRESS_SRC = "Vignac et al. 2023, DiGress (ICLR), tables for QM9 (implicit H) and MOSES; via " + BENCH_SRC
MOSES_SRC = "https://github.com/molecularsets/moses (README, metrics table); via " + BENCH_SRC
# (system, source, {metric: value}); units and directions come from UNITS.
PUBLISHED = {
    "qm9": [
        ("DiGress (published)", DIGRESS_SRC, {"valid": 0.990, "unique": 0.963}),
        ("GDSS (published)", BENCH_SRC, {"valid": 0.957, "FCD/Test": 2.90}),
        ("MoFlow (published)", BENCH_SRC, {"valid": 0.914, "FCD/Test": 4.47}),
    ],
    "moses": [
        ("DiGress (published)", DIGRESS_SRC, {"valid": 0.857, "unique@10000": 1.0, "FCD/Test": 1.19,
                                              "SNN/Test": 0.52, "Scaf/Test": 0.148, "Filters": 0.971,
                                              "Novelty": 0.950}),
        ("MOSES VAE (published)", MOSES_SRC, {"valid": 0.977, "unique@10000": 0.998, "FCD/Test": 0.099,
                                              "SNN/Test": 0.626, "Frag/Test": 0.999, "Scaf/Test": 0.939,
                                              "IntDiv": 0.856, "Filters": 0.997, "Novelty": 0.695}),
    ],
}
GOALS = {"qm9": {"valid": ">= 0.99", "unique": ">= 0.96", "FCD/Test": "<= 0.1"},
         "moses": {"valid": ">= 0.95", "FCD/Test": "<= 0.5", "Novelty": ">= 0.9", "Filters": ">= 0.99"}}
UNITS = {"FCD": ("FCD", False), "SNN": ("Tanimoto", True), "Frag": ("cosine", True), "Scaf": ("cosine", True),
         "IntDiv": ("1 - Tanimoto", True), "logP": ("W1", False), "SA": ("W1", False), "QED": ("W1", False),
         "weight": ("W1 (Da)", False), "train_seconds": ("s", False), "molecules_per_second": ("molecules/s", True),
         "graphs_per_second_gpu": ("graphs/s", True), "molecules_per_second_1core_decode": ("molecules/s", True),
         "steps": ("steps", True), "epochs": ("epochs", True), "n_params": ("parameters", True)}


def unit_of(metric: str) -> tuple[str, bool]:
    return UNITS.get(metric.split("/")[0], ("fraction", True))


def read_lines_gz(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return [line.strip() for line in fh if line.strip()]


def load_run(runs: Path, name: str, tmp: Path) -> Path | None:
    folder = runs / name
    if folder.is_dir():
        return folder
    tar = runs / f"{name}.tar.gz"
    if tar.exists():
        with tarfile.open(tar) as tf:
            tf.extractall(tmp, filter="data")
        return tmp / name
    return None


def fcd_against(smiles: list[str | None], ref_mu: np.ndarray, ref_sigma: np.ndarray) -> float:
    canon = [c for c in (canonical_smiles(s) for s in smiles if s) if c]
    if len(canon) < 2:
        return float("nan")
    return frechet_distance(ref_mu, ref_sigma, *activation_statistics(chemnet_activations(canon)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="folder with <dataset>_<kind>.tar.gz or folders")
    ap.add_argument("--dataset", choices=["qm9", "moses"], required=True)
    ap.add_argument("--kinds", default="vae,diffusion")
    ap.add_argument("--train-reference", type=int, default=10000,
                    help="also score a seeded sample of this many training molecules against test (FCD "
                         "floor at that n: a finite-sample FCD is biased upwards); 0 to skip")
    ap.add_argument("--n", type=int, default=0,
                    help="score the first N draws only (default all; MOSES scores 30,000, 25k takes ~5 min here)")
    ap.add_argument("--data-dir", type=Path, default=REPO / ".bench" / "gen",
                    help="qm9_train.txt.gz / qm9_test.txt.gz (benchmarks/prepare_generation.py)")
    ap.add_argument("--moses-dir", type=Path, default=Path("/work/shared/datasets/moses"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="reference statistics cache")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--no-curve", action="store_true", help="skip FCD of the learning-curve points")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("score_generation")
    import torch
    torch.set_num_threads(max(1, args.n_jobs))
    out = args.out or RESULTS / f"generation_{args.dataset}.json"
    bench = f"generation-{args.dataset}"

    if args.dataset == "qm9":
        train = read_lines_gz(args.data_dir / "qm9_train.txt.gz")
        test = read_lines_gz(args.data_dir / "qm9_test.txt.gz")
        test_sf = None
    else:
        read = lambda f: pd.read_csv(args.moses_dir / f, usecols=["SMILES"])["SMILES"].tolist()  # noqa: E731
        train, test, test_sf = read("train.csv.gz"), read("test.csv.gz"), read("test_scaffolds.csv.gz")
    t0 = time.perf_counter()
    test_stats = reference_stats(test, n_jobs=args.n_jobs, cache_dir=args.cache_dir)
    log.info("reference stats of %d test molecules in %.0f s", len(test), time.perf_counter() - t0)

    records: list[dict] = []
    curves: dict[str, list[dict]] = {}
    cmd = command_line(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            folder = load_run(args.runs, f"{args.dataset}_{kind}", Path(tmp))
            if folder is None:
                log.warning("no run for %s/%s in %s", args.dataset, kind, args.runs)
                continue
            run = json.loads((folder / "run.json").read_text())
            hist = json.loads((folder / "history.json").read_text())
            samples = pd.read_csv(folder / "samples.tsv", sep="\t", keep_default_na=False, dtype=str)
            if args.n:
                samples = samples.iloc[:args.n]
            raw = [s or None for s in samples["smiles"]]
            fixed = [s or None for s in samples["corrected"]]
            t0 = time.perf_counter()
            if args.dataset == "qm9":
                m = moses_metrics(raw, test=test_stats, train=train, corrected=fixed, n_jobs=args.n_jobs,
                                  metrics=["Novelty", "FCD"], ks=(), cache_dir=args.cache_dir)
                valid = [c for c in (canonical_smiles(s) for s in raw if s) if c]
                m["unique"] = fraction_unique(valid) if valid else float("nan")
                keep = ["valid", "valid_corrected", "unique", "Novelty", "FCD/Test"]
            else:
                m = moses_metrics(raw, test=test_stats, test_scaffolds=test_sf, train=train, corrected=fixed,
                                  n_jobs=args.n_jobs, cache_dir=args.cache_dir)
                ref_props = property_values(test, n_jobs=args.n_jobs, cache_dir=args.cache_dir)
                m.update(property_distances(raw, ref_props, n_jobs=args.n_jobs))
                keep = ["valid", "valid_corrected", "unique@1000", "unique@10000", "FCD/Test", "FCD/TestSF",
                        "SNN/Test", "SNN/TestSF", "Frag/Test", "Frag/TestSF", "Scaf/Test", "Scaf/TestSF",
                        "IntDiv", "IntDiv2", "Filters", "Novelty", "logP", "SA", "QED", "weight"]
            log.info("%s: %s (%.0f s)", kind, json.dumps({k: m.get(k) for k in keep}), time.perf_counter() - t0)
            epochs = float(hist["history"][-1]["epoch"]) if hist["history"] else 0.0
            m.update(train_seconds=run["train_seconds"], molecules_per_second=run["molecules_per_second"],
                     graphs_per_second_gpu=run["graphs_per_second_gpu"],
                     molecules_per_second_1core_decode=run["molecules_per_second_1core_decode"],
                     steps=run["steps"], epochs=epochs, n_params=run["n_params"])
            keep += ["train_seconds", "molecules_per_second", "graphs_per_second_gpu",
                     "molecules_per_second_1core_decode", "steps", "epochs", "n_params"]
            sample = f"n={len(raw):,}, {run['train_seconds']:.0f} s training"
            subset = run.get("train_subset")
            setup = (f"{run['kind']} {json.dumps(run['preset']['model'])}, batch {run['preset']['batch_size']}, "
                     f"lr {run['preset']['lr']} (warm-up {run['preset']['warmup_steps']} steps, cosine over "
                     f"{run['time_budget']:.0f} s), EMA {run['preset']['ema_decay']}, "
                     f"{'bf16' if run['bf16'] else 'fp32/TF32'}; trained on {run['n_train']:,} graphs"
                     f"{f' ({subset})' if subset else ''}, {epochs:.1f} epochs, stop: {run['stop_reason']}; "
                     f"sampled {len(raw):,} (batch {run['sample_batch']}); speed = GPU sampling + RDKit decoding "
                     f"on {run['decode_workers']} processes; metrics v{METRICS_VERSION} scored on this machine")
            # provenance of the GPU command that trained and sampled (run.json), then this scoring
            context = {"machine": run["machine"], "date": run["date"], "commit": run["commit"],
                       "command": f"{run['command']}; then {cmd}"}
            for metric in keep:
                if metric in m:
                    goal = GOALS[args.dataset].get(metric)
                    records.append(record(bench, SYSTEMS[kind], metric, float(m[metric]), *unit_of(metric), context,
                                          sample=sample, setup=setup, **({"note": f"goal {goal}"} if goal else {})))
            # Learning curve: the ~1k-molecule samples drawn during training.
            points = []
            for p in hist["curve"]:
                smi = [s or None for s in p.pop("smiles")]
                if not args.no_curve and test_stats.fcd_mu is not None:
                    p["FCD/Test@n"] = fcd_against(smi, test_stats.fcd_mu, test_stats.fcd_sigma)
                points.append(p)
            points.append({"elapsed": run["train_seconds"], "step": run["steps"], "final": True,
                           **{k: m.get(k) for k in ("valid", "valid_corrected", "FCD/Test")},
                           "n": len(raw)})
            curves[kind] = points
            log.info("%s curve: %s", kind, json.dumps(points))

    if args.train_reference:
        # The training set itself at the generators' sample size: the lowest FCD/Test reachable at that n.
        n_ref = min(args.train_reference, len(train))
        pick = np.random.default_rng(0).choice(len(train), n_ref, replace=False)
        ref_smiles = [train[i] for i in sorted(pick)]
        t0 = time.perf_counter()
        value = fcd_against(ref_smiles, test_stats.fcd_mu, test_stats.fcd_sigma)
        log.info("train sample (n=%d) FCD/Test %.4f (%.0f s)", n_ref, value, time.perf_counter() - t0)
        records.append(record(bench, f"{args.dataset.upper()} train sample (reference)", "FCD/Test", value, "FCD",
                              False, provenance(command=cmd), sample=f"n={n_ref:,}, seed 0",
                              note="training molecules scored like a generator: the FCD floor at this sample size"))

    for system, source, values in PUBLISHED[args.dataset]:
        for metric, value in values.items():
            records.append(record(bench, system, metric, value, *unit_of(metric), source=source, date="2020-2023"))
    write_records(out, records, indent=1)
    detail = (out.with_name(out.stem + "_curve.json") if args.out else
              RESULTS / "detail" / f"generation_{args.dataset}_curve.json")
    detail.write_text(json.dumps({"note": "validity/uniqueness of ~1k molecules sampled from the EMA model during "
                                          "training; FCD/Test@n at that n (biased high vs the final n)",
                                  "curves": curves}, indent=1) + "\n")
    if args.out is None:   # a trial run elsewhere leaves the committed table alone
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_table.py")], check=False)
    log.info("wrote %s (%d records) and %s", out, len(records), detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
