"""QM9 accuracy after a fixed wall-clock training budget, resumable across GPU commands.

    python benchmarks/qm9_accuracy.py --npz .bench/qm9/qm9.npz --out benchmarks/results \\
        --state .bench/acc/gap.pt --time-budget 720 --stop-at $(( $(date +%s) + 500 )) --commit $(git rev-parse HEAD)

Trains PaiNN (128 features, 3 interactions, 5 Angstrom cutoff, 20 Gaussians) with
``molgnn.train.finetune.finetune`` on the prepared 110,000 / 10,000 / rest split
(``benchmarks/prepare_qm9.py``) for ``--time-budget`` seconds of training wall-clock (steps plus the
per-epoch validation; summed over resumed calls), learning rate on a cosine over that budget. On a GPU
each padded batch shape's whole step is replayed from a CUDA graph (``--cuda-graphs``), and the
one-off warm-up of every call (torch.compile's compilation, the graphs' capture) is kept outside the
budget and reported (``warmup_seconds``; ``--warmup-in-budget`` counts it as before). Each
call trains until ``--stop-at`` (unix time) at most, saves the training state to ``--state`` and
writes what it has: ``qm9_accuracy_curve.json`` (per epoch: training seconds, validation MAE,
test MAE of the weights of that moment) and ``qm9_accuracy.json`` (records: test MAE of the
best-validation weights after the budget, plus the curve's test MAE at fixed times). Run the same
command again to continue; a finished run just rewrites its results. MAEs are reported in meV for
energies (targets stored in eV) and in the target's unit otherwise.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from molgnn.config import FinetuneConfig, ModelConfig  # noqa: E402
from molgnn.featurize.atomistic import AtomisticDataset  # noqa: E402
from molgnn.train.finetune import finetune  # noqa: E402

PAINN = ModelConfig(n_atom_basis=128, n_interactions=3, n_rbf=20, cutoff=5.0)
EV_TARGETS = {"homo", "lumo", "gap", "zpve", "U0", "U", "H", "G"}
CURVE_TIMES = (60, 120, 180, 270, 300, 420, 600, 720, 900, 1200)


def unit_of(target: str) -> tuple[float, str]:
    """(factor from the stored unit, reported unit)."""
    if target in EV_TARGETS:
        return 1000.0, "meV"
    return 1.0, {"mu": "D", "alpha": "bohr^3", "r2": "bohr^2", "Cv": "cal/(mol K)"}.get(target, "")


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def use_compile(choice: str, detail_path: str | None) -> bool:
    """``auto``: compile only if the throughput run measured torch.compile >= 1.25x eager at batch 100."""
    if choice in ("yes", "no"):
        return choice == "yes"
    if not detail_path or not Path(detail_path).exists():
        return False
    runs = {r["name"]: r for r in json.loads(Path(detail_path).read_text()).get("molgnn", []) if "error" not in r}
    eager, comp = runs.get("b100"), runs.get("b100-compile")
    return bool(eager and comp and comp["molecules_per_second"] >= 1.25 * eager["molecules_per_second"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", default=str(REPO / ".bench" / "qm9" / "qm9.npz"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--state", default=str(REPO / ".bench" / "acc" / "gap.pt"))
    ap.add_argument("--state-copy", default=None, help="also copy the state file here after the call")
    ap.add_argument("--targets", nargs="+", default=["gap"])
    ap.add_argument("--time-budget", type=float, default=720.0, help="total training seconds")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time by which this call must have written")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--min-lr-ratio", type=float, default=0.01)
    ap.add_argument("--warmup-steps", type=int, default=500)
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    ap.add_argument("--compile", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--throughput-detail", default=None, help="painn_throughput_detail.json for --compile auto")
    ap.add_argument("--cuda-graphs", choices=["auto", "yes", "no"], default="auto",
                    help="replay each padded batch shape's step from a CUDA graph (auto: on CUDA unless fp16)")
    ap.add_argument("--pad-buckets", type=int, nargs=2, default=None, metavar=("ATOMS", "PAIRS"),
                    help="padding multiples for --cuda-graphs (default: finetune's DEFAULT_PAD_BUCKETS)")
    ap.add_argument("--warmup-in-budget", action="store_true",
                    help="count torch.compile / CUDA-graph warm-up as training time (the accounting before)")
    ap.add_argument("--eval-every", type=int, default=2, help="validate (and record the curve) every N epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-train", type=int, default=None, help="smoke tests only")
    ap.add_argument("--max-eval", type=int, default=None, help="smoke tests only: validation/test molecules")
    ap.add_argument("--name", default=None, help="result file stem (default qm9_accuracy)")
    ap.add_argument("--commit", default=os.environ.get("MOLGNN_COMMIT", "unknown"))
    ap.add_argument("--command", default=None)
    args = ap.parse_args(argv)
    t_start = time.time()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compile_model = use_compile(args.compile, args.throughput_detail)
    graphs = args.cuda_graphs == "yes" or (args.cuda_graphs == "auto" and device.type == "cuda" and args.amp != "fp16")
    ctx = {"machine": machine_name(device), "date": _dt.date.today().isoformat(), "commit": args.commit,
           "command": args.command or "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}

    dataset = AtomisticDataset.from_npz(args.npz)
    with np.load(args.npz) as d:
        train, val, test = d["train_idx"], d["val_idx"], d["test_idx"]
    if args.max_train is not None:
        train = train[:args.max_train]
    if args.max_eval is not None:
        val, test = val[:args.max_eval], test[:args.max_eval]
    cfg = FinetuneConfig(targets=list(args.targets), epochs=100_000, batch_size=args.batch_size, lr=args.lr,
                         patience=100_000, split="random", ensemble_size=1, atom_features=None)  # npz: element only
    max_seconds = None
    if args.stop_at is not None:
        # leave time for the final evaluation and the writes after the loop
        max_seconds = args.stop_at - time.time() - 20.0
        if max_seconds < 10:
            raise SystemExit(f"too little time left before --stop-at ({max_seconds + 20:.0f} s)")
    Path(args.state).parent.mkdir(parents=True, exist_ok=True)
    resumed = Path(args.state).exists()
    res = finetune(dataset, None, (train, val, test), PAINN, cfg, seed=args.seed, device=device,
                   scheduler="cosine-time", time_budget_s=args.time_budget, warmup_steps=args.warmup_steps,
                   min_lr_ratio=args.min_lr_ratio, amp=None if args.amp == "none" else args.amp,
                   compile_model=compile_model, device_batches=True, check_every=0, eval_every=args.eval_every, eval_test=True,
                   eval_batch_size=1000, state_path=args.state, max_seconds=max_seconds, cuda_graphs=graphs,
                   pad_buckets=tuple(args.pad_buckets) if args.pad_buckets else None,
                   warmup_outside_budget=not args.warmup_in_budget)
    if args.state_copy:
        shutil.copy(args.state, args.state_copy)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "qm9_accuracy"
    curve = []
    for h in res.history:
        point = {"epoch": h["epoch"], "train_seconds": h["elapsed_seconds"], "lr": h["lr"],
                 "molecules_per_second": h["molecules_per_second"], "train_loss": h["train_loss"]}
        for key in ("warmup_seconds", "cuda_graphs_captured"):
            if key in h:
                point[key] = h[key]
        for t in args.targets:
            f, _ = unit_of(t)
            if f"val_mae_{t}" in h:
                point[f"val_mae_{t}"] = h[f"val_mae_{t}"] * f
                point[f"test_mae_{t}"] = h[f"test_mae_{t}"] * f
        curve.append(point)
    warmup = sum(p.get("warmup_seconds", 0.0) for p in curve)
    summary = {"context": ctx, "args": vars(args), "compile": compile_model, "cuda_graphs": graphs,
               "warmup_seconds": warmup, "warmup_in_budget": args.warmup_in_budget, "completed": res.completed,
               "resumed_from_state": resumed, "train_seconds": res.train_seconds,
               "best_epoch": res.checkpoint["best_epoch"], "n_train": len(train), "n_val": len(val), "n_test": len(test),
               "test_mae_best_val": {t: res.test_metrics[t]["mae"] * unit_of(t)[0] for t in args.targets},
               "val_mae_best_val": {t: res.val_metrics[t]["mae"] * unit_of(t)[0] for t in args.targets},
               "units": {t: unit_of(t)[1] for t in args.targets}, "curve": curve,
               "call_wall_seconds": time.time() - t_start}
    (out / f"{stem}_curve.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")

    bench = (f"QM9 {'/'.join(args.targets)} test MAE after a wall-clock training budget, PaiNN 128x3, "
             f"110k/10k/{len(test)} random split, 1 GPU")
    setup = (f"batch {args.batch_size}, AdamW {args.lr:g} cosine over {args.time_budget:.0f} s, "
             f"{'fp32' if args.amp == 'none' else args.amp}{', torch.compile' if compile_model else ''}"
             f"{', CUDA graphs' if graphs else ''}")
    warm_note = None
    if compile_model or graphs:
        where = "inside" if args.warmup_in_budget else "outside"
        what = " and ".join(w for w, on in (("torch.compile", compile_model), ("CUDA-graph capture", graphs)) if on)
        warm_note = (f"warm-up ({what}, once per call) took {warmup:.0f} s summed over the calls, {where} the "
                     f"{args.time_budget:.0f} s training budget")
    records = []

    def rec(metric: str, value: float, unit: str, note: str | None = None) -> None:
        records.append({"benchmark": bench, "system": "molgnn", "metric": metric, "value": value, "unit": unit,
                        "higher_is_better": False, "machine": ctx["machine"], "date": ctx["date"],
                        "commit": ctx["commit"], "command": ctx["command"], **({"note": note} if note else {})})

    for t in args.targets:
        f, unit = unit_of(t)
        state = "" if res.completed else " (budget not yet spent: partial run)"
        rec(f"{t} test MAE, best-validation weights, after {res.train_seconds:.0f} s of training{state}; {setup}",
            res.test_metrics[t]["mae"] * f, unit, warm_note)
        for limit in CURVE_TIMES:
            upto = [p for p in curve if f"test_mae_{t}" in p and p["train_seconds"] <= limit + 1e-9]
            if upto and limit <= res.train_seconds + 1e-9:
                p = upto[-1]
                rec(f"{t} test MAE of the weights at {p['train_seconds']:.0f} s of training (curve point <= {limit} s); "
                    f"{setup}", p[f"test_mae_{t}"], unit)
    (out / f"{stem}.json").write_text(json.dumps(records, indent=2) + "\n")

    print("\n| train s | epoch | " + " | ".join(f"val {t} | test {t}" for t in args.targets) + " |")
    print("|---|---|" + "---|---|" * len(args.targets))
    # the evaluated epochs only (every eval_every-th): a stride over all epochs can miss every one of them
    shown = [p for p in curve if any(f"val_mae_{t}" in p for t in args.targets)] or curve
    step = max(1, len(shown) // 25)
    for p in shown[::step] + ([shown[-1]] if shown and (len(shown) - 1) % step else []):
        cells = " | ".join(f"{p.get(f'val_mae_{t}', float('nan')):.1f} | {p.get(f'test_mae_{t}', float('nan')):.1f}"
                           for t in args.targets)
        print(f"| {p['train_seconds']:.0f} | {p['epoch']} | {cells} |")
    print(f"completed={res.completed} train_seconds={res.train_seconds:.0f} best_epoch={res.checkpoint['best_epoch']} "
          f"compile={compile_model} cuda_graphs={graphs} warmup_seconds={warmup:.0f} "
          f"({'inside' if args.warmup_in_budget else 'outside'} the budget) test MAE (best val) = "
          + ", ".join(f"{t} {summary['test_mae_best_val'][t]:.2f} {unit_of(t)[1]}" for t in args.targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
