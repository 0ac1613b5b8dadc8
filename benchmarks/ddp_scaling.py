"""Records for the DDP scaling run (benchmarks/run_ddp_scaling.sh): epoch time and training
throughput of the same PaiNN fine-tuning on 1 and on N GPUs, launched through the entry point
``torchrun -m molgnn.train.ddp_finetune``.

    .venv/bin/python benchmarks/ddp_scaling.py OUT/ddp1 OUT/ddp2 [--machine ...] [--commit ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="folders holding metrics.json, one per GPU count")
    ap.add_argument("--machine", default="2x NVIDIA H200 (one host), torch 2.11.0+cu130")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_scaling.json")
    args = ap.parse_args(argv)
    bench = "PaiNN fine-tuning on QM9 gap through DDP (128 features, 3 interactions, batch 100 per GPU, device batches)"
    records, per_world = [], {}
    for folder in args.runs:
        m = json.loads((folder / "metrics.json").read_text())
        world = int(m["world_size"])
        steady = m["history"][1:] or m["history"]   # the first epoch holds start-up
        seconds = sum(h["seconds"] for h in steady) / len(steady)
        rate = sum(h["molecules_per_second"] for h in steady) / len(steady)
        per_world[world] = seconds
        common = {"benchmark": bench, "system": f"molgnn DDP, {world} GPU{'s' if world > 1 else ''}",
                  "machine": args.machine, "date": args.date, "commit": args.commit,
                  "command": "benchmarks/run_ddp_scaling.sh OUT; benchmarks/ddp_scaling.py OUT/ddp1 OUT/ddp2",
                  "note": f"epochs 2-{len(m['history'])} averaged; ranks in sync: {m['ranks_in_sync']}; "
                          f"NCCL backend: {m['backend']}"}
        records += [
            {**common, "metric": "epoch seconds (110,000 molecules)", "value": seconds, "unit": "s",
             "higher_is_better": False},
            {**common, "metric": "train molecules/s (all GPUs)", "value": rate, "unit": "molecules/s",
             "higher_is_better": True},
            {**common, "metric": f"gap test MAE after {len(m['history'])} epochs", "unit": "meV",
             "value": 1000 * m["test_metrics"]["gap"]["mae"], "higher_is_better": False,
             "note": f"global batch {100 * world}: fewer optimizer steps per epoch on more GPUs"},
        ]
    if 1 in per_world:
        for world, seconds in per_world.items():
            if world > 1:
                records.append({**records[0], "system": f"molgnn DDP, {world} GPUs", "metric": "speed-up over 1 GPU",
                                "value": per_world[1] / seconds, "unit": "x", "higher_is_better": True,
                                "note": "epoch time of 1 GPU / epoch time of N GPUs, same command"})
    args.out.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
