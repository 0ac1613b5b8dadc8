"""molgnn's default recipe against chemprop 2.3.1 on drug-like MoleculeNet sets, identical scaffold splits.

    python3.12 -m venv .bench/chemprop-venv && .bench/chemprop-venv/bin/pip install chemprop==2.3.1
    flock /tmp/cpu.lock .venv/bin/python benchmarks/assay_vs_chemprop.py \\
        [--datasets freesolv esol bace bbbp lipophilicity toxcast] [--seeds 0 1 2] \\
        [--systems molgnn scratch chemprop] [--force]

For each dataset and seed, three systems on one split:

* ``molgnn``: the default recipe, i.e. ``params.yaml`` of this checkout with only ``seed``,
  ``data.sources``, ``data.target_columns``, ``finetune.targets`` and ``screen.rank_by`` set (as
  ``molgnn run --set`` would), through the pipeline's own stages in the flow's order: ingest ->
  featurize (ETKDGv3 + MMFF conformers) -> pretrain (on the dataset's own conformers, labels unused,
  as the flow does) -> finetune (scaffold split of that seed, ensemble). The DVC, generate, filter,
  screen and report stages and MLflow tracking are not run: they do not touch the property model.
* ``molgnn (scratch)``: the same with ``finetune.init=scratch`` (no pretraining).
* ``chemprop 2.3.1``: ``chemprop train`` with its defaults on the same molecules (the ingested, i.e.
  standardized, SMILES), given molgnn's split as explicit row indices (``--splits-file``), task type
  regression or classification, ``--pytorch-seed <seed>``, the test molecules withheld (chemprop's own
  test scoring fails on a task without test labels); then ``chemprop predict`` on the test SMILES.

The split is molgnn's: ``molgnn.stages.finetune.finetune_split`` (what the finetune stage saves as
split.csv; checked equal to it) exported by ``molgnn.data.split_export``. Both systems' test
predictions are scored by the same functions on the same molecules (regression: RMSE, MAE, R^2;
classification: ROC-AUC and PR-AUC per task, averaged over the tasks whose test labels hold both
classes). Rows that ingest rejects and molecules without a conformer are in neither system's split.

Records (one per figure) are merged into ``benchmarks/results/assay_vs_chemprop.json`` after every
system, keyed by dataset, system, seed and metric: partial runs accumulate and a crash keeps finished
figures. A (dataset, seed, system) already recorded at the current commit is skipped unless
``--force``. Stages cache in ``<work-dir>/<dataset>/runs/store`` on their content key (a cached stage
reports the seconds of the run that computed it). Per-run detail (epochs, per-task scores, seconds):
``benchmarks/results/detail/assay_vs_chemprop_detail.json``. Smoke test:
``--datasets freesolv --seeds 0 --limit 80 --set finetune.epochs=1 --chemprop-epochs 3 --out /tmp/s.json``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import (REPO, RESULTS, command_line, git, merge_records, provenance, read_records, record,
                    write_records)

BENCHMARK = "assay-vs-chemprop"
CHEMPROP = "chemprop 2.3.1"
SYSTEMS = {"molgnn": "molgnn", "scratch": "molgnn (scratch)", "chemprop": CHEMPROP}
KEY = ("dataset", "system", "seed", "metric")
FIELD_ORDER = ("benchmark", "dataset", "system", "seed", "metric", "value", "unit", "higher_is_better")


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str                 # a named source of molgnn.data.sources, or a file
    kind: str                   # regression | classification
    unit: str
    targets: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return "test RMSE" if self.kind == "regression" else "test ROC-AUC"


def moleculenet(file: str) -> Path:
    from molgnn.data.sources import shared_datasets_dir

    return shared_datasets_dir() / "moleculenet" / file


def toxcast() -> Dataset:
    path = moleculenet("toxcast.csv.gz")
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
    if header[0] != "smiles":
        raise SystemExit(f"{path}: expected a first column 'smiles', got {header[0]!r}")
    return Dataset("ToxCast", str(path), "classification", "", tuple(header[1:]))


# smallest first: the order a partial run on a small machine gets through
DATASETS = {
    "freesolv": lambda: Dataset("FreeSolv", "freesolv", "regression", "kcal/mol", ("hydration_free_energy",)),
    "esol": lambda: Dataset("ESOL", "esol", "regression", "log(mol/L)", ("log_solubility",)),
    "bace": lambda: Dataset("BACE", "bace", "classification", "", ("bace_active",)),
    "bbbp": lambda: Dataset("BBBP", "bbbp", "classification", "", ("bbb_permeable",)),
    "lipophilicity": lambda: Dataset("Lipophilicity", "lipophilicity", "regression", "logD", ("logd",)),
    "toxcast": toxcast,
}


# ------------------------------------------------------------------------------------ molgnn
def recipe(ds: Dataset, seed: int, scratch: bool, extra: list[str]):
    """params.yaml with only the seed, data source and targets changed (+ init=scratch)."""
    from molgnn.config import load_params

    sets = [f"seed={seed}", f"data.sources={json.dumps([ds.source])}",
            f"data.target_columns={json.dumps(list(ds.targets))}", f"finetune.targets={json.dumps(list(ds.targets))}",
            f"screen.rank_by={json.dumps(ds.targets[0])}", *(["finetune.init=scratch"] if scratch else []), *extra]
    return load_params(REPO / "params.yaml", overrides=sets)


def run_stages(root: Path, params, *, until_split: bool = False) -> dict:
    """ingest -> featurize -> [pretrain] -> finetune, as flows/pipeline.py chains them (no tracking)."""
    import torch

    from molgnn.config import check_runnable
    from molgnn.stages.common import RunContext
    from molgnn.stages.featurize import run_featurize
    from molgnn.stages.finetune import run_finetune
    from molgnn.stages.ingest import run_ingest
    from molgnn.stages.pretrain import run_pretrain

    root.mkdir(parents=True, exist_ok=True)
    check_runnable(params, root)
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    ctx = RunContext(params=params, root=root)
    res = {"ingest": run_ingest(ctx)}
    res["featurize"] = run_featurize(ctx, res["ingest"].path("molecules"))
    for k in ("ingest", "featurize"):
        print(f"    {k}: {res[k].seconds:.0f} s{' (cached)' if res[k].cached else ''}", flush=True)
    if until_split:
        return res
    pretrained = None
    if params.pretrain.enabled and params.finetune.init == "pretrained":
        res["pretrain"] = run_pretrain(ctx, res["featurize"].path("structures"))
        pretrained = res["pretrain"].path("checkpoint")
        print(f"    pretrain: {res['pretrain'].seconds:.0f} s", flush=True)
    res["finetune"] = run_finetune(ctx, res["ingest"].path("molecules"), res["featurize"].path("structures"),
                                   pretrained)
    print(f"    finetune: {res['finetune'].seconds:.0f} s", flush=True)
    return res


def molgnn_predictions(fin, test: pd.DataFrame, targets: tuple[str, ...]) -> pd.DataFrame:
    """Ensemble-mean test predictions (probabilities for classification), rows in ``test``'s order."""
    from molgnn.data import schema

    long = pd.read_csv(fin.path("test_predictions"), dtype={schema.MOL_ID: str})
    wide = long.pivot(index=schema.MOL_ID, columns="target", values="y_pred").loc[test[schema.MOL_ID], list(targets)]
    truth = long.pivot(index=schema.MOL_ID, columns="target", values="y_true").loc[test[schema.MOL_ID], list(targets)]
    if not np.allclose(truth.to_numpy(float), test[list(targets)].to_numpy(float), equal_nan=True):
        raise RuntimeError("molgnn's test labels differ from the exported split's")
    return wide.reset_index(drop=True)


# ------------------------------------------------------------------------------------ chemprop
def run_chemprop(venv: Path, table: pd.DataFrame, ds: Dataset, seed: int, work: Path,
                 extra: list[str]) -> tuple[pd.DataFrame, dict]:
    """Train on the table's train/val rows by explicit indices, predict its test rows."""
    from molgnn.data.split_export import write_peer_inputs

    cp = str(venv / "bin" / "chemprop")

    def call(argv: list[str], log_path: Path) -> None:
        with open(log_path, "w") as log:
            rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc:
            tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
            raise RuntimeError(f"chemprop {argv[1]} exited {rc} ({log_path}): {tail}")

    # train and val only: chemprop's own test scoring crashes on a task without test labels (ToxCast);
    # the test molecules are predicted by `chemprop predict` below and scored like molgnn's
    data, splits = write_peer_inputs(table, ds.targets, work, parts=("train", "val"))
    test = table[table["split"] == "test"]
    test_csv = work / "test_smiles.csv"
    test[["smiles"]].to_csv(test_csv, index=False)
    out = work / "model"
    t = time.perf_counter()
    call([cp, "train", "-i", str(data), "-s", "smiles", "--target-columns", *ds.targets,
          "--splits-file", str(splits), "--task-type", ds.kind, "-o", str(out),
          "--num-workers", "0", "--accelerator", "cpu", "--pytorch-seed", str(seed), *extra], work / "train.log")
    train_s = time.perf_counter() - t
    best = sorted(out.rglob("best.pt")) or sorted(out.rglob("best*.pt"))
    if len(best) != 1:
        raise RuntimeError(f"expected one best.pt under {out}, found {best}")
    preds = work / "test_preds.csv"
    t = time.perf_counter()
    call([cp, "predict", "-i", str(test_csv), "-s", "smiles", "--model-paths", str(best[0]),
          "-o", str(preds), "--num-workers", "0", "--accelerator", "cpu"], work / "predict.log")
    predict_s = time.perf_counter() - t
    p = pd.read_csv(preds)
    if len(p) != len(test) or p["smiles"].tolist() != test["smiles"].tolist():
        raise RuntimeError(f"chemprop predicted {len(p)} rows for {len(test)} test molecules, or reordered them")
    cols = list(ds.targets) if set(ds.targets) <= set(p.columns) else list(p.columns[-len(ds.targets):])
    ckpts = [c.name for c in out.rglob("best-*.ckpt")]
    return (p[cols].set_axis(list(ds.targets), axis=1).reset_index(drop=True),
            {"train_s": train_s, "predict_s": predict_s, "best_checkpoint": ckpts})


# ------------------------------------------------------------------------------------ scoring
def score(ds: Dataset, test: pd.DataFrame, pred: pd.DataFrame) -> tuple[dict[str, float], dict]:
    """The dataset's metrics of ``pred`` on ``test`` (same rows), by molgnn's metric functions."""
    import torch

    from molgnn.train.finetune import regression_metrics
    from molgnn.train.tasks import classification_metrics

    per_task = {}
    for t in ds.targets:
        y = torch.tensor(test[t].to_numpy(dtype=np.float64))
        p = torch.tensor(pred[t].to_numpy(dtype=np.float64))
        if torch.isnan(p[~torch.isnan(y)]).any():
            raise RuntimeError(f"{t}: NaN predictions for labelled test molecules")
        per_task[t] = (regression_metrics(y, p) if ds.kind == "regression" else classification_metrics(y, p))
    if ds.kind == "regression":
        (m,) = per_task.values()
        return {"test RMSE": m["rmse"], "test MAE": m["mae"], "test R2": m["r2"]}, per_task
    auc = np.array([m["roc_auc"] for m in per_task.values()])
    prc = np.array([m["pr_auc"] for m in per_task.values()])
    scored = np.isfinite(auc)
    if not scored.any():
        raise RuntimeError("no task has both classes among the test labels: ROC-AUC undefined")
    return {"test ROC-AUC": float(auc[scored].mean()), "test PR-AUC": float(prc[scored].mean()),
            "tasks scored": int(scored.sum())}, per_task


UNITS = {"test ROC-AUC": "", "test PR-AUC": "", "test R2": "", "tasks scored": "tasks"}
HIGHER = {"test RMSE": False, "test MAE": False, "test R2": True, "test ROC-AUC": True, "test PR-AUC": True,
          "tasks scored": None}


# ------------------------------------------------------------------------------------ main
def describe_recipe(params, scratch: bool, sets: list[str]) -> str:
    m, pre, ft = params.model, params.pretrain, params.finetune
    pre_text = ("no pretraining" if scratch else
                f"pretrain {pre.epochs} epochs (denoising {pre.noise_std} A + masked types"
                f"{' + EHT orbitals' if pre.eht_weight > 0 else ''}, batch {pre.batch_size}, lr {pre.lr:g}) on all of "
                f"the dataset's conformers (train, val and test; labels unused), as the flow does")
    return (f"default recipe: params.yaml with only seed/data/targets set{' + finetune.init=scratch' if scratch else ''}; "
            f"ETKDGv3+MMFF conformers; PaiNN {m.n_atom_basis}x{m.n_interactions} (cutoff {m.cutoff} A); {pre_text}; "
            f"finetune <= {ft.epochs} epochs x {ft.ensemble_size}-member ensemble (batch {ft.batch_size}, AdamW "
            f"{ft.lr:g}, {ft.scheduler}, patience {ft.patience}, best validation epoch), test figures of the "
            f"ensemble mean; torch threads: default" + (f"; NOT the default: --set {' '.join(sets)}" if sets else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--force", action="store_true", help="rerun figures already recorded at this commit")
    ap.add_argument("--limit", type=int, default=None, help="first N input rows (smoke test)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params override for molgnn (smoke tests; not the default recipe)")
    ap.add_argument("--chemprop-epochs", type=int, default=None, help="default: chemprop's own (50)")
    ap.add_argument("--chemprop-venv", type=Path, default=REPO / ".bench" / "chemprop-venv")
    ap.add_argument("--work-dir", type=Path, default=REPO / ".bench" / "assay")
    ap.add_argument("--out", type=Path, default=RESULTS / "assay_vs_chemprop.json")
    args = ap.parse_args(argv)
    if args.chemprop_epochs is not None and args.chemprop_epochs <= 2:
        ap.error("--chemprop-epochs must exceed chemprop's 2 warm-up epochs")

    from molgnn.data.split_export import split_table
    from molgnn.stages.finetune import finetune_split

    version = subprocess.run([str(args.chemprop_venv / "bin" / "chemprop"), "--version"], capture_output=True,
                             text=True).stdout.strip() if "chemprop" in args.systems else CHEMPROP
    if version != CHEMPROP:
        raise SystemExit(f"{args.chemprop_venv} has {version or 'no chemprop'}; pip install chemprop==2.3.1 into it")
    context = provenance(command=command_line(argv), torch_threads=True)
    dirty = git("diff", "--name-only", "HEAD", "--", "molgnn", "params.yaml", "benchmarks", "flows")
    dirty_note = "working tree differed from the commit in: " + ", ".join(dirty.splitlines()) if dirty else None
    extra = list(args.sets) + ([f"data.limit={args.limit}"] if args.limit else [])
    cp_extra = [] if args.chemprop_epochs is None else ["--epochs", str(args.chemprop_epochs)]
    detail_path = args.out.parent / "detail" / f"{args.out.stem}_detail.json"
    failures = 0

    def done(ds: Dataset, seed: int, system: str) -> bool:
        return any(r.get("dataset") == ds.name and r.get("seed") == seed and r.get("system") == system
                   and r.get("metric") == ds.metric and r.get("commit") == context["commit"]
                   for r in read_records(args.out))

    def save(ds: Dataset, seed: int, system: str, figures: list[tuple], detail: dict) -> None:
        recs = []
        for metric, value, unit, hib, *more in figures:
            r = record(BENCHMARK, system, metric, value, unit, hib, context, dataset=ds.name, seed=seed,
                       **(more[0] if more else {}), **({"worktree": dirty_note} if dirty_note else {}))
            recs.append({k: r[k] for k in FIELD_ORDER} | {k: v for k, v in r.items() if k not in FIELD_ORDER})
        if not any(f[0] == "run failed" for f in figures):   # a success clears an earlier failure's record
            kept = [r for r in read_records(args.out) if not (r.get("dataset") == ds.name and r.get("seed") == seed
                                                               and r.get("system") == system
                                                               and r.get("metric") == "run failed")]
            write_records(args.out, kept)
        merge_records(args.out, recs, KEY)
        old = json.loads(detail_path.read_text()) if detail_path.exists() else {}
        detail_path.parent.mkdir(parents=True, exist_ok=True)
        detail_path.write_text(json.dumps({**old, f"{ds.name}/seed{seed}/{system}": detail}, indent=1) + "\n")

    for key in args.datasets:
        ds = DATASETS[key]()
        root = args.work_dir / (ds.name if args.limit is None else f"{ds.name}-limit{args.limit}")
        for seed in args.seeds:
            todo = [s for s in args.systems if args.force or not done(ds, seed, SYSTEMS[s])]
            if not todo:
                print(f"{ds.name} seed {seed}: recorded at this commit; skipped (--force reruns)", flush=True)
                continue
            print(f"{ds.name} seed {seed}: {todo}", flush=True)
            base = run_stages(root, recipe(ds, seed, False, extra), until_split=True)
            ing, feat = base["ingest"], base["featurize"]
            molecules = pd.read_parquet(ing.path("molecules"))
            structures = pd.read_parquet(feat.path("structures"), columns=["mol_id"])
            params = recipe(ds, seed, False, extra)
            _, split, _ = finetune_split(molecules, structures, params.finetune, seed)
            work = root / f"seed{seed}"
            work.mkdir(parents=True, exist_ok=True)
            split.to_csv(work / "split.csv", index=False)
            table = split_table(work / "split.csv", ing.path("molecules"), ds.targets)
            test = table[table["split"] == "test"].reset_index(drop=True)
            counts = {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")}
            rejects = len(pd.read_csv(ing.path("rejects")))
            conformer_failures = len(pd.read_csv(feat.path("structure_rejects")))
            common_figures = [(f"{s} molecules", counts[s], "molecules", None) for s in ("train", "val", "test")]
            data_note = (f"{int(ing.metrics['n_input_rows'])} input rows, {rejects} rejected by ingest, "
                         f"{conformer_failures} without a conformer: in neither system's split")

            for system_key in todo:
                system = SYSTEMS[system_key]
                print(f"  {system}", flush=True)
                try:
                    if system_key == "chemprop":
                        pred, info = run_chemprop(args.chemprop_venv, table, ds, seed, work / "chemprop", cp_extra)
                        seconds = {"train": info["train_s"], "predict": info["predict_s"]}
                        timing = [("training wall-clock", info["train_s"], "s", False,
                                   {"note": "the whole `chemprop train` command incl. start-up and featurization"}),
                                  ("test prediction wall-clock", info["predict_s"], "s", False),
                                  ("total wall-clock", info["train_s"] + info["predict_s"], "s", False,
                                   {"note": "train + predict commands; chemprop needs no conformers"})]
                        setup = (f"`chemprop train` defaults (D-MPNN, 50 epochs unless --chemprop-epochs, "
                                 f"best-validation checkpoint), 1 model, --task-type {ds.kind}, --pytorch-seed "
                                 f"{seed}, molgnn's train/val split as --splits-file indices (test molecules "
                                 f"withheld), ingested SMILES; `chemprop predict` on the test SMILES")
                        extra_detail = info
                    else:
                        scratch = system_key == "scratch"
                        params = recipe(ds, seed, scratch, extra)
                        res = run_stages(root, params)
                        fin = res["finetune"]
                        saved = pd.read_csv(fin.path("split"), dtype={"mol_id": str})
                        if not saved.fillna("").equals(split.astype({"mol_id": str}).fillna("")):
                            raise RuntimeError("the finetune stage's split differs from finetune_split's")
                        types = fin.info["task_types"]
                        if set(types.values()) != {ds.kind}:
                            raise RuntimeError(f"the default recipe typed the targets {set(types.values())}, "
                                               f"expected {ds.kind}")
                        pred = molgnn_predictions(fin, test, ds.targets)
                        pre = res.get("pretrain")
                        seconds = {k: r.seconds for k, r in res.items()}
                        total = sum(seconds.values())
                        cached = [k for k, r in res.items() if r.cached]
                        cached_note = (f"; stages {cached} were cached: the seconds of the run that computed them"
                                       if cached else "")
                        timing = [("conformer generation wall-clock", feat.seconds, "s", False,
                                   {"note": "featurize stage (2D graphs + ETKDGv3/MMFF conformers, all cores); "
                                            "shared by molgnn and molgnn (scratch) of one seed"}),
                                  *([("pretraining wall-clock", pre.seconds, "s", False)] if pre is not None else []),
                                  ("fine-tuning wall-clock", fin.seconds, "s", False,
                                   {"note": "finetune stage: ensemble training + test predictions, calibration, "
                                            "applicability domain"}),
                                  ("total wall-clock", total, "s", False,
                                   {"note": "ingest + featurize + [pretrain] + finetune" + cached_note})]
                        setup = describe_recipe(params, scratch, extra)
                        histories = json.loads(fin.path("history").read_text())
                        extra_detail = {"epochs_run": [len(h) for h in histories],
                                        "best_epochs": [int(np.nanargmin([e.get("val_score", np.nan) for e in h])) + 1
                                                        for h in histories],
                                        "stage_metrics": {k: v for k, v in fin.metrics.items()
                                                          if k.startswith("test_") and k.endswith("_avg")
                                                          or len(ds.targets) == 1},
                                        "cached_stages": cached,
                                        **({"pretrain_metrics": pre.metrics} if pre is not None else {})}
                    metrics, per_task = score(ds, test, pred)
                except Exception as exc:  # noqa: BLE001 - one system's failure is recorded, the rest go on
                    failures += 1
                    msg = f"{type(exc).__name__}: {exc}".strip()[:2000]
                    traceback.print_exc()
                    print(f"  {system} FAILED: {msg}", flush=True)
                    save(ds, seed, system, [("run failed", 1, "", None, {"note": msg})],
                         {"error": msg, "counts": counts})
                    continue
                figures = [(m, v, UNITS.get(m, ds.unit), HIGHER[m], {"setup": setup} if m == ds.metric else {})
                           for m, v in metrics.items()] + timing + common_figures
                figures[0][4]["note"] = data_note
                save(ds, seed, system, figures,
                     {"metrics": metrics, "counts": counts, "seconds": seconds, "input_rows":
                      int(ing.metrics["n_input_rows"]), "ingest_rejects": rejects,
                      "conformer_failures": conformer_failures,
                      "per_task": per_task if len(per_task) > 1 else None, **extra_detail})
                print(f"  {system}: {json.dumps(metrics)}; seconds {json.dumps(seconds)}", flush=True)
    print(f"records in {args.out}; {failures} system run(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    raise SystemExit(main())
