"""Screening a library as a flow of its own: what ``molgnn schedule --flow screen`` serves.

Each run reads the library file afresh (a vendor drop replaced in place is screened as it is now),
screens it with a model folder (default: the newest finished pipeline run's) under ``params.yaml``'s
``screen`` settings, writes ``runs/screens/<time>-<id>/ranked.csv`` with its rejects, and is one
MLflow run (``screen-library``) carrying the library's sha256, the model folder and the counts.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

SCREENS_DIR = "screens"      # under runs/


@flow(name="molgnn-screen", log_prints=True)
def screen_flow(library: str, params_path: str = "params.yaml", models: str = "runs/latest") -> dict[str, Any]:
    """Screen ``library`` (a path, read when the run starts) with the model folder ``models``."""
    from molgnn.config import load_params
    from molgnn.data.artifacts import file_sha256
    from molgnn.models import schnetpack_light
    from molgnn.screen.model_folder import load_screening_model, resolve_folder, screen_library
    from molgnn.stages.run_folder import RUNS_DIR
    from molgnn.tracking import mlflow_tracking as mt

    logger = get_run_logger()
    params_file = Path(params_path).resolve()
    root = params_file.parent
    params = load_params(params_file)
    lib = Path(library) if Path(library).is_absolute() else root / library
    if not lib.is_file():
        raise FileNotFoundError(f"library {lib} does not exist (now): nothing to screen")
    folder = resolve_folder(Path(models) if Path(models).is_absolute() else root / models)
    schnetpack_light.install()
    model = load_screening_model(folder)
    out_dir = root / RUNS_DIR / SCREENS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    out_dir.mkdir(parents=True)
    tracker = mt.Tracker.connect(params.tracking, root)
    digest = file_sha256(lib)
    with tracker.start("screen-library", params={"library": str(lib), "model_folder": str(folder),
                                                 "tier": params.screen.tier, "top_k": params.screen.top_k,
                                                 "uncertain_k": params.screen.uncertain_k},
                       tags={"molgnn.library_sha256": digest, "molgnn.out_dir": str(out_dir)}) as run:
        s = params.screen
        res = screen_library(model, [str(lib)], out_dir / "ranked.csv", tier=s.tier,
                             rank_by=s.rank_by if s.rank_by in model.targets else None, descending=s.descending,
                             top_k=s.top_k, uncertain_k=s.uncertain_k,
                             rank_out_of_domain_last=s.rank_out_of_domain_last, seed=params.seed)
        run.log_metrics({"n_input_rows": res.n_input_rows, "n_ranked": res.n_ranked, "n_rejected": res.n_rejected,
                         "n_3d": res.n_3d})
        run.log_artifact(res.predictions_path)
        run.log_artifact(res.rejects_path)
    logger.info("screened %s (sha256 %s): %d rows, %d ranked -> %s, %d rejected", lib, digest, res.n_input_rows,
                res.n_ranked, res.predictions_path, res.n_rejected)
    return {"library": str(lib), "library_sha256": digest, "out_dir": str(out_dir), "mlflow_run_id": run.run_id,
            "n_input_rows": res.n_input_rows, "n_ranked": res.n_ranked, "n_rejected": res.n_rejected,
            "tier": res.tier}
