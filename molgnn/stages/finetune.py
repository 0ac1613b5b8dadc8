"""Stage 4: fine-tune PaiNN (from the pretrained encoder or from scratch) on the params' targets.

An ensemble of ``ensemble_size`` seeds is trained on one seeded split; its spread is the
uncertainty that screening reports. Test errors are in the units ``units.json`` states.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.models.property_model import CLASSIFICATION
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key
from molgnn.train import history_keys

SPLIT_FILE = "split.csv"
CALIBRATION_FILE = "calibration.json"


class FinetuneInputError(ValueError):
    """The requested targets or split cannot be built from the ingested data."""


def make_split(molecules: pd.DataFrame, how: str, fractions: list[float], seed: int):
    from molgnn.data.splits import random_split, scaffold_split

    if how == "scaffold":
        return scaffold_split(molecules[schema.SMILES].tolist(), fractions, seed)
    return random_split(len(molecules), fractions, seed)


def finetune_split(molecules: pd.DataFrame, structures: pd.DataFrame, cfg, seed: int):
    """(the molecules fine-tuning trains on, their ``mol_id, split`` table, (train, val, test) positions).

    Those molecules have a 3D structure (featurize recorded the others) and at least one of
    ``cfg.targets``; the split is ``cfg.split`` over them with ``seed``. The stage saves the table as
    ``split.csv``; a peer model compared on the same split can rebuild it without training.
    """
    data = molecules[molecules[schema.MOL_ID].isin(structures[schema.MOL_ID])].reset_index(drop=True)
    labelled = data[cfg.targets].notna().any(axis=1).to_numpy()
    data = data[labelled].reset_index(drop=True)
    if len(data) < 10:
        raise FinetuneInputError(f"only {len(data)} molecules have both a structure and a label "
                                 f"for {cfg.targets}; need at least 10")
    parts = make_split(data, cfg.split, cfg.fractions, seed)
    split = pd.DataFrame({schema.MOL_ID: data[schema.MOL_ID], "split": ""})
    for name, idx in zip(("train", "val", "test"), parts):
        split.loc[np.asarray(idx), "split"] = name
    return data, split, parts


def run_finetune(ctx: RunContext, molecules_path: Path, structures_path: Path,
                 pretrained_path: Path | None) -> StageResult:
    from molgnn.train.checkpoints import load_checkpoint, save_checkpoint
    from molgnn.train.finetune import finetune_ensemble

    p = ctx.params
    cfg = p.finetune
    use_pretrained = cfg.init == "pretrained"
    if use_pretrained and pretrained_path is None:
        raise FinetuneInputError("finetune.init is 'pretrained' but pretraining is disabled; "
                                 "enable pretrain or set finetune.init: scratch")
    key = stage_key("finetune", dataclasses.asdict(p.model), dataclasses.asdict(cfg), p.seed,
                    Path(molecules_path), Path(structures_path),
                    Path(pretrained_path) if use_pretrained else None)

    def compute(run, out_dir: Path) -> StageResult:
        molecules = pd.read_parquet(molecules_path)
        missing = [t for t in cfg.targets if t not in molecules.columns]
        if missing:
            numeric = [c for c in molecules.columns if molecules[c].dtype.kind == "f"]
            raise FinetuneInputError(f"target(s) {missing} not in the ingested data; available: {numeric}")
        units = json.loads((Path(molecules_path).parent / schema.UNITS_FILE).read_text())
        structures = pd.read_parquet(structures_path)
        data, split, (train_idx, val_idx, test_idx) = finetune_split(molecules, structures, cfg, p.seed)
        with atomic_path(out_dir / SPLIT_FILE) as tmp:
            split.to_csv(tmp, index=False)

        structs = structures.set_index(schema.MOL_ID).loc[data[schema.MOL_ID]].reset_index()
        targets = data[[schema.MOL_ID, *cfg.targets]]
        pretrained = load_checkpoint(pretrained_path) if use_pretrained else None
        log_fn = (lambda metrics, step: run.log_metrics(metrics, step)) if run is not None else None
        ens = finetune_ensemble(structs, targets, (train_idx, val_idx, test_idx), p.model, cfg,
                                seed=p.seed, device=ctx.device, pretrained=pretrained,
                                ensemble_size=cfg.ensemble_size, log_fn=log_fn, **cfg.train_options())
        outputs = {"split": str(out_dir / SPLIT_FILE)}
        for k, member in enumerate(ens.members):
            path = out_dir / f"member_{k}.pt"
            save_checkpoint(member.checkpoint, path)
            outputs[f"member_{k}"] = str(path)
        preds_path = out_dir / "test_predictions.csv"
        with atomic_path(preds_path) as tmp:
            ens.test_predictions.to_csv(tmp, index=False)
        outputs["test_predictions"] = str(preds_path)
        types = ens.task_types
        regression = [t for t in cfg.targets if types[t] != CLASSIFICATION]
        # regression: std scale + conformal intervals; classification: Platt-scaled probabilities
        calib = _calibration(ens, structs, targets, val_idx, types, ctx.device)
        calib_path = out_dir / CALIBRATION_FILE
        with atomic_path(calib_path) as tmp:
            tmp.write_text(json.dumps(calib, indent=2))
        outputs["calibration"] = str(calib_path)
        # What the model has seen, so screening can flag molecules outside it (molgnn.screen.domain).
        from molgnn.screen.domain import DOMAIN_FILE, fit_domain

        domain = fit_domain(data[schema.SMILES].iloc[np.asarray(train_idx)].tolist(), seed=p.seed)
        domain_path, domain_fps = domain.save(out_dir / DOMAIN_FILE)
        outputs["applicability_domain"] = str(domain_path)
        outputs["applicability_domain_fps"] = str(domain_fps)
        history_path = out_dir / "history.json"
        with atomic_path(history_path) as tmp:
            tmp.write_text(json.dumps([m.history for m in ens.members], indent=2))
        outputs["history"] = str(history_path)

        metrics: dict[str, float] = {"n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx)}
        if cfg.atom_features is not None:  # molecules whose atoms could not be paired with their SMILES
            metrics["n_without_atom_features"] = ens.members[0].atom_features_missing
        for target, vals in ens.test_metrics.items():
            for name, value in vals.items():
                metrics[history_keys.test_metric(name, target)] = value
        H = history_keys
        classified = [t for t in cfg.targets if types[t] == CLASSIFICATION]
        for name in ("roc_auc", "pr_auc", "ece"):  # averaged over the classification tasks
            if classified:
                metrics[H.test_average(name)] = float(np.nanmean([ens.test_metrics[t][name] for t in classified]))
        for name in ("ece_calibrated", "brier_calibrated"):
            if classified:
                metrics[H.test_average(name)] = float(np.nanmean([calib[t][f"{name}_test"] for t in classified]))
        for target in classified:
            metrics[H.test_metric("ece_calibrated", target)] = calib[target]["ece_calibrated_test"]
        for target, rep in ((t, calib[t]) for t in regression):
            metrics[H.calib_metric(H.CALIB_SPEARMAN, target)] = rep["spearman_std_abs_error"]
            metrics[H.calib_metric(H.CALIB_SCALE, target)] = rep["scale"]
            metrics[H.calib_metric(H.CALIB_COVERAGE95_RAW, target)] = rep["coverage_raw"]["0.95"]
            metrics[H.calib_metric(H.CALIB_COVERAGE95, target)] = rep.get("coverage_recal", rep["coverage_raw"])["0.95"]
            metrics[H.calib_metric(H.CALIB_MISCAL_AREA_RAW, target)] = rep["miscalibration_area_raw"]
            metrics[H.calib_metric(H.CALIB_MISCAL_AREA, target)] = rep.get("miscalibration_area_recal", math.nan)
            if "conformal_coverage90_test" in rep:
                metrics[H.test_metric("conformal_coverage90", target)] = rep["conformal_coverage90_test"]
                if math.isfinite(rep["conformal_width90_test"]):   # unbounded with < 9 validation molecules
                    metrics[H.test_metric("conformal_width90", target)] = rep["conformal_width90_test"]
        metrics["domain_similarity_threshold"] = domain.similarity_threshold
        metrics["domain_heavy_atoms_max"] = domain.heavy_atoms_max
        return StageResult(stage="finetune", key=key, out_dir=str(out_dir), outputs=outputs,
                           metrics=metrics,
                           info={"units": {t: units.get(t, "") for t in cfg.targets}, "init": cfg.init,
                                 "split": cfg.split, "device": ctx.device,
                                 "n_unlabelled_or_unstructured": int(len(molecules) - len(data)),
                                 # multiply each target's ensemble std by this for calibrated intervals
                                 "std_scale": {t: calib[t]["scale"] for t in regression},
                                 "task_types": types, "task_type_reasons": ens.task_reasons,
                                 "domain_elements": domain.elements})

    def log(run, result: StageResult) -> None:
        from molgnn.report.plots import learning_curve, parity

        preds = pd.read_csv(result.path("test_predictions"))
        types = result.info.get("task_types", {})
        for target in cfg.targets:
            sub = preds[preds["target"] == target].dropna(subset=["y_true"])
            if len(sub) and types.get(target) != CLASSIFICATION:
                unit = result.info["units"].get(target, "")
                run.log_figure(parity(sub["y_true"], sub["y_pred"], target, unit), f"parity_{target}.png")
        histories = json.loads(result.path("history").read_text())
        run.log_figure(learning_curve(histories[0], history_keys.finetune_curve_keys(histories[0]),
                                      "fine-tuning (member 0)"),
                       "finetune_curve.png")
        run.log_artifact(result.path("test_predictions"))
        run.log_artifact(result.path("split"))
        if "calibration" in result.outputs:
            run.log_artifact(result.path("calibration"))
        for name, path in result.outputs.items():
            if name.startswith("member_"):
                run.log_artifact(path, "model")
        run.log_dict({"model": dataclasses.asdict(p.model), "finetune": dataclasses.asdict(cfg),
                      "units": result.info["units"]}, "model_config.json")

    return run_cached(ctx, "finetune", key, compute,
                      params={**{f"model.{k}": v for k, v in dataclasses.asdict(p.model).items()},
                              **{f"finetune.{k}": v for k, v in dataclasses.asdict(cfg).items()}},
                      log=log)


def _calibration(ens, structs: pd.DataFrame, targets_df: pd.DataFrame, val_idx, task_types: dict,
                 device: str) -> dict:
    """Calibration report per target, fitted on the validation split's ensemble predictions and
    scored on the test split: for regression (molgnn.screen.calibration) the std scale and the 90 %
    split-conformal interval; for classification (molgnn.screen.probability_calibration) Platt
    scaling of the ensemble probability, with the test ECE and Brier score before and after."""
    from molgnn.screen.calibration import add_conformal, report_from_tables
    from molgnn.screen.predict import predict_ensemble
    from molgnn.screen.probability_calibration import probability_report

    val_idx = np.asarray(val_idx, dtype=np.int64)
    val_structs = structs.iloc[val_idx].reset_index(drop=True)
    pred = predict_ensemble(ens.checkpoints, val_structs, device=device)
    truth = targets_df.iloc[val_idx].set_index(schema.MOL_ID)
    val_long = pd.concat([pd.DataFrame({schema.MOL_ID: pred[schema.MOL_ID], "target": t,
                                        "y_true": truth.loc[pred[schema.MOL_ID], t].to_numpy(dtype=float),
                                        "y_pred": pred[f"{t}_mean"], "y_std": pred[f"{t}_std"]})
                          for t in task_types], ignore_index=True)
    regression = [t for t, kind in task_types.items() if kind != CLASSIFICATION]
    report = report_from_tables(ens.test_predictions, val_long, targets=regression) if regression else {}
    report = add_conformal(report, ens.test_predictions, val_long)
    for t in (t for t, kind in task_types.items() if kind == CLASSIFICATION):
        report[t] = probability_report(val_long[val_long["target"] == t],
                                       ens.test_predictions[ens.test_predictions["target"] == t])
    return report


def member_checkpoints(result: StageResult) -> list[Path]:
    return [Path(v) for k, v in sorted(result.outputs.items()) if k.startswith("member_")]
