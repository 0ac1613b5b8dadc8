"""Screening speed and accuracy: molgnn's 2D tier (and two-tier screen) against chemprop 2.3.1.

One command, same machine, both sides (CPU):

    .venv/bin/python benchmarks/screen_speed.py [--chemprop-venv .bench/chemprop-venv] [--n 20000]

Needs the outputs of ``make run`` (``data/molecules/molecules.parquet``, ``data/features/structures.parquet``,
``runs/latest/finetune/{member_*.pt,split.csv,test_predictions.csv}``: the 3D PaiNN ensemble and its split),
and chemprop 2.3.1 in its own venv (``python3.12 -m venv .bench/chemprop-venv &&
.bench/chemprop-venv/bin/pip install chemprop==2.3.1``; not molgnn's venv: it pins its own stack).

Steps: (1) the 3D ensemble predicts the training molecules (the teacher); (2) the 2D tier (3 GINE
members) is distilled on the train split (targets 0.5 * teacher + 0.5 * label), selected on val;
(3) chemprop is trained on the same train/val split for ``--chemprop-epochs``; (4) both predict the
test split (accuracy) and (5) the first ``--n`` MOSES test SMILES, timed as wall-clock of the whole
command including start-up: ``chemprop predict`` and ``molgnn screen --fast-tier`` (2D only, then
two-tier with 3D re-prediction of the top 50 + 50 most uncertain). Records go to
``benchmarks/results/screen_speed.json``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO, RESULTS, command_line, load_average, provenance, record, write_records

BENCH = REPO / ".bench" / "screen_speed"
MOSES_TEST = Path("/work/shared/datasets/moses/test.csv.gz")


def run(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chemprop-venv", type=Path, default=REPO / ".bench" / "chemprop-venv")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--chemprop-epochs", type=int, default=20)
    ap.add_argument("--epochs-2d", type=int, default=30)
    ap.add_argument("--members-2d", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--uncertain-k", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS / "screen_speed.json")
    ap.add_argument("--skip-chemprop", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="reuse the 2D model and chemprop model of an earlier full run (.bench/screen_speed) and "
                         "time only the library screens, alternating molgnn and chemprop --repeats times")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.speed_only:
        return speed_only(args, argv)

    import torch

    from molgnn.screen.fast_tier import distill_2d
    from molgnn.screen.predict import predict_ensemble
    from molgnn.train.checkpoints import load_checkpoint

    torch.set_num_threads(1)   # 2 threads crawl when the 2 cores are shared (OpenMP oversubscription)
    BENCH.mkdir(parents=True, exist_ok=True)
    context = provenance(command=command_line(argv))
    records: list[dict] = []

    def rec(benchmark, system, metric, value, unit, hib, **extra):
        records.append(record(benchmark, system, metric, value, unit, hib, context, **extra))
        write_records(args.out, records)   # after every figure: a crash keeps the rest

    # ------------------------------------------------------------------ data and the 3D teacher
    mols = pd.read_parquet(REPO / "data/molecules/molecules.parquet").set_index("mol_id")
    split = pd.read_csv(REPO / "runs/latest/finetune/split.csv")
    ids = {s: split.loc[split["split"] == s, "mol_id"].tolist() for s in ("train", "val", "test")}
    members = sorted((REPO / "runs/latest/finetune").glob("member_*.pt"))
    ckpts = [load_checkpoint(m) for m in members]
    structs = pd.read_parquet(REPO / "data/features/structures.parquet").set_index("mol_id")
    t = time.perf_counter()
    teacher = predict_ensemble(ckpts, structs.loc[ids["train"]].reset_index())
    print(f"teacher predictions on {len(teacher)} training molecules: {time.perf_counter() - t:.1f} s", flush=True)
    y = lambda s: mols.loc[ids[s], "gap"].to_numpy()[:, None]

    # ------------------------------------------------------------------ 2D tier (distilled)
    model_path = BENCH / "model_2d.pt"
    t = time.perf_counter()
    ckpt = distill_2d(mols.loc[ids["train"], "smiles"].tolist(), y("train"), teacher["gap_mean"].to_numpy()[:, None],
                      ["gap"], val_smiles=mols.loc[ids["val"], "smiles"].tolist(), val_labels=y("val"),
                      teacher_weight=0.5, members=args.members_2d, epochs=args.epochs_2d)
    train_2d_s = time.perf_counter() - t
    torch.save(ckpt, model_path)
    print(f"2D tier trained in {train_2d_s:.1f} s", flush=True)

    test_csv = BENCH / "test_split.csv"
    pd.DataFrame({"smiles": mols.loc[ids["test"], "smiles"], "gap": mols.loc[ids["test"], "gap"]}).to_csv(test_csv, index=False)
    molgnn = str(REPO / ".venv/bin/molgnn")
    run([molgnn, "screen", str(test_csv), "--out", str(BENCH / "test_2d.csv"), "--fast-tier", str(model_path),
         "--top-k", "0", "--uncertain-k", "0", "--workers", "2"], cwd=REPO)
    p2 = pd.read_csv(BENCH / "test_2d.csv")          # rows of test_csv, i.e. of ids["test"]
    test_ids = np.asarray(ids["test"], dtype=object)[p2["row"].to_numpy()]
    p2["y_true"] = mols.loc[test_ids, "gap"].to_numpy()
    t3 = pd.read_csv(REPO / "runs/latest/finetune/test_predictions.csv").set_index("mol_id")
    p3_on_2d = t3.loc[test_ids, "y_pred"].to_numpy()
    print(f"2D tier ranked {len(p2)} of {len(ids['test'])} test molecules", flush=True)
    acc = "QM9 sample (2,000) gap, scaffold test split (200), test MAE"
    rec(acc, "molgnn 2D tier", "MAE vs true gap", float(np.mean(np.abs(p2["gap_mean"] - p2["y_true"]))), "eV", False,
        setup=f"{args.members_2d} GINE members (64 hidden, 3 layers), {args.epochs_2d} epochs, 1,600 train, "
              f"targets 0.5*3D teacher + 0.5*label; trained in {train_2d_s:.0f} s")
    rec(acc, "molgnn 3D ensemble", "MAE vs true gap", float(np.mean(np.abs(t3["y_pred"] - t3["y_true"]))), "eV", False,
        setup="runs/latest/finetune of `make run` (PaiNN 32 features, 3 members, 8 epochs, pretrained)")
    rec(acc, "molgnn 2D tier", "MAE vs 3D ensemble", float(np.mean(np.abs(p2["gap_mean"].to_numpy() - p3_on_2d))),
        "eV", False)
    try:
        from scipy.stats import spearmanr
        rec(acc, "molgnn 2D tier", "Spearman vs true gap", float(spearmanr(p2["gap_mean"], p2["y_true"]).statistic),
            "", True)
        rec(acc, "molgnn 3D ensemble", "Spearman vs true gap", float(spearmanr(t3["y_pred"], t3["y_true"]).statistic),
            "", True)
    except Exception:
        pass

    # ------------------------------------------------------------------ library
    lib = BENCH / f"moses_test_{args.n}.csv"
    pd.read_csv(MOSES_TEST, nrows=args.n).rename(columns={"SMILES": "smiles"}).to_csv(lib, index=False)
    speed = f"screen {args.n:,} MOSES test SMILES, wall-clock incl. start-up"

    s2d = run([molgnn, "screen", str(lib), "--out", str(BENCH / "lib_2d.csv"), "--fast-tier", str(model_path),
               "--top-k", "0", "--uncertain-k", "0", "--workers", "2"], cwd=REPO)
    print(f"molgnn 2D tier: {s2d:.1f} s", flush=True)
    n_ranked = len(pd.read_csv(BENCH / "lib_2d.csv"))
    rec(speed, "molgnn 2D tier", "wall-clock", s2d, "s", False,
        setup=f"`molgnn screen --fast-tier` --top-k 0 --uncertain-k 0 --workers 2; standardize + dedupe + "
              f"featurize + 3-member 2D ensemble; {n_ranked:,} ranked")
    rec(speed, "molgnn 2D tier", "throughput", args.n / s2d, "molecules/s", True)
    s23 = run([molgnn, "screen", str(lib), "--out", str(BENCH / "lib_two_tier.csv"), "--fast-tier", str(model_path),
               "--top-k", str(args.top_k), "--uncertain-k", str(args.uncertain_k), "--workers", "2"], cwd=REPO)
    print(f"molgnn two-tier: {s23:.1f} s", flush=True)
    rec(speed, "molgnn 2D + 3D tiers", "wall-clock", s23, "s", False,
        setup=f"as 2D, then top {args.top_k} + {args.uncertain_k} most uncertain through ETKDG+MMFF conformers "
              f"and the 3-member PaiNN ensemble")
    rec(speed, "molgnn 2D + 3D tiers", "throughput", args.n / s23, "molecules/s", True)

    # ------------------------------------------------------------------ chemprop 2.3.1
    if not args.skip_chemprop:
        cp = str(args.chemprop_venv / "bin" / "chemprop")
        data = BENCH / "chemprop_data.csv"
        order = ids["train"] + ids["val"] + ids["test"]
        tv = pd.DataFrame({"smiles": mols.loc[order, "smiles"].to_numpy(), "gap": mols.loc[order, "gap"].to_numpy(),
                           "split": ["train"] * len(ids["train"]) + ["val"] * len(ids["val"]) + ["test"] * len(ids["test"])})
        tv.to_csv(data, index=False)
        save = BENCH / "chemprop_model"
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        t = time.perf_counter()
        subprocess.run([cp, "train", "-i", str(data), "-s", "smiles", "--target-columns", "gap", "-o", str(save),
                        "--epochs", str(args.chemprop_epochs), "--splits-column", "split", "--num-workers", "0",
                        "--task-type", "regression"], check=True, env=env)
        cp_train_s = time.perf_counter() - t
        best = sorted(save.rglob("best*.pt"))[0]
        run([cp, "predict", "-i", str(test_csv), "-s", "smiles", "--model-paths", str(best), "-o",
             str(BENCH / "test_chemprop.csv"), "--num-workers", "0"], env=env)
        pc = pd.read_csv(BENCH / "test_chemprop.csv")
        pred_col = [c for c in pc.columns if c not in ("smiles",)][-1]
        pc_pred = pc[pred_col].to_numpy(dtype=float) if pred_col != "gap" else pc["gap"].to_numpy(dtype=float)
        rec(acc, "chemprop 2.3.1", "MAE vs true gap",
            float(np.mean(np.abs(pc_pred - pd.read_csv(test_csv)["gap"].to_numpy()))), "eV", False,
            setup=f"chemprop train defaults (D-MPNN 300 hidden, depth 3), {args.chemprop_epochs} epochs, same "
                  f"train/val split; trained in {cp_train_s:.0f} s")
        scp = run([cp, "predict", "-i", str(lib), "-s", "smiles", "--model-paths", str(best), "-o",
                   str(BENCH / "lib_chemprop.csv"), "--num-workers", "0"], env=env)
        print(f"chemprop predict: {scp:.1f} s", flush=True)
        rec(speed, "chemprop 2.3.1", "wall-clock", scp, "s", False,
            setup="`chemprop predict -i lib.csv -s smiles --model-paths best.pt --num-workers 0`, one model")
        rec(speed, "chemprop 2.3.1", "throughput", args.n / scp, "molecules/s", True)

    write_records(args.out, records)
    print(f"wrote {args.out} ({len(records)} records)")
    return 0


def speed_only(args, argv) -> int:
    """Both screens of the same library, interleaved (molgnn, chemprop, molgnn, ...) so that drift in
    machine load hits both alike; each run's wall-clock includes start-up. Models come from a full run."""
    model_path = BENCH / "model_2d.pt"
    best = sorted((BENCH / "chemprop_model").rglob("best*.pt"))
    if not model_path.is_file() or not best:
        raise SystemExit(f"--speed-only needs {model_path} and {BENCH / 'chemprop_model'} from a full run")
    context = provenance(command=command_line(argv))
    lib = BENCH / f"moses_test_{args.n}.csv"
    pd.read_csv(MOSES_TEST, nrows=args.n).rename(columns={"SMILES": "smiles"}).to_csv(lib, index=False)
    molgnn = [str(REPO / ".venv/bin/molgnn"), "screen", str(lib), "--out", str(BENCH / "lib_2d.csv"),
              "--fast-tier", str(model_path), "--top-k", "0", "--uncertain-k", "0", "--workers", "2"]
    chemprop = [str(args.chemprop_venv / "bin" / "chemprop"), "predict", "-i", str(lib), "-s", "smiles",
                "--model-paths", str(best[0]), "-o", str(BENCH / "lib_chemprop.csv"), "--num-workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    load_start = load_average()
    times: dict[str, list[float]] = {"molgnn 2D tier": [], "chemprop 2.3.1": []}
    for _ in range(args.repeats):
        times["molgnn 2D tier"].append(run(molgnn, cwd=REPO, env=env))
        times["chemprop 2.3.1"].append(run(chemprop, env=env))
        print({k: [round(v, 1) for v in vals] for k, vals in times.items()}, flush=True)
    n_ranked = len(pd.read_csv(BENCH / "lib_2d.csv"))
    n_chemprop = len(pd.read_csv(BENCH / "lib_chemprop.csv"))
    note = (f"{args.repeats} interleaved runs each (molgnn first), best shown, all: " +
            "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in vals)} s" for k, vals in times.items()) +
            f"; load average (1/5/15 min) {load_start} at start, {load_average()} at end; "
            f"molgnn ranked {n_ranked:,}, chemprop predicted {n_chemprop:,} rows")
    speed = f"screen {args.n:,} MOSES test SMILES, wall-clock incl. start-up (interleaved, models reused)"
    setups = {"molgnn 2D tier": "`molgnn screen --fast-tier model_2d.pt --top-k 0 --uncertain-k 0 --workers 2`: "
                                "standardize + dedupe + featurize + 3-member GINE ensemble",
              "chemprop 2.3.1": "`chemprop predict --model-paths best.pt --num-workers 0`, one D-MPNN"}
    records = []
    for system, vals in times.items():
        extra = {"setup": setups[system], "note": note}
        records.append(record(speed, system, "wall-clock", min(vals), "s", False, context, **extra))
        records.append(record(speed, system, "throughput", args.n / min(vals), "molecules/s", True, context, **extra))
    out = args.out if args.out.name != "screen_speed.json" else args.out.with_name("screen_speed_interleaved.json")
    write_records(out, records)
    print(f"wrote {out}: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
