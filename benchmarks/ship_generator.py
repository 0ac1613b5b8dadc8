"""Ship a generator that came back from the GPU machine inside the package, with its card.

    .venv/bin/python benchmarks/ship_generator.py --name moses --tar OUT/moses_diffusion.tar.gz \
        --generator OUT/moses_diffusion_generator [--sample-steps 50]

``--generator`` is the shard folder ``run_generation_gpu.sh`` brings back, ``--tar`` the job's archive
(its ``run.json`` gives the training record). Every shard is checked against its SHA-256 by loading the
generator, then the folder is copied to ``molgnn/resources/generators/<name>/`` beside ``<name>.json``:
what it was trained on, how long, on which machine, the command and commit, the scores of its final
samples at each number of reverse steps, and ``sample_steps``, the default of ``molgnn generate --model
<name>``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path

from common import REPO
from molgnn.data.shipped_generators import GENERATORS_DIR
from molgnn.generate.checkpoints import load_generator


def run_record(tar: Path) -> dict:
    with tarfile.open(tar) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("/run.json"))
        return json.load(tf.extractfile(member))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tar", type=Path, required=True)
    ap.add_argument("--generator", type=Path, required=True)
    ap.add_argument("--sample-steps", type=int, default=None,
                    help="default reverse steps of `molgnn generate --model NAME` (default: the run's main setting)")
    args = ap.parse_args()
    trained = load_generator(args.generator)          # checks every shard's SHA-256
    run = run_record(args.tar)
    if trained.vocab.to_dict() != run["vocab"]:
        raise SystemExit("the generator's vocabulary differs from the run record's: not the same run")
    n_params = sum(p.numel() for p in trained.model.parameters())
    card = {
        "name": args.name,
        "kind": run["kind"],
        "trained_on": f"{run['dataset']} train, {run.get('train_subset', 'all')} molecules "
                      f"({run['n_train']:,} graphs, {run['n_rejects']} rejects)",
        "hparams": dict(trained.model.hparams),
        "parameters": n_params,
        "vocabulary": [t[0] for t in run["vocab"]["atom_tokens"]],
        "training": {"seconds": round(run["train_seconds"], 1), "steps": run["steps"],
                     "epochs": round(run["epochs_done"], 3), "stop": run["stop_reason"],
                     "continued_from": run.get("init_from", {}).get("path")},
        "machine": run["machine"], "date": run["date"], "commit": run["commit"], "command": run["command"],
        "scores": [{k: p[k] for k in ("steps", "n_samples", "validity", "validity_corrected", "uniqueness",
                                      "graphs_per_second_gpu") if k in p} for p in run["steps_sweep"]],
        "sample_steps": args.sample_steps or run["sample_steps"],
        "shipped_by": "benchmarks/ship_generator.py",
    }
    dest = GENERATORS_DIR / args.name
    if dest.exists():
        shutil.rmtree(dest)
    GENERATORS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.generator, dest)
    for p in dest.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    (GENERATORS_DIR / f"{args.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    load_generator(dest)
    print(f"shipped {args.name}: {dest.relative_to(REPO)} ({sum(p.stat().st_size for p in dest.iterdir()) / 2**20:.1f} MiB), "
          f"validity {card['scores'][0]['validity']:.3f} at {card['scores'][0]['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
