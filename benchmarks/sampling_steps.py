"""Records of the reverse-steps sweep that benchmarks/generation_train.py ran on the GPU, and a check
that the generator came back whole (its shards load, each verified by SHA-256).

    MOLGNN_COMMIT=... bash benchmarks/run_generation_gpu.sh $OUT/c1 530 moses:diffusion:320:10000 \\
        # with GEN_EXTRA_ARGS="--sample-steps 100 50 25 --sample-seconds 110 --eval-every 110 --eval-samples 500"
    .venv/bin/python benchmarks/sampling_steps.py --tar $OUT/c1/moses_diffusion.tar.gz \\
        --generator $OUT/c1/moses_diffusion_generator

Per number of reverse steps: validity as drawn, after keeping the largest fragment, uniqueness (all
decoded on the GPU machine) and the sampling speed (GPU sampling + RDKit decoding on 16 processes).
Writes benchmarks/results/generation_sampling_steps.json (merged by dataset, steps and metric).
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

from common import RESULTS, command_line, merge_records, record

BENCH = "generation-sampling-steps"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tar", type=Path, required=True, help="<dataset>_diffusion.tar.gz from run_generation_gpu.sh")
    ap.add_argument("--generator", type=Path, help="the generator shard folder that came back beside it")
    args = ap.parse_args(argv)
    with tarfile.open(args.tar) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/run.json"))
        run = json.load(tar.extractfile(member))
    ctx = {"machine": run["machine"], "date": run["date"], "commit": run["commit"],
           "command": f"{run['command']}; then {command_line(argv)}"}
    back = ""
    if args.generator:
        from molgnn.data.shards import read_manifest
        from molgnn.generate.checkpoints import load_generator

        manifest = read_manifest(args.generator)
        load_generator(args.generator)   # raises if a shard is missing or altered
        back = (f"; the generator came back as {len(manifest['shards'])} float16 shards (largest "
                f"{max(s['bytes'] for s in manifest['shards']) / 2**20:.1f} MiB), loaded here with every SHA-256 checked")
    setup = (f"{run['dataset']} diffusion {json.dumps(run['preset']['model'])}, {run['n_params']:,} parameters, trained "
             f"{run['train_seconds']:.0f} s ({run['epochs_done']:.2f} epochs of {run['n_train']:,} graphs, stop: "
             f"{run['stop_reason']}); sampled in batches of {run['preset']['sample_batch']}, each setting capped at "
             f"~{run['steps_sweep'][0]['sample_gpu_seconds']:.0f} s of sampling{back}")
    records = []
    for point in run["steps_sweep"]:
        system = f"molgnn diffusion, {point['steps']} reverse steps"
        sample = f"n={point['n']:,}"
        for metric, key, unit in (("valid", "validity", "fraction"), ("valid_corrected", "validity_corrected", "fraction"),
                                  ("unique", "uniqueness", "fraction"),
                                  ("molecules_per_second", "molecules_per_second", "molecules/s"),
                                  ("graphs_per_second_gpu", "graphs_per_second_gpu", "graphs/s")):
            records.append(record(BENCH, system, metric, float(point[key]), unit, True, ctx, sample=sample,
                                  dataset=run["dataset"], steps=point["steps"], setup=setup,
                                  **({"note": "goal >= 500 molecules/s on one H200"} if metric == "molecules_per_second" else {})))
    merge_records(RESULTS / "generation_sampling_steps.json", records, key=("dataset", "steps", "metric"))
    for r in records:
        print(r["system"], r["metric"], round(r["value"], 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
