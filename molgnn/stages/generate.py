"""Stage 5: train the graph VAE and the discrete graph diffusion model, then sample from each."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key

SAMPLES_FILE = "samples.csv"
GUIDED_SAMPLES_FILE = "guided_samples.csv"
CHECKPOINT_FILE = "generator.pt"


def training_smiles(molecules_path: Path) -> list[str]:
    return pd.read_parquet(molecules_path, columns=[schema.SMILES])[schema.SMILES].tolist()


def write_samples(sample, kind: str, path: Path) -> pd.DataFrame:
    table = pd.DataFrame({
        "generator": kind,
        "sample": range(len(sample.smiles)),
        "smiles": sample.smiles,                  # None: invalid before any correction
        "valid": [s is not None for s in sample.smiles],
        "reason": sample.reasons,
        "corrected_smiles": sample.corrected_smiles,
    })
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def run_generate(ctx: RunContext, molecules_path: Path, kind: str) -> StageResult:
    from molgnn.chem.filters import generation_rates
    from molgnn.generate.checkpoints import save_generator
    from molgnn.generate.sampling import sample_smiles
    from molgnn.generate.training import train_generator_from_config

    p = ctx.params
    g = p.generate
    model_cfg = g.vae if kind == "vae" else g.diffusion
    guided = kind == "diffusion" and g.guidance.enabled   # in the key only when on: old caches stay valid
    init = None
    if model_cfg.init_from:   # fine-tune an existing generator: its checkpoint's content is in the key
        from molgnn.data.shards import key_file
        from molgnn.data.shipped_generators import resolve_generator

        init = resolve_generator(model_cfg.init_from, ctx.root)
    key = stage_key(f"generate-{kind}", dataclasses.asdict(model_cfg), g.max_heavy_atoms, g.n_samples,
                    g.sample_batch_size, p.seed, Path(molecules_path),
                    *([dataclasses.asdict(g.guidance)] if guided else []), *([key_file(init)] if init else []))

    def compute(run, out_dir: Path) -> StageResult:
        smiles = training_smiles(molecules_path)
        # Molecules the generator cannot represent (too many heavy atoms, radicals) are recorded.
        if init is not None:
            from molgnn.generate.checkpoints import load_generator
            from molgnn.generate.finetune import finetune_generator

            base = load_generator(init)
            if base.kind != kind:
                raise ValueError(f"generate.{kind}.init_from {model_cfg.init_from!r} is a {base.kind} generator")
            # its vocabulary and size limit (not generate.max_heavy_atoms) decide what it can learn
            trained = finetune_generator(base, smiles, epochs=model_cfg.epochs, lr=model_cfg.lr,
                                         batch_size=model_cfg.batch_size, seed=p.seed, device=ctx.device)
        else:
            trained = train_generator_from_config(kind, smiles, model_cfg, seed=p.seed, device=ctx.device,
                                                  max_nodes=g.max_heavy_atoms)
        with atomic_path(out_dir / "training_rejects.csv") as tmp:
            pd.DataFrame(trained.rejects, columns=[schema.SMILES, "reason"]).to_csv(tmp, index=False)
        if run is not None:
            for h in trained.history:
                run.log_metrics({k: v for k, v in h.items() if k != "epoch"}, step=h.get("epoch"))
        save_generator(trained, out_dir / CHECKPOINT_FILE)
        sample = sample_smiles(trained, trained.vocab, g.n_samples, seed=p.seed, device=ctx.device,
                               batch_size=g.sample_batch_size)
        write_samples(sample, kind, out_dir / SAMPLES_FILE)
        rates = generation_rates(sample.smiles, smiles)
        rates_corrected = generation_rates(sample.corrected_smiles, smiles)
        guided_metrics, guided_outputs = {}, {}
        if guided:   # the same number of draws, steered toward generate.guidance's property range
            from molgnn.generate.guidance import guided_sampling

            gc = g.guidance
            guided_sample, _, guided_metrics = guided_sampling(
                trained, smiles, property=gc.property, low=gc.low, high=gc.high, scale=gc.scale,
                node_scale=gc.node_scale, edge_scale=gc.edge_scale, sample_batch_size=g.sample_batch_size,
                n_samples=g.n_samples, seed=p.seed, epochs=gc.epochs, batch_size=gc.batch_size, lr=gc.lr,
                t_exponent=gc.t_exponent, hidden_dim=gc.hidden_dim, n_layers=gc.n_layers, device=ctx.device,
                unguided=sample)
            write_samples(guided_sample, "diffusion-guided", out_dir / GUIDED_SAMPLES_FILE)
            guided_outputs = {"guided_samples": str(out_dir / GUIDED_SAMPLES_FILE)}
        with atomic_path(out_dir / "history.json") as tmp:
            tmp.write_text(json.dumps(trained.history, indent=2))
        # valid samples in a grid, and QED/SA/logP/MW/size against the training set (a published
        # folder is never written again, so the figures are made here, not when logging)
        from molgnn.report.figures import generator_figures
        from molgnn.report.properties import training_properties

        figures = generator_figures(kind, pd.read_csv(out_dir / SAMPLES_FILE),
                                    training_properties(smiles, seed=p.seed),
                                    out_dir / "samples_grid.png", out_dir / "property_distributions.png")
        metrics = {**{k: v for k, v in rates.items() if isinstance(v, (int, float))},
                   "validity_after_correction": rates_corrected.get("validity", float("nan")),
                   "train_seconds": trained.train_seconds,
                   "sampling_molecules_per_second": sample.molecules_per_second,
                   "n_training_molecules": len(smiles) - len(trained.rejects),
                   "n_training_rejected": len(trained.rejects), **guided_metrics}
        return StageResult(stage=f"generate-{kind}", key=key, out_dir=str(out_dir),
                           outputs={"checkpoint": str(out_dir / CHECKPOINT_FILE),
                                    "samples": str(out_dir / SAMPLES_FILE),
                                    "history": str(out_dir / "history.json"),
                                    "training_rejects": str(out_dir / "training_rejects.csv"), **guided_outputs,
                                    **{f"figure_{name}": str(path) for name, path in figures.items()}},
                           metrics=metrics,
                           info={"generator": kind, "device": ctx.device,
                                 "init_from": str(model_cfg.init_from or "")})

    def log(run, result: StageResult) -> None:
        from molgnn.report.plots import learning_curve

        history = json.loads(result.path("history").read_text())
        keys = sorted({k for h in history for k in h if k.endswith("loss")})
        run.log_figure(learning_curve(history, keys, f"{kind} training"), f"{kind}_loss.png")
        for name, path in result.outputs.items():
            if name.startswith("figure_"):
                run.log_artifact(path)
        run.log_artifact(result.path("samples"))
        run.log_artifact(result.path("training_rejects"))
        run.log_artifact(result.path("checkpoint"), "model")
        run.log_dict({"generator": kind, **dataclasses.asdict(model_cfg)}, "model_config.json")

    return run_cached(ctx, f"generate-{kind}", key, compute,
                      params={"generator": kind, "generate.max_heavy_atoms": g.max_heavy_atoms,
                              "generate.n_samples": g.n_samples, "generate.sample_batch_size": g.sample_batch_size,
                              **{f"generate.{kind}.{k}": v for k, v in dataclasses.asdict(model_cfg).items()},
                              **({f"generate.guidance.{k}": v for k, v in dataclasses.asdict(g.guidance).items()}
                                 if guided else {})},
                      log=log)
