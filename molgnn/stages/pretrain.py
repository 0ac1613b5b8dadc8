"""Stage 3: self-supervised pretraining of the PaiNN encoder (denoising + masked atom types, optionally
extended-Hückel frontier orbitals), by default continuing the drug-like encoder shipped with molgnn
(``pretrain.init_from``) on the run's own structures."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from molgnn.data.artifacts import atomic_path
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key
from molgnn.train.history_keys import EPOCH, pretrain_curve_keys

CHECKPOINT_FILE = "encoder.pt"


def run_pretrain(ctx: RunContext, structures_path: Path) -> StageResult:
    from molgnn.data.shipped_encoders import resolve_encoder
    from molgnn.train.checkpoints import load_checkpoint, save_checkpoint
    from molgnn.train.pretrain import pretrain

    p = ctx.params
    init_path = resolve_encoder(p.pretrain.init_from, ctx.root) if p.pretrain.init_from else None
    key = stage_key("pretrain", dataclasses.asdict(p.model), dataclasses.asdict(p.pretrain), p.seed,
                    Path(structures_path), init_path)   # the starting weights' bytes, not just their name

    def compute(run, out_dir: Path) -> StageResult:
        structures = pd.read_parquet(structures_path)
        if p.pretrain.max_molecules and len(structures) > p.pretrain.max_molecules:
            structures = structures.sample(p.pretrain.max_molecules, random_state=p.seed)
        log_fn = (lambda metrics, step: run.log_metrics(metrics, step)) if run is not None else None
        init = load_checkpoint(init_path) if init_path is not None else None
        res = pretrain(structures, p.model, p.pretrain, seed=p.seed, device=ctx.device, log_fn=log_fn,
                       init_from=init, **p.pretrain.train_options())
        save_checkpoint(res.checkpoint, out_dir / CHECKPOINT_FILE)
        with atomic_path(out_dir / "history.json") as tmp:
            tmp.write_text(json.dumps(res.history, indent=2))
        last = res.history[-1] if res.history else {}
        eht = res.checkpoint.get("eht")  # structures EHT rejected still train the other objectives
        return StageResult(
            stage="pretrain", key=key, out_dir=str(out_dir),
            outputs={"checkpoint": str(out_dir / CHECKPOINT_FILE), "history": str(out_dir / "history.json")},
            metrics={f"final_{k}": v for k, v in last.items() if k != EPOCH} | {"n_structures": len(structures)}
            | ({"n_structures_without_eht_targets": eht["n_without_targets"]} if eht else {}),
            info={"device": ctx.device, "init_from": p.pretrain.init_from,
                  "epochs_before": len(init.get("history", [])) if init is not None else 0}
            | ({"eht_rejections": eht["reasons"]} if eht else {}),
        )

    def log(run, result: StageResult) -> None:
        from molgnn.report.plots import learning_curve

        history = json.loads(result.path("history").read_text())
        run.log_figure(learning_curve(history, pretrain_curve_keys(history), "pretraining"),
                       "pretrain_loss.png")
        run.log_artifact(result.path("checkpoint"), "model")
        run.log_dict({"model": dataclasses.asdict(p.model), "pretrain": dataclasses.asdict(p.pretrain)},
                     "model_config.json")

    return run_cached(ctx, "pretrain", key, compute,
                      params={**{f"model.{k}": v for k, v in dataclasses.asdict(p.model).items()},
                              **{f"pretrain.{k}": v for k, v in dataclasses.asdict(p.pretrain).items()}},
                      log=log)
