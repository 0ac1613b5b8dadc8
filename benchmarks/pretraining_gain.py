"""Does self-supervised pretraining of the PaiNN encoder pay? QM9 gap, pretrained against scratch.

    # (local, optional, RDKit) a few thousand MOSES conformers to add to the pretraining set
    python benchmarks/pretraining_gain.py prepare-moses --n 3000 --out .bench/gpu/moses3k.npz
    # (GPU) pretrain for --pretrain-seconds, then fine-tune both inits at each label count
    python benchmarks/pretraining_gain.py run --npz .bench/gpu/qm9.npz --extra .bench/gpu/moses3k.npz \
        --pretrain-seconds 180 --finetune-seconds 25 --labels 1000 10000 100 3000 \
        --stop-at $(( $(date +%s) + 500 )) --out OUT --commit $(git rev-parse HEAD)

Pretraining longer than one GPU command: ``--save-pretrained`` writes the checkpoint, a later call
continues it with ``--pretrain-init`` (``--pretrain-cosine`` decays the lr over that call) or
fine-tunes from it with ``--pretrained``; ``--append`` adds a call's runs to the same result files.
The recipe measured in benchmarks/README.md is three such commands.

``run``: (1) ``molgnn.train.pretrain.pretrain`` (coordinate denoising + masked atom types; fp32,
fused AdamW, ``max_seconds``) of PaiNN 128 features / 3 interactions / 5 A cutoff / 20 RBF on the
geometries of the QM9 training split (labels unused) plus any ``--extra`` structures; (2)
``molgnn.train.finetune.finetune`` on the HOMO-LUMO gap with N labels (nested seeded subsets of the
training split), from scratch and from the pretrained encoder (once per ``--encoder-lr-scales``
value: the encoder trains at lr x scale, the head at lr), per ``--seeds`` value (head
initialisation and batch order), the same validation subset and the same training time budget
(cosine-time schedule), test MAE of the best-validation weights on the full test split.
``--scratch-encoder-lr-scales`` adds the ablation of a random encoder given such a scale;
``--select-on-val`` makes the scales an lr search of equal size for both inits: the first seed runs
them all, the other seeds only each init's scale with the lowest validation MAE, and the records
add the like-for-like comparison of the two chosen recipes. Groups
run in the order given; one that would not finish before ``--stop-at`` is skipped (recorded as such).
Writes after every run: ``NAME.json`` (records: means over seeds, per-seed values) and
``NAME_detail.json`` (pretraining history, every run's curve) in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO, RESULTS, provenance, record, write_records
from molgnn.train import history_keys as H

BENCH = "qm9-pretraining-gain"


def prepare_moses(args: argparse.Namespace) -> int:
    import pandas as pd

    from molgnn.chem.conformers import Conformer, embed_many

    smi = pd.read_csv(args.moses, nrows=args.pool)["SMILES"].sample(n=args.n, random_state=args.seed).tolist()
    t = time.time()
    res = embed_many(smi, seed=args.seed, timeout_s=5.0, max_iterations=200, workers=args.workers)
    ok = [r for r in res if isinstance(r, Conformer)]
    z = np.concatenate([r.atomic_numbers for r in ok]).astype(np.uint8)
    r_ = np.concatenate([r.positions for r in ok]).astype(np.float32)
    ptr = np.zeros(len(ok) + 1, np.int64)
    np.cumsum([len(r.atomic_numbers) for r in ok], out=ptr[1:])
    ids = np.array([f"moses-{i}" for i, r in enumerate(res) if isinstance(r, Conformer)])
    np.savez_compressed(args.out, Z=z, R=r_, ptr=ptr, mol_ids=ids)
    print(json.dumps({"n": args.n, "embedded": len(ok), "failed": args.n - len(ok), "seconds": time.time() - t,
                      "atoms": int(len(z)), "elements": sorted(set(z.tolist()))}))
    return 0


def concat_structures(parts):
    """One AtomisticDataset (no targets) from several (Z, R, ptr, mol_ids) parts."""
    from molgnn.featurize.atomistic import AtomisticDataset

    zs, rs, ptrs, ids, off = [], [], [np.zeros(1, np.int64)], [], 0
    for z, r, ptr, mid in parts:
        zs.append(z), rs.append(r.reshape(-1, 3)), ids.append(mid)
        ptrs.append(ptr[1:] + off)
        off += int(ptr[-1])
    return AtomisticDataset(np.concatenate(ids).astype(str), torch.from_numpy(np.concatenate(zs).astype(np.uint8)),
                            torch.from_numpy(np.concatenate(rs).astype(np.float32)),
                            torch.from_numpy(np.concatenate(ptrs)))


def pretraining_structures(args: argparse.Namespace, data, train: np.ndarray):
    """The geometries of the QM9 training split (labels never read) plus the ``--extra`` structures,
    as one AtomisticDataset; and a description of the extras."""
    with np.load(args.npz) as d:
        z_all, r_all, ptr_all = d["Z"], d["R"].reshape(-1, 3), d["ptr"].astype(np.int64)
    sel = np.sort(train if args.max_pretrain is None else train[:args.max_pretrain])
    counts = ptr_all[sel + 1] - ptr_all[sel]
    atom_idx = np.repeat(ptr_all[sel], counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    sub_ptr = np.zeros(len(sel) + 1, np.int64)
    np.cumsum(counts, out=sub_ptr[1:])
    parts = [(z_all[atom_idx], r_all[atom_idx], sub_ptr, data.mol_ids[sel])]
    extra_info = []
    for path in args.extra or []:
        with np.load(path) as e:
            parts.append((e["Z"], e["R"], e["ptr"].astype(np.int64), e["mol_ids"]))
            extra_info.append({"path": path, "molecules": int(len(e["ptr"]) - 1), "atoms": int(len(e["Z"]))})
    return concat_structures(parts), extra_info


def prepare_eht(args: argparse.Namespace) -> int:
    """Extended-Hueckel (HOMO, LUMO, gap) of every structure of --npz and --extra, keyed by mol_id, so the
    GPU command does not spend device time on them (``molgnn.train.pretrain`` would compute them)."""
    from molgnn.chem.eht import EHT_TARGETS, eht_targets

    t = time.time()
    ids, values, failed = [], [], {}
    for path in [args.npz, *args.extra]:
        with np.load(path) as d:
            v, f = eht_targets(d["Z"], d["R"], d["ptr"], workers=args.workers)
            ids.append(d["mol_ids"].astype(str)), values.append(v.astype(np.float32))
            for m, why in f:
                failed.setdefault(why, []).append(str(d["mol_ids"][m]))
    np.savez_compressed(args.out, mol_ids=np.concatenate(ids), y=np.concatenate(values),
                        target_names=np.array(EHT_TARGETS))
    print(json.dumps({"molecules": int(sum(len(i) for i in ids)), "seconds": round(time.time() - t, 1),
                      "failed": {why: {"count": len(v), "examples": v[:5]} for why, v in failed.items()}}))
    return 0


def attach_eht(dataset, path: str):
    """The pretraining set with the EHT targets of ``prepare-eht`` (NaN for a mol_id it lacks)."""
    import dataclasses

    with np.load(path) as e:
        pos = {m: k for k, m in enumerate(e["mol_ids"].astype(str))}
        y = np.full((len(dataset), e["y"].shape[1]), np.nan)
        rows = np.array([pos.get(m, -1) for m in dataset.mol_ids])
        y[rows >= 0] = e["y"][rows[rows >= 0]]
        names = [str(t) for t in e["target_names"]]
    return dataclasses.replace(dataset, targets=torch.from_numpy(y), target_names=names)


def eht_from_epoch(history) -> int | None:
    """The first pretraining epoch that trained the EHT head (None: it never did)."""
    return next((h[H.EPOCH] for h in history if H.EHT_LOSS in h), None)


def run(args: argparse.Namespace) -> int:
    from molgnn.config import FinetuneConfig, ModelConfig, PretrainConfig
    from molgnn.featurize.atomistic import AtomisticDataset
    from molgnn.train.finetune import finetune
    from molgnn.train.checkpoints import load_checkpoint, save_checkpoint
    from molgnn.train.pretrain import pretrain

    t_start = time.time()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 throughout (amp off), as asked
        torch.backends.cudnn.allow_tf32 = False
    ctx = provenance(device=device, commit=args.commit, command=args.command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = ModelConfig(n_atom_basis=128, n_interactions=3, n_rbf=20, cutoff=5.0)

    data = AtomisticDataset.from_npz(args.npz)
    with np.load(args.npz) as d:
        train, val, test = d["train_idx"], d["val_idx"], d["test_idx"]

    rng = np.random.default_rng(args.seed)
    label_order = rng.permutation(train)          # nested label subsets: the first N of one permutation
    val_sub = np.sort(np.random.default_rng(args.seed + 1).permutation(val)[:args.n_val])
    test_eval = test if args.max_test is None else test[:args.max_test]

    detail = {"context": ctx, "args": vars(args), "n_pretrain_molecules": None, "extra": [],
              "n_val": int(len(val_sub)), "n_test": int(len(test_eval)), "pretrain": None, "runs": [], "skipped": []}

    if args.append and (out / f"{args.name}_detail.json").exists():
        # add to an earlier call's runs (same pretrained checkpoint): e.g. more seeds in a later GPU command
        earlier = json.loads((out / f"{args.name}_detail.json").read_text())
        detail["runs"], detail["skipped"] = earlier["runs"], earlier.get("skipped", [])
        detail["selection"] = earlier.get("selection", {})  # label counts this call does not run keep theirs
        detail["earlier_calls"] = earlier.get("earlier_calls", []) + [earlier["context"]]
        if earlier.get("pretrain") and "loaded_from" not in earlier["pretrain"]:
            detail["pretrained_in_earlier_call"] = earlier["pretrain"]  # how the checkpoint was made
        elif "pretrained_in_earlier_call" in earlier:
            detail["pretrained_in_earlier_call"] = earlier["pretrained_in_earlier_call"]

    def write() -> None:
        (out / f"{args.name}_detail.json").write_text(json.dumps(detail, indent=2, default=float) + "\n")
        write_records(out / f"{args.name}.json", records(detail, ctx, args))

    # (1) pretraining, or a saved pretraining checkpoint (e.g. from an earlier GPU command)
    if args.pretrained:
        ckpt = load_checkpoint(args.pretrained)
        detail["pretrain"] = {"loaded_from": args.pretrained, "seconds": float(sum(h[H.SECONDS] for h in ckpt["history"])),
                              "epochs": len(ckpt["history"]), "history": ckpt["history"],
                              "config": ckpt["pretrain_config"], "n_molecules": ckpt["n_molecules"],
                              "eht": ckpt.get("eht"),
                              "eht_from_epoch": eht_from_epoch(ckpt["history"])}
        detail["n_pretrain_molecules"] = int(ckpt["n_molecules"])
    else:
        pre_data, detail["extra"] = pretraining_structures(args, data, train)
        if args.eht_npz:
            pre_data = attach_eht(pre_data, args.eht_npz)
        detail["n_pretrain_molecules"] = len(pre_data)
        pcfg = PretrainConfig(epochs=100_000, batch_size=args.pretrain_batch, lr=args.pretrain_lr,
                              noise_std=args.noise_std, mask_rate=0.15, eht_weight=args.eht_weight)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        init_from = None
        if args.pretrain_init:
            init_from = load_checkpoint(args.pretrain_init)
        pre = pretrain(pre_data, model_cfg, pcfg, seed=args.seed, device=device, amp=args.pretrain_amp,
                       check_every=0, fused_optimizer=device.type == "cuda", max_seconds=args.pretrain_seconds,
                       cosine_lr=args.pretrain_cosine, init_from=init_from,
                       log_fn=lambda m, e: print(f"pretrain epoch {e}: " + ", ".join(
                           f"{k.split('/')[-1]} {v:.4g}" for k, v in m.items()), flush=True))
        detail["pretrain"] = {"seconds": float(sum(h[H.SECONDS] for h in pre.history)), "epochs": len(pre.history),
                              "eht_from_epoch": eht_from_epoch(pre.history),
                              "this_call_seconds": time.perf_counter() - t0, "continued_from": args.pretrain_init,
                              "cosine_lr": args.pretrain_cosine, "history": pre.history, "config": vars(pcfg),
                              "amp": args.pretrain_amp, "eht": pre.checkpoint.get("eht")}
        ckpt = pre.checkpoint
        if args.save_pretrained:
            save_checkpoint(ckpt, args.save_pretrained)
    write()

    # (2) fine-tuning: per label count and seed, scratch and the pretrained encoder at each lr scale
    dataset = data.to(device)
    inits = ([("scratch", 1.0)] + [("scratch", float(x)) for x in args.scratch_encoder_lr_scales if float(x) != 1.0]
             + [("pretrained", float(x)) for x in args.encoder_lr_scales])
    detail.setdefault("selection", {})
    for n in args.labels:
        lab = np.sort(label_order[:n])
        eval_every = max(1, args.eval_molecules // n)
        for i, seed in enumerate(args.seeds):
            todo = inits
            if args.select_on_val and i > 0:
                # the lr search ran at the first seed: the other seeds repeat each init's best scale only
                sel = select_on_val(detail["runs"], n, args.seeds[0], inits)  # derived from the first seed's runs
                todo = [(init, sel[init]["encoder_lr_scale"]) for init in ("scratch", "pretrained") if init in sel]
            todo = [(init, sc) for init, sc in todo if find_run(detail["runs"], n, init, sc, seed) is None]
            per_run = args.finetune_seconds + args.run_overhead
            left = (args.stop_at - time.time()) if args.stop_at else float("inf")
            if todo and left < len(todo) * per_run + 15:
                detail["skipped"].append({"labels": n, "seed": seed, "reason": f"{left:.0f} s left before --stop-at"})
                print(f"skip N={n} seed {seed}: {left:.0f} s left", flush=True)
                write()
                continue
            for init, enc_scale in todo:
                cfg = FinetuneConfig(targets=["gap"], epochs=100_000, batch_size=args.batch_size, lr=args.lr,
                                     patience=100_000, split="random", ensemble_size=1, encoder_lr_scale=enc_scale,
                                     atom_features=None)  # QM9 npz: element-only inputs
                start_from = ckpt if init == "pretrained" else None
                if init == "scratch" and enc_scale != 1.0:
                    # ablation: a freshly initialised encoder given the same lr scale as the pretrained one
                    # (finetune applies the scale to loaded encoders only)
                    start_from = random_encoder(model_cfg, ckpt["config"]["elements"], seed)
                t1 = time.perf_counter()
                res = finetune(dataset, None, (lab, val_sub, test_eval), model_cfg, cfg, seed=seed, device=device,
                               pretrained=start_from, scheduler="cosine-time",
                               time_budget_s=args.finetune_seconds, warmup_steps=args.warmup_steps,
                               min_lr_ratio=0.01, device_batches=True, check_every=0, eval_every=eval_every,
                               eval_batch_size=1000)
                wall = time.perf_counter() - t1
                val_key = H.val_mae("gap")
                curve = [{"epoch": h[H.EPOCH], "train_seconds": h[H.ELAPSED_SECONDS], "train_loss": h[H.TRAIN_LOSS],
                          "lr": h[H.LR], **({"val_mae_meV": h[val_key] * 1000} if val_key in h else {})}
                         for h in res.history]
                run_rec = {"labels": n, "init": init, "encoder_lr_scale": enc_scale, "seed": seed,
                           "test_mae_meV": res.test_metrics["gap"]["mae"] * 1000,
                           "test_rmse_meV": res.test_metrics["gap"]["rmse"] * 1000,
                           "val_mae_meV": res.val_metrics["gap"]["mae"] * 1000,
                           "best_epoch": res.checkpoint["best_epoch"], "epochs": len(res.history),
                           "train_seconds": res.train_seconds, "wall_seconds": wall, "eval_every": eval_every,
                           "curve": curve}
                detail["runs"].append(run_rec)
                print(f"N={n} seed {seed} {system_name(init, enc_scale)}: test MAE {run_rec['test_mae_meV']:.1f} meV "
                      f"(val {run_rec['val_mae_meV']:.1f}), {len(res.history)} epochs, best {run_rec['best_epoch']}, "
                      f"{wall:.1f} s", flush=True)
                write()
            if args.select_on_val and i == 0:
                detail["selection"][str(n)] = select_on_val(detail["runs"], n, seed, inits)
                write()
    detail["call_wall_seconds"] = time.time() - t_start
    write()
    print_table(detail)
    return 0


def random_encoder(model_cfg, elements, seed: int) -> dict:
    """A 'pretraining' checkpoint holding an untrained encoder (PyTorch's default init, seeded)."""
    from molgnn.models.pretraining import PretrainingModel
    from molgnn.train.checkpoints import checkpoint_from_model

    torch.manual_seed(10_000 + seed)
    return checkpoint_from_model(PretrainingModel(model_cfg, elements), seed=seed, random_init=True)


def system_name(init: str, enc_scale: float) -> str:
    suffix = "" if enc_scale == 1.0 else f", encoder lr x{enc_scale:g}"
    return f"molgnn ({init}{suffix})"


def find_run(runs, n: int, init: str, enc_scale: float, seed: int):
    for r in runs:
        if (r["labels"], r["init"], r.get("encoder_lr_scale", 1.0), r.get("seed", 0)) == (n, init, enc_scale, seed):
            return r
    return None


def select_on_val(runs, n: int, seed: int, inits) -> dict:
    """Per init, the encoder-lr scale (among this call's) with the lowest validation MAE at ``seed``."""
    sel = {}
    for init in ("scratch", "pretrained"):
        done = [r for r in (find_run(runs, n, i, sc, seed) for i, sc in inits if i == init) if r is not None]
        if done:
            best = min(done, key=lambda r: r["val_mae_meV"])
            sel[init] = {"encoder_lr_scale": best["encoder_lr_scale"], "seed": seed,
                         "val_mae_meV": {f"x{r['encoder_lr_scale']:g}": r["val_mae_meV"] for r in done}}
    return sel


def summary(detail):
    """{labels: {system: {seed: run}}}."""
    by: dict = {}
    for r in detail["runs"]:
        by.setdefault(r["labels"], {}).setdefault(system_name(r["init"], r.get("encoder_lr_scale", 1.0)), {})[
            r.get("seed", 0)] = r
    return {n: systems for n, systems in sorted(by.items()) if "molgnn (scratch)" in systems}


def compare(runs, ref):
    """Mean test MAEs of two systems ({seed: run}) and the MAE reduction, over their common seeds."""
    seeds = sorted(set(runs) & set(ref))
    mae = [runs[s]["test_mae_meV"] for s in seeds]
    ref_mae = [ref[s]["test_mae_meV"] for s in seeds]
    return {"seeds": seeds, "per_seed": mae, "ref_per_seed": ref_mae, "test": float(np.mean(mae)) if seeds else None,
            "val": float(np.mean([runs[s]["val_mae_meV"] for s in seeds])) if seeds else None,
            "reduction": [100.0 * (1.0 - a / b) for a, b in zip(mae, ref_mae)],
            "reduction_of_means": 100.0 * (1.0 - np.mean(mae) / np.mean(ref_mae)) if seeds else None}


def records(detail, ctx, args):
    pre = detail.get("pretrain") or {}
    pcfg = pre.get("config") or {}
    objectives = f"denoising sigma {pcfg.get('noise_std')} A + 15 % masked types"
    if pcfg.get("eht_weight"):
        objectives += f" + EHT HOMO/LUMO/gap (weight {pcfg['eht_weight']:g}"
        objectives += f", from epoch {pre['eht_from_epoch']})" if (pre.get("eht_from_epoch") or 1) > 1 else ")"
    setup = (f"PaiNN 128x3, cutoff 5, 20 RBF; pretraining {pre.get('seconds', float('nan')):.0f} s "
             f"({pre.get('epochs', 0)} epochs, {objectives}, batch {pcfg.get('batch_size')}, lr {pcfg.get('lr')} "
             f"(the last call's), {pre.get('amp') or 'fp32'}) on "
             f"{detail['n_pretrain_molecules']:,} unlabeled structures; fine-tuning {args.finetune_seconds:.0f} s per "
             f"run (batch {args.batch_size}, AdamW {args.lr:g} cosine over the budget, fp32; a pretrained encoder at "
             f"lr x its scale), best of {detail['n_val']:,} validation molecules, test on {detail['n_test']:,}; "
             f"values are means over the fine-tuning seeds whose values per_seed lists")
    out = []
    bench = (BENCH + (" with EHT orbitals" if pcfg.get("eht_weight") else "")
             + (": encoder-lr search of equal size for both inits" if getattr(args, "select_on_val", False) else ""))

    def rec(system, metric, value, unit, hib=False, **extra):
        out.append(record(bench, system, metric, value, unit, hib, ctx, setup=setup, **extra))

    for n, systems in summary(detail).items():
        scratch = systems["molgnn (scratch)"]
        for name, runs in systems.items():
            seeds = sorted(runs)
            rec(name, f"gap test MAE @{n} labels", float(np.mean([runs[s]["test_mae_meV"] for s in seeds])), "meV",
                per_seed=[runs[s]["test_mae_meV"] for s in seeds], seeds=seeds)
            if name != "molgnn (scratch)":
                c = compare(runs, scratch)
                if c["seeds"]:
                    rec(name, f"gap test MAE reduction vs scratch @{n} labels", c["reduction_of_means"], "%", True,
                        per_seed=c["reduction"], seeds=c["seeds"])
        sel = detail.get("selection", {}).get(str(n))
        if sel and {"scratch", "pretrained"} <= set(sel):
            # like for like: each init at the encoder-lr scale its own validation MAE chose
            chosen = {init: systems[system_name(init, sel[init]["encoder_lr_scale"])] for init in sel}
            c = compare(chosen["pretrained"], chosen["scratch"])
            for init, per_seed in (("scratch", c["ref_per_seed"]), ("pretrained", c["per_seed"])):
                rec(f"molgnn ({init}, encoder lr chosen on validation)", f"gap test MAE @{n} labels",
                    float(np.mean(per_seed)), "meV", per_seed=per_seed, seeds=c["seeds"],
                    encoder_lr_scale=sel[init]["encoder_lr_scale"], search=sel[init]["val_mae_meV"])
            rec("molgnn (pretrained, encoder lr chosen on validation)",
                f"gap test MAE reduction vs scratch, each init's encoder lr chosen on validation @{n} labels",
                c["reduction_of_means"], "%", True, per_seed=c["reduction"], seeds=c["seeds"])
    return out


def rewrite_records(args: argparse.Namespace) -> int:
    """NAME.json again from NAME_detail.json (its own context and arguments): e.g. after the record
    layout changed, or to describe a result that took several calls (``--command``), without rerunning."""
    path = Path(args.detail)
    detail = json.loads(path.read_text())
    out = Path(args.out) if args.out else path.with_name(path.name.replace("_detail.json", ".json"))
    ctx = dict(detail["context"], **({"command": args.command} if args.command else {}))
    recs = records(detail, ctx, argparse.Namespace(**detail["args"]))
    for r in recs:
        r["benchmark"] += args.benchmark_suffix
    write_records(out, recs)
    print(f"wrote {out}")
    return 0


def print_table(detail):
    print("\n| labels | system | test MAE (meV, mean over seeds) | val MAE (meV) | reduction vs scratch | seeds |")
    print("|---:|---|---:|---:|---:|---|")
    for n, systems in summary(detail).items():
        for name, runs in systems.items():
            c = compare(runs, systems["molgnn (scratch)"])
            red = "–" if c["reduction_of_means"] is None else f"{c['reduction_of_means']:.1f} %"
            print(f"| {n:,} | {name} | {np.mean([r['test_mae_meV'] for r in runs.values()]):.1f} | "
                  f"{np.mean([r['val_mae_meV'] for r in runs.values()]):.1f} | {red} | "
                  f"{sorted(runs)} |")
        sel = detail.get("selection", {}).get(str(n))
        if sel and {"scratch", "pretrained"} <= set(sel):
            c = compare(systems[system_name("pretrained", sel["pretrained"]["encoder_lr_scale"])],
                        systems[system_name("scratch", sel["scratch"]["encoder_lr_scale"])])
            print(f"| {n:,} | chosen on validation: scratch x{sel['scratch']['encoder_lr_scale']:g}, pretrained "
                  f"x{sel['pretrained']['encoder_lr_scale']:g} | {c['test']:.1f} vs "
                  f"{np.mean(c['ref_per_seed']):.1f} | | {c['reduction_of_means']:.1f} % | {c['seeds']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pm = sub.add_parser("prepare-moses")
    pm.add_argument("--moses", default=str(REPO.parent / "shared" / "datasets" / "moses" / "train.csv.gz"))
    pm.add_argument("--n", type=int, default=3000)
    pm.add_argument("--pool", type=int, default=200_000, help="sample from the first POOL rows")
    pm.add_argument("--workers", type=int, default=2)
    pm.add_argument("--seed", type=int, default=0)
    pm.add_argument("--out", default=str(REPO / ".bench" / "gpu" / "moses3k.npz"))
    pe = sub.add_parser("prepare-eht")
    pe.add_argument("--npz", default=str(REPO / ".bench" / "gpu" / "qm9.npz"))
    pe.add_argument("--extra", nargs="*", default=[])
    pe.add_argument("--workers", type=int, default=2)
    pe.add_argument("--out", default=str(REPO / ".bench" / "gpu" / "eht.npz"))
    rr = sub.add_parser("records", help="rewrite NAME.json from NAME_detail.json")
    rr.add_argument("detail")
    rr.add_argument("--command", default=None, help="the records' command text (default: the detail's last call)")
    rr.add_argument("--out", default=None, help="where to write (default: NAME.json beside the detail file)")
    rr.add_argument("--benchmark-suffix", default="", help="appended to the records' benchmark name (e.g. ': control')")
    r = sub.add_parser("run")
    r.add_argument("--npz", default=str(REPO / ".bench" / "qm9" / "qm9.npz"))
    r.add_argument("--extra", nargs="*", default=[], help="npz files of extra unlabeled structures")
    r.add_argument("--out", default=str(RESULTS))
    r.add_argument("--name", default="pretraining_gain", help="result files NAME.json and NAME_detail.json")
    r.add_argument("--pretrain-seconds", type=float, default=180.0)
    r.add_argument("--pretrain-batch", type=int, default=100)
    r.add_argument("--pretrain-lr", type=float, default=5e-4)
    r.add_argument("--noise-std", type=float, default=0.05)
    r.add_argument("--pretrain-amp", choices=["bf16"], default=None, help="autocast of the pretraining forward pass")
    r.add_argument("--pretrain-init", default=None, help="continue pretraining from this pretraining checkpoint")
    r.add_argument("--pretrain-cosine", action="store_true", help="cosine lr decay over --pretrain-seconds")
    r.add_argument("--eht-weight", type=float, default=0.0, help="weight of the extended-Hueckel orbital objective")
    r.add_argument("--eht-npz", default=None, help="EHT targets from prepare-eht (else computed on the CPU)")
    r.add_argument("--pretrained", default=None, help="a saved pretraining checkpoint: skip pretraining")
    r.add_argument("--save-pretrained", default=None, help="where to save the pretraining checkpoint")
    r.add_argument("--encoder-lr-scales", type=float, nargs="+", default=[1.0],
                   help="one pretrained run per scale: the encoder trains at lr x scale, the head at lr")
    r.add_argument("--scratch-encoder-lr-scales", type=float, nargs="*", default=[],
                   help="ablation: also scratch runs whose (random) encoder trains at lr x scale")
    r.add_argument("--append", action="store_true",
                   help="keep the runs already in OUT/NAME_detail.json and add these, skipping any run (labels, "
                        "init, scale, seed) already there (use with --pretrained)")
    r.add_argument("--select-on-val", action="store_true",
                   help="lr search: the first seed runs every init x scale; the other seeds only each init's scale "
                        "with the lowest validation MAE at the first seed")
    r.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (head init, batch order)")
    r.add_argument("--finetune-seconds", type=float, default=25.0)
    r.add_argument("--run-overhead", type=float, default=4.0, help="expected seconds per run beyond the budget")
    r.add_argument("--labels", type=int, nargs="+", default=[1000, 10000, 100, 3000])
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--lr", type=float, default=5e-4)
    r.add_argument("--warmup-steps", type=int, default=100)
    r.add_argument("--eval-molecules", type=int, default=10_000, help="validate every max(1, this // N) epochs")
    r.add_argument("--n-val", type=int, default=1000)
    r.add_argument("--max-test", type=int, default=None, help="smoke tests only")
    r.add_argument("--max-pretrain", type=int, default=None, help="smoke tests only")
    r.add_argument("--stop-at", type=float, default=None, help="unix time: skip pairs that would end later")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--commit", default=None, help="code version to record (default: MOLGNN_COMMIT, else git HEAD)")
    r.add_argument("--command", default=None, help="command text to record (default: this command line)")
    args = ap.parse_args(argv)
    return {"prepare-moses": prepare_moses, "prepare-eht": prepare_eht, "records": rewrite_records, "run": run}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
