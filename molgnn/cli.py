"""``molgnn``: the only code that reads command-line arguments.

Each subcommand parses, then calls one library function; errors the user can fix are printed as one
line and exit with status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

for _key, _value in {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}.items():
    os.environ.setdefault(_key, _value)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _terminate_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, ``kill``) unwinds like Ctrl-C, so the run is marked KILLED."""
    import signal

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _registered(value: str, params: str) -> str:
    """A ``models:/NAME@ALIAS`` (or ``/VERSION``) argument as the local folder of that registered
    version, downloaded from the tracking store ``params`` configures; any other value unchanged."""
    from molgnn.tracking.registry import is_models_uri

    if not is_models_uri(value):
        return value
    from molgnn.config import load_params
    from molgnn.stages.run_folder import RUNS_DIR
    from molgnn.tracking.mlflow_tracking import resolve_uri
    from molgnn.tracking.registry import download_model

    params_path = Path(params).resolve()
    cfg = load_params(params_path).tracking
    root = params_path.parent
    return str(download_model(value, resolve_uri(cfg.mlflow_uri, root), root / RUNS_DIR / "registry"))


def _checked_flow_setup(args) -> Path:
    """Check every parameter, the device and the sources before Prefect (or any stage) starts; send
    the flow run to `molgnn ui`'s Prefect server when one runs for this folder. Returns the params path."""
    from molgnn.config import check_runnable, load_params

    params_path = Path(args.params).resolve()
    check_runnable(load_params(params_path, overrides=args.set), params_path.parent)
    from flows.ui import prefect_api_for_run

    api = None if os.environ.get("PREFECT_API_URL") else prefect_api_for_run(params_path.parent)
    if api:      # `molgnn ui` runs a Prefect server for this folder: the flow run goes there, to stay
        os.environ["PREFECT_API_URL"] = api
        print(f"Prefect server of `molgnn ui`: {api}", file=sys.stderr)
    _terminate_on_sigterm()
    return params_path


def cmd_run(args) -> int:
    params_path = _checked_flow_setup(args)
    from flows.pipeline import pipeline

    summary = pipeline(params_path=str(params_path), overrides=args.set or None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_design(args) -> int:
    params_path = _checked_flow_setup(args)
    from flows.design import design

    summary = design(params_path=str(params_path), overrides=args.set or None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_ui(args) -> int:
    from flows import ui
    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt

    params_path = Path(args.params).resolve()
    root = params_path.parent
    if args.stop:
        stopped = ui.stop_ui(root)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing (no servers started by molgnn ui here)"))
        return 0
    cfg = load_params(params_path).tracking
    tracker = mt.Tracker.connect(cfg, root)     # the experiment exists (and opens in model-training view)
    servers = ui.start_ui(root, mt.resolve_uri(cfg.mlflow_uri, root), args.prefect_port, args.mlflow_port)
    newest = tracker.client.search_runs([tracker.experiment_id], f"tags.`{mt.TAG_STAGE}` = 'pipeline'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
    for label, url in ui.links(servers, tracker.experiment_id, newest[0].info.run_id if newest else None).items():
        print(f"{label:22} {url}")
    print(f"`molgnn run` in {root} now sends its flow runs to this Prefect server (recorded in runs/{ui.UI_FILE}); "
          f"`molgnn ui --stop` stops what this command started.")
    return 0


def cmd_runs(args) -> int:
    from molgnn.stages.run_folder import LATEST, RUNS_DIR, list_runs

    root = Path(args.root).resolve()
    runs = list_runs(root)
    latest = root / RUNS_DIR / LATEST
    latest_id = latest.resolve().name if latest.is_symlink() else ""
    print(f"{'run id':24} {'status':9} {'started':25} {'MLflow run':32} params hash")
    for folder in runs[-args.last:] if args.last else runs:
        r = folder.record
        mark = "  <- latest" if r.run_id == latest_id else ""
        print(f"{r.run_id:24} {r.status:9} {r.started:25} {r.mlflow_run_id:32} {r.params_hash}{mark}")
    if not runs:
        print(f"(no runs under {root / RUNS_DIR})")
    return 0


def cmd_ingest(args) -> int:
    from molgnn.data.ingest import ingest

    res = ingest(args.inputs, Path(args.out), smiles_column=args.smiles_column,
                 target_columns=_split(args.targets), max_heavy_atoms=args.max_heavy_atoms, limit=args.limit)
    print(f"{res.n_input_rows} input rows: {res.n_kept} kept -> {res.molecules_path}, "
          f"{res.n_rejected} rejected -> {res.rejects_path}")
    for reason, count in sorted(res.rejects_by_reason.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {reason}")
    return 0


def cmd_generate(args) -> int:
    from molgnn.generate.checkpoints import load_generator
    from molgnn.generate.sampling import sample_smiles
    from molgnn.stages.generate import CHECKPOINT_FILE, write_samples

    from molgnn.data.shards import is_shard_folder
    from molgnn.data.shipped_generators import GENERATORS_DIR, shipped_generators

    shipped = shipped_generators()
    if args.checkpoint:
        ckpt = Path(_registered(args.checkpoint, args.params))
    elif args.model in shipped:      # ships with the package: works before any run
        ckpt = GENERATORS_DIR / args.model
    elif args.model in ("vae", "diffusion"):
        ckpt = Path(args.run) / f"generate-{args.model}" / CHECKPOINT_FILE
    else:
        raise ValueError(f"--model {args.model!r}: use vae or diffusion (this run's generators) or a shipped "
                         f"generator ({', '.join(shipped) or 'none shipped'})")
    if ckpt.is_dir() and not is_shard_folder(ckpt):    # a registered generator's folder
        ckpt = ckpt / CHECKPOINT_FILE
    if not ckpt.exists():
        raise FileNotFoundError(f"no trained {args.model} generator at {ckpt}: run `molgnn run` first "
                                f"or pass --checkpoint")
    from molgnn.data.shipped_generators import generator_card
    from molgnn.screen.progress import Progress

    trained = load_generator(ckpt)
    steps = args.steps
    if steps is None and not args.checkpoint and args.model in shipped:
        steps = generator_card(args.model).get("sample_steps")   # the card's speed/validity trade-off
    # a big batch's edge tensors fall out of the CPU caches: small batches draw faster there
    batch_size = args.batch_size or (32 if str(args.device).startswith("cpu") else 512)
    with Progress(f"sampling ({steps or 'all'} reverse steps)", args.n, enabled=args.n > batch_size) as bar:
        sample = sample_smiles(trained, trained.vocab, args.n, seed=args.seed, device=args.device,
                               batch_size=batch_size, steps=steps, progress=bar.update)
    table = write_samples(sample, args.model, Path(args.out))
    print(f"{args.n} samples from {ckpt} -> {args.out}: {int(table['valid'].sum())} valid "
          f"({sample.molecules_per_second:.1f} molecules/s)")
    return 0


def cmd_screen(args) -> int:
    import time

    start = time.perf_counter()
    from molgnn.models import schnetpack_light

    schnetpack_light.install()    # the 3D tier needs schnetpack's layers, not its 4-second package import
    from molgnn.screen.model_folder import load_screening_model, resolve_folder, screen_library

    models = _registered(args.models, args.params)
    if args.dask or args.dask_address:
        return _screen_on_dask(args, models, start)
    model = load_screening_model(models, calibration=args.calibration, model_2d=args.fast_tier)
    progress = not args.no_progress
    if progress:
        print(f"model folder: {resolve_folder(models)}", file=sys.stderr)
    res = screen_library(model, args.inputs, Path(args.out), tier=args.tier, rank_by=args.rank_by,
                         descending=not args.ascending, top_k=args.top_k, uncertain_k=args.uncertain_k,
                         rank_out_of_domain_last=not args.no_rank_out_of_domain_last,
                         smiles_column=args.smiles_column, seed=args.seed, timeout_s=args.timeout,
                         workers=args.workers, device=args.device, progress=progress)
    if res.note:
        print(f"note: {res.note}")
    rank_by = args.rank_by or (model.targets[0] if model.targets else "")
    if res.tier == "two-tier":
        print(f"two-tier screen: the 2D tier ranked every molecule; the 3D ensemble re-predicted {res.n_3d} "
              f"(top {args.top_k} + {args.uncertain_k} most uncertain"
              + (f", {res.n_3d_failed} without a 3D result kept with 2D values" if res.n_3d_failed else "")
              + "); column tier says which")
    elif res.tier == "2d":
        print("2D tier only (no 3D re-check)")
    _print_screen_notes(model, res, args)
    print(f"{res.n_input_rows} input rows: {res.n_ranked} ranked by {rank_by} -> {res.predictions_path}, "
          f"{res.n_rejected} rejected -> {res.rejects_path} ({time.perf_counter() - start:.1f} s)")
    return 0


def _screen_on_dask(args, models: str, start: float) -> int:
    """``molgnn screen --dask``: the chunked, resumable screen as a Prefect flow on Dask."""
    import time

    from molgnn.config import ScreenConfig, load_params
    from molgnn.screen.model_folder import resolve_folder

    if args.tier != "auto" or args.calibration != "auto" or args.fast_tier:
        raise ValueError("--dask runs the default two-tier screen of a model folder: drop --tier, --calibration "
                         "and --fast-tier")
    cfg = load_params(args.params).screen if Path(args.params).is_file() else ScreenConfig()
    address = args.dask_address or cfg.dask_address
    folder = resolve_folder(models)
    out = Path(args.out)
    work_dir = Path(args.work_dir) if args.work_dir else out.parent / f"{out.name}.work"
    workers = args.workers or os.cpu_count() or 1
    print(f"model folder: {folder}; chunks and their scores in {work_dir} (a rerun resumes there); Dask: "
          f"{address or f'LocalCluster of {workers} processes'}", file=sys.stderr)
    from flows.distributed_screen import distributed_screen

    summary = distributed_screen(list(args.inputs), str(folder), str(out), str(work_dir), workers=workers,
                                 address=address, chunk_rows=args.chunk_rows or cfg.chunk_rows,
                                 smiles_column=args.smiles_column, progress=not args.no_progress,
                                 top_k=args.top_k, uncertain_k=args.uncertain_k, rank_by=args.rank_by,
                                 descending=not args.ascending, seed=args.seed, timeout_s=args.timeout,
                                 device=args.device,
                                 rank_out_of_domain_last=not args.no_rank_out_of_domain_last)
    print(f"{summary['n_input_rows']} input rows in {summary['n_chunks']} chunks "
          f"({summary['n_chunks_scored_now']} scored now): {summary['n_ranked']} ranked -> {summary['predictions']}, "
          f"{summary['n_rejected']} rejected -> {summary['rejects']}; 3D re-check of {summary['n_3d']} "
          f"({time.perf_counter() - start:.1f} s; "
          + ", ".join(f"{phase} {sec:.1f} s" for phase, sec in summary["seconds"].items()) + ")")
    return 0


def _print_screen_notes(model, res, args) -> None:
    """What the table's interval and domain columns are, in one line each."""
    conformal = sorted(set(model.conformal) | (set(model.conformal_2d) if res.tier != "3d" else set()))
    if conformal:
        print("conformal 90% intervals (<target>_low90/_high90) for " + ", ".join(conformal)
              + (" (each row's own tier's calibration)" if res.tier != "3d" else ""))
    if model.domain is None:
        print(f"no applicability domain in {model.folder} (a model from before domains were saved): "
              "no domain check was possible, in_domain and domain_reason are empty")
    elif res.n_ranked:
        import pandas as pd
        from molgnn.screen.domain import domain_summary

        counts = domain_summary(pd.read_csv(res.predictions_path, usecols=["in_domain", "domain_reason"]))
        print(f"applicability domain: {counts['n_in_domain']} in, {counts['n_out_of_domain']} out ("
              + ", ".join(f"{k[len('n_out_of_domain_'):]} {v}" for k, v in counts.items()
                          if k.startswith("n_out_of_domain_") and v) + ")"
              + ("; out-of-domain ranked last" if not args.no_rank_out_of_domain_last else ""))
    if model.std_scale and res.tier != "2d":
        print("calibrated 95% intervals (std scale " +
              ", ".join(f"{t} x{s:.2f}" for t, s in model.std_scale.items()) + ")")


def cmd_explain(args) -> int:
    from molgnn.report.attribution import explain_to_folder
    from molgnn.train.checkpoints import load_checkpoint

    folder = Path(_registered(args.models, args.params))
    models = sorted(folder.glob("member_*.pt")) if folder.is_dir() else [folder]
    if not models or not models[0].is_file():
        raise FileNotFoundError(f"no fine-tuned models at {args.models}: run `molgnn run` first or pass --models")
    res = explain_to_folder(args.smiles, [load_checkpoint(m) for m in models], Path(args.out), target=args.target,
                            seed=args.seed, timeout_s=args.timeout, device=args.device)
    for e in res.explanations:
        print(f"{e.smiles}: " + ", ".join(f"{t} = {v:.4g}" for t, v in zip(e.targets, e.prediction)))
    print(f"{len(res.explanations)} molecules: attributions -> {res.csv_path}, {len(res.images)} images -> {args.out}")
    return 0


def cmd_schedule(args) -> int:
    from molgnn.config import check_runnable, load_params

    # A bad params file is refused now, not at the first scheduled run (each run rereads it).
    params_path = Path(args.params).resolve()
    check_runnable(load_params(params_path), params_path.parent)
    from flows.schedule import DEFAULT_API, build_deployments, serve_flows
    from flows.ui import prefect_api_for_run

    # before Prefect is imported: its settings read the API address once
    os.environ.setdefault("PREFECT_API_URL", prefect_api_for_run(params_path.parent) or DEFAULT_API)
    flows = tuple(args.flow or ["pipeline"])
    build_deployments(args.cron, str(params_path), args.name, flows, args.library, args.models,
                      args.timezone)   # every argument checked before a server starts
    serve_flows(args.cron, str(params_path), name=args.name, flows=flows, library=args.library,
                models=args.models, timezone=args.timezone)
    return 0


def cmd_compare(args) -> int:
    if args.runs:
        return _compare_run_folders(args)
    from molgnn.tracking.compare import compare_runs

    print(compare_runs(Path(args.params), stage=args.stage, filter_string=args.filter, last=args.last,
                       metrics=_split(args.metrics), params=_split(args.show_params)))
    return 0


def _compare_run_folders(args) -> int:
    import dataclasses

    import pandas as pd

    from molgnn.config import load_params
    from molgnn.report.run_comparison import RunInput, compare_run_folders, metrics_table
    from molgnn.report.run_report import results_from_run
    from molgnn.stages.run_folder import RunFolder, resolve_run
    from molgnn.tracking.mlflow_tracking import Tracker

    params_path = Path(args.params).resolve()
    root = params_path.parent
    runs = []
    for ref in args.runs:
        folder = resolve_run(root, None if ref == "latest" else ref)
        loaded = RunFolder.load(folder)
        runs.append(RunInput(label=folder.name, folder=folder, record=dataclasses.asdict(loaded.record) if loaded else {}))
    if len({r.folder for r in runs}) < 2:
        raise ValueError("compare --runs needs two or more different run folders (`molgnn runs` lists them)")
    tracker = Tracker.connect(load_params(params_path).tracking, root)
    out = compare_run_folders(runs, Path(args.out), top=args.top, meta={"experiment_id": tracker.experiment_id})
    table = metrics_table(runs, [results_from_run(r.folder) for r in runs])
    metrics = _split(args.metrics)
    if metrics:
        table = table.loc[[i for i in table.index if any(m in i for m in metrics)]]
    with pd.option_context("display.max_rows", 500, "display.width", 200):
        print(table.to_string())
    print(f"side by side (parameters, metrics per task, predicted-property shift, top molecules): {out}")
    return 0


def cmd_report(args) -> int:
    from molgnn.report.run_report import RESULTS_FILE, load_results, results_from_run, write_report
    from molgnn.stages.run_folder import resolve_run

    run_dir = resolve_run(Path(args.root).resolve(), args.run)
    out = Path(args.out) if args.out else run_dir / "report"
    if (out / RESULTS_FILE).exists() and not args.from_manifests:
        # what the pipeline's report was built from, MLflow run ids of that invocation included
        results, meta = load_results(out)
    else:
        record = json.loads((run_dir / "run.json").read_text())
        results = results_from_run(run_dir)
        meta = {"pipeline_run": record.get("mlflow_run_id", ""), "run_dir": str(run_dir),
                "params_hash": record.get("params_hash", "")}
    if not results:
        raise FileNotFoundError(f"no finished stage in {run_dir}")
    path = write_report(results, out, meta, top_k=args.top)
    print(f"report of {len(results)} stages -> {path}")
    return 0


def cmd_sources(args) -> int:
    from molgnn.data.sources import list_sources

    for name in list_sources():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from molgnn.config import ScreenConfig

    screen_defaults = ScreenConfig()     # the two-tier defaults are params.yaml's
    p = argparse.ArgumentParser(prog="molgnn", description="Traceable molecular discovery pipeline.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the whole pipeline (Prefect flow) from params.yaml")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one parameter for this run (dotted key, YAML value); repeatable")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("design", help="the design loop (Prefect flow): rounds of generate -> filter -> screen -> "
                                      "Pareto selection -> generator fine-tuning, knobs in params.yaml's design:")
    d.add_argument("--params", default="params.yaml")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one parameter (dotted key, YAML value), e.g. design.rounds=3; repeatable")
    d.set_defaults(func=cmd_design)

    ls = sub.add_parser("runs", help="list the run folders (runs/<run id>/), newest last")
    ls.add_argument("--root", default=".", help="the repository root (where runs/ is)")
    ls.add_argument("--last", type=int, default=0, help="only the newest N (default: all)")
    ls.set_defaults(func=cmd_runs)

    i = sub.add_parser("ingest", help="read, standardize and deduplicate molecule files")
    i.add_argument("inputs", nargs="+", help="files (csv, tsv, smi, sdf, parquet), URLs or named sources")
    i.add_argument("--out", required=True, help="output folder: molecules.parquet + rejects.csv")
    i.add_argument("--smiles-column")
    i.add_argument("--targets", help="comma-separated target columns (default: every numeric column)")
    i.add_argument("--max-heavy-atoms", type=int, default=50)
    i.add_argument("--limit", type=int)
    i.set_defaults(func=cmd_ingest)

    g = sub.add_parser("generate", help="sample molecules from a trained or a shipped generator")
    g.add_argument("--model", default="diffusion",
                   help="vae | diffusion (the run's generators) | the name of a generator shipped in "
                        "molgnn/resources/generators (default: %(default)s)")
    g.add_argument("--steps", type=int, help="reverse diffusion steps (default: a shipped generator's card "
                                             "sample_steps, else all of the model's timesteps)")
    g.add_argument("--batch-size", type=int, help="graphs drawn at once (default: 32 on the CPU, 512 on a GPU)")
    g.add_argument("-n", type=int, default=100)
    g.add_argument("--checkpoint", help="generator checkpoint, or a registered generator models:/NAME@ALIAS "
                                        "(default: the run's generate-<model>/generator.pt)")
    g.add_argument("--params", default="params.yaml", help="tracking store of models:/ URIs (default: %(default)s)")
    g.add_argument("--run", default="runs/latest", help="a run folder (default: the newest finished run)")
    g.add_argument("--out", default="generated.csv")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("screen", help="predict properties, with uncertainty, for every molecule of a file")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--out", required=True, help="ranked predictions CSV; rejects go to <out>.rejects.csv")
    s.add_argument("--models", default="runs/latest",
                   help="a run folder (default: the newest finished run's; its fast_tier folder when it has a 2D "
                        "tier, else its finetune folder), a model folder of member_*.pt (+ model_2d.pt), one "
                        "checkpoint, or a registered model: models:/NAME@champion, models:/NAME/VERSION")
    s.add_argument("--params", default="params.yaml", help="tracking store of models:/ URIs (default: %(default)s)")
    s.add_argument("--tier", choices=["auto", "3d", "2d"], default="auto",
                   help="auto: the 2D tier over every molecule, the 3D ensemble on the --top-k best and "
                        "--uncertain-k most uncertain (the full 3D screen when the model has no 2D tier); "
                        "3d: the 3D ensemble on every molecule (slow); 2d: the 2D tier alone")
    s.add_argument("--top-k", type=int, default=screen_defaults.top_k,
                   help="two-tier: the best 2D molecules re-predicted in 3D (default %(default)s)")
    s.add_argument("--uncertain-k", type=int, default=screen_defaults.uncertain_k,
                   help="two-tier: the most uncertain other 2D molecules re-predicted in 3D (default %(default)s)")
    s.add_argument("--calibration", default="auto",
                   help="calibration.json of the fine-tune stage for calibrated 95%% intervals "
                        "(auto: the one beside --models if present; none: raw ensemble spread only)")
    s.add_argument("--rank-by", help="target to rank by (default: the model's first target)")
    s.add_argument("--ascending", action="store_true")
    s.add_argument("--no-rank-out-of-domain-last", action="store_true",
                   help="rank by the score alone (default: molecules outside the training domain, "
                        "in_domain false, rank after every molecule inside it)")
    s.add_argument("--smiles-column")
    s.add_argument("--timeout", type=float, default=10.0, help="conformer time limit per molecule (s)")
    s.add_argument("--workers", type=int)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bars (default: bars on a terminal, a line every 10 s otherwise, on stderr)")
    s.add_argument("--dask", action="store_true",
                   help="screen in chunks as Prefect tasks on Dask (big libraries: bounded memory, resumable); "
                        "a LocalCluster of --workers processes unless --dask-address or screen.dask_address")
    s.add_argument("--dask-address", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --dask)")
    s.add_argument("--work-dir", help="--dask: chunks and their scores (default: <out>.work/)")
    s.add_argument("--chunk-rows", type=int, help="--dask: input rows per chunk (default: screen.chunk_rows)")
    s.add_argument("--fast-tier", metavar="MODEL_2D",
                   help="a 2D model checkpoint to use instead of the model folder's model_2d.pt")
    s.set_defaults(func=cmd_screen)

    x = sub.add_parser("explain", help="draw per-atom attributions of the ensemble's prediction on each molecule")
    x.add_argument("smiles", nargs="+")
    x.add_argument("--out", required=True, help="folder: attributions.csv + mol_<k>_<target>.png/.svg")
    x.add_argument("--models", default="runs/latest/finetune",
                   help="a folder of member_*.pt, one checkpoint or models:/NAME@ALIAS (default: the newest "
                        "finished run's)")
    x.add_argument("--params", default="params.yaml", help="tracking store of models:/ URIs (default: %(default)s)")
    x.add_argument("--target", help="target to draw (default: the model's first); the CSV has all")
    x.add_argument("--timeout", type=float, default=10.0, help="conformer time limit per molecule (s)")
    x.add_argument("--seed", type=int, default=0, help="conformer seed (the screen's default: same structure)")
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=cmd_explain)

    u = sub.add_parser("ui", help="start (or find) a persistent Prefect server and the MLflow UI; print links to the runs")
    u.add_argument("--params", default="params.yaml", help="where the tracking store is configured")
    u.add_argument("--prefect-port", type=int, default=4200)
    u.add_argument("--mlflow-port", type=int, default=5000)
    u.add_argument("--stop", action="store_true", help="stop the servers an earlier `molgnn ui` started here")
    u.set_defaults(func=cmd_ui)

    c = sub.add_parser("schedule", help="serve the pipeline, the screening flow and/or the design loop on a cron "
                                        "schedule from a Prefect server")
    c.add_argument("--cron", required=True, help='e.g. "0 2 * * *" (02:00 every day)')
    c.add_argument("--params", default="params.yaml")
    c.add_argument("--name", default="molgnn-scheduled")
    c.add_argument("--flow", action="append", choices=["pipeline", "screen", "design"],
                   help="flows to serve, each its own deployment (repeat; default: pipeline)")
    c.add_argument("--library", help="screen flow: the library file, read afresh at every run")
    c.add_argument("--models", default="runs/latest", help="screen flow: model folder (default: the newest run's)")
    c.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule (default: %(default)s)")
    c.set_defaults(func=cmd_schedule)

    m = sub.add_parser("compare", help="tracked runs side by side (--runs: pipeline runs as an HTML page)")
    m.add_argument("--params", default="params.yaml", help="where the tracking store is configured")
    m.add_argument("--stage", default="finetune", help="stage runs to compare (pipeline, ingest, finetune, ...)")
    m.add_argument("--filter", help="MLflow filter, e.g. \"params.`finetune.init` = 'scratch'\"")
    m.add_argument("--metrics", help="comma-separated metric names (default: all)")
    m.add_argument("--show-params", help="comma-separated param names (default: those that differ)")
    m.add_argument("--last", type=int, default=5)
    m.add_argument("--runs", nargs="+", metavar="RUN",
                   help="pipeline run folders or ids (or latest) to put side by side in an HTML page instead")
    m.add_argument("--out", default="runs/compare", help="--runs: folder for compare.html / compare.md")
    m.add_argument("--top", type=int, default=12, help="--runs: top candidates drawn per run")
    m.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="rewrite a run's report (runs/<run id>/report/report.md) from its outputs")
    rp.add_argument("--run", help="run id or folder (default: runs/latest, the newest finished run)")
    rp.add_argument("--root", default=".", help="the repository root (where runs/ is)")
    rp.add_argument("--out", help="report folder (default: the run folder's report/)")
    rp.add_argument("--from-manifests", action="store_true",
                    help="read the stages' stage.json files instead of the last report's results.json")
    rp.add_argument("--top", type=int, default=20, help="ranked candidates shown")
    rp.set_defaults(func=cmd_report)

    so = sub.add_parser("sources", help="list the named data sources")
    so.set_defaults(func=cmd_sources)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from molgnn.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"molgnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
