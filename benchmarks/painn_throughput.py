"""PaiNN training throughput on QM9: schnetpack 2.2's own loop vs molgnn's, in one command.

    python benchmarks/painn_throughput.py --npz .bench/qm9/qm9.npz --out benchmarks/results \\
        --commit $(git rev-parse HEAD) [--device cuda]

Both sides train the same PaiNN (128 features, 3 interactions, cutoff 5 Angstrom, 20 Gaussians,
cosine cutoff, one atomwise head) on the QM9 HOMO-LUMO gap of the prepared split
(``benchmarks/prepare_qm9.py``) with AdamW 5e-4:

- **schnetpack 2.2.0**: an ASE database built from the npz, ``AtomsDataModule`` (batch 100, 12 loader
  workers, pinned memory) with the ``MatScipyNeighborList(5.0)`` + ``CastTo32`` transforms, a
  ``NeuralNetworkPotential`` with ``PairwiseDistances`` and ``Atomwise(aggregation_mode="avg")``,
  ``AtomisticTask`` with MSE loss, trained by a Lightning ``Trainer`` for ``--sp-steps`` steps.
  Throughput = molecules between step ``--sp-warmup`` and the last step over the wall-clock between
  them (device synchronised at both ends). ``--sp-batch-sizes 100 200`` adds peer runs at other batch
  sizes (steps scaled by 100 / batch size, same database); speed-ups are quoted against batch 100.
- **molgnn**: ``molgnn.train.finetune.finetune`` (the pipeline's stage code) on the whole training
  split, with the variants listed in ``--variants`` (batch size, autocast, torch.compile, CUDA graphs
  over padded batches: ``finetune(cuda_graphs=True)``). Throughput
  = training molecules / training-loop seconds of the epochs after the first (the first holds
  warm-up and compilation), as the stage's own history reports it.

It also times batch construction alone (the pipeline's ``make_batch`` with neighbor search per batch,
and the ``DeviceBatcher`` with a neighbor table precomputed once) to show whether batching limits
the step rate. Writes ``painn_throughput.json`` (a list of records) and ``painn_throughput_detail.json``
into ``--out`` and prints a table last.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from molgnn.config import FinetuneConfig, ModelConfig  # noqa: E402
from molgnn.featurize.atomistic import AtomisticDataset, DeviceBatcher, iterate_batches  # noqa: E402
from molgnn.train.finetune import DEFAULT_PAD_BUCKETS, finetune  # noqa: E402

PAINN = ModelConfig(n_atom_basis=128, n_interactions=3, n_rbf=20, cutoff=5.0)
LR = 5e-4
TARGET = "gap"
SP_SYSTEM = "schnetpack 2.2.0"


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------ schnetpack

def build_ase_db(npz: dict, indices: np.ndarray, path: Path) -> float:
    """An ASE database of molecules ``indices`` (DFT geometry + gap in eV); returns seconds taken."""
    from ase import Atoms
    from ase.db import connect
    from schnetpack.data import ASEAtomsData

    t0 = time.perf_counter()
    if path.exists():
        path.unlink()
    ASEAtomsData.create(str(path), distance_unit="Ang", property_unit_dict={TARGET: "eV"})
    ptr, Z, R = npz["ptr"], npz["Z"], npz["R"]
    k = [str(t) for t in npz["target_names"]].index(TARGET)
    y = npz["y"][:, k]
    # the rows ASEAtomsData.add_systems writes (atoms + data={property: array}), in one transaction:
    # add_systems commits row by row (~50 rows/s here), this writes thousands per second
    with connect(str(path), use_lock_file=False) as conn:
        for m in indices:
            a, b = int(ptr[m]), int(ptr[m + 1])
            conn.write(Atoms(numbers=Z[a:b].astype(int), positions=R[a:b].astype(np.float64)),
                       data={TARGET: np.array([y[m]], dtype=np.float64)})
    return time.perf_counter() - t0


def run_schnetpack(npz: dict, workdir: Path, *, n_train: int, n_val: int, steps: int, warmup: int,
                   workers: int, batch_size: int, device: torch.device, reuse_db: bool = False) -> dict:
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torchmetrics

    workdir.mkdir(parents=True, exist_ok=True)
    train_all, val_all = npz["train_idx"], npz["val_idx"]
    sel = np.concatenate([train_all[:n_train], val_all[:n_val]])
    db = workdir / "qm9_gap.db"
    db_seconds = 0.0 if reuse_db and db.exists() else build_ase_db(npz, sel, db)  # peers reuse the first run's
    split = workdir / "split.npz"
    np.savez(split, train_idx=np.arange(n_train), val_idx=np.arange(n_train, n_train + n_val),
             test_idx=np.zeros(0, dtype=np.int64))
    dm = spk.data.AtomsDataModule(
        str(db), batch_size=batch_size, num_train=n_train, num_val=n_val, split_file=str(split),
        transforms=[trn.MatScipyNeighborList(cutoff=PAINN.cutoff), trn.CastTo32()],
        num_workers=workers, pin_memory=device.type == "cuda", load_properties=[TARGET])
    painn = spk.representation.PaiNN(
        n_atom_basis=PAINN.n_atom_basis, n_interactions=PAINN.n_interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=PAINN.n_rbf, cutoff=PAINN.cutoff),
        cutoff_fn=spk.nn.CosineCutoff(PAINN.cutoff))
    nnpot = spk.model.NeuralNetworkPotential(
        representation=painn, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=PAINN.n_atom_basis, output_key=TARGET, aggregation_mode="avg")],
        postprocessors=[trn.CastTo64()])
    task = spk.task.AtomisticTask(
        model=nnpot, outputs=[spk.task.ModelOutput(name=TARGET, loss_fn=torch.nn.MSELoss(), loss_weight=1.0,
                                                   metrics={"MAE": torchmetrics.MeanAbsoluteError()})],
        optimizer_cls=torch.optim.AdamW, optimizer_args={"lr": LR})

    marks: dict[int, float] = {}

    class StepTimer(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step in (warmup, steps):
                sync(device)
                marks[step] = time.perf_counter()

    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=steps,
                         limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[StepTimer()])
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_seconds = time.perf_counter() - t0
    if warmup not in marks or steps not in marks:
        raise RuntimeError(f"schnetpack run did not reach steps {warmup} and {steps}: {sorted(marks)}")
    seconds = marks[steps] - marks[warmup]
    mol_s = (steps - warmup) * batch_size / seconds
    return {"molecules_per_second": mol_s, "measured_steps": steps - warmup, "measured_seconds": seconds,
            "fit_seconds": fit_seconds, "db_build_seconds": db_seconds, "n_train_in_db": n_train,
            "batch_size": batch_size, "workers": workers}


# ------------------------------------------------------------------------------------ molgnn

def parse_variant(text: str) -> dict:
    """``b100``, ``b100-bf16``, ``b200-bf16-compile``, ``b100-graphs`` (CUDA graphs over padded
    batches), ``b100-compile-graphs``, ``b100-plain`` (the default, sync-per-step path)."""
    parts = text.split("-")
    if not parts[0].startswith("b"):
        raise SystemExit(f"variant {text!r} must start with b<batch size>")
    v = {"name": text, "batch_size": int(parts[0][1:]), "amp": None, "compile": False, "plain": False,
         "graphs": False}
    for p in parts[1:]:
        if p in ("bf16", "fp16"):
            v["amp"] = p
        elif p == "compile":
            v["compile"] = True
        elif p == "plain":
            v["plain"] = True
        elif p == "graphs":
            v["graphs"] = True
        else:
            raise SystemExit(f"unknown variant part {p!r} in {text!r}")
    return v


def run_molgnn(dataset: AtomisticDataset, split: tuple, variant: dict, *, epochs: int, device: torch.device,
               max_train: int | None) -> dict:
    train, val, test = split
    if max_train is not None:
        train = train[:max_train]
    cfg = FinetuneConfig(targets=[TARGET], epochs=epochs, batch_size=variant["batch_size"], lr=LR, patience=1000,
                         split="random", ensemble_size=1, atom_features=None)  # QM9 npz: element only
    fast = {} if variant["plain"] else {"device_batches": True, "check_every": 0}
    if variant.get("graphs"):
        fast["cuda_graphs"] = True  # raises off CUDA: no silent fallback to the eager step
    t0 = time.perf_counter()
    res = finetune(dataset, None, (train, val[:2000], test[:0]), PAINN, cfg, seed=0, device=device,
                   amp=variant["amp"], compile_model=variant["compile"], eval_every=epochs, eval_batch_size=1000,
                   **fast)
    wall = time.perf_counter() - t0
    hist = res.history
    steady = hist[1:] if len(hist) > 1 else hist
    n = sum(h["molecules_per_second"] * h["seconds"] for h in steady)
    s = sum(h["seconds"] for h in steady)
    extra = {"cuda_graphs_captured": hist[-1]["cuda_graphs_captured"]} if variant.get("graphs") else {}
    return {**variant, **extra, "molecules_per_second": n / s, "epoch_seconds": [h["seconds"] for h in hist],
            "first_epoch_seconds": hist[0]["seconds"], "n_train": len(train), "wall_seconds": wall,
            "final_train_loss": hist[-1]["train_loss"], "val_mae_gap_eV": hist[-1].get("val_mae_gap")}


def time_batching(dataset: AtomisticDataset, train: np.ndarray, device: torch.device, batch_size: int,
                  n_batches: int) -> dict:
    """Seconds per batch to build batches alone: make_batch (neighbor search per batch, host syncs)
    and DeviceBatcher (precomputed neighbor table, no syncs)."""
    idx = train[: batch_size * n_batches]
    out = {}
    for _ in range(2):  # second pass is the timed one (first warms up kernels and caches)
        sync(device)
        t0 = time.perf_counter()
        for b in iterate_batches(dataset, idx, batch_size=batch_size, cutoff=PAINN.cutoff, device=device):
            pass
        sync(device)
        out["make_batch_ms"] = (time.perf_counter() - t0) / n_batches * 1e3
    sync(device)
    t0 = time.perf_counter()
    batcher = DeviceBatcher(dataset, PAINN.cutoff)
    sync(device)
    out["pair_table_seconds"] = time.perf_counter() - t0
    out["pair_table_pairs"] = batcher.n_pairs
    for key, pad in (("device_batcher_ms", None), ("device_batcher_padded_ms", DEFAULT_PAD_BUCKETS)):
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            for b in batcher.batches(idx, batch_size, pad=pad):
                pass
            sync(device)
            out[key] = (time.perf_counter() - t0) / n_batches * 1e3
    return out


# ------------------------------------------------------------------------------------ main

BENCH = "PaiNN training throughput, QM9 gap (128 features, 3 interactions, 5 A cutoff, 20 RBF, AdamW 5e-4)"
MOL_S = "train molecules/s (steady state)"
SPEEDUP = f"speed-up over {SP_SYSTEM} (same command)"
SPEEDUP_SAME = f"speed-up over {SP_SYSTEM} at the same batch size (same command)"
BATCH_MS = "batch construction alone, batch of 100"


def record(benchmark: str, system: str, metric: str, value: float, unit: str, higher: bool, ctx: dict,
           sample: str | None = None, note: str | None = None) -> dict:
    rec = {"benchmark": benchmark, "system": system, "metric": metric, "value": value, "unit": unit,
           "higher_is_better": higher, "machine": ctx["machine"], "date": ctx["date"], "commit": ctx["commit"],
           "command": ctx["command"]}
    if sample:
        rec["sample"] = sample
    if note:
        rec["note"] = note
    return rec


def variant_label(v: dict) -> str:
    return (f"batch {v['batch_size']}, {v['amp'] or 'fp32'}{', torch.compile' if v['compile'] else ''}"
            f"{', CUDA graphs' if v.get('graphs') else ''}{', plain path' if v['plain'] else ''}")


def sp_note(detail: dict, sp: dict) -> str:
    warmup, steps = sp.get("warmup", detail["args"]["sp_warmup"]), sp.get("steps", detail["args"]["sp_steps"])
    return (f"{SP_SYSTEM}: AtomsDataModule (ASE db) + MatScipyNeighborList + AtomisticTask under Lightning, "
            f"steps {warmup}-{steps} of the first epoch (no epoch boundary inside the window)")


def build_records(detail: dict, accuracy_curve: dict | None = None, accuracy_until: float | None = None) -> list[dict]:
    """The result records of a run's detail (and, optionally, the training-loop throughput of the
    accuracy run that followed in the same command: its epochs up to ``accuracy_until`` seconds)."""
    ctx = detail["context"]
    bench = ctx.get("benchmark", BENCH)
    recs: list[dict] = []
    sp = detail.get("schnetpack")
    peers = {p["batch_size"]: p for p in [sp, *detail.get("schnetpack_peers", [])] if p}
    for p in peers.values():
        recs.append(record(bench, SP_SYSTEM, MOL_S, p["molecules_per_second"], "molecules/s", True, ctx,
                           sample=f"batch {p['batch_size']}, {p['workers']} loader workers", note=sp_note(detail, p)))
    bt = detail.get("batching")
    if bt:
        recs.append(record(bench, "molgnn", BATCH_MS, bt["make_batch_ms"], "ms", False, ctx,
                           sample="make_batch (neighbor search per batch)"))
        recs.append(record(bench, "molgnn", BATCH_MS, bt["device_batcher_ms"], "ms", False, ctx,
                           sample="DeviceBatcher (neighbor table precomputed once)",
                           note=f"molgnn: the neighbor table of all {bt['pair_table_pairs']:,} QM9 pairs (5 A) takes "
                                f"{bt['pair_table_seconds']:.2f} s to build on the device"))
        if "device_batcher_padded_ms" in bt:
            recs.append(record(bench, "molgnn", BATCH_MS, bt["device_batcher_padded_ms"], "ms", False, ctx,
                               sample=f"DeviceBatcher, padded to multiples of {DEFAULT_PAD_BUCKETS} (atoms, pairs) "
                                      "for CUDA graphs"))
    runs = [r for r in detail.get("molgnn", []) if "error" not in r]
    if accuracy_curve is not None:
        pts = [p for p in accuracy_curve["curve"] if accuracy_until is None or p["train_seconds"] <= accuracy_until]
        steady = pts[1:]  # the first epoch holds compilation
        if steady:
            secs = sum(p["molecules_per_second"] and (1.0 / p["molecules_per_second"]) for p in steady)
            rate = len(steady) / secs  # epochs are equal in size: harmonic mean = molecules / seconds
            a = accuracy_curve["args"]
            runs.append({"batch_size": a["batch_size"], "amp": None if a["amp"] == "none" else a["amp"],
                         "compile": accuracy_curve["compile"], "plain": False, "molecules_per_second": rate,
                         "from_accuracy_run": len(steady)})
    for r in runs:
        label = variant_label(r)
        note = None
        if r.get("from_accuracy_run"):
            label += " (accuracy run)"
            note = (f"molgnn ({label}): the training loop of the gap accuracy run that followed in the same command, "
                    f"epochs 2-{r['from_accuracy_run'] + 1} (evaluation excluded)")
        recs.append(record(bench, "molgnn", MOL_S, r["molecules_per_second"], "molecules/s", True, ctx,
                           sample=label, note=note))
        if sp:
            recs.append(record(bench, "molgnn", SPEEDUP, r["molecules_per_second"] / sp["molecules_per_second"],
                               "x", True, ctx, sample=label))
        peer = peers.get(r["batch_size"])
        if peer is not None and peer is not sp:
            recs.append(record(bench, "molgnn", SPEEDUP_SAME, r["molecules_per_second"] / peer["molecules_per_second"],
                               "x", True, ctx, sample=label))
    return recs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", default=str(REPO / ".bench" / "qm9" / "qm9.npz"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--workdir", default="/tmp/molgnn-bench")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--commit", default=os.environ.get("MOLGNN_COMMIT", "unknown"))
    ap.add_argument("--command", default=None, help="the command line to record (default: this one)")
    ap.add_argument("--skip-schnetpack", action="store_true")
    ap.add_argument("--sp-train", type=int, default=60_000, help="training molecules in schnetpack's database")
    ap.add_argument("--sp-steps", type=int, default=580, help="stay inside the first epoch (sp-train / 100 steps)")
    ap.add_argument("--sp-warmup", type=int, default=100)
    ap.add_argument("--sp-workers", type=int, default=12)
    ap.add_argument("--sp-batch-sizes", type=int, nargs="+", default=[100],
                    help="schnetpack runs (the first is the reference; steps and warm-up scale with 100 / size)")
    ap.add_argument("--variants", nargs="+", default=["b100-plain", "b100", "b100-bf16", "b200", "b500", "b100-compile"])
    ap.add_argument("--epochs", type=int, default=3, help="molgnn epochs per variant (first one not counted)")
    ap.add_argument("--max-train", type=int, default=None, help="molgnn training molecules (default: all)")
    ap.add_argument("--batch-timing", type=int, default=100, help="batches timed for batch construction")
    ap.add_argument("--stop-at", type=float, default=None,
                    help="unix time: skip the molgnn variants that would start less than 45 s before it")
    ap.add_argument("--name", default="painn_throughput",
                    help="output files <name>.json and <name>_detail.json (another name keeps earlier records)")
    ap.add_argument("--title", default=None, help="appended to the benchmark title: a separate results table")
    ap.add_argument("--rebuild-from", default=None,
                    help="only rewrite <out>/painn_throughput.json from this painn_throughput_detail.json")
    ap.add_argument("--accuracy-curve", default=None,
                    help="with --rebuild-from: qm9_accuracy_curve.json of the accuracy run of the same command")
    ap.add_argument("--accuracy-until", type=float, default=None,
                    help="with --accuracy-curve: last training second of that command (later epochs were resumed "
                         "in another command)")
    args = ap.parse_args(argv)
    if args.rebuild_from:
        detail = json.loads(Path(args.rebuild_from).read_text())
        curve = json.loads(Path(args.accuracy_curve).read_text()) if args.accuracy_curve else None
        recs = build_records(detail, curve, args.accuracy_until)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"{args.name}.json").write_text(json.dumps(recs, indent=2) + "\n")
        print(f"wrote {len(recs)} records to {Path(args.out) / f'{args.name}.json'}")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = {"machine": machine_name(device), "date": _dt.date.today().isoformat(), "commit": args.commit,
           "command": args.command or "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
           "benchmark": BENCH + (f", {args.title}" if args.title else "")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    npz = dict(np.load(args.npz))
    detail: dict = {"context": ctx, "args": vars(args)}

    def flush():
        (out / f"{args.name}.json").write_text(json.dumps(build_records(detail), indent=2) + "\n")
        (out / f"{args.name}_detail.json").write_text(json.dumps(detail, indent=2, default=float) + "\n")

    sp = None
    failed: list[str] = []
    if not args.skip_schnetpack:
        for k, bs in enumerate(args.sp_batch_sizes):
            steps = min(args.sp_steps * 100 // bs, args.sp_train // bs - 2)  # stay inside the first epoch
            warmup = max(1, args.sp_warmup * 100 // bs)
            t0 = time.perf_counter()
            try:
                r = run_schnetpack(npz, Path(args.workdir), n_train=args.sp_train, n_val=200, steps=steps,
                                   warmup=warmup, workers=args.sp_workers, batch_size=bs, device=device,
                                   reuse_db=k > 0)
            except Exception as exc:
                if k == 0:
                    raise  # the reference itself
                failed.append(f"schnetpack batch {bs}")
                print(f"schnetpack batch {bs}: FAILED {type(exc).__name__}: {exc}\n{traceback.format_exc()}", flush=True)
                continue
            r.update(total_seconds=time.perf_counter() - t0, steps=steps, warmup=warmup)
            if k == 0:
                sp = detail["schnetpack"] = r
            else:
                detail.setdefault("schnetpack_peers", []).append(r)
            print(f"schnetpack batch {bs}: {r['molecules_per_second']:.0f} molecules/s ({r})", flush=True)
            flush()

    dataset = AtomisticDataset.from_npz(args.npz).to(device)
    split = (npz["train_idx"], npz["val_idx"], npz["test_idx"])
    bt = time_batching(dataset, split[0], device, 100, args.batch_timing)
    detail["batching"] = bt
    print(f"batching: {bt}", flush=True)
    flush()

    detail["molgnn"] = []
    for text in args.variants:
        v = parse_variant(text)
        if args.stop_at is not None and time.time() > args.stop_at - 45:
            detail["molgnn"].append({**v, "error": "skipped: out of time"})
            print(f"molgnn {text}: skipped (out of time)", flush=True)
            continue
        try:
            r = run_molgnn(dataset, split, v, epochs=args.epochs if not v["plain"] else 2, device=device,
                           max_train=args.max_train if not v["plain"] else (args.max_train or 30_000))
        except Exception as exc:  # a failed variant is reported (and fails the command at the end)
            detail["molgnn"].append({**v, "error": f"{type(exc).__name__}: {exc}"})
            failed.append(text)
            print(f"molgnn {text}: FAILED {type(exc).__name__}: {exc}\n{traceback.format_exc()}", flush=True)
            flush()
            continue
        detail["molgnn"].append(r)
        print(f"molgnn {text}: {r['molecules_per_second']:.0f} molecules/s (epochs {r['epoch_seconds']})", flush=True)
        flush()

    print("\n| system | configuration | molecules/s | vs schnetpack |")
    print("|---|---|---|---|")
    for p in [sp, *detail.get("schnetpack_peers", [])]:
        if p is not None:
            ratio = p["molecules_per_second"] / sp["molecules_per_second"]
            print(f"| {SP_SYSTEM} | batch {p['batch_size']}, {p['workers']} workers | {p['molecules_per_second']:.0f} "
                  f"| {ratio:.2f} |")
    for r in detail["molgnn"]:
        if "error" in r:
            print(f"| molgnn | {r['name']} | failed | |")
            continue
        ratio = r["molecules_per_second"] / sp["molecules_per_second"] if sp else math.nan
        graphs = f" ({r['cuda_graphs_captured']} graphs)" if "cuda_graphs_captured" in r else ""
        print(f"| molgnn | {r['name']}{graphs} | {r['molecules_per_second']:.0f} | {ratio:.2f} |")
    print(f"batch construction: make_batch {bt['make_batch_ms']:.2f} ms, DeviceBatcher {bt['device_batcher_ms']:.2f} ms, "
          f"padded {bt.get('device_batcher_padded_ms', math.nan):.2f} ms"
          f" (pair table {bt['pair_table_seconds']:.1f} s, {bt['pair_table_pairs']} pairs)")
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
