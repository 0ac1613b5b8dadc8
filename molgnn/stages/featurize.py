"""Stage 2: 2D graphs (named featurizer) and 3D structures (given geometry or ETKDGv3 + MMFF)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key, worker_count

GRAPHS_FILE = "graphs.pt"
GRAPH_REJECTS_FILE = "graph_rejects.csv"


def run_featurize(ctx: RunContext, molecules_path: Path) -> StageResult:
    from molgnn.featurize.graph_store import featurize_graphs, save_graphs
    from molgnn.featurize.structures import build_structures

    cfg = ctx.params.featurize
    # out_dir is only where the run publishes the data; the bytes do not depend on the worker count
    decides = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out_dir", "workers")}
    key = stage_key("featurize", decides, ctx.params.seed, Path(molecules_path))

    def compute(run, out_dir: Path) -> StageResult:
        molecules = pd.read_parquet(molecules_path)
        workers = worker_count(cfg.workers)
        store, failures = featurize_graphs(molecules[schema.SMILES].tolist(),
                                           molecules[schema.MOL_ID].tolist(), cfg.featurizer, workers)
        save_graphs(store, out_dir / GRAPHS_FILE)
        graph_rejects = molecules.iloc[[i for i, _ in failures]][[schema.SOURCE, schema.ROW, schema.RAW]].copy()
        graph_rejects["stage"] = "featurize-2d"
        graph_rejects["reason"] = [reason for _, reason in failures]
        with atomic_path(out_dir / GRAPH_REJECTS_FILE) as tmp:
            # pandas ends lines with os.linesep unless told: the bytes must not depend on the OS
            graph_rejects.to_csv(tmp, index=False, lineterminator="\n")

        s = build_structures(molecules, out_dir, seed=ctx.params.seed,
                             timeout_s=cfg.conformers.timeout_s,
                             max_iterations=cfg.conformers.max_iterations, workers=workers)
        n = len(molecules)
        return StageResult(
            stage="featurize", key=key, out_dir=str(out_dir),
            outputs={"graphs": str(out_dir / GRAPHS_FILE), "graph_rejects": str(out_dir / GRAPH_REJECTS_FILE),
                     "structures": str(s.path), "structure_rejects": str(s.rejects_path)},
            metrics={"n_molecules": n, "n_graphs": len(store["mol_ids"]), "n_graph_failed": len(failures),
                     "n_geometry_given": s.n_given, "n_conformers_embedded": s.n_embedded,
                     "n_conformer_failed": s.n_failed,
                     "structure_rate": (s.n_given + s.n_embedded) / max(n, 1)},
            info={"featurizer": cfg.featurizer, "workers": workers},
        )

    def log(run, result: StageResult) -> None:
        run.log_artifact(result.path("structure_rejects"))
        run.log_artifact(result.path("graph_rejects"))

    return run_cached(ctx, "featurize", key, compute,
                      params={"featurize.featurizer": cfg.featurizer,
                              **{f"featurize.conformers.{k}": v
                                 for k, v in dataclasses.asdict(cfg.conformers).items()}},
                      log=log)
