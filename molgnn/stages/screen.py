"""Stage 7: screen the filtered candidates with the screening model; a ranked table out.

The same path as ``molgnn screen`` (:func:`molgnn.screen.model_folder.screen_library`): with a 2D
tier in the model folder (the fast-tier stage's) and ``screen.tier: auto``, the 2D tier ranks every
candidate and the 3D ensemble re-predicts the ``screen.top_k`` best and ``screen.uncertain_k`` most
uncertain; without one, the 3D ensemble screens all. Each candidate row records where it came from:
the generator and its MLflow run, the data version (DVC md5) and the property-model run that scored it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from molgnn.data import schema
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key, worker_count

PREDICTIONS_FILE = "candidates.csv"   # ranked; rejects in candidates.rejects.csv beside it
MODEL_FILES = ("member_*.pt", "model_2d.pt", "calibration.json", "calibration_2d.json",
               "applicability_domain.json", "applicability_domain_fps.npy")


def model_files(model_dir: Path) -> list[Path]:
    """The files of a screening model folder that decide a screen (its key hashes their content)."""
    return sorted(f for pattern in MODEL_FILES for f in Path(model_dir).glob(pattern))


def run_screen(ctx: RunContext, candidates_path: Path, model_dir: Path, provenance: dict[str, str]) -> StageResult:
    """``model_dir``: the fast-tier stage's folder (2D tier + 3D ensemble) or the fine-tuning stage's
    (3D only); ``provenance``: ``data_md5``, ``property_model_run``, and ``generator_run.<kind>`` entries."""
    from molgnn.screen.model_folder import load_screening_model, screen_library

    p = ctx.params
    model_dir = Path(model_dir)
    key = stage_key("screen", dataclasses.asdict(p.screen), dataclasses.asdict(p.featurize.conformers),
                    p.seed, Path(candidates_path), *model_files(model_dir), sorted(provenance.items()))

    def compute(run, out_dir: Path) -> StageResult:
        from molgnn.screen.domain import domain_summary

        out = out_dir / PREDICTIONS_FILE
        candidates = pd.read_csv(candidates_path)
        extra = candidates.drop(columns=[schema.SMILES, "raw"], errors="ignore").copy()
        extra.insert(0, schema.ROW, range(len(candidates)))
        extra.insert(0, schema.SOURCE, str(candidates_path))
        extra["generator_run"] = extra["generator"].map(lambda g: provenance.get(f"generator_run.{g}", ""))
        extra["data_md5"] = provenance.get("data_md5", "")
        extra["property_model_run"] = provenance.get("property_model_run", "")
        model = load_screening_model(model_dir)
        res = screen_library(model, [str(candidates_path)], out, tier=p.screen.tier, rank_by=p.screen.rank_by,
                             descending=p.screen.descending, top_k=p.screen.top_k, uncertain_k=p.screen.uncertain_k,
                             rank_out_of_domain_last=p.screen.rank_out_of_domain_last,
                             smiles_column=schema.SMILES, seed=p.seed, timeout_s=p.featurize.conformers.timeout_s,
                             max_iterations=p.featurize.conformers.max_iterations,
                             workers=worker_count(p.featurize.workers), device=ctx.device, extra_columns=extra)
        table = pd.read_csv(res.predictions_path) if res.n_ranked else pd.DataFrame()
        domain_counts = domain_summary(table) if res.n_ranked else {}
        return StageResult(stage="screen", key=key, out_dir=str(out_dir),
                           outputs={"predictions": str(res.predictions_path), "rejects": str(res.rejects_path)},
                           metrics={"n_candidates": res.n_input_rows, "n_ranked": res.n_ranked,
                                    "n_rejected": res.n_rejected, "n_3d": res.n_3d, "n_3d_failed": res.n_3d_failed,
                                    **domain_counts},
                           info={"domain_checked": model.domain is not None, "tier": res.tier,
                                 "tier_note": res.note, "model_dir": str(model_dir)})

    def log(run, result: StageResult) -> None:
        run.log_artifact(result.path("predictions"))
        run.log_artifact(result.path("rejects"))

    return run_cached(ctx, "screen", key, compute,
                      params={f"screen.{k}": v for k, v in dataclasses.asdict(p.screen).items()}, log=log)
