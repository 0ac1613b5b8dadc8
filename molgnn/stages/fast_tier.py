"""Stage 4b: the fast 2D screening tier, trained on the fine-tuning stage's split right after it.

The 2D tier (GINE members on SMILES, :mod:`molgnn.screen.fast_tier`) is trained twice, on the labels
alone and distilled from the 3D ensemble (its predictions on the training split blended with the
labels), and the better on validation is kept. Both variants and the 3D ensemble are scored on the
same test split (stage metrics ``tier<tier>_test_<metric>_<target>``). The stage folder is a complete
screening model: the 2D tier (``model_2d.pt``, its own conformal calibration in
``calibration_2d.json``) beside the fine-tuning stage's 3D members, calibration and applicability
domain (hard links into the fine-tuning folder), so ``molgnn screen LIBRARY`` finds everything in
``runs/latest/fast_tier``.

A separate stage rather than part of fine-tuning: changing the 2D tier's knobs or code retrains only
the 2D tier, never the 3D ensemble.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key

TIERS_FILE = "tiers.json"                       # both 2D variants' validation and test scores
TEST_PREDICTIONS_2D = "test_predictions_2d.csv"
# the fine-tuning outputs the screening model folder carries (linked, not copied)
CARRIED = ("calibration", "applicability_domain", "applicability_domain_fps")


class FastTierInputError(ValueError):
    """The fine-tuning stage's outputs do not allow training the 2D tier."""


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (store folders are never modified), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _fine_inputs(finetune: StageResult) -> list[Path]:
    names = ["split", "test_predictions", *sorted(k for k in finetune.outputs if k.startswith("member_")),
             *[c for c in CARRIED if c in finetune.outputs]]
    return [finetune.path(n) for n in names]


def run_fast_tier(ctx: RunContext, finetune: StageResult, molecules_path: Path, structures_path: Path) -> StageResult:
    from molgnn.screen import fast_tier as ft

    p = ctx.params
    cfg = p.fast_tier
    types_by_target = finetune.info.get("task_types", {})   # fine-tuning results before task types: regression
    key = stage_key("fast_tier", dataclasses.asdict(cfg), p.seed, Path(molecules_path), Path(structures_path),
                    *_fine_inputs(finetune), sorted(types_by_target.items()))

    def compute(run, out_dir: Path) -> StageResult:
        from molgnn.screen.calibration import add_conformal, report_from_tables
        from molgnn.screen.predict import predict_ensemble
        from molgnn.screen.probability_calibration import probability_report
        from molgnn.train.checkpoints import load_checkpoint

        split = pd.read_csv(finetune.path("split"))
        molecules = pd.read_parquet(molecules_path).set_index(schema.MOL_ID)
        members = sorted(k for k in finetune.outputs if k.startswith("member_"))
        checkpoints = [load_checkpoint(finetune.path(k)) for k in members]
        targets = list(checkpoints[0]["config"]["targets"])
        missing = [t for t in targets if t not in molecules.columns]
        if missing:
            raise FastTierInputError(f"target(s) {missing} of the fine-tuned models are not in {molecules_path}")
        types = [types_by_target.get(t, ft.REGRESSION) for t in targets]
        splits = {}
        for name in ("train", "val", "test"):
            ids = split.loc[split["split"] == name, schema.MOL_ID].tolist()
            splits[name] = molecules.loc[ids, [schema.SMILES, *targets]].reset_index()
        if min(len(splits["train"]), len(splits["val"])) < 2:
            raise FastTierInputError("the 2D tier needs at least 2 training and 2 validation molecules")
        teacher = None
        if cfg.teacher_weight > 0:
            structures = pd.read_parquet(structures_path).set_index(schema.MOL_ID)
            pred = predict_ensemble(checkpoints, structures.loc[splits["train"][schema.MOL_ID]].reset_index(),
                                    device=ctx.device)
            teacher = pred[[f"{t}_mean" for t in targets]].to_numpy(dtype=float)
        fit = ft.train_fast_tier(splits, targets, types, teacher, teacher_weight=cfg.teacher_weight,
                                 members=cfg.members, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                 hidden=cfg.hidden, layers=cfg.layers, seed=p.seed)

        import torch

        outputs: dict[str, str] = {}
        with atomic_path(out_dir / ft.MODEL_2D_FILE) as tmp:
            torch.save(fit.checkpoint, tmp)
        outputs["model_2d"] = str(out_dir / ft.MODEL_2D_FILE)
        with atomic_path(out_dir / TEST_PREDICTIONS_2D) as tmp:
            fit.test_predictions.to_csv(tmp, index=False)
        outputs["test_predictions_2d"] = str(out_dir / TEST_PREDICTIONS_2D)
        regression = [t for t, k in zip(targets, types) if k == ft.REGRESSION]
        calib = (add_conformal(report_from_tables(fit.test_predictions, fit.val_predictions, targets=regression),
                               fit.test_predictions, fit.val_predictions) if regression else {})
        for t in (t for t, k in zip(targets, types) if k != ft.REGRESSION):   # Platt-scaled probabilities
            calib[t] = probability_report(fit.val_predictions[fit.val_predictions["target"] == t],
                                          fit.test_predictions[fit.test_predictions["target"] == t])
        with atomic_path(out_dir / ft.CALIBRATION_2D_FILE) as tmp:
            tmp.write_text(json.dumps(calib, indent=2))
        outputs["calibration_2d"] = str(out_dir / ft.CALIBRATION_2D_FILE)
        for k in members + [c for c in CARRIED if c in finetune.outputs]:
            src = finetune.path(k)
            _link(src, out_dir / src.name)
            outputs[k] = str(out_dir / src.name)

        # the 3D ensemble on the same test split, scored by the same function
        t3 = pd.read_csv(finetune.path("test_predictions"))
        test_ids = splits["test"][schema.MOL_ID]
        wide = {t: t3[t3["target"] == t].set_index(schema.MOL_ID) for t in targets}
        y3 = np.column_stack([wide[t]["y_pred"].reindex(test_ids).to_numpy(dtype=float) for t in targets])
        y_test = splits["test"][targets].to_numpy(dtype=float)
        scores = {"2d": fit.test_scores[fit.chosen], **{f"2d_{v}": s for v, s in fit.test_scores.items()},
                  "3d": ft.tier_scores(y_test, y3, targets, types) if len(test_ids) else {}}
        metrics: dict[str, float] = {"tier2d_distilled_kept": float(fit.chosen == ft.DISTILLED)}
        for tier, per_target in scores.items():
            for t, vals in per_target.items():
                for name, value in vals.items():
                    if name != "n":
                        metrics[ft.tier_metric(tier, name, t)] = value
        for v, score in fit.val_score.items():
            metrics[f"tier2d_{v}_val_score"] = score
            metrics[f"tier2d_{v}_train_seconds"] = fit.seconds[v]
        for t, rep in calib.items():
            if "conformal_coverage90_test" in rep:
                metrics[ft.tier_metric("2d", "conformal_coverage90", t)] = rep["conformal_coverage90_test"]
                if math.isfinite(rep["conformal_width90_test"]):
                    metrics[ft.tier_metric("2d", "conformal_width90", t)] = rep["conformal_width90_test"]
        tiers = {"chosen": fit.chosen, "val_score": fit.val_score, "test": scores,
                 "teacher_weight": cfg.teacher_weight, "task_types": dict(zip(targets, types))}
        with atomic_path(out_dir / TIERS_FILE) as tmp:
            tmp.write_text(json.dumps(tiers, indent=2, default=float))
        outputs["tiers"] = str(out_dir / TIERS_FILE)
        return StageResult(stage="fast_tier", key=key, out_dir=str(out_dir), outputs=outputs, metrics=metrics,
                           info={"chosen": fit.chosen, "targets": targets, "task_types": dict(zip(targets, types)),
                                 "units": finetune.info.get("units", {}), "teacher_weight": cfg.teacher_weight,
                                 "n_train": len(splits["train"]), "n_val": len(splits["val"]),
                                 "n_test": len(splits["test"])})

    def log(run, result: StageResult) -> None:
        for name in ("model_2d", "calibration_2d", "tiers", "test_predictions_2d"):
            run.log_artifact(result.path(name), "fast_tier" if name != "model_2d" else "model")

    return run_cached(ctx, "fast_tier", key, compute,
                      params={f"fast_tier.{k}": v for k, v in dataclasses.asdict(cfg).items()}, log=log)
