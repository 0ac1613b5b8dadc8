"""One round of the design loop: generate -> filter -> screen -> Pareto selection -> fine-tune the generator.

A round is a cached stage (``design-round-<k>``): its key holds the generator checkpoint's content,
the training molecules, the screening model's files, the molecules selected in earlier rounds and
every knob it reads, so a design rerun after a crash redoes only the rounds that had not finished,
and its MLflow run (named ``design-round-<k>``) nests under the design run.

Every draw ends in exactly one place: ``filter_rejects.csv`` (invalid, duplicate, known, not
drug-like), ``screen.rejects.csv`` (failed standardization or conformers), or ``round.csv`` (every
screened molecule with its objectives, Pareto front, crowding distance, ``selected`` and, when not
selected, ``selection_note``). Each row of ``round.csv`` carries its lineage: the round, the MLflow
run that trained the generator that drew it, the data version and the property-model run.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.data.shards import key_file
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key, worker_count
from molgnn.stages.screen import model_files

ROUND_FILE = "round.csv"
SELECTED_FILE = "selected.csv"
GENERATOR_FILE = "generator.pt"   # the generator fine-tuned after this round: the next round draws from it


@dataclass
class RoundInputs:
    """What a round starts from besides the params."""

    number: int                        # 1-based
    generator: Path                    # generator.pt the round draws from
    generator_run: str                 # MLflow run that trained that generator (lineage)
    molecules: Path                    # the ingested training molecules (novelty, replay, filter)
    model_dir: Path                    # screening model folder (2D tier + 3D ensemble)
    property_model_run: str            # MLflow run of the fine-tuning that made the screening model
    data_md5: str
    selected_before: list[str]         # SMILES selected in earlier rounds: not selected again, kept apart
    last: bool                         # the last round does not fine-tune (nothing would draw from it)


def _selection(table: pd.DataFrame, cfg, selected_before: list[str]) -> pd.DataFrame:
    """Pareto fronts, crowding, and the diverse pick of ``cfg.select`` rows; notes why a row was not picked."""
    from molgnn.chem.similarity import smiles_bits
    from molgnn.design.objectives import objective_matrix
    from molgnn.design.pareto import select_diverse, selection_order

    table = table.copy()
    table["pareto_rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["crowding_distance"] = np.nan
    table["selected"] = False
    table["selection_note"] = ""
    values, maximize = objective_matrix(table, cfg.objectives)
    finite = np.isfinite(values).all(axis=1) if len(table) else np.zeros(0, bool)
    table.loc[~finite, "selection_note"] = "an objective has no value"
    earlier = set(selected_before)
    repeat = table[schema.SMILES].isin(earlier).to_numpy()
    table.loc[repeat & finite, "selection_note"] = "selected in an earlier round"
    eligible = finite & ~repeat
    if cfg.in_domain_only and "in_domain" in table.columns:
        out = eligible & ~table["in_domain"].astype(str).str.lower().eq("true").to_numpy()
        table.loc[out, "selection_note"] = "outside the property model's applicability domain"
        eligible &= ~out
    rows = np.flatnonzero(eligible)
    if len(rows):
        order, ranks, crowd = selection_order(values[rows], maximize)
        table.loc[table.index[rows], "pareto_rank"] = ranks
        table.loc[table.index[rows], "crowding_distance"] = crowd
        fps = smiles_bits(table[schema.SMILES].iloc[rows].tolist())
        already = smiles_bits(sorted(earlier)) if earlier else None
        kept, skipped = select_diverse(order, fps, cfg.select, cfg.max_similarity, already)
        table.loc[table.index[rows[kept]], "selected"] = True
        for r, reason in skipped.items():
            table.loc[table.index[rows[r]], "selection_note"] = reason
        rest = np.setdiff1d(np.arange(len(rows)), np.array(kept + list(skipped), dtype=int))
        table.loc[table.index[rows[rest]], "selection_note"] = f"not among the {cfg.select} picked"
    return table.sort_values(["selected", "pareto_rank"], ascending=[False, True], kind="stable",
                             na_position="last").reset_index(drop=True)


def _finetune(ctx: RunContext, generator, selected: list[str], training: list[str], seed: int):
    """The generator trained further on the molecules selected so far, each repeated so that they
    weigh as much as the ``design.replay`` training molecules mixed in beside them."""
    from molgnn.generate.finetune import finetune_generator

    cfg = ctx.params.design
    rng = np.random.default_rng(seed)
    replay = list(rng.choice(training, size=min(cfg.replay, len(training)), replace=False)) if cfg.replay else []
    copies = max(1, len(replay) // max(len(selected), 1))
    return finetune_generator(generator, selected * copies, replay=replay, epochs=cfg.finetune_epochs,
                              lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size, seed=seed,
                              device=ctx.device)


def run_design_round(ctx: RunContext, inp: RoundInputs) -> StageResult:
    from molgnn.stages.filter import apply_filters
    from molgnn.stages.generate import write_samples

    p = ctx.params
    cfg = p.design
    name = f"design-round-{inp.number}"
    key = stage_key(name, dataclasses.asdict(cfg), dataclasses.asdict(p.filter), dataclasses.asdict(p.screen),
                    dataclasses.asdict(p.featurize.conformers), p.generate.sample_batch_size, p.seed,
                    key_file(inp.generator), Path(inp.molecules), *model_files(inp.model_dir),
                    sorted(inp.selected_before), inp.last, inp.generator_run, inp.property_model_run, inp.data_md5)

    def compute(run, out_dir: Path) -> StageResult:
        from molgnn.chem.canonical import canonical_smiles
        from molgnn.chem.similarity import smiles_bits
        from molgnn.design.objectives import column, in_target, objective_values
        from molgnn.generate.checkpoints import load_generator, save_generator
        from molgnn.generate.sampling import sample_smiles
        from molgnn.screen.model_folder import load_screening_model, screen_library

        seed = p.seed + 1000 * inp.number   # each round its own draws, reproducibly
        generator = load_generator(inp.generator, device=ctx.device)
        sample = sample_smiles(generator, None, cfg.n_samples, seed=seed, device=ctx.device,
                               batch_size=p.generate.sample_batch_size)
        samples = write_samples(sample, generator.kind, out_dir / "samples.csv")

        training = pd.read_parquet(inp.molecules, columns=[schema.SMILES])[schema.SMILES].tolist()
        known = {canonical_smiles(s) for s in training}
        kept, rejected, rates = apply_filters(samples, known, p.filter)
        with atomic_path(out_dir / "filter_rejects.csv") as tmp:
            rejected.to_csv(tmp, index=False)
        candidates = out_dir / "candidates.csv"
        with atomic_path(candidates) as tmp:
            kept.to_csv(tmp, index=False)

        model = load_screening_model(inp.model_dir)
        extra = kept.drop(columns=[schema.SMILES, "raw"], errors="ignore").copy()
        extra.insert(0, schema.ROW, range(len(kept)))
        extra.insert(0, schema.SOURCE, str(candidates))
        lineage = {"round": inp.number, "generator_run": inp.generator_run, "data_md5": inp.data_md5,
                   "property_model_run": inp.property_model_run}
        for col, value in lineage.items():
            extra[col] = value
        screened_path = out_dir / "screened.csv"
        n_screened = n_screen_rejected = 0
        table = pd.DataFrame({schema.SMILES: pd.Series(dtype=str),
                              **{col: pd.Series(dtype=type(v)) for col, v in lineage.items()}})
        if len(kept):
            res = screen_library(model, [str(candidates)], screened_path, tier=p.screen.tier, rank_by=p.screen.rank_by,
                                 descending=p.screen.descending, top_k=p.screen.top_k,
                                 uncertain_k=p.screen.uncertain_k,
                                 rank_out_of_domain_last=p.screen.rank_out_of_domain_last,
                                 smiles_column=schema.SMILES, seed=seed, timeout_s=p.featurize.conformers.timeout_s,
                                 max_iterations=p.featurize.conformers.max_iterations,
                                 workers=worker_count(p.featurize.workers), device=ctx.device, extra_columns=extra)
            n_screened, n_screen_rejected = res.n_ranked, res.n_rejected
            if res.n_ranked:
                table = pd.read_csv(res.predictions_path)
                table[schema.SOURCE] = candidates.name   # the staging path it was read from is gone once published
        training_fps = smiles_bits(training)
        table = objective_values(table, cfg.objectives, training_fps, model.targets) if len(table) else table
        for name_ in cfg.objectives:
            if column(name_) not in table.columns:
                table[column(name_)] = pd.Series(dtype=float)
        hits = in_target(table, cfg.objectives) if len(table) else None
        if hits is not None:
            table["in_target"] = hits.to_numpy()
        table = _selection(table, cfg, inp.selected_before)
        with atomic_path(out_dir / ROUND_FILE) as tmp:
            table.to_csv(tmp, index=False)
        chosen = table[table["selected"]]
        with atomic_path(out_dir / SELECTED_FILE) as tmp:
            chosen.to_csv(tmp, index=False)
        if len(samples) != len(rejected) + n_screen_rejected + n_screened:
            raise AssertionError(f"{name} lost draws: {len(samples)} drawn, {len(rejected)} filtered out, "
                                 f"{n_screen_rejected} rejected by the screen, {n_screened} screened")

        outputs = {"round": str(out_dir / ROUND_FILE), "selected": str(out_dir / SELECTED_FILE),
                   "samples": str(out_dir / "samples.csv"), "filter_rejects": str(out_dir / "filter_rejects.csv")}
        if (out_dir / "screened.rejects.csv").is_file():
            outputs["screen_rejects"] = str(out_dir / "screened.rejects.csv")
        metrics = {"n_samples": float(len(samples)), "validity": sample.validity, "uniqueness": sample.uniqueness,
                   "filter_pass_rate": rates["pass_rate"], "n_screened": float(n_screened),
                   "n_screen_rejected": float(n_screen_rejected), "n_selected": float(len(chosen)),
                   "n_front_1": float((table["pareto_rank"] == 1).sum()) if len(table) else 0.0,
                   "sampling_molecules_per_second": sample.molecules_per_second}
        if "in_target" in table.columns:   # hit rates: of the molecules screened, of the valid draws
            n_hits = float(table["in_target"].astype(bool).sum())
            n_valid = sum(s_ is not None for s_ in sample.smiles)
            metrics.update(n_hits=n_hits, hit_rate=n_hits / max(n_screened, 1), hit_rate_valid=n_hits / max(n_valid, 1),
                           hits_per_draw=n_hits / max(len(samples), 1))
        if "in_domain" in table.columns and len(table):
            metrics["in_domain_fraction"] = float(table["in_domain"].astype(str).str.lower().eq("true").mean())
        for obj in cfg.objectives:
            vals = pd.to_numeric(table[column(obj)], errors="coerce") if len(table) else pd.Series(dtype=float)
            if vals.notna().any():
                metrics[f"{obj}_mean"] = float(vals.mean())
            picked = pd.to_numeric(chosen[column(obj)], errors="coerce")
            if picked.notna().any():
                metrics[f"{obj}_mean_selected"] = float(picked.mean())
        info = {"round": inp.number, "generator_run": inp.generator_run, "fine_tuned": False}

        selected_all = list(inp.selected_before) + chosen[schema.SMILES].tolist()
        if cfg.finetune_generator and not inp.last and selected_all:
            tuned = _finetune(ctx, generator, selected_all, training, seed)
            save_generator(tuned, out_dir / GENERATOR_FILE)
            outputs["generator"] = str(out_dir / GENERATOR_FILE)
            metrics["finetune_loss"] = float(tuned.history[-1]["loss"]) if tuned.history else float("nan")
            metrics["finetune_seconds"] = tuned.train_seconds
            info.update(fine_tuned=True, finetune_rejects=len(tuned.rejects), finetune_molecules=tuned.n_train)
        with atomic_path(out_dir / "round.json") as tmp:
            tmp.write_text(json.dumps({"metrics": metrics, "info": info, "lineage": lineage}, indent=2))
        return StageResult(stage=name, key=key, out_dir=str(out_dir), outputs=outputs, metrics=metrics, info=info)

    def log(run, result: StageResult) -> None:
        for label in ("round", "selected", "filter_rejects"):
            run.log_artifact(result.path(label))
        if "generator" in result.outputs:
            run.log_artifact(result.path("generator"), "model")

    return run_cached(ctx, name, key, compute, log=log,
                      params={"round": inp.number, "generator_run": inp.generator_run,
                              **{f"design.{k}": v for k, v in dataclasses.asdict(cfg).items()}})
