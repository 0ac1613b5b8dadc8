"""``molgnn design``: the design loop as a Prefect flow.

generate -> filter -> screen (uncertainty, applicability domain) -> Pareto selection with a
diversity constraint -> fine-tune the generator on what was selected -> next round. The models come
from the pipeline's cached stages (trained here when the cache lacks them), or the generator from a
registered model, a shipped generator or a checkpoint (``design.generator``). Every round is an MLflow run
``design-round-<k>`` nested under the ``design`` run; the design report (``runs/<id>/design/``) shows
the Pareto front of all rounds, how each objective moves round by round, and the lineage of every
final candidate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import _flow_run_id, generate_task, open_invocation, train_models
from molgnn.stages.common import RunContext, StageResult, interrupted

DESIGN_SUBDIR = "design"   # the design report and final candidates, inside the run folder


@task(name="design-round", cache_policy=NO_CACHE)
def design_round_task(ctx: RunContext, inputs) -> StageResult:
    from molgnn.stages.design import run_design_round

    return run_design_round(ctx, inputs)


@task(name="design-report", cache_policy=NO_CACHE)
def design_report_task(rounds: list[StageResult], out_dir: Path, meta: dict) -> Path:
    from molgnn.report.design_report import write_design_report

    return write_design_report([Path(r.path("round")) for r in rounds], out_dir, meta)


def resolve_generator(ctx: RunContext, results: dict[str, StageResult], molecules: Path) -> tuple[Path, str]:
    """(generator.pt, the MLflow run that trained it) from ``design.generator``."""
    spec = ctx.params.design.generator
    if spec in ("vae", "diffusion"):
        results[f"generate-{spec}"] = generate_task(ctx, molecules, spec)
        r = results[f"generate-{spec}"]
        return r.path("checkpoint"), r.info.get("produced_by_run", "")
    from molgnn.tracking import registry

    if registry.is_models_uri(spec):
        folder = registry.download_model(spec, ctx.tracker.client.tracking_uri, ctx.root / "runs" / "registry")
        found = sorted(folder.rglob("generator.pt"))
        if not found:
            raise FileNotFoundError(f"design.generator {spec}: the registered model has no generator.pt "
                                    "(register a generator, e.g. <experiment>-generator-diffusion)")
        return found[0], registry.source_run(spec, ctx.tracker.client.tracking_uri)
    from molgnn.data.shipped_generators import resolve_generator as shipped_or_path

    return shipped_or_path(spec, ctx.root), ""   # a shipped generator's name or a checkpoint path


@flow(name="molgnn-design", log_prints=True)
def design(params_path: str = "params.yaml", root: str | None = None,
           overrides: list[str] | None = None) -> dict[str, Any]:
    """``design.rounds`` rounds of the design loop; returns the run folder, MLflow run, final table, report."""
    import dataclasses

    import pandas as pd

    from molgnn.stages.design import RoundInputs
    from molgnn.stages.run_folder import FAILED, FINISHED, KILLED
    from molgnn.tracking import mlflow_tracking as mt

    logger = get_run_logger()
    ctx, run, parent, tags = open_invocation("design", params_path, root, overrides)
    cfg = ctx.params.design
    results: dict[str, StageResult] = {}
    rounds: list[StageResult] = []
    try:
        md5, model_dir = train_models(ctx, results)
        molecules = results["ingest"].path("molecules")
        property_run = results["finetune"].info.get("produced_by_run", "")
        generator, generator_run = resolve_generator(ctx, results, molecules)
        logger.info("design: generator %s (run %s), screening model %s", generator, generator_run or "-", model_dir)
        selected: list[str] = []
        for k in range(1, cfg.rounds + 1):
            round_ctx = dataclasses.replace(ctx, run_dir=run.path / DESIGN_SUBDIR)
            inputs = RoundInputs(number=k, generator=Path(generator), generator_run=generator_run,
                                 molecules=molecules, model_dir=model_dir, property_model_run=property_run,
                                 data_md5=md5, selected_before=list(selected), last=k == cfg.rounds)
            r = design_round_task(round_ctx, inputs)
            rounds.append(r)
            selected += pd.read_csv(r.path("selected"))["smiles"].tolist()
            logger.info("design round %d%s: %s", k, " (cached)" if r.cached else "", r.metrics)
            if "generator" in r.outputs:
                generator, generator_run = r.path("generator"), r.info.get("produced_by_run", "")
        report = design_report_task(rounds, run.path / DESIGN_SUBDIR,
                                    {"pipeline_run": parent.run_id, "run_dir": str(run.path), "data_md5": md5,
                                     "params_hash": tags[mt.TAG_PARAMS_HASH], "git_commit": tags[mt.TAG_GIT_COMMIT],
                                     "flow_run": _flow_run_id(), "objectives": dict(cfg.objectives),
                                     "experiment_id": ctx.tracker.experiment_id,
                                     "round_runs": [r.info.get("mlflow_run_id", "") for r in rounds]})
        for f in sorted(report.parent.iterdir()):   # the report's files; each round logged its own
            if f.is_file() and not f.is_symlink():
                parent.log_artifact(f, "design")
        logger.info("design report: %s", report)
    except BaseException as exc:
        killed = interrupted(exc)
        parent.finish("KILLED" if killed else "FAILED")
        run.finish(KILLED if killed else FAILED, latest=False)
        raise
    parent.log_metrics({f"round_{r.info['round']}.{k}": v for r in rounds for k, v in r.metrics.items()})
    parent.finish()
    run.finish(FINISHED, latest=False)
    return {"run_id": run.run_id, "run_dir": str(run.path), "mlflow_run_id": parent.run_id, "data_md5": md5,
            "report": str(report), "final": str(report.parent / "final_candidates.csv"),
            "rounds": [{"round": r.info["round"], "cached": r.cached, "metrics": r.metrics,
                        "mlflow_run_id": r.info.get("mlflow_run_id", "")} for r in rounds]}
