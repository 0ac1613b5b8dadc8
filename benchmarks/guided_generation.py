"""Property-guided generation on QM9: how far does regressor guidance move QED, at what validity?

    # CPU, ~10 min on 2 shared cores: 20k QM9 training molecules, T = 50 (the defaults)
    .venv/bin/python benchmarks/guided_generation.py --threads 1 --work .bench/guided
    # reuse the models trained above, other strengths / target
    .venv/bin/python benchmarks/guided_generation.py --threads 1 --work .bench/guided --scales 0 30 \\
        --generator-checkpoint .bench/guided/generator.pt --regressor-checkpoint .bench/guided/regressor.pt
    # separate strengths on atom types and bonds (NODE:EDGE; 3:0 = atom types only), own output files
    .venv/bin/python benchmarks/guided_generation.py --threads 1 --work .bench/guided --scales 0 1:0 3:0 10:0 3:1 \\
        --generator-checkpoint .bench/guided/generator.pt --regressor-checkpoint .bench/guided/regressor.pt \\
        --name guided_generation_atoms --benchmark qm9-guided-generation-atom-only
    # SMILES as plain text (for machines without pandas): write them once, then read them
    .venv/bin/python benchmarks/guided_generation.py --export-smiles .bench/gpu/qm9_train.txt.gz
    python3 benchmarks/guided_generation.py --smiles .bench/gpu/qm9_train.txt.gz --device cuda ...

Steps: (1) the training split of ``--smiles`` (QM9 parquet + ``--split`` csv, a .txt/.smi/.txt.gz file of
SMILES, or ``qm9-sample``), a seeded subset of ``--n-train``; (2) a discrete graph diffusion model
(``molgnn.generate.training.train_generator``) unless ``--generator-checkpoint`` is given; (3) the
property (RDKit, default QED) of those molecules and a ``NoisyGraphRegressor`` trained on them,
noised by the generator's own process (``molgnn.generate.guidance``), checked on held-out molecules
at t = 0, T/2, T; (4) ``--n-samples`` draws per guidance scale from one seed (scale 0 = unguided; the
same uniforms drive every arm), decoded without correction, scored by the exact RDKit property. A
scale ``NODE:EDGE`` tilts atom types by NODE and bonds by EDGE (a plain number: both).
Hit rate = fraction of valid draws whose property is in ``[--low, --high]``. Writes
``NAME.json`` (records), ``detail/NAME_detail.json`` and ``detail/NAME_hist.png`` (``--name``, default
guided_generation). Imports: numpy, torch, RDKit and molgnn (pyyaml via
molgnn.config); pandas only to read a parquet file, matplotlib only for the figure.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO, RESULTS, command_line, provenance, record, write_records
from molgnn.chem.sample_rates import novelty

BENCH = "qm9-guided-generation"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# --------------------------------------------------------------------------------------- data
def read_smiles(source: str, split: str | None) -> list[str]:
    """Training SMILES: parquet (+ split csv: rows whose split is 'train'), text (one per line, first
    field), or the named source qm9-sample (the 2,000-molecule file shipped in molgnn/resources)."""
    if source == "qm9-sample":
        with gzip.open(REPO / "molgnn" / "resources" / "qm9_sample.csv.gz", "rt", newline="") as fh:
            return [row["SMILES"] for row in csv.DictReader(fh)]
    path = Path(source)
    if path.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path, columns=["mol_id", "smiles"])
        if split:
            with open(split, newline="") as fh:
                train_ids = {row["mol_id"] for row in csv.DictReader(fh) if row["split"] == "train"}
            df = df[df["mol_id"].isin(train_ids)]
        return df["smiles"].tolist()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [line.split()[0] for line in fh if line.strip() and not line.startswith("#")]


def _property_chunk(args: tuple[list[str], str]) -> np.ndarray:
    from molgnn.generate.guidance import property_values
    return property_values(*args)


def properties_of(smiles: list, name: str, workers: int) -> np.ndarray:
    from molgnn.generate.guidance import property_values

    if workers <= 1 or len(smiles) < 5000:
        return property_values(smiles, name)
    import multiprocessing as mp

    chunks = [(smiles[i:i + 2000], name) for i in range(0, len(smiles), 2000)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return np.concatenate(pool.map(_property_chunk, chunks))


# --------------------------------------------------------------------------------------- scoring
def describe(values: np.ndarray, low: float, high: float, bins: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0}
    hist, _ = np.histogram(np.clip(v, bins[0], bins[-1]), bins=bins)
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std()),
            **{f"q{int(q * 100)}": float(np.quantile(v, q)) for q in QUANTILES},
            "in_target": float(((v >= low) & (v <= high)).mean()), "hist": hist.tolist()}


def score_arm(result, values: np.ndarray, train_set: set, low: float, high: float, bins: np.ndarray) -> dict:
    n = len(result.smiles)
    valid = [s for s in result.smiles if s is not None]
    hits = [s for s, v in zip(result.smiles, values) if s is not None and low <= v <= high]
    return {"n_samples": n, "validity": result.validity, "validity_corrected": result.validity_corrected,
            "uniqueness": result.uniqueness,
            "novelty": novelty(set(valid), train_set),
            "hit_rate_valid": len(hits) / max(len(valid), 1), "hit_rate_per_draw": len(hits) / max(n, 1),
            "unique_hits_per_draw": len(set(hits)) / max(n, 1), "seconds": result.seconds,
            "property": describe(values, low, high, bins)}


def figure(detail: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    prop, (low, high) = detail["property"], detail["target"]
    bins = np.asarray(detail["hist_bins"])
    centers = (bins[:-1] + bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(7, 4))
    arms = [("training set", detail["training_property"])] + [(a["label"], a["property"]) for a in detail["arms"]]
    for label, d in arms:
        if d.get("n"):
            h = np.asarray(d["hist"], float)
            ax.step(centers, h / h.sum(), where="mid", label=f"{label} (n {d['n']:,}, mean {d['mean']:.3f}, hit {d['in_target']:.0%})",
                    lw=2.2 if label == "training set" else 1.5, ls="--" if label == "training set" else "-")
    used = np.nonzero(sum(np.asarray(d["hist"]) for _, d in arms if d.get("n")))[0]
    lo_edge, hi_edge = bins[max(used[0] - 1, 0)], bins[min(used[-1] + 2, len(bins) - 1)]
    ax.set_xlim(lo_edge, hi_edge)
    ax.axvspan(max(low, lo_edge), min(high, hi_edge), color="0.9", zorder=0, label="target")
    ax.set_xlabel(f"{prop} (RDKit) of valid samples")
    ax.set_ylabel("fraction per bin")
    ax.set_title(f"Regressor-guided diffusion on QM9: {prop} {detail['target_text']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_scale(text: str) -> tuple[float, float | None]:
    """``"3"`` -> (3, None): one strength for atom types and bonds; ``"3:0"`` -> (3, 0): atom types 3, bonds 0."""
    node, sep, edge = str(text).partition(":")
    try:
        pair = (float(node), float(edge) if sep else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a guidance scale is a number or NODE:EDGE, got {text!r}") from None
    if not all(v >= 0 and np.isfinite(v) for v in pair if v is not None):
        raise argparse.ArgumentTypeError(f"guidance scales must be finite and >= 0, got {text!r}")
    return pair


def arm_label(node: float, edge: float | None) -> str:
    if edge is None or edge == node:
        return "unguided" if node == 0 else f"guided, scale {node:g}"
    if node == 0 and edge == 0:
        return "unguided"
    if edge == 0:
        return f"guided, atom types only, scale {node:g}"
    if node == 0:
        return f"guided, bonds only, scale {edge:g}"
    return f"guided, atom types {node:g} / bonds {edge:g}"


def records(detail: dict, ctx: dict) -> list[dict]:
    prop = detail["property"]
    g, r = detail["generator"], detail["regressor"]
    setup = (f"{detail['n_train']:,} QM9 training molecules; diffusion T={g['hparams']['timesteps']}, "
             f"hidden {g['hparams']['hidden_dim']} x {g['hparams']['n_layers']} layers, {g['epochs']} epochs "
             f"({g['train_seconds']:.0f} s{', loaded' if g.get('checkpoint') else ''}); noisy-graph {prop} regressor "
             f"hidden {r['hparams']['hidden_dim']} x {r['hparams']['n_layers']}, {r['epochs']} epochs, held-out R2 "
             f"{r['eval'][0]['r2']:.2f} (t=0) / {r['eval'][1]['r2']:.2f} (t=T/2); {detail['n_samples']:,} draws per "
             f"arm, seed {detail['seed']}; target {prop} {detail['target_text']}")
    out = []

    def rec(system, metric, value, unit, hib):
        out.append(record(detail.get("benchmark", BENCH), system, metric, value, unit, hib, ctx, setup=setup))

    t = detail["training_property"]
    rec("QM9 training set", f"{prop} mean", t["mean"], prop, True)
    rec("QM9 training set", f"{prop} median", t["q50"], prop, True)
    rec("QM9 training set", f"hit rate ({prop} {detail['target_text']})", t["in_target"], "fraction", True)
    for arm in detail["arms"]:
        s = arm["label"]
        rec(s, "validity (uncorrected)", arm["validity"], "fraction", True)
        rec(s, "uniqueness", arm["uniqueness"], "fraction", True)
        rec(s, "novelty", arm["novelty"], "fraction", True)
        if arm["property"].get("n"):
            rec(s, f"{prop} mean", arm["property"]["mean"], prop, True)
            rec(s, f"{prop} median", arm["property"]["q50"], prop, True)
            rec(s, f"{prop} 10th percentile", arm["property"]["q10"], prop, True)
            rec(s, f"{prop} 90th percentile", arm["property"]["q90"], prop, True)
        rec(s, f"hit rate ({prop} {detail['target_text']})", arm["hit_rate_valid"], "fraction", True)
        rec(s, "hits per draw (valid and on target)", arm["hit_rate_per_draw"], "fraction", True)
        rec(s, "distinct hits per draw", arm["unique_hits_per_draw"], "fraction", True)
        rec(s, "sampling time", arm["seconds"], "s", False)
    return out


# --------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smiles", default=str(REPO / ".bench" / "qm9" / "ingest" / "molecules.parquet"),
                    help="parquet (needs --split), .txt/.smi[.gz] of SMILES, or qm9-sample")
    ap.add_argument("--split", default=str(REPO / ".bench" / "qm9" / "split.csv"),
                    help="mol_id,split csv for a parquet source ('' = all rows)")
    ap.add_argument("--export-smiles", default=None, help="write the training SMILES (txt.gz) and exit")
    ap.add_argument("--n-train", type=int, default=20000, help="seeded subset of the training SMILES (0 = all)")
    ap.add_argument("--n-heldout", type=int, default=1000, help="molecules kept out to check the regressor")
    ap.add_argument("--max-nodes", type=int, default=9)
    ap.add_argument("--generator-checkpoint", default=None, help="a trained diffusion (molgnn.generate.checkpoints)")
    ap.add_argument("--only-generator", action="store_true",
                    help="train and save the generator (--work/generator.pt), then stop: split a long GPU run")
    ap.add_argument("--gen-epochs", type=int, default=6)
    ap.add_argument("--gen-batch", type=int, default=128)
    ap.add_argument("--gen-lr", type=float, default=1e-3)
    ap.add_argument("--timesteps", type=int, default=50)
    ap.add_argument("--hidden-dim", type=int, default=64)
    ap.add_argument("--n-layers", type=int, default=3)
    ap.add_argument("--property", default="qed")
    ap.add_argument("--low", type=float, default=0.55)
    ap.add_argument("--high", type=float, default=float("inf"))
    ap.add_argument("--regressor-checkpoint", default=None)
    ap.add_argument("--reg-epochs", type=int, default=8)
    ap.add_argument("--reg-batch", type=int, default=128)
    ap.add_argument("--reg-lr", type=float, default=3e-4, help="1e-3 leaves a QED regressor on the mean")
    ap.add_argument("--t-exponent", type=float, default=3.0, help="regressor noise levels t = T u^p (1 = uniform)")
    ap.add_argument("--reg-hidden", type=int, default=64)
    ap.add_argument("--reg-layers", type=int, default=2)
    ap.add_argument("--scales", type=parse_scale, nargs="+", default=["0", "1", "3", "10", "30"],
                    help="0 = unguided; NODE:EDGE = atom-type and bond strengths (3:0 = atom types only)")
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--sample-batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=1, help="processes computing RDKit properties")
    ap.add_argument("--work", default=str(REPO / ".bench" / "guided"), help="where trained models are saved")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="guided_generation", help="stem of the output files")
    ap.add_argument("--benchmark", default=BENCH, help="benchmark name in the records")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--command", default=None)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from molgnn.featurize.dense_graph import encode_many
    from molgnn.generate.checkpoints import load_generator, save_generator
    from molgnn.generate.guidance import (PropertyTarget, RegressorGuidance, evaluate_regressor, load_regressor,
                                          save_regressor, train_noisy_regressor)
    from molgnn.generate.sampling import sample_smiles
    from molgnn.generate.training import train_generator

    t_start = time.time()
    smiles = read_smiles(args.smiles, args.split or None)
    print(f"{len(smiles):,} training SMILES from {args.smiles}", flush=True)
    if args.export_smiles:
        Path(args.export_smiles).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(args.export_smiles, "wt") as fh:
            fh.writelines(s + "\n" for s in smiles)
        print(f"wrote {args.export_smiles}")
        return 0

    target = PropertyTarget(args.low, args.high)   # fails early on an inverted range
    device = torch.device(args.device)
    ctx = provenance(device=device, commit=args.commit, command=args.command or command_line(argv),
                     torch_threads=device.type == "cpu")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(smiles))
    n_train = len(smiles) - args.n_heldout if args.n_train <= 0 else min(args.n_train, len(smiles) - args.n_heldout)
    train_smiles = [smiles[i] for i in order[:n_train]]
    held_smiles = [smiles[i] for i in order[n_train:n_train + args.n_heldout]]

    # (2) generator
    if args.generator_checkpoint:
        gen = load_generator(args.generator_checkpoint, device=device)
        gen_info = {"checkpoint": args.generator_checkpoint, "epochs": len(gen.history), "train_seconds": gen.train_seconds}
    else:
        t0 = time.perf_counter()
        gen = train_generator("diffusion", train_smiles, epochs=args.gen_epochs, batch_size=args.gen_batch,
                              lr=args.gen_lr, seed=args.seed, device=device, max_nodes=args.max_nodes,
                              timesteps=args.timesteps, hidden_dim=args.hidden_dim, n_layers=args.n_layers,
                              on_epoch_end=lambda h: print(f"generator epoch {h['epoch']:.0f}: loss {h['loss']:.4f} "
                                                           f"({h['seconds']:.0f} s)", flush=True))
        save_generator(gen, work / "generator.pt")
        gen_info = {"checkpoint": None, "epochs": args.gen_epochs, "train_seconds": time.perf_counter() - t0,
                    "saved": str(work / "generator.pt")}
    if args.only_generator:
        print(f"generator saved to {work / 'generator.pt'} ({time.time() - t_start:.0f} s)")
        return 0
    gen_info.update(hparams=gen.hparams, history=gen.history)
    diffusion, vocab = gen.model, gen.vocab

    # (3) labels and the regressor; molecules the generator's vocabulary cannot encode are left out
    x, e, kept, _ = encode_many(train_smiles, vocab, gen.max_nodes, dtype=torch.uint8)
    t0 = time.perf_counter()
    labels = properties_of([train_smiles[i] for i in kept], args.property, args.workers)
    print(f"{args.property} of {len(kept):,} training molecules: {time.perf_counter() - t0:.0f} s", flush=True)
    ok = np.isfinite(labels)
    x, e, labels = x[torch.from_numpy(ok)], e[torch.from_numpy(ok)], labels[ok]
    hx, he, hkept, _ = encode_many(held_smiles, vocab, gen.max_nodes, dtype=torch.uint8)
    h_labels = properties_of([held_smiles[i] for i in hkept], args.property, args.workers)
    if args.regressor_checkpoint:
        reg = load_regressor(args.regressor_checkpoint, device=device)
        reg_info = {"checkpoint": args.regressor_checkpoint}
    else:
        reg = train_noisy_regressor(diffusion, x, e, labels, properties=[args.property], epochs=args.reg_epochs,
                                    batch_size=args.reg_batch, lr=args.reg_lr, seed=args.seed, device=device,
                                    hidden_dim=args.reg_hidden, n_layers=args.reg_layers, t_exponent=args.t_exponent,
                                    on_epoch_end=lambda h: print(f"regressor epoch {h['epoch']:.0f}: loss {h['loss']:.4f} "
                                                                 f"({h['seconds']:.0f} s)", flush=True))
        save_regressor(reg, work / "regressor.pt")
        reg_info = {"checkpoint": None, "saved": str(work / "regressor.pt")}
    hfin = np.isfinite(h_labels)
    hx, he = hx[torch.from_numpy(hfin)], he[torch.from_numpy(hfin)]
    evals = [evaluate_regressor(reg.regressor, diffusion, hx, he, h_labels[hfin], t=t, seed=args.seed)
             for t in (0, diffusion.timesteps // 2, diffusion.timesteps)]
    print("regressor on held-out molecules: " + ", ".join(f"t={v['t']:.0f} MAE {v['mae']:.4f} R2 {v['r2']:.3f}"
                                                          for v in evals), flush=True)
    reg_info.update(hparams=reg.regressor.hparams, epochs=len(reg.history), history=reg.history,
                    train_seconds=reg.train_seconds, eval=evals, n_heldout=int(hfin.sum()))

    # (4) unguided and guided arms from one seed
    # Decoded samples carry no stereochemistry: compare with the training set's non-isomeric SMILES.
    from rdkit import Chem, rdBase
    blocker = rdBase.BlockLogs()
    mols = (Chem.MolFromSmiles(s) for s in train_smiles)
    train_set = {Chem.MolToSmiles(m, isomericSmiles=False) for m in mols if m is not None}
    del blocker
    # QED lives in [0, 1]; other properties get bins spanning the training labels.
    bins = (np.linspace(0.0, 1.0, 41) if args.property == "qed"
            else np.linspace(np.quantile(labels, 0.001), np.quantile(labels, 0.999), 41))
    detail = {"context": ctx, "args": vars(args), "benchmark": args.benchmark, "property": args.property,
              "target": [target.low, target.high],
              "target_text": target.describe(), "n_train": len(train_smiles), "n_samples": args.n_samples,
              "seed": args.seed, "generator": gen_info, "regressor": reg_info,
              "training_property": describe(labels, target.low, target.high, bins), "hist_bins": bins.tolist(),
              "arms": []}
    for node_scale, edge_scale in args.scales:
        label = arm_label(node_scale, edge_scale)
        guidance = None if label == "unguided" else RegressorGuidance(
            reg.regressor, {args.property: target}, scale=node_scale, edge_scale=edge_scale)
        if device.type == "cuda":
            torch.cuda.synchronize()
        res = sample_smiles(diffusion, vocab, args.n_samples, seed=args.seed, device=device,
                            batch_size=args.sample_batch, guidance=guidance)
        values = properties_of(res.smiles, args.property, 1)
        arm = {"label": label, "scale": node_scale, "node_scale": node_scale,
               "edge_scale": node_scale if edge_scale is None else edge_scale,
               **score_arm(res, values, train_set, target.low, target.high, bins)}
        detail["arms"].append(arm)
        p = arm["property"]
        print(f"{arm['label']}: validity {arm['validity']:.3f}, uniqueness {arm['uniqueness']:.3f}, "
              f"{args.property} mean {p.get('mean', float('nan')):.3f} median {p.get('q50', float('nan')):.3f}, "
              f"hit rate {arm['hit_rate_valid']:.3f} ({arm['seconds']:.0f} s)", flush=True)
    detail["total_seconds"] = time.time() - t_start

    (out / "detail").mkdir(parents=True, exist_ok=True)
    write_records(out / f"{args.name}.json", records(detail, ctx))
    (out / "detail" / f"{args.name}_detail.json").write_text(json.dumps(detail, indent=2, default=float) + "\n")
    if figure(detail, out / "detail" / f"{args.name}_hist.png"):
        print(f"figure: {out / 'detail' / f'{args.name}_hist.png'}")
    print(f"total {detail['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
