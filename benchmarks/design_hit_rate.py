"""Steering generation with the design loop: the hit rate of a target range, round by round.

    .venv/bin/python benchmarks/design_hit_rate.py                       # both targets (CPU, a few minutes)
    .venv/bin/python benchmarks/design_hit_rate.py --target gap --low 8.0 --rounds 5

Runs the real ``molgnn design`` flow (``flows.design.design``, tracked in this checkout's MLflow store)
on the repository's ``params.yaml`` with one objective, a target range: ``--target gap`` is the gap
the pipeline's screening model *predicts* (the fine-tuned model), ``--target qed`` RDKit's QED of the
molecule itself. Round 1 draws from the pipeline's trained generator: the unguided baseline. After
each round the generator is fine-tuned on the molecules selected so far (the design loop's
conditioning), and the next round draws from it. Per round: validity of the draws (uncorrected),
uniqueness, hit rate (distinct, novel, filter-passing molecules inside the range per valid draw),
and the distribution of the property over the screened molecules (the shift). Records go to
``benchmarks/results/design_hit_rate.json`` (merged: a rerun of one target replaces its records).

The models come from the pipeline's cached stages: run ``make run`` (or ``molgnn run``) first, or
the flow trains them (~6 min on 2 cores).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from common import REPO, RESULTS, merge_records, provenance, record

BENCH = "design-hit-rate"
DEFAULTS = {"gap": 8.5, "qed": 0.55}   # about the top tenth of what the default generator draws unguided


def run_target(target: str, low: float, args) -> list[dict]:
    from flows.design import design
    from molgnn.design.objectives import column

    overrides = [f"design.rounds={args.rounds}", f"design.n_samples={args.n_samples}", f"design.select={args.select}",
                 f"design.objectives={{{target}: {{low: {low}}}}}", f"design.replay={args.replay}",
                 f"design.finetune_epochs={args.finetune_epochs}", "design.generator=diffusion"]
    summary = design(params_path=str(REPO / "params.yaml"), overrides=overrides)
    ctx = provenance(torch_threads=True)
    setting = f"{args.select} selected, {args.finetune_epochs} epochs, replay {args.replay}"
    setup = (f"molgnn design on params.yaml (the pipeline's diffusion generator and screening model, QM9 sample); "
             f"objective {target} >= {low} ({'predicted by the fine-tuned model' if target != 'qed' else 'RDKit'}); "
             f"{args.rounds} rounds x {args.n_samples} draws, {args.select} selected a round, fine-tuned "
             f"{args.finetune_epochs} epochs between rounds with {args.replay} replayed training molecules; "
             f"round 1 = unguided; design run {summary['mlflow_run_id']}")
    out = []
    for r in summary["rounds"]:
        k, m = r["round"], r["metrics"]
        table = pd.read_csv(f"{summary['run_dir']}/design/design-round-{k}/round.csv")
        vals = pd.to_numeric(table[column(target)], errors="coerce").dropna().to_numpy() if len(table) else np.zeros(0)
        system = "round 1 (unguided)" if k == 1 else f"round {k} (after {k - 1} fine-tuning{'s' if k > 2 else ''})"

        def rec(metric, value, unit, hib):
            # one table per target; a column per round and fine-tuning setting
            out.append(record(f"{BENCH} ({target} >= {low:g})", system, metric, float(value), unit, hib, ctx,
                              sample=setting, target=f"{target} >= {low:g}", setting=setting, setup=setup))

        rec("validity (uncorrected)", m["validity"], "fraction", True)
        rec("uniqueness", m.get("uniqueness", float("nan")), "fraction", True)
        rec(f"hit rate ({target} >= {low:g}, per valid draw)", m.get("hit_rate_valid", 0.0), "fraction", True)
        rec(f"hits per draw", m.get("hits_per_draw", 0.0), "fraction", True)
        if len(vals):
            rec(f"{target} mean (screened)", vals.mean(), target, None)
            rec(f"{target} median (screened)", float(np.median(vals)), target, None)
            rec(f"{target} 90th percentile (screened)", float(np.quantile(vals, 0.9)), target, None)
        print(f"{target} round {k}: validity {m['validity']:.3f}, unique {m.get('uniqueness', float('nan')):.3f}, "
              f"hit rate {m.get('hit_rate_valid', 0):.3f}, {target} mean {vals.mean() if len(vals) else float('nan'):.3f}")
    base = next(r for r in out if r["system"].startswith("round 1") and r["metric"].startswith("hit rate"))["value"]
    for r in [r for r in out if r["metric"].startswith("hit rate") and not r["system"].startswith("round 1")]:
        out.append({**r, "metric": "hit rate / unguided", "value": r["value"] / base if base else float("nan"),
                    "unit": "x", "higher_is_better": True})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=sorted(DEFAULTS), action="append", help="repeatable (default: both)")
    ap.add_argument("--low", type=float, help="lower bound of the target range (default per target)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--select", type=int, default=32)
    ap.add_argument("--replay", type=int, default=256)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    args = ap.parse_args(argv)
    records = []
    for target in args.target or sorted(DEFAULTS):
        records += run_target(target, args.low if args.low is not None else DEFAULTS[target], args)
    merge_records(RESULTS / "design_hit_rate.json", records, key=("target", "setting", "system", "metric"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
