"""Beyond QM9: molgnn's pipeline on ESOL, FreeSolv and Lipophilicity against chemprop 2.3.1, same splits.

One command, both systems, same machine (CPU):

    .venv/bin/python benchmarks/moleculenet_vs_chemprop.py [--datasets esol freesolv lipophilicity]

Per dataset (the named sources of ``molgnn.data.sources``, files in ``../shared/datasets/moleculenet``):

1. molgnn: the pipeline's own stages, in the flow's order, from a params file written to
   ``<work-dir>/<dataset>/params.yaml`` (root of that dataset's ``data/`` and ``runs/``):
   ingest (standardize, deduplicate, rejects recorded) -> featurize (2D graphs, ETKDGv3 + MMFF
   conformers) -> [pretrain: denoising + masked types on that dataset's conformers, labels unused;
   off unless ``--pretrain-epochs N``] -> finetune (PaiNN, ``--ensemble`` members, default 1 like
   chemprop; ``split: scaffold``). The DVC, generate, filter and screen stages of ``molgnn run`` are
   not run (they do not touch the property model); MLflow tracking is off. Stages cache on their
   content key, so a rerun with the same params reuses e.g. the conformers.
2. The scaffold split the finetune stage saved (``split.csv`` in its store folder) is joined back to the
   ingested SMILES and labels (``molgnn.data.split_export.split_table``) and handed to chemprop:
   ``chemprop train --splits-column split`` (chemprop's defaults otherwise: D-MPNN, 50 epochs,
   best-validation checkpoint) then ``chemprop predict`` on the test SMILES.
3. Both systems' test predictions are scored by the same function
   (``molgnn.train.finetune.regression_metrics``) on the same test molecules.

Molecules that ingest rejects (unparsable, disallowed elements, duplicates) or whose conformer
generation fails are in neither system's split (a 3D model cannot score a molecule without a
structure); their counts are recorded. Records go to ``benchmarks/results/moleculenet_vs_chemprop.json``
(``--merge`` keeps the other datasets' records), per-epoch curves and timings to
``benchmarks/results/detail/moleculenet_vs_chemprop_detail.json``. Smoke test:
``--limit 100 --epochs 2 --chemprop-epochs 3 --out /tmp/smoke.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common import REPO, RESULTS, command_line, provenance, record, write_records

# named source -> (target column after ingest, unit for the table, display name, default fine-tuning epochs)
# Epochs were chosen, before the run, to give PaiNN about chemprop's default training time on the
# shared 2-core machine from throughputs probed under heavy load (PaiNN 32x3, 1 thread: ~90 molecules/s
# at FreeSolv's ~18 atoms incl. H, ~22/s at Lipophilicity's ~49). The load then fell; the times each
# system actually took are recorded, and they are not equal (see benchmarks/README.md).
DATASETS = {
    "esol": ("log_solubility", "log(mol/L)", "ESOL", 25),
    "freesolv": ("hydration_free_energy", "kcal/mol", "FreeSolv", 40),
    "lipophilicity": ("logd", "logD", "Lipophilicity", 5),
}
CHEMPROP = "chemprop 2.3.1"


def pipeline_params(dataset: str, target: str, epochs: int, args: argparse.Namespace) -> dict:
    """The params file of one dataset: the pipeline's knobs, with the benchmark's recipe."""
    return {
        "seed": args.seed,
        "device": "cpu",
        "data": {"sources": [dataset], "target_columns": [target], "limit": args.limit},
        "featurize": {"workers": args.workers},     # conformers: the pipeline's ETKDGv3 + MMFF defaults
        "model": {"n_atom_basis": args.features, "n_interactions": args.interactions, "n_rbf": 20, "cutoff": 5.0},
        "pretrain": {"enabled": args.pretrain_epochs > 0, "epochs": max(args.pretrain_epochs, 1), "batch_size": 32},
        "finetune": {"targets": [target], "init": "pretrained" if args.pretrain_epochs > 0 else "scratch",
                     "split": "scaffold", "fractions": [0.8, 0.1, 0.1], "epochs": epochs,
                     "batch_size": 32, "lr": args.lr, "ensemble_size": args.ensemble, "patience": args.patience},
        # not run here; kept small so that `molgnn run --params` on this file stays cheap
        "generate": {"models": ["vae"], "n_samples": 16},
        "screen": {"rank_by": target},
    }


def run_pipeline(root: Path, raw_params: dict) -> dict:
    """ingest -> featurize -> [pretrain] -> finetune, as flows/pipeline.py chains them (no tracking)."""
    import torch

    from molgnn.config import load_params
    from molgnn.stages.common import RunContext
    from molgnn.stages.featurize import run_featurize
    from molgnn.stages.finetune import run_finetune
    from molgnn.stages.ingest import run_ingest
    from molgnn.stages.pretrain import run_pretrain

    root.mkdir(parents=True, exist_ok=True)
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw_params, sort_keys=False))
    params = load_params(params_path)          # through the typed loader, as `molgnn run` does
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    ctx = RunContext(params=params, root=root)
    res = {"ingest": run_ingest(ctx)}
    print(f"  ingest: {res['ingest'].metrics} ({res['ingest'].seconds:.0f} s)", flush=True)
    res["featurize"] = run_featurize(ctx, res["ingest"].path("molecules"))
    print(f"  featurize: {res['featurize'].metrics} ({res['featurize'].seconds:.0f} s)", flush=True)
    pretrained = None
    if params.pretrain.enabled and params.finetune.init == "pretrained":
        res["pretrain"] = run_pretrain(ctx, res["featurize"].path("structures"))
        pretrained = res["pretrain"].path("checkpoint")
        print(f"  pretrain: {res['pretrain'].metrics} ({res['pretrain'].seconds:.0f} s)", flush=True)
    res["finetune"] = run_finetune(ctx, res["ingest"].path("molecules"), res["featurize"].path("structures"),
                                   pretrained)
    print(f"  finetune: {res['finetune'].metrics} ({res['finetune'].seconds:.0f} s)", flush=True)
    return res


def run_chemprop(venv: Path, table: pd.DataFrame, target: str, work: Path, threads: int,
                 extra: list[str]) -> tuple[np.ndarray, float, float]:
    """Train on the table's train/val rows (its ``split`` column), predict its test rows.

    Returns (test predictions in the table's test order, train seconds, predict seconds), both wall-clock
    of the whole CLI command including its start-up."""
    cp = str(venv / "bin" / "chemprop")
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.csv"
    table[["smiles", target, "split"]].to_csv(data, index=False)
    test = table[table["split"] == "test"]
    test_csv = work / "test_smiles.csv"
    test[["smiles"]].to_csv(test_csv, index=False)   # SMILES only: the output's last column is the prediction
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = work / "model"
    t = time.perf_counter()
    with open(work / "train.log", "w") as log:
        subprocess.run([cp, "train", "-i", str(data), "-s", "smiles", "--target-columns", target,
                        "--splits-column", "split", "--task-type", "regression", "-o", str(out),
                        "--num-workers", "0", "--accelerator", "cpu", "--pytorch-seed", "0", *extra],
                       check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    train_s = time.perf_counter() - t
    best = sorted(out.rglob("best*.pt"))
    if len(best) != 1:
        raise RuntimeError(f"expected one best*.pt under {out}, found {best}")
    preds = work / "test_preds.csv"
    t = time.perf_counter()
    with open(work / "predict.log", "w") as log:
        subprocess.run([cp, "predict", "-i", str(test_csv), "-s", "smiles", "--model-paths", str(best[0]),
                        "-o", str(preds), "--num-workers", "0", "--accelerator", "cpu"],
                       check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    predict_s = time.perf_counter() - t
    p = pd.read_csv(preds)
    if len(p) != len(test) or p["smiles"].tolist() != test["smiles"].tolist():
        raise RuntimeError(f"chemprop predicted {len(p)} rows for {len(test)} test molecules, or reordered them")
    return p.iloc[:, -1].to_numpy(dtype=float), train_s, predict_s


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    import torch

    from molgnn.train.finetune import regression_metrics

    return regression_metrics(torch.tensor(np.array(y_true, dtype=np.float64)),
                              torch.tensor(np.array(y_pred, dtype=np.float64)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--limit", type=int, default=None, help="first N input rows per dataset (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", type=int, default=32, help="PaiNN n_atom_basis (the pipeline's default)")
    ap.add_argument("--interactions", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=0, help="0: no pretraining, fine-tune from scratch")
    ap.add_argument("--epochs", type=int, default=None,
                    help="fine-tuning epochs for every dataset (default: per dataset, see DATASETS)")
    ap.add_argument("--patience", type=int, default=10, help="early stopping on validation MAE")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ensemble", type=int, default=1, help="PaiNN ensemble members (chemprop trains 1 model)")
    ap.add_argument("--chemprop-epochs", type=int, default=None, help="default: chemprop's own (50)")
    ap.add_argument("--chemprop-venv", type=Path, default=REPO / ".bench" / "chemprop-venv")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both systems")
    ap.add_argument("--workers", type=int, default=2, help="conformer worker processes")
    ap.add_argument("--work-dir", type=Path, default=REPO / ".bench" / "moleculenet")
    ap.add_argument("--out", type=Path, default=RESULTS / "moleculenet_vs_chemprop.json")
    ap.add_argument("--merge", action="store_true",
                    help="keep the records of datasets not run now that --out already holds")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)   # more threads than free cores crawl on a shared machine
    version = subprocess.run([str(args.chemprop_venv / "bin" / "chemprop"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    if version != "chemprop 2.3.1":
        raise SystemExit(f"{args.chemprop_venv} has {version or 'no chemprop'}; "
                         f"pip install chemprop==2.3.1 into it")
    from molgnn.data import schema
    from molgnn.data.split_export import split_table

    context = provenance(command=command_line(argv))
    records: list[dict] = []
    if args.merge and args.out.exists():
        names = {DATASETS[d][2] for d in args.datasets}
        records = [r for r in json.loads(args.out.read_text()) if r.get("dataset") not in names]
    detail: dict[str, dict] = {}
    chemprop_extra = [] if args.chemprop_epochs is None else ["--epochs", str(args.chemprop_epochs)]
    t_all = time.perf_counter()

    for dataset in args.datasets:
        target, unit, name, default_epochs = DATASETS[dataset]
        epochs = args.epochs if args.epochs is not None else default_epochs
        root = args.work_dir / (dataset if args.limit is None else f"{dataset}-limit{args.limit}")
        print(f"{name}: molgnn pipeline in {root}", flush=True)
        res = run_pipeline(root, pipeline_params(dataset, target, epochs, args))
        ing, feat, fin = res["ingest"], res["featurize"], res["finetune"]
        pre = res.get("pretrain")

        table = split_table(fin.path("split"), ing.path("molecules"), [target])
        counts = {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")}
        rejects = pd.read_csv(ing.path("rejects"))
        structure_rejects = pd.read_csv(feat.path("structure_rejects"))
        n_rows = int(ing.metrics["n_input_rows"])
        n_unlabelled = int(fin.info["n_unlabelled_or_unstructured"]) - len(structure_rejects)
        # Every input row is accounted for: ingest rejects + conformer failures + unlabelled + split.
        assert len(rejects) + len(structure_rejects) + n_unlabelled + len(table) == n_rows, "rows lost"

        test = table[table["split"] == "test"].reset_index(drop=True)
        mg = pd.read_csv(fin.path("test_predictions"))
        mg = mg[mg["target"] == target].set_index(schema.MOL_ID).loc[test[schema.MOL_ID]]
        y_true = test[target].to_numpy(dtype=float)
        if not np.allclose(mg["y_true"].to_numpy(dtype=float), y_true):
            raise RuntimeError("molgnn's test labels differ from the exported split's")
        molgnn_pred = mg["y_pred"].to_numpy(dtype=float)

        print(f"{name}: chemprop on the same split {counts}", flush=True)
        cp_pred, cp_train_s, cp_predict_s = run_chemprop(args.chemprop_venv, table, target, root / "chemprop",
                                                         args.threads, chemprop_extra)
        pd.DataFrame({schema.MOL_ID: test[schema.MOL_ID], "smiles": test["smiles"], "y_true": y_true,
                      "molgnn": molgnn_pred, "chemprop": cp_pred}).to_csv(root / "test_predictions_both.csv", index=False)

        molgnn_train_s = fin.seconds + (pre.seconds if pre is not None else 0.0)
        histories = json.loads(fin.path("history").read_text())
        epochs_run = [len(h) for h in histories]
        best_epochs = [int(np.nanargmin([e.get("val_score", np.nan) for e in h])) + 1 for h in histories]
        molgnn_sys = (f"molgnn (PaiNN {args.features}x{args.interactions}, "
                      f"{args.ensemble} member{'s' if args.ensemble > 1 else ''}, "
                      f"{'pretrained' if pre is not None else 'from scratch'})")
        benchmark = f"MoleculeNet {name} ({target}, {unit}): scaffold split 80/10/10 (seed {args.seed}), test set"
        setup_m = (f"pipeline stages ingest -> featurize (ETKDGv3+MMFF) -> "
                   f"{'pretrain (' + str(args.pretrain_epochs) + ' epochs, own conformers) -> ' if pre else ''}"
                   f"finetune (batch 32, AdamW {args.lr:g}, plateau schedule, <= {epochs} epochs, patience "
                   f"{args.patience}; epochs run per member {epochs_run}, best {best_epochs}); params in "
                   f"{root.relative_to(REPO) if root.is_relative_to(REPO) else root}/params.yaml; "
                   f"test figures of the ensemble mean")
        setup_c = (f"`chemprop train --splits-column split --task-type regression --pytorch-seed 0"
                   f"{' ' + ' '.join(chemprop_extra) if chemprop_extra else ''}` (defaults: D-MPNN 300 hidden, "
                   f"depth 3, batch 64, {args.chemprop_epochs or 50} epochs, best-val checkpoint, 1 model) on the "
                   f"SMILES molgnn ingested, then `chemprop predict` on the test SMILES")
        same = "train/val/test identical for both systems: the molecules of molgnn's finetune split"

        def rec(system, metric, value, unit_, hib, **extra):
            records.append(record(benchmark, system, metric, value, unit_, hib, context, dataset=name, **extra))

        for system, pred, setup in ((molgnn_sys, molgnn_pred, setup_m), (CHEMPROP, cp_pred, setup_c)):
            m = score(y_true, pred)
            rec(system, "test RMSE", m["rmse"], unit, False, setup=setup)
            rec(system, "test MAE", m["mae"], unit, False)
            rec(system, "test R²", m["r2"], "", True)
            for s in ("train", "val", "test"):
                rec(system, f"{s} molecules", counts[s], "molecules", None, **({"note": same} if s == "train" else {}))
            rec(system, "input rows", n_rows, "rows", None)
            rec(system, "rows rejected by ingest", len(rejects), "rows", None,
                note="; ".join(f"{k}: {v}" for k, v in ing.info["rejects_by_reason"].items()) or "none")
            rec(system, "conformer failures (left out of both)", len(structure_rejects), "molecules", None,
                note="ETKDGv3+MMFF failed or timed out; not in the split of either system, so both are "
                     "scored on the same test molecules")
        rec(molgnn_sys, "conformer generation wall-clock", feat.seconds, "s", False,
            note="featurize stage (2D graphs + ETKDGv3/MMFF conformers, 2 worker processes); chemprop needs "
                 "none" + ("; stage cached: the time of the invocation that computed it" if feat.cached else ""))
        if pre is not None:
            rec(molgnn_sys, "pretraining wall-clock", pre.seconds, "s", False)
            rec(molgnn_sys, "fine-tuning wall-clock", fin.seconds, "s", False)
        rec(molgnn_sys, "training wall-clock", molgnn_train_s, "s", False,
            note="molgnn: the finetune stage (+ pretrain if run), in-process; chemprop: the whole "
                 "`chemprop train` command incl. start-up")
        rec(CHEMPROP, "training wall-clock", cp_train_s, "s", False,
            note="molgnn: the finetune stage (+ pretrain if run), in-process; chemprop: the whole "
                 "`chemprop train` command incl. start-up")
        rec(CHEMPROP, "test prediction wall-clock", cp_predict_s, "s", False)
        detail[dataset] = {"counts": counts, "input_rows": n_rows, "ingest_rejects": len(rejects),
                           "conformer_failures": len(structure_rejects), "unlabelled": n_unlabelled,
                           "seconds": {k: r.seconds for k, r in res.items()} | {"chemprop_train": cp_train_s,
                                                                               "chemprop_predict": cp_predict_s},
                           "molgnn": score(y_true, molgnn_pred), "chemprop": score(y_true, cp_pred),
                           "epochs_run": epochs_run, "best_epochs": best_epochs,
                           "cached_stages": [k for k, r in res.items() if r.cached],
                           "molgnn_history": histories}
        print(f"{name}: {json.dumps(detail[dataset])}", flush=True)
        write_records(args.out, records)   # after each dataset: a crash keeps the rest
        detail_path = args.out.parent / "detail" / f"{args.out.stem}_detail.json"
        detail_path.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(detail_path.read_text()) if args.merge and detail_path.exists() else {}
        detail_path.write_text(json.dumps({**old, **detail}, indent=1) + "\n")

    print(f"wrote {args.out} ({len(records)} records) in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
