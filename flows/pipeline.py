"""The molgnn pipeline as a Prefect flow: each stage a task, chained from params.yaml.

Stages cache themselves in a content-addressed store (``molgnn.stages.common``), so Prefect's own
result cache is off: a rerun re-enters every task, and each finished stage returns at once without
recomputing. Every invocation has its own run folder (``molgnn.stages.run_folder``).
Tasks that read from outside (sources, possibly URLs) or write to the DVC remote retry on I/O errors.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from molgnn.config import check_runnable, load_params  # noqa: E402
from molgnn.stages.common import RunContext, StageResult, interrupted  # noqa: E402

REPORT_SUBDIR = "report"   # the run report, inside the run folder

IO_ERRORS = (OSError, ConnectionError, TimeoutError)


def retry_on_io_error(task_obj, task_run, state) -> bool:
    """Retry only transient I/O failures; bad input fails at once with its clear message."""
    try:
        state.result()
    except IO_ERRORS:
        return True
    except Exception:  # noqa: BLE001 - any other error is final
        return False
    return False


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@task(name="ingest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_io_error)
def ingest_task(ctx: RunContext) -> StageResult:
    from molgnn.stages.ingest import run_ingest

    return run_ingest(ctx)


@task(name="featurize", cache_policy=NO_CACHE)
def featurize_task(ctx: RunContext, molecules: Path) -> StageResult:
    from molgnn.stages.featurize import run_featurize

    return run_featurize(ctx, molecules)


@task(name="version-data", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_io_error)
def version_data_task(ctx: RunContext, ingest: StageResult, featurize: StageResult) -> str:
    """Publish this run's data into data/ and version it, holding the data lock throughout."""
    from molgnn.stages.publish_data import DATA_LOCK, publish_data
    from molgnn.tracking.dvc_data import version_data

    with ctx.store.lock(*DATA_LOCK):
        publish_data(ctx, ingest, featurize)
        return version_data(ctx.root)


@task(name="pretrain", cache_policy=NO_CACHE)
def pretrain_task(ctx: RunContext, structures: Path) -> StageResult:
    from molgnn.stages.pretrain import run_pretrain

    return run_pretrain(ctx, structures)


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(ctx: RunContext, molecules: Path, structures: Path, pretrained: Path | None) -> StageResult:
    from molgnn.stages.finetune import run_finetune

    return run_finetune(ctx, molecules, structures, pretrained)


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(ctx: RunContext, molecules: Path, kind: str) -> StageResult:
    from molgnn.stages.generate import run_generate

    return run_generate(ctx, molecules, kind)


@task(name="filter", cache_policy=NO_CACHE)
def filter_task(ctx: RunContext, samples: dict[str, Path], molecules: Path) -> StageResult:
    from molgnn.stages.filter import run_filter

    return run_filter(ctx, samples, molecules)


@task(name="fast_tier", cache_policy=NO_CACHE)
def fast_tier_task(ctx: RunContext, finetune: StageResult, molecules: Path, structures: Path) -> StageResult:
    from molgnn.stages.fast_tier import run_fast_tier

    return run_fast_tier(ctx, finetune, molecules, structures)


@task(name="screen", cache_policy=NO_CACHE)
def screen_task(ctx: RunContext, candidates: Path, model_dir: Path, provenance: dict) -> StageResult:
    from molgnn.stages.screen import run_screen

    return run_screen(ctx, candidates, model_dir, provenance)


@task(name="register-models", cache_policy=NO_CACHE)
def register_models_task(ctx: RunContext, results: dict[str, StageResult], molecules: Path, md5: str) -> dict[str, str]:
    """Register this run's models in the MLflow Model Registry (a version per distinct training) and
    log the input data as an MLflow Dataset on the pipeline and fine-tuning runs."""
    from molgnn.tracking import registry

    names = registry.model_names(ctx.params.tracking.experiment)
    folders = {"ensemble-3d": "finetune", "screening": "fast_tier",
               **{f"generator-{k}": f"generate-{k}" for k in ctx.params.generate.models}}
    registered = {}
    for kind, stage in folders.items():
        if stage not in results:
            continue
        r = results[stage]
        v = registry.register_folder(ctx.tracker, names[kind], r.out_dir, run_id=r.info["mlflow_run_id"],
                                     stage_key=r.key, pipeline_run_id=ctx.parent_run_id)
        registered[v.name] = v.version
    registry.log_input_data(ctx.tracker, [ctx.parent_run_id, results["finetune"].info.get("mlflow_run_id", "")],
                            molecules, md5, name=f"{ctx.params.tracking.experiment}-molecules",
                            targets=list(ctx.params.finetune.targets))
    return registered


@task(name="report", cache_policy=NO_CACHE)
def report_task(results: dict[str, StageResult], out_dir: Path, meta: dict) -> Path:
    from molgnn.report.run_report import write_report

    return write_report(results, out_dir, meta)


def _flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "")
    except Exception:  # noqa: BLE001 - outside a flow there is no id
        return ""


def open_invocation(name: str, params_path: str, root: str | None, overrides: list[str] | None):
    """Load and check the params, connect the tracker (closing runs a killed process left RUNNING),
    make this invocation's run folder and its top MLflow run ``name``.
    Returns (RunContext, RunFolder, the top StageRun, the tags every run carries)."""
    from molgnn.config import dump_params
    from molgnn.stages.run_folder import RunFolder, list_runs
    from molgnn.tracking import mlflow_tracking as mt
    from molgnn.tracking.dvc_data import data_md5
    from molgnn.tracking.provenance import git_commit

    logger = get_run_logger()
    root_path = Path(root or Path(params_path).resolve().parent).resolve()
    params = load_params(params_path if Path(params_path).is_absolute() else Path.cwd() / params_path,
                         overrides=overrides)
    check_runnable(params, root_path)   # device and sources, before any tracking or stage
    seed_everything(params.seed)

    tags = {mt.TAG_PARAMS_HASH: params.digest(), mt.TAG_GIT_COMMIT: git_commit(root_path),
            mt.TAG_FLOW_RUN: _flow_run_id()}
    previous_md5 = data_md5(root_path)
    if previous_md5:
        tags[mt.TAG_DATA_MD5] = previous_md5
    tracker = mt.Tracker.connect(params.tracking, root_path, tags)
    # Runs a killed process left RUNNING are closed first, in MLflow and in the run folders.
    for run_id in tracker.close_dangling():
        logger.warning("MLflow run %s was left RUNNING by a process that is gone: marked KILLED", run_id)
    list_runs(root_path)
    run = RunFolder.create(root_path, params_hash=tags[mt.TAG_PARAMS_HASH])
    (run.path / "params.yaml").write_text(dump_params(params))
    parent = tracker.start(name, params=params.flat(), tags={mt.TAG_RUN_DIR: str(run.path)})
    run.update(mlflow_run_id=parent.run_id)
    parent.log_artifact(run.path / "params.yaml")
    logger.info("run folder: %s (MLflow run %s)", run.path, parent.run_id)
    ctx = RunContext(params=params, root=root_path, tracker=tracker, parent_run_id=parent.run_id,
                     run_dir=run.path)
    return ctx, run, parent, tags


def train_models(ctx: RunContext, results: dict[str, StageResult]) -> tuple[str, Path]:
    """Ingest -> featurize -> version data -> pretrain -> fine-tune -> fast 2D tier, into ``results``
    (each stage from the cache when its key is there). Returns (data md5, the screening model folder).
    Shared by the pipeline and the design loop, so both score molecules with the same model."""
    from molgnn.tracking import mlflow_tracking as mt

    logger = get_run_logger()
    params, tracker = ctx.params, ctx.tracker
    results["ingest"] = ingest_task(ctx)
    logger.info("ingest: %s", results["ingest"].metrics)
    results["featurize"] = featurize_task(ctx, results["ingest"].path("molecules"))
    logger.info("featurize: %s", results["featurize"].metrics)

    # The data is final now: version it, and tag every run (data stages included) with its md5.
    md5 = version_data_task(ctx, results["ingest"], results["featurize"])
    tracker.tags[mt.TAG_DATA_MD5] = md5
    for run_id in [ctx.parent_run_id] + [r.info.get("mlflow_run_id") for r in results.values()]:
        if run_id:
            tracker.client.set_tag(run_id, mt.TAG_DATA_MD5, md5)

    structures = results["featurize"].path("structures")
    molecules = results["ingest"].path("molecules")
    pretrained = None
    if params.pretrain.enabled and params.finetune.init == "pretrained":
        results["pretrain"] = pretrain_task(ctx, structures)
        pretrained = results["pretrain"].path("checkpoint")
    results["finetune"] = finetune_task(ctx, molecules, structures, pretrained)
    logger.info("finetune: %s", results["finetune"].metrics)
    for target, kind in results["finetune"].info.get("task_types", {}).items():
        logger.info("finetune: target %s is %s (%s)", target, kind,
                    results["finetune"].info.get("task_type_reasons", {}).get(target, ""))

    # the screening model: the 2D tier beside the 3D ensemble (molgnn screen's default folder)
    model_dir = Path(results["finetune"].out_dir)
    if params.fast_tier.enabled:
        results["fast_tier"] = fast_tier_task(ctx, results["finetune"], molecules, structures)
        logger.info("fast_tier: kept the %s 2D tier; %s", results["fast_tier"].info.get("chosen"),
                    results["fast_tier"].metrics)
        model_dir = Path(results["fast_tier"].out_dir)

    return md5, model_dir


@flow(name="molgnn-pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml", root: str | None = None,
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Ingest -> featurize -> version data -> pretrain -> fine-tune -> fast 2D tier -> generate -> filter ->
    screen -> report.

    Each invocation gets its own run folder (``runs/<run id>/``); ``overrides`` are ``KEY=VALUE``
    strings applied over the params file (``molgnn run --set``)."""
    from molgnn.stages.run_folder import FAILED, FINISHED, KILLED
    from molgnn.tracking import mlflow_tracking as mt

    logger = get_run_logger()
    ctx, run, parent, tags = open_invocation("pipeline", params_path, root, overrides)
    params, tracker = ctx.params, ctx.tracker
    results: dict[str, StageResult] = {}
    try:
        md5, model_dir = train_models(ctx, results)
        molecules = results["ingest"].path("molecules")
        for kind in params.generate.models:
            results[f"generate-{kind}"] = generate_task(ctx, molecules, kind)
            logger.info("generate-%s: %s", kind, results[f"generate-{kind}"].metrics)
        samples = {kind: results[f"generate-{kind}"].path("samples") for kind in params.generate.models}
        results["filter"] = filter_task(ctx, samples, molecules)
        logger.info("filter: %s", results["filter"].metrics)

        provenance = {"data_md5": md5,
                      "property_model_run": results["finetune"].info.get("produced_by_run", ""),
                      **{f"generator_run.{k}": results[f"generate-{k}"].info.get("produced_by_run", "")
                         for k in params.generate.models}}
        results["screen"] = screen_task(ctx, results["filter"].path("candidates"), model_dir, provenance)
        if results["screen"].info.get("tier_note"):
            logger.warning("screen: %s", results["screen"].info["tier_note"])
        logger.info("screen (%s): %s -> %s", results["screen"].info.get("tier"), results["screen"].metrics,
                    results["screen"].outputs["predictions"])

        registered = register_models_task(ctx, results, molecules, md5)
        for name, version in registered.items():
            logger.info("model registry: %s version %s (alias %s)", name, version, "champion")

        # Last: the report of this run, in its own folder, naming this run's MLflow runs.
        report = report_task(results, run.path / REPORT_SUBDIR,
                             {"pipeline_run": parent.run_id, "run_dir": str(run.path), "data_md5": md5,
                              "params_hash": tags[mt.TAG_PARAMS_HASH],
                              "git_commit": tags[mt.TAG_GIT_COMMIT], "flow_run": tags[mt.TAG_FLOW_RUN],
                              "rank_by": params.screen.rank_by, "seed": params.seed,
                              "registered_models": registered, "experiment_id": tracker.experiment_id})
        parent.log_artifact(report.parent, "report")
        logger.info("report: %s", report)
    except BaseException as exc:
        killed = interrupted(exc)
        parent.finish("KILLED" if killed else "FAILED")
        run.finish(KILLED if killed else FAILED)
        raise
    summary = {f"{name}.{k}": v for name, r in results.items() for k, v in r.metrics.items()}
    parent.log_metrics(summary)
    parent.finish()
    run.finish(FINISHED)
    return {"run_id": run.run_id, "run_dir": str(run.path), "mlflow_run_id": parent.run_id, "data_md5": md5,
            "report": str(report), "registered_models": registered,
            "stages": {name: {"cached": r.cached, "seconds": r.seconds, "metrics": r.metrics,
                              "outputs": r.outputs} for name, r in results.items()}}
