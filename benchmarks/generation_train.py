"""Train a molecule generator (graph VAE or DiGress-style diffusion) on QM9 or MOSES within a time
budget, then sample from it: the GPU half of the generation benchmark (scoring: score_generation.py).

    python3 benchmarks/generation_train.py --dataset qm9 --kind diffusion --time-budget 240 \\
        --state .bench/gen/state/qm9_diffusion.pt --n-samples 10000 --out /tmp/gen/qm9_diffusion

Needs numpy, torch and RDKit only (no pandas, torch_geometric or schnetpack): the data are
.bench/gen/qm9_train.txt.gz and .bench/gen/moses_train.csv.gz (benchmarks/prepare_generation.py).
SMILES are encoded to dense uint8 graphs by --workers processes and cached under --cache-dir, so a
second command on the same machine skips that. Training goes through molgnn.generate.training (the
pipeline's code): AdamW, warm-up + cosine over the budget, EMA weights for sampling, training-state
file --state written every --checkpoint-every seconds; rerunning the same command resumes from it,
and the budget counts training seconds over all commands. Every --eval-every training seconds the
EMA model samples --eval-samples molecules (validity/uniqueness on the spot; SMILES kept for FCD
later): the learning curve. --stop-at (a Unix time) ends training early enough to sample.

Writes to --out: samples.tsv (one draw a line: SMILES as drawn, SMILES after keeping the largest
fragment; empty = invalid), history.json (loss per epoch and learning curve with its SMILES),
run.json (settings, timings, sampling speed, machine), generator/ (the trained generator as a
half-precision shard folder, every file under 16 MB, verified by SHA-256 on loading: what ships or is
fine-tuned later) and, with --export-state, state/ (the training state the same way, bfloat16, to
resume in another session: molgnn.generate.checkpoints.import_training_state). With several
--sample-steps, the final sampling is repeated at each number of reverse diffusion steps
(samples_steps<S>.tsv; samples.tsv is the first).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from common import REPO, command_line, git_commit, machine
from molgnn.featurize.dense_graph import GraphEncodingError, GraphVocab, atom_token, decode, encode, prepare_molecule
from molgnn.generate.checkpoints import export_training_state, load_generator, save_generator
from molgnn.generate.training import bf16_autocast_hooks, build_generator, train_generator_on_graphs

# Settings per (dataset, kind), chosen for ~4-5 minutes of one H100/H200 (see benchmarks/README.md).
# Diffusion: DiGress's layer with 6 layers of width 256 (DiGress: 9-12 layers, days of training),
# T=500 as DiGress; lr with warm-up and cosine to 5 %; EMA 0.999. VAE: wide decoder, big batches.
PRESETS: dict[tuple[str, str], dict] = {
    ("qm9", "diffusion"): dict(model=dict(timesteps=500, hidden_dim=256, n_layers=6, n_heads=8),
                               batch_size=512, lr=5e-4, warmup_steps=500, ema_decay=0.999, sample_batch=4096),
    ("moses", "diffusion"): dict(model=dict(timesteps=500, hidden_dim=256, n_layers=6, n_heads=8),
                                 batch_size=256, lr=4e-4, warmup_steps=500, ema_decay=0.999, sample_batch=2048),
    ("qm9", "vae"): dict(model=dict(latent_dim=64, hidden_dim=256, n_layers=3, beta=0.3),
                         batch_size=1024, lr=1e-3, warmup_steps=200, ema_decay=0.999, sample_batch=8192),
    ("moses", "vae"): dict(model=dict(latent_dim=128, hidden_dim=512, n_layers=3, beta=0.3),
                           batch_size=512, lr=5e-4, warmup_steps=200, ema_decay=0.999, sample_batch=8192),
}
# max heavy atoms: QM9 has 9 by construction; MOSES molecules have at most 27 (larger = rejects).
MAX_NODES = {"qm9": 9, "moses": 27}
# RDKit encoding costs ~1 ms a MOSES molecule: 1.58M on 16 cores would eat 2 of the ~5 minutes,
# and 5 minutes of training see ~4M graphs, several epochs of a 600k subset.
DEFAULT_LIMIT = {"moses": 600_000}
DATA_FILES = {"qm9": "qm9_train.txt.gz", "moses": "moses_train.csv.gz"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_smiles(path: Path) -> list[str]:
    """One SMILES a line (.txt.gz) or the SMILES column of a .csv.gz, without pandas."""
    with gzip.open(path, "rt") as fh:
        if path.name.endswith(".csv.gz"):
            reader = csv.reader(fh)
            header = next(reader)
            col = header.index("SMILES")
            return [row[col] for row in reader if row]
        return [line.strip() for line in fh if line.strip()]


# ------------------------------------------------------------------ parallel encoding (RDKit-bound)
def _tokens_of_chunk(args: tuple[list[str], int]) -> tuple[Counter, int]:
    chunk, max_nodes = args
    counts: Counter = Counter()
    largest = 0
    for smi in chunk:
        try:
            mol = prepare_molecule(smi)
        except GraphEncodingError:
            continue
        if mol.GetNumAtoms() <= max_nodes:
            largest = max(largest, mol.GetNumAtoms())
            counts.update(atom_token(a) for a in mol.GetAtoms())
    return counts, largest


_BOND_CLASS = {1.0: 1, 2.0: 2, 3.0: 3}


def encode_fast(smi: str, classes: dict, max_nodes: int, xs: np.ndarray, es: np.ndarray) -> bool:
    """``dense_graph.encode`` into preallocated numpy rows (3x faster than its per-element torch
    writes); same rules: reject > max_nodes atoms, unknown tokens, radicals, non-kekulizable, other
    bonds. ``encode_dataset`` checks it against ``encode`` on a sample of every dataset it encodes."""
    from rdkit import Chem
    try:
        mol = prepare_molecule(smi)
    except GraphEncodingError:
        return False
    n = mol.GetNumAtoms()
    if n > max_nodes:
        return False
    for atom in mol.GetAtoms():
        cls = classes.get(atom_token(atom))
        if cls is None or atom.GetNumRadicalElectrons():
            return False
        xs[atom.GetIdx()] = cls
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:   # KekulizeException
        return False
    for bond in mol.GetBonds():
        cls = _BOND_CLASS.get(bond.GetBondTypeAsDouble())
        if cls is None:
            return False
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        es[i, j] = es[j, i] = cls
    return True


def _encode_chunk(args: tuple[list[str], dict, int]) -> tuple[np.ndarray, np.ndarray, int]:
    chunk, vocab_dict, max_nodes = args
    vocab = GraphVocab.from_dict(vocab_dict)
    classes = {tok: vocab.node_class(tok) for tok in vocab.atom_tokens}
    xs = np.zeros((len(chunk), max_nodes), dtype=np.uint8)
    es = np.zeros((len(chunk), max_nodes, max_nodes), dtype=np.uint8)
    k = 0
    for smi in chunk:
        if encode_fast(smi, classes, max_nodes, xs[k], es[k]):
            k += 1
        else:
            xs[k] = 0
            es[k] = 0
    return xs[:k], es[:k], len(chunk) - k


def encode_dataset(smiles: list[str], max_nodes: int, workers: int, cache_dir: Path | None
                   ) -> tuple[torch.Tensor, torch.Tensor, GraphVocab, int, float, bool]:
    """(X, E uint8, vocab, n_rejects, seconds, from_cache). Vocabulary as ``fit_vocab`` builds it."""
    key = hashlib.sha256(("\n".join(smiles) + f"\n{max_nodes}").encode()).hexdigest()[:16]
    cache = cache_dir / f"graphs-{key}.pt" if cache_dir is not None else None
    t0 = time.perf_counter()
    if cache is not None and cache.exists():
        blob = torch.load(cache, weights_only=True)
        return (blob["x"], blob["e"], GraphVocab.from_dict(blob["vocab"]), int(blob["n_rejects"]),
                time.perf_counter() - t0, True)
    size = max(1000, math.ceil(len(smiles) / (workers * 8)))
    chunks = [smiles[i:i + size] for i in range(0, len(smiles), size)]
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        # Vocabulary from the first 50k molecules (all of QM9's 4 or MOSES's 7 tokens show up long
        # before); a rarer token would make its molecules rejects, counted in n_rejects.
        counts: Counter = Counter()
        head = smiles[:50_000]
        head_chunks = [head[i:i + 2000] for i in range(0, len(head), 2000)]
        for c, _largest in pool.imap(_tokens_of_chunk, [(c, max_nodes) for c in head_chunks]):
            counts.update(c)
        from rdkit import Chem
        table = Chem.GetPeriodicTable()
        vocab = GraphVocab(atom_tokens=tuple(sorted(counts, key=lambda t: (table.GetAtomicNumber(t[0]), t[1]))))
        parts = list(pool.imap(_encode_chunk, [(c, vocab.to_dict(), max_nodes) for c in chunks]))
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    e = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    n_rejects = sum(p[2] for p in parts)
    check = [(i, smi) for i, smi in enumerate(smiles[:300])]   # fast encoder == the library's encoder
    kept = 0
    for _, smi in check:
        try:
            xr, er = encode(smi, vocab, max_nodes, dtype=torch.uint8)
        except GraphEncodingError:
            continue
        if not (torch.equal(xr, x[kept]) and torch.equal(er, e[kept])):
            raise RuntimeError(f"encode_fast disagrees with dense_graph.encode on {smi!r}")
        kept += 1
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"x": x, "e": e, "vocab": vocab.to_dict(), "n_rejects": n_rejects}, tmp)
        os.replace(tmp, cache)
    return x, e, vocab, n_rejects, time.perf_counter() - t0, False


def _decode_chunk(args: tuple[np.ndarray, np.ndarray, dict]) -> list[tuple[str, str, str]]:
    xs, es, vocab_dict = args
    vocab = GraphVocab.from_dict(vocab_dict)
    out = []
    for x, e in zip(torch.from_numpy(xs), torch.from_numpy(es)):
        smi, reason = decode(x, e, vocab)
        fixed = smi if smi is not None else decode(x, e, vocab, correct=True)[0]
        out.append((smi or "", fixed or "", reason))
    return out


def decode_all(x: torch.Tensor, e: torch.Tensor, vocab: GraphVocab, pool) -> list[tuple[str, str, str]]:
    xs, es = x.to(torch.uint8).numpy(), e.to(torch.uint8).numpy()
    size = 512
    jobs = [(xs[i:i + size], es[i:i + size], vocab.to_dict()) for i in range(0, len(xs), size)]
    rows: list[tuple[str, str, str]] = []
    for part in (pool.imap(_decode_chunk, jobs) if pool is not None else map(_decode_chunk, jobs)):
        rows.extend(part)
    return rows


def summarize(rows: list[tuple[str, str, str]]) -> dict[str, float]:
    valid = [r[0] for r in rows if r[0]]
    return {"n": len(rows), "validity": len(valid) / max(len(rows), 1),
            "validity_corrected": sum(bool(r[1]) for r in rows) / max(len(rows), 1),
            "uniqueness": len(set(valid)) / len(valid) if valid else 0.0}


# ------------------------------------------------------------------ sampling
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_graphs_timed(model, n: int, batch: int, seed: int, device: torch.device,
                        max_seconds: float | None, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Up to ``n`` graphs in batches, stopping early past ``max_seconds``; returns X, E (CPU), seconds.
    ``steps``: reverse diffusion steps (None: the model's timesteps; the VAE ignores it)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    xs, es = [], []
    sync(device)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        extra = {"steps": steps} if steps is not None and hasattr(model, "timesteps") else {}
        x, e = model.sample(min(batch, n - done), generator=gen, device=device, **extra)
        xs.append(x.to("cpu", torch.uint8))
        es.append(e.to("cpu", torch.uint8))
        done += x.shape[0]
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds and done < n:
            log(f"sampling stopped at {done}/{n} molecules (--sample-seconds {max_seconds:.0f})")
            break
    sync(device)
    return torch.cat(xs), torch.cat(es), time.perf_counter() - t0


# ------------------------------------------------------------------ precision choice
def step_rate(kind: str, model_kwargs: dict, vocab: GraphVocab, x: torch.Tensor, e: torch.Tensor,
              batch: int, device: torch.device, bf16: bool, steps: int = 12) -> float:
    """Training steps/s of a fresh model (fwd + bwd + AdamW) on real batches: the bf16-or-not test."""
    model = build_generator(kind, n_node_classes=vocab.n_node_classes, n_edge_classes=vocab.n_edge_classes,
                            max_nodes=x.shape[1], **model_kwargs).to(device)
    if hasattr(model, "set_data_statistics"):
        model.set_data_statistics(x[:20000], e[:20000])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = getattr(model, "denoiser", None) if bf16 else None
    hooks = bf16_autocast_hooks(net, device) if net is not None else []
    xb, eb = x[:batch].to(device).long(), e[:batch].to(device).long()
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and net is None):
            loss = model.loss(xb, eb)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    for h in hooks:
        h.remove()
    rate = steps / (time.perf_counter() - t0)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(MAX_NODES), required=True)
    ap.add_argument("--kind", choices=["vae", "diffusion"], required=True)
    ap.add_argument("--time-budget", type=float, required=True, help="training seconds, over all resumed runs")
    ap.add_argument("--state", type=Path, required=True, help="training-state file (resumed when present)")
    ap.add_argument("--n-samples", type=int, default=10000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=REPO / ".bench" / "gen")
    ap.add_argument("--cache-dir", type=Path, default=REPO / ".bench" / "gen_gpu" / "cache")
    ap.add_argument("--limit", type=int, default=-1,
                    help="train on a seeded random N-molecule subset (default: MOSES 600,000, QM9 all; 0 = all)")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: time a few steps of each on the GPU and keep bf16 if >= 15 %% faster")
    ap.add_argument("--eval-every", type=float, default=0.0,
                    help="training seconds between learning-curve samples (default: budget / 4)")
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--sample-seconds", type=float, default=None,
                    help="cap on the final sampling time (default: diffusion 100, VAE 20)")
    ap.add_argument("--stop-at", type=float, default=None,
                    help="Unix time by which everything must be written (training stops early to allow sampling)")
    ap.add_argument("--checkpoint-every", type=float, default=60.0)
    ap.add_argument("--sample-steps", type=int, nargs="+", default=None,
                    help="reverse diffusion steps of the final sampling (several: one sampling each, "
                         "--n-samples each, the --sample-seconds cap shared); default: the model's timesteps")
    ap.add_argument("--export-state", action="store_true",
                    help="also write the training state as bfloat16 shards (out/state) to resume elsewhere")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this generator (checkpoint or shard folder, e.g. molgnn/resources/generators/"
                         "moses): training continues across sessions from what came back; same preset and vocabulary")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="tiny models (CPU smoke test of the whole script)")
    ap.add_argument("--commit", default=None, help="code version to record (default: MOLGNN_COMMIT, else git HEAD)")
    ap.add_argument("--command", default="", help="command text to record (default: this command line)")
    args = ap.parse_args(argv)
    started = time.time()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True   # TF32 matmuls: free speed on Hopper, fp32 storage
    torch.backends.cudnn.allow_tf32 = True
    preset = json.loads(json.dumps(PRESETS[(args.dataset, args.kind)]))
    if args.small:
        preset["model"].update(hidden_dim=32, n_layers=2)
        preset["model"].pop("n_heads", None)
        if args.kind == "diffusion":
            preset["model"]["timesteps"] = 20
        else:
            preset["model"]["latent_dim"] = 16
        preset.update(batch_size=64, warmup_steps=10, sample_batch=256)
    args.out.mkdir(parents=True, exist_ok=True)
    info: dict = {"dataset": args.dataset, "kind": args.kind, "preset": preset, "time_budget": args.time_budget,
                  "device": str(device), "machine": machine(device), "commit": args.commit or git_commit(),
                  "command": args.command or command_line(argv), "seed": args.seed, "date": time.strftime("%Y-%m-%d")}
    log(f"{args.dataset}/{args.kind} on {info['machine']}")

    # ---- data
    t0 = time.perf_counter()
    smiles = read_smiles(args.data_dir / DATA_FILES[args.dataset])
    smiles_all = smiles
    limit = args.limit if args.limit >= 0 else DEFAULT_LIMIT.get(args.dataset, 0)
    if limit and limit < len(smiles):   # a seeded random subset: the file order is not guaranteed random
        pick = np.sort(np.random.default_rng(args.seed).choice(len(smiles), size=limit, replace=False))
        smiles = [smiles_all[i] for i in pick]
        info["train_subset"] = f"seeded random {limit:,} of {len(smiles_all):,}"
    x_all, e_all, vocab, n_rejects, enc_s, cached = encode_dataset(smiles, MAX_NODES[args.dataset], args.workers,
                                                                   args.cache_dir)
    info.update(n_smiles=len(smiles), n_train=int(x_all.shape[0]), n_rejects=n_rejects,
                encode_seconds=enc_s, encode_cached=cached, read_seconds=time.perf_counter() - t0 - enc_s,
                vocab=vocab.to_dict())
    log(f"{len(smiles)} SMILES -> {x_all.shape[0]} graphs ({n_rejects} rejects), vocab "
        f"{[t for t in vocab.atom_tokens]}, encode {enc_s:.1f} s{' (cache)' if cached else ''}")

    # ---- precision
    rates = {}
    if args.precision == "auto" and device.type == "cuda":
        for name in ("fp32", "bf16"):
            rates[name] = step_rate(args.kind, preset["model"], vocab, x_all, e_all, preset["batch_size"], device,
                                    name == "bf16")
        bf16 = rates["bf16"] >= 1.15 * rates["fp32"]
        log(f"steps/s at batch {preset['batch_size']}: fp32 (TF32) {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} "
            f"-> {'bf16' if bf16 else 'fp32'}")
    else:
        bf16 = args.precision == "bf16"
    info.update(precision_step_rates=rates, bf16=bf16)

    # ---- training with a learning curve
    eval_every = args.eval_every or args.time_budget / 4
    if args.sample_seconds is None:
        args.sample_seconds = 100.0 if args.kind == "diffusion" else 20.0
    sample_reserve = args.sample_seconds + 20.0   # + decoding and writing
    deadline = args.stop_at - sample_reserve if args.stop_at else None
    pool = mp.get_context("fork").Pool(args.workers) if args.workers > 1 else None
    curve: list[dict] = []

    def on_evaluate(model, point: dict) -> None:
        if deadline is not None and time.time() > deadline - 20:
            return   # no wall time left for curve points
        xs, es, secs = sample_graphs_timed(model, args.eval_samples, preset["sample_batch"], args.seed + 7,
                                           device, None)
        rows = decode_all(xs, es, vocab, pool)
        point = {**point, **summarize(rows), "sample_seconds": secs, "smiles": [r[0] for r in rows]}
        curve.append(point)
        log(f"curve @ {point['elapsed']:.0f} s (step {point['step']:.0f}, epoch {point['epoch']:.2f}): loss "
            f"{point['loss']:.3f}, valid {point['validity']:.3f}, valid corrected {point['validity_corrected']:.3f}, "
            f"unique {point['uniqueness']:.3f}")

    def on_epoch_end(rec: dict) -> None:
        log(f"epoch {rec['epoch']:.0f}: loss {rec['loss']:.4f} lr {rec['lr']:.2e} "
            f"{rec['molecules_per_second']:.0f} mol/s, {rec['elapsed']:.0f} s trained")

    init_state = None
    if args.init_from is not None and not args.state.exists():   # a saved training state resumes instead
        start = load_generator(args.init_from)
        if start.vocab.to_dict() != vocab.to_dict():
            raise SystemExit(f"--init-from {args.init_from}: its vocabulary {start.vocab.atom_tokens} differs from "
                             f"this dataset's {vocab.atom_tokens}")
        init_state = start.model.float().state_dict()
        info["init_from"] = {"path": str(args.init_from), "hparams": start.model.hparams}
        log(f"starting from {args.init_from} (the learning-rate schedule restarts)")
    t0 = time.time()
    trained = train_generator_on_graphs(
        args.kind, x_all, e_all, vocab, epochs=10**6, batch_size=preset["batch_size"], lr=preset["lr"],
        seed=args.seed, device=device, lr_schedule="cosine", warmup_steps=preset["warmup_steps"],
        ema_decay=preset["ema_decay"], bf16=bf16, max_seconds=args.time_budget, deadline=deadline,
        state_path=args.state, checkpoint_every=args.checkpoint_every, evaluate_every=eval_every,
        on_evaluate=on_evaluate, on_epoch_end=on_epoch_end, init_state=init_state, **preset["model"])
    info.update(train_seconds=trained.train_seconds, train_wall_this_run=time.time() - t0, steps=trained.steps,
                stop_reason=trained.stop_reason, n_params=sum(p.numel() for p in trained.model.parameters()),
                epochs_done=trained.history[-1]["epoch"] if trained.history else 0.0)
    log(f"trained {trained.train_seconds:.0f} s, {trained.steps} steps, {info['epochs_done']:.2f} epochs, "
        f"stop: {trained.stop_reason}, {info['n_params']:,} parameters")
    del x_all, e_all
    if device.type == "cuda":
        torch.cuda.empty_cache()
    save_generator(trained, args.out / "generator", half=True, shards=True)   # files < 16 MB: it comes back
    if args.export_state:
        export_training_state(args.state, args.out / "state", half=True)

    # ---- final sample (at each --sample-steps; the first is the main one)
    model = trained.model.to(device).eval()
    steps_list = args.sample_steps or [None]
    sweep = []
    for k, steps in enumerate(steps_list):
        cap = args.sample_seconds / len(steps_list)
        if args.stop_at:
            cap = max(10.0, min(cap, (args.stop_at - time.time() - 30) / (len(steps_list) - k)))
        xs, es, gpu_s = sample_graphs_timed(model, args.n_samples, preset["sample_batch"], args.seed + 1, device, cap,
                                            steps=steps)
        t1 = time.perf_counter()
        rows = decode_all(xs, es, vocab, pool)
        dec_s = time.perf_counter() - t1
        n = len(rows)
        point = {"steps": steps or getattr(model, "timesteps", None), "n_samples": n, "sample_gpu_seconds": gpu_s,
                 "decode_seconds": dec_s, "graphs_per_second_gpu": n / gpu_s,
                 "molecules_per_second": n / (gpu_s + dec_s), **summarize(rows)}
        sweep.append(point)
        log(f"sampled {n} at {point['steps']} steps: GPU {gpu_s:.1f} s ({n / gpu_s:.0f} graphs/s), decode {dec_s:.1f} s "
            f"on {args.workers} processes -> {point['molecules_per_second']:.0f} molecules/s; {summarize(rows)}")
        name = "samples.tsv" if k == 0 else f"samples_steps{point['steps']}.tsv"
        with open(args.out / name, "w") as fh:
            fh.write("smiles\tcorrected\n")
            fh.writelines(f"{a}\t{b}\n" for a, b, _ in rows)
        if k == 0:
            main_rows, main_xs, main_es, main_gpu_s, main_dec_s = rows, xs, es, gpu_s, dec_s
    rows, xs, es, gpu_s, dec_s = main_rows, main_xs, main_es, main_gpu_s, main_dec_s
    t1 = time.perf_counter()
    serial = min(len(rows), 2000)   # single-process decode rate, the figure a one-core user would see
    decode_all(xs[:serial], es[:serial], vocab, None)
    serial_s = time.perf_counter() - t1
    if pool is not None:
        pool.close()
    n = len(rows)
    info.update(n_samples=n, sample_gpu_seconds=gpu_s, decode_seconds=dec_s, decode_workers=args.workers,
                graphs_per_second_gpu=n / gpu_s, molecules_per_second=n / (gpu_s + dec_s),
                molecules_per_second_1core_decode=n / (gpu_s + serial_s * n / max(serial, 1)),
                sample_batch=preset["sample_batch"], sample_steps=sweep[0]["steps"], steps_sweep=sweep,
                **{f"final_{k}": v for k, v in summarize(rows).items()})
    reasons = Counter(r[2].split(":")[0] for r in rows if not r[0])
    info["invalid_reasons"] = dict(reasons.most_common(8))
    with open(args.out / "history.json", "w") as fh:
        json.dump({"history": trained.history, "curve": curve}, fh)
    info["wall_seconds"] = time.time() - started
    with open(args.out / "run.json", "w") as fh:
        json.dump(info, fh, indent=1)
    log(f"done in {info['wall_seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
