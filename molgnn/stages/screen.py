"""Stage 7: screen the filtered candidates with the fine-tuned ensemble; a ranked table out.

Each candidate row records where it came from: the generator and its MLflow run, the data version
(DVC md5) and the property-model run that scored it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from molgnn.data import schema
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key, worker_count

PREDICTIONS_FILE = "candidates.csv"   # ranked; rejects in candidates.rejects.csv beside it


def run_screen(ctx: RunContext, candidates_path: Path, checkpoint_paths: list[Path],
               provenance: dict[str, str], std_scale: dict[str, float] | None = None,
               calibration_path: Path | None = None, domain_path: Path | None = None) -> StageResult:
    """``provenance``: ``data_md5``, ``property_model_run``, and ``generator_run.<kind>`` entries;
    ``std_scale``: the fine-tune stage's per-target calibration scales (calibrated 95 % intervals);
    ``calibration_path``: its calibration.json (split-conformal 90 % intervals); ``domain_path``: its
    applicability domain (every candidate's ``in_domain`` and ``domain_reason``)."""
    from molgnn.screen.screening import screen_file
    from molgnn.train.checkpoints import load_checkpoint

    p = ctx.params
    key = stage_key("screen", dataclasses.asdict(p.screen), dataclasses.asdict(p.featurize.conformers),
                    p.seed, Path(candidates_path), *[Path(c) for c in checkpoint_paths],
                    sorted(provenance.items()), sorted((std_scale or {}).items()),
                    Path(calibration_path) if calibration_path else None,
                    Path(domain_path) if domain_path else None,
                    Path(domain_path).with_name(Path(domain_path).stem + "_fps.npy") if domain_path else None)

    def compute(run, out_dir: Path) -> StageResult:
        from molgnn.screen.calibration import load_conformal
        from molgnn.screen.domain import domain_summary, load_domain

        out = out_dir / PREDICTIONS_FILE
        candidates = pd.read_csv(candidates_path)
        extra = candidates.drop(columns=[schema.SMILES, "raw"], errors="ignore").copy()
        extra.insert(0, schema.ROW, range(len(candidates)))
        extra.insert(0, schema.SOURCE, str(candidates_path))
        extra["generator_run"] = extra["generator"].map(lambda g: provenance.get(f"generator_run.{g}", ""))
        extra["data_md5"] = provenance.get("data_md5", "")
        extra["property_model_run"] = provenance.get("property_model_run", "")
        res = screen_file([str(candidates_path)], out, [load_checkpoint(c) for c in checkpoint_paths],
                          rank_by=p.screen.rank_by, descending=p.screen.descending, smiles_column=schema.SMILES,
                          seed=p.seed, timeout_s=p.featurize.conformers.timeout_s,
                          max_iterations=p.featurize.conformers.max_iterations,
                          workers=worker_count(p.featurize.workers), device=ctx.device, extra_columns=extra,
                          std_scale=std_scale,
                          conformal=load_conformal(calibration_path) if calibration_path else None,
                          domain=load_domain(domain_path) if domain_path else None,
                          rank_out_of_domain_last=p.screen.rank_out_of_domain_last)
        domain_counts = domain_summary(pd.read_csv(res.predictions_path)) if res.n_ranked else {}
        return StageResult(stage="screen", key=key, out_dir=str(out_dir),
                           outputs={"predictions": str(res.predictions_path), "rejects": str(res.rejects_path)},
                           metrics={"n_candidates": res.n_input_rows, "n_ranked": res.n_ranked,
                                    "n_rejected": res.n_rejected, **domain_counts},
                           info={"domain_checked": domain_path is not None})

    def log(run, result: StageResult) -> None:
        run.log_artifact(result.path("predictions"))
        run.log_artifact(result.path("rejects"))

    return run_cached(ctx, "screen", key, compute,
                      params={f"screen.{k}": v for k, v in dataclasses.asdict(p.screen).items()}, log=log)
