"""Records for the DDP scaling run (benchmarks/run_ddp_scaling.sh): epoch time and training
throughput of the same PaiNN fine-tuning on 1 and on N GPUs, launched through the entry point
``torchrun -m molgnn.train.ddp_finetune``.

    .venv/bin/python benchmarks/ddp_scaling.py OUT/ddp1 OUT/ddp2 [--machine ...] [--commit ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, record, write_records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="folders holding metrics.json, one per GPU count")
    ap.add_argument("--machine", default="2x NVIDIA H200 (one host), torch 2.11.0+cu130")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--out", type=Path, default=RESULTS / "ddp_scaling.json")
    args = ap.parse_args(argv)
    bench = "PaiNN fine-tuning on QM9 gap through DDP (128 features, 3 interactions, batch 100 per GPU, device batches)"
    # the run happened on the GPU host (run_ddp_scaling.sh): its machine, date and commit come in as arguments
    context = {"machine": args.machine, "date": args.date, "commit": args.commit,
               "command": "benchmarks/run_ddp_scaling.sh OUT; benchmarks/ddp_scaling.py OUT/ddp1 OUT/ddp2"}
    records, per_world = [], {}
    for folder in args.runs:
        m = json.loads((folder / "metrics.json").read_text())
        world = int(m["world_size"])
        steady = m["history"][1:] or m["history"]   # the first epoch holds start-up
        seconds = sum(h["seconds"] for h in steady) / len(steady)
        rate = sum(h["molecules_per_second"] for h in steady) / len(steady)
        per_world[world] = seconds
        system = f"molgnn DDP, {world} GPU{'s' if world > 1 else ''}"
        note = f"epochs 2-{len(m['history'])} averaged; ranks in sync: {m['ranks_in_sync']}; NCCL backend: {m['backend']}"
        records += [
            record(bench, system, "epoch seconds (110,000 molecules)", seconds, "s", False, context, note=note),
            record(bench, system, "train molecules/s (all GPUs)", rate, "molecules/s", True, context, note=note),
            record(bench, system, f"gap test MAE after {len(m['history'])} epochs", 1000 * m["test_metrics"]["gap"]["mae"],
                   "meV", False, context, note=f"global batch {100 * world}: fewer optimizer steps per epoch on more GPUs"),
        ]
    if 1 in per_world:
        for world, seconds in per_world.items():
            if world > 1:
                records.append(record(bench, f"molgnn DDP, {world} GPUs", "speed-up over 1 GPU", per_world[1] / seconds,
                                      "x", True, context,
                                      note="epoch time of 1 GPU / epoch time of N GPUs, same command"))
    write_records(args.out, records)
    print(f"wrote {args.out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
