"""Stage 6: validity, uniqueness, novelty and drug-likeness filters over the generated molecules.

Each sample ends in ``candidates.csv`` or in ``filter_rejects.csv`` with the first check it failed.
Rates are reported per check over all samples, so the funnel can be read from the run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key

CANDIDATES_FILE = "candidates.csv"
REJECTS_FILE = "filter_rejects.csv"


def apply_filters(samples: pd.DataFrame, training: set[str], cfg) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Returns (kept, rejected, rates). ``samples`` needs ``generator, sample, smiles`` columns;
    ``training`` holds canonical SMILES (``molgnn.chem.canonical``, as the samples are compared)."""
    from molgnn.chem.canonical import canonical_smiles
    from molgnn.chem.filters import drug_likeness
    from molgnn.chem.properties import QED, SA

    kept, rejected = [], []
    seen: set[str] = set()
    passed = {"valid": 0, "unique": 0, "novel": 0, "pains_free": 0, "qed": 0, "sa": 0, "lipinski": 0}
    for rec in samples.to_dict("records"):
        smi = canonical_smiles(rec.get("smiles"))
        base = {"generator": rec["generator"], "sample": rec["sample"], "raw": rec.get("smiles")}
        if smi is None:
            rejected.append({**base, "stage": "validity", "reason": rec.get("reason") or "invalid molecule"})
            continue
        passed["valid"] += 1
        dup = smi in seen
        seen.add(smi)
        props = drug_likeness(smi)
        checks = [
            ("uniqueness", "unique", not dup, "duplicate of an earlier sample"),
            ("novelty", "novel", smi not in training, "present in the training set"),
            ("pains", "pains_free", not props["pains_alerts"], f"PAINS alert: {', '.join(props['pains_alerts'])}"),
            ("qed", "qed", props[QED] >= cfg.min_qed, f"QED {props[QED]:.3f} < {cfg.min_qed}"),
            ("sa", "sa", props[SA] <= cfg.max_sa, f"SA score {props[SA]:.2f} > {cfg.max_sa}"),
            ("lipinski", "lipinski", props["lipinski_violations"] <= cfg.max_lipinski_violations,
             f"{props['lipinski_violations']} Lipinski violations > {cfg.max_lipinski_violations}"),
        ]
        enforced = {"uniqueness": cfg.require_unique, "novelty": cfg.require_novel, "pains": cfg.reject_pains,
                    "qed": True, "sa": True, "lipinski": True}
        failure = None
        for stage, counter, ok, reason in checks:
            passed[counter] += int(ok)
            if not ok and enforced[stage] and failure is None:
                failure = (stage, reason)
        if failure:
            rejected.append({**base, "stage": failure[0], "reason": failure[1]})
        else:
            kept.append({**base, schema.SMILES: smi, QED: props[QED], SA: props[SA],
                         "lipinski_violations": props["lipinski_violations"],
                         "brenk_alerts": ";".join(props["brenk_alerts"])})
    n = max(len(samples), 1)
    rates = {f"{k}_rate": v / n for k, v in passed.items()}
    rates["pass_rate"] = len(kept) / n
    kept_columns = ["generator", "sample", "raw", schema.SMILES, QED, SA, "lipinski_violations",
                    "brenk_alerts"]
    return pd.DataFrame(kept, columns=kept_columns), pd.DataFrame(rejected, columns=["generator", "sample", "raw", "stage", "reason"]), rates


def run_filter(ctx: RunContext, sample_paths: dict[str, Path], molecules_path: Path) -> StageResult:
    cfg = ctx.params.filter
    key = stage_key("filter", dataclasses.asdict(cfg), Path(molecules_path),
                    *[(k, Path(v)) for k, v in sorted(sample_paths.items())])

    def compute(run, out_dir: Path) -> StageResult:
        samples = pd.concat([pd.read_csv(p) for p in sample_paths.values()], ignore_index=True)
        from molgnn.chem.canonical import canonical_smiles

        training = {canonical_smiles(s)
                    for s in pd.read_parquet(molecules_path, columns=[schema.SMILES])[schema.SMILES]}
        kept, rejected, rates = apply_filters(samples, training, cfg)
        assert len(kept) + len(rejected) == len(samples), "filter lost samples"
        with atomic_path(out_dir / CANDIDATES_FILE) as tmp:
            kept.to_csv(tmp, index=False)
        with atomic_path(out_dir / REJECTS_FILE) as tmp:
            rejected.to_csv(tmp, index=False)
        per_generator = {}
        for gen, sub in samples.groupby("generator"):
            _, _, r = apply_filters(sub, training, cfg)
            per_generator[gen] = r
        metrics = {**rates, "n_samples": len(samples), "n_candidates": len(kept)}
        for gen, r in per_generator.items():
            metrics.update({f"{gen}_{k}": v for k, v in r.items()})
        return StageResult(stage="filter", key=key, out_dir=str(out_dir),
                           outputs={"candidates": str(out_dir / CANDIDATES_FILE),
                                    "rejects": str(out_dir / REJECTS_FILE)},
                           metrics=metrics,
                           info={"rejects_by_stage": rejected["stage"].value_counts().to_dict()})

    def log(run, result: StageResult) -> None:
        from molgnn.report.plots import distributions
        from molgnn.chem.filters import drug_likeness
        from molgnn.chem.properties import QED

        kept = pd.read_csv(result.path("candidates"))
        train = pd.read_parquet(molecules_path, columns=[schema.SMILES])[schema.SMILES]
        train_qed = [drug_likeness(s)[QED] for s in train.sample(min(500, len(train)), random_state=0)]
        run.log_figure(distributions({"training": train_qed, "candidates": kept.get(QED, pd.Series()).tolist()},
                                     "QED"), "qed_distribution.png")
        run.log_artifact(result.path("candidates"))
        run.log_artifact(result.path("rejects"))

    return run_cached(ctx, "filter", key, compute,
                      params={f"filter.{k}": v for k, v in dataclasses.asdict(cfg).items()}, log=log)
