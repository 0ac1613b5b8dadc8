"""Screening speed: ``molgnn screen LIBRARY`` with no other flag against ``chemprop predict`` (2.3.1).

One command, same machine, both sides (CPU; issue 12, item 3):

    flock /tmp/cpu.lock .venv/bin/python benchmarks/screen_speed.py [--n 20000] [--repeats 2]

Needs the default run (``make run``): ``runs/latest`` with its ``fast_tier`` folder (the 2D tier
beside the 3D PaiNN ensemble) and ``finetune/split.csv``, and chemprop 2.3.1 in its own venv
(``python3.12 -m venv .bench/chemprop-venv && .bench/chemprop-venv/bin/pip install chemprop==2.3.1``).

Steps: (1) chemprop is trained on the default run's train/val split (``chemprop train`` defaults,
``--chemprop-epochs``; reused from ``.bench/screen_speed`` when already trained on the same split:
its speed does not depend on its training) and scored on the same test split; (2) the first ``--n``
MOSES test SMILES are screened ``--repeats`` times, alternating ``molgnn screen lib.csv --out x.csv``
(the default: the 2D tier over every molecule, the 3D ensemble on the best and the most uncertain)
and ``chemprop predict``, each timed as the wall-clock of the whole command including start-up, so
that drift in machine load hits both alike. The best run of each is the figure; all runs are in the
note. (3) Both tiers' test accuracy is the default run's fast-tier stage metrics (the stage trains
and scores them; nothing is retrained here). Records: ``benchmarks/results/screen_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO, RESULTS, command_line, load_average, provenance, record, write_records

BENCH = REPO / ".bench" / "screen_speed"
MOSES_TEST = Path("/work/shared/datasets/moses/test.csv.gz")
TARGET = "gap"


def timed(cmd: list[str], log: Path, **kw) -> float:
    """Wall-clock of ``cmd`` (stdout + stderr to ``log``); raises with the log's tail when it fails."""
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + log.read_text()[-3000:])
    return seconds


def chemprop_model(args, run: Path, mols: pd.DataFrame, env: dict) -> tuple[Path, float | None, pd.DataFrame]:
    """chemprop trained on the run's split (reused when the split is unchanged); its best checkpoint,
    training seconds (None when reused) and the split table it was trained on."""
    split = pd.read_csv(run / "finetune" / "split.csv")
    ids = {s: split.loc[split["split"] == s, "mol_id"].tolist() for s in ("train", "val", "test")}
    order = ids["train"] + ids["val"] + ids["test"]
    data = pd.DataFrame({"smiles": mols.loc[order, "smiles"].to_numpy(), TARGET: mols.loc[order, TARGET].to_numpy(),
                         "split": [s for s in ("train", "val", "test") for _ in ids[s]]})
    path, save = BENCH / "chemprop_data.csv", BENCH / f"chemprop_model_{args.chemprop_epochs}ep"
    best = sorted(save.rglob("best*.pt"))
    if best and path.is_file() and pd.read_csv(path).equals(data):
        return best[0], None, data
    data.to_csv(path, index=False)
    cp = str(args.chemprop_venv / "bin" / "chemprop")
    seconds = timed([cp, "train", "-i", str(path), "-s", "smiles", "--target-columns", TARGET, "-o", str(save),
                     "--epochs", str(args.chemprop_epochs), "--splits-column", "split", "--num-workers", "0",
                     "--task-type", "regression"], BENCH / "chemprop_train.log", env=env)
    return sorted(save.rglob("best*.pt"))[0], seconds, data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chemprop-venv", type=Path, default=REPO / ".bench" / "chemprop-venv")
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "latest", help="the default run's folder")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chemprop-epochs", type=int, default=50, help="chemprop train's default")
    ap.add_argument("--out", type=Path, default=RESULTS / "screen_speed.json")
    args = ap.parse_args(argv)

    run = args.run.resolve()
    stage = json.loads((run / "fast_tier" / "stage.json").read_text())
    if not (run / "fast_tier" / "model_2d.pt").is_file():
        raise SystemExit(f"{run} has no fast_tier/model_2d.pt: run `make run` with the default params first")
    BENCH.mkdir(parents=True, exist_ok=True)
    context = provenance(command=command_line(argv))
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 2)}
    records: list[dict] = []

    def rec(benchmark, system, metric, value, unit, hib, **extra):
        records.append(record(benchmark, system, metric, value, unit, hib, context, **extra))
        write_records(args.out, records)   # after every figure: a crash keeps the rest

    # ------------------------------------------------------------------ chemprop on the run's split
    mols = pd.read_parquet(run / "ingest" / "molecules.parquet").set_index("mol_id")
    best, cp_train_s, data = chemprop_model(args, run, mols, env)
    cp = str(args.chemprop_venv / "bin" / "chemprop")
    test = data[data["split"] == "test"]
    test[["smiles", TARGET]].to_csv(BENCH / "test_split.csv", index=False)
    timed([cp, "predict", "-i", str(BENCH / "test_split.csv"), "-s", "smiles", "--model-paths", str(best),
           "-o", str(BENCH / "test_chemprop.csv"), "--num-workers", "0"], BENCH / "chemprop_test.log", env=env)
    pred = pd.read_csv(BENCH / "test_chemprop.csv")[TARGET].to_numpy(dtype=float)
    y = test[TARGET].to_numpy(dtype=float)

    # ------------------------------------------------------------------ both tiers' accuracy (the stage's)
    m, info = stage["metrics"], stage["info"]
    acc = (f"default run ({info['n_train']:,} train / {info['n_val']:,} val / {info['n_test']:,} test, scaffold), "
           f"{TARGET} test accuracy")
    kept = info["chosen"]
    tiers = {"molgnn 3D ensemble (PaiNN)": ("3d", "runs/latest/fast_tier stage metrics (the fine-tuning stage's "
                                                  "ensemble on its test split)"),
             "molgnn 2D tier, labels only": ("2d_labels", f"fast-tier stage; {'kept' if kept == 'labels' else 'not kept'}"
                                                          " (validation score)"),
             "molgnn 2D tier, distilled": ("2d_distilled", f"fast-tier stage, teacher weight {info['teacher_weight']}; "
                                                           f"{'kept' if kept == 'distilled' else 'not kept'}")}
    for system, (tier, setup) in tiers.items():
        for metric in ("mae", "rmse", "r2"):
            value = m.get(f"tier{tier}_test_{metric}_{TARGET}")
            if value is not None:
                rec(acc, system, f"test {metric.upper().replace('R2', 'R²')}", value, "" if metric == "r2" else "eV",
                    metric == "r2", setup=setup, run=run.name)
    cp_setup = (f"`chemprop train` defaults, {args.chemprop_epochs} epochs, same train/val split, best-val checkpoint"
                + (f"; trained in {cp_train_s:.0f} s" if cp_train_s is not None else "; model reused from .bench"))
    rec(acc, "chemprop 2.3.1", "test MAE", float(np.mean(np.abs(pred - y))), "eV", False, setup=cp_setup)
    rec(acc, "chemprop 2.3.1", "test RMSE", float(np.sqrt(np.mean((pred - y) ** 2))), "eV", False)
    rec(acc, "chemprop 2.3.1", "test R²", float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)), "", True)

    # ------------------------------------------------------------------ speed, interleaved
    lib = BENCH / f"moses_test_{args.n}.csv"
    pd.read_csv(MOSES_TEST, nrows=args.n).rename(columns={"SMILES": "smiles"}).to_csv(lib, index=False)
    molgnn = [str(REPO / ".venv" / "bin" / "molgnn"), "screen", str(lib), "--out", str(BENCH / "lib_molgnn.csv")]
    chemprop = [cp, "predict", "-i", str(lib), "-s", "smiles", "--model-paths", str(best), "-o",
                str(BENCH / "lib_chemprop.csv"), "--num-workers", "0"]
    load_start = load_average()
    times: dict[str, list[float]] = {"molgnn screen (default)": [], "chemprop 2.3.1": []}
    for i in range(args.repeats):
        times["molgnn screen (default)"].append(timed(molgnn, BENCH / "lib_molgnn.log", cwd=REPO, env=env))
        times["chemprop 2.3.1"].append(timed(chemprop, BENCH / "lib_chemprop.log", env=env))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    ranked = pd.read_csv(BENCH / "lib_molgnn.csv", usecols=["tier"])
    n_rejected = len(pd.read_csv(BENCH / "lib_molgnn.rejects.csv"))
    n_chemprop = len(pd.read_csv(BENCH / "lib_chemprop.csv"))
    if len(ranked) + n_rejected != args.n:
        raise SystemExit(f"molgnn lost rows: {len(ranked)} ranked + {n_rejected} rejected != {args.n}")
    log_tail = [ln for ln in (BENCH / "lib_molgnn.log").read_text().splitlines() if "two-tier" in ln]
    note = (f"{args.repeats} interleaved runs each (molgnn first), best shown; all: "
            + "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vals)} s" for k, vals in times.items())
            + f"; load average (1/5/15 min) {load_start} at start, {load_average()} at end; molgnn ranked "
            f"{len(ranked):,} ({(ranked['tier'] == '3d').sum()} re-predicted by the 3D ensemble) and rejected "
            f"{n_rejected:,} (each with its reason); chemprop predicted {n_chemprop:,} rows")
    speed = f"screen {args.n:,} MOSES test SMILES, wall-clock incl. start-up (interleaved)"
    setups = {"molgnn screen (default)": "`molgnn screen lib.csv --out x.csv` on runs/latest (its fast_tier folder): "
                                         "standardize + dedupe + featurize + 2D GINE ensemble + domain check over "
                                         "all, then ETKDG+MMFF conformers and the PaiNN ensemble on the top-k and "
                                         "uncertain-k (params.yaml screen.top_k/uncertain_k defaults)"
                                         + (f"; {log_tail[-1].strip()}" if log_tail else ""),
              "chemprop 2.3.1": "`chemprop predict -i lib.csv -s smiles --model-paths best.pt --num-workers 0`, "
                                f"one D-MPNN, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"}
    for system, vals in times.items():
        rec(speed, system, "wall-clock", min(vals), "s", False, setup=setups[system], note=note)
        rec(speed, system, "throughput", args.n / min(vals), "molecules/s", True)
    ratio = min(times["chemprop 2.3.1"]) / min(times["molgnn screen (default)"])
    rec(speed, "molgnn screen (default)", "speed-up over chemprop predict", ratio, "x", True,
        note="goal (issue 12, item 3): >= 1.5x")
    print(f"wrote {args.out}: molgnn {args.n / min(times['molgnn screen (default)']):.0f} molecules/s, chemprop "
          f"{args.n / min(times['chemprop 2.3.1']):.0f} molecules/s ({ratio:.2f}x); {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
