"""Pipeline runs side by side, as chemists compare experiments: what differs in their parameters and
data, each task's test metrics, how the predicted properties of the screened candidates shift, and
the molecules each run ranks on top. Written as ``compare.md`` and a self-contained ``compare.html``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from molgnn.data import schema
from molgnn.report.html_report import write_html
from molgnn.report.plots import distributions, molecule_grid, save_figure
from molgnn.report.run_report import code, fmt, image, results_from_run, table

COMPARE_MD, COMPARE_HTML, IMAGES = "compare.md", "compare.html", "images"
_METRIC_STAGES = ("finetune", "fast_tier", "generate-vae", "generate-diffusion", "filter", "screen")


@dataclass
class RunInput:
    """A run folder and its ``run.json`` record (as ``molgnn.stages.run_folder`` keeps it)."""
    label: str
    folder: Path
    record: dict[str, Any]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _params(folder: Path) -> dict[str, Any]:
    path = folder / "params.yaml"
    return _flat(yaml.safe_load(path.read_text())) if path.is_file() else {}


def _predictions(results: dict) -> pd.DataFrame | None:
    screen = results.get("screen")
    path = screen.outputs.get("predictions") if screen else None
    return pd.read_csv(path) if path and Path(path).is_file() else None


def metrics_table(runs: list[RunInput], results: list[dict]) -> pd.DataFrame:
    """Rows: ``stage: metric`` for the test metrics of each task and the generators' and screen's
    counts; columns: the runs."""
    cols = {}
    for run, res in zip(runs, results):
        col = {}
        for stage in _METRIC_STAGES:
            r = res.get(stage)
            if r is None:
                continue
            for k, v in r.metrics.items():
                keep = (k.startswith(("test_", "tier", "calib")) if stage in ("finetune", "fast_tier")
                        else not k.endswith(("seconds", "_per_second")))
                if keep and isinstance(v, (int, float)):
                    col[f"{stage}: {k}"] = v
        cols[run.label] = col
    return pd.DataFrame(cols)


def shift_table(preds: dict[str, pd.DataFrame], target: str) -> list[list[Any]]:
    """Per run: n, mean, median, std of the predicted ``target`` and the two-sample KS statistic
    (and p) against the first run's candidates."""
    from scipy import stats

    col = f"{target}_mean"
    base = next(iter(preds.values()))[col].dropna() if preds else pd.Series(dtype=float)
    rows = []
    for k, (label, df) in enumerate(preds.items()):
        v = df[col].dropna()
        ks = stats.ks_2samp(v, base) if k and len(v) and len(base) else None
        rows.append([label, len(v), fmt(v.mean()), fmt(v.median()), fmt(v.std()),
                     fmt(ks.statistic) if ks else "–", fmt(ks.pvalue, 2) if ks else "–"])
    return rows


def compare_run_folders(runs: list[RunInput], out_dir: str | Path, top: int = 12,
                        meta: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/compare.md`` and ``compare.html`` (figures beside them); returns the HTML path.
    ``meta``: ``experiment_id`` (MLflow run links), ``mlflow_ui_url``, ``prefect_ui_url``."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compare-", dir=out_dir))
    try:
        lines = _build(runs, staging, top)
        (staging / COMPARE_MD).write_text("\n\n".join(lines) + "\n")
        write_html(staging, meta or {}, "\n\n".join(lines), None, name=COMPARE_HTML, title="molgnn runs compared")
        for item in staging.iterdir():          # publish: images first, the pages last
            dest = out_dir / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            item.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / COMPARE_HTML


def _build(runs: list[RunInput], folder: Path, top: int) -> list[str]:
    (folder / IMAGES).mkdir()
    results = [results_from_run(r.folder) for r in runs]
    lines = ["# molgnn runs compared"]
    header = [["run", "status", "started", "MLflow run", "params hash", "data md5"]]
    rows = []
    for run, res in zip(runs, results):
        md5 = ""
        pred = _predictions(res)
        if pred is not None and "data_md5" in pred.columns and len(pred):
            md5 = str(pred["data_md5"].iloc[0])
        rows.append([run.label, run.record.get("status", ""), run.record.get("started", ""),
                     code(run.record.get("mlflow_run_id")), code(run.record.get("params_hash")), code(md5 or None)])
    lines.append(table(header[0], rows))

    params = [_params(r.folder) for r in runs]
    keys = sorted({k for p in params for k in p})
    differ = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in params}) > 1]
    lines.append("## Parameters that differ")
    lines.append(table(["parameter", *[r.label for r in runs]],
                       [[f"`{k}`", *[f"`{p.get(k, '–')}`" for p in params]] for k in differ])
                 if differ else "_None: the runs used the same parameters._")

    lines.append("## Metrics per task (test split)")
    mt = metrics_table(runs, results)
    lines.append(table(["metric", *mt.columns], [[f"`{i}`", *[fmt(v) for v in row]] for i, row in mt.iterrows()])
                 if len(mt) else "_No stage metrics in these runs._")

    preds = {r.label: p for r, res in zip(runs, results) if (p := _predictions(res)) is not None and len(p)}
    targets = sorted({c[:-len("_mean")] for p in preds.values() for c in p.columns if c.endswith("_mean")}
                     if preds else set())
    lines.append("## Predicted properties of the screened candidates")
    if not targets:
        lines.append("_No run ranked any candidate._")
    for t in targets:
        have = {label: p for label, p in preds.items() if f"{t}_mean" in p.columns}
        name = f"shift_{t}.png"
        save_figure(distributions({label: p[f"{t}_mean"].tolist() for label, p in have.items()},
                                  f"predicted {t}"), folder / IMAGES / name)
        lines.append(f"### {t}")
        lines.append(image(f"{IMAGES}/{name}", f"distribution of predicted {t} per run"))
        lines.append(table(["run", "n", "mean", "median", "std", "KS vs first run", "p"], shift_table(have, t)))

    lines.append(f"## Top {top} candidates of each run")
    for run, res in zip(runs, results):
        pred = _predictions(res)
        lines.append(f"### {run.label}")
        if pred is None or not len(pred):
            lines.append("_No ranked candidates._")
            continue
        head = pred.head(top)
        rank_target = next((c for c in head.columns if c.endswith("_mean")), None)
        legends = [f"#{i + 1} " + (f"{rank_target[:-5]} {v:.3g}" if rank_target else "")
                   for i, v in enumerate(head[rank_target] if rank_target else [0] * len(head))]
        name = f"top_{run.label}.png".replace("/", "_")
        if molecule_grid(head[schema.SMILES].tolist(), folder / IMAGES / name, per_row=6, max_mols=top,
                         legends=legends):
            lines.append(image(f"{IMAGES}/{name}", f"top candidates of {run.label}"))
        shared = set(head[schema.SMILES]) & set().union(*[set(p.head(top)[schema.SMILES])
                                                         for label, p in preds.items() if label != run.label])
        lines.append(f"{len(shared)} of these {len(head)} are also in another run's top {top}.")
    return lines
