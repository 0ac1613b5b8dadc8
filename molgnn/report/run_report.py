"""The run report: one Markdown page (PNGs beside it) that shows every stage of a pipeline run.

It is built from the stages' :class:`StageResult` objects and the files they wrote; nothing is
retrained or rescreened, only cheap figures are redrawn. Every number carries the MLflow run it came
from. The whole folder is built aside and swapped into place, so a reader (or a crash) never sees a
half-written report.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from molgnn.chem.properties import QED, SA
from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.data.stage_store import StageResult, read_manifest
from molgnn.report.html_report import write_html
from molgnn.train import history_keys as H

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"      # the StageResults + run metadata the report was built from
CANDIDATES_FILE = "candidates.csv"  # the full ranked table, copied so the folder stands alone
IMAGES = "images"

FILTER_CHECKS = [("valid_rate", "valid"), ("unique_rate", "unique"), ("novel_rate", "novel"),
                 ("pains_free_rate", "no PAINS alert"), ("qed_rate", "QED >= min"), ("sa_rate", "SA <= max"),
                 ("lipinski_rate", "Lipinski ok"), ("pass_rate", "**passed all enforced checks**")]


# ---------------------------------------------------------------------------------------- formatting

def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value.is_integer():
            return f"{int(value):,}"
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        # '#' keeps significant trailing zeros (1.00, 0.170); a bare trailing point goes
        return f"{value:#.{digits}g}".rstrip(".")
    return str(value)


def pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def code(value: Any) -> str:
    return f"`{value}`" if value else "–"


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def image(rel: str, alt: str) -> str:
    return f"![{alt}]({rel})"


# ------------------------------------------------------------------------------------------ sections

class _Builder:
    """Collects Markdown lines; figures go to ``root/images`` and are linked relatively."""

    def __init__(self, root: Path, results: dict[str, StageResult], meta: dict[str, Any]):
        self.root, self.results, self.meta = root, results, meta
        self.images = root / IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []

    def add(self, *blocks: str) -> None:
        """Each block (paragraph, table, image) is followed by a blank line: a table must not touch
        the paragraph before it, or Markdown renders it as text."""
        for block in blocks:
            self.lines += [block, ""]

    def figure(self, fig, name: str, alt: str) -> None:
        from molgnn.report.plots import save_figure

        save_figure(fig, self.images / name)
        self.add(image(f"{IMAGES}/{name}", alt))

    def section(self, title: str, stage: str, missing: str = "_Not run._") -> StageResult | None:
        """Start a section; the stage's result, or None (after saying so) when the stage did not run."""
        self.add(title)
        if stage not in self.results:
            self.add(missing)
            return None
        return self.results[stage]

    def runs_line(self, *stages: str) -> str:
        parts = [f"{s} {code(self.results[s].info.get('mlflow_run_id') or self.results[s].info.get('produced_by_run'))}"
                 for s in stages if s in self.results]
        return "MLflow run: " + ", ".join(parts)

    def cached_note(self, stage: str) -> str:
        r = self.results[stage]
        if r.cached:
            return (f"_Cached: outputs computed by run {code(r.info.get('produced_by_run'))}, "
                    f"reused unchanged._")
        return f"_Computed in {fmt(r.seconds)} s._"


def _header(b: _Builder) -> None:
    m = b.meta
    b.add("# molgnn run report")
    b.add(table(["", ""], [
        ["pipeline MLflow run", code(m.get("pipeline_run"))],
        ["run folder", code(m.get("run_dir"))],
        ["data version (DVC md5 of `data/`)", code(m.get("data_md5"))],
        ["params hash", code(m.get("params_hash"))],
        ["git commit", code(m.get("git_commit"))],
        ["Prefect flow run", code(m.get("flow_run"))],
        ["registered models (MLflow Model Registry)",
         ", ".join(f"{code(f'models:/{n}/{v}')}" for n, v in (m.get("registered_models") or {}).items())
         or "none"],
        ["report written", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())],
    ]))
    b.add("Every stage is a nested MLflow run under the pipeline run; its id is given in each section "
          "and in the [traceability](#traceability) table. Open them with "
          "`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`.")


def _data(b: _Builder) -> None:
    ing = b.section("## 1. Data", "ingest")
    if ing is None:
        return
    m = ing.metrics
    b.add(b.runs_line("ingest", "featurize") + f"; data md5 {code(b.meta.get('data_md5'))}.",
          b.cached_note("ingest"))
    rows = [["input rows", fmt(m.get("n_input_rows"))],
            ["kept (standardized, deduplicated)", f"{fmt(m.get('n_kept'))} ({pct(m.get('kept_rate'))})"],
            ["rejected", fmt(m.get("n_rejected"))]]
    feat = b.results.get("featurize")
    if feat is not None:
        f = feat.metrics
        rows += [["2D graphs", f"{fmt(f.get('n_graphs'))} ({fmt(f.get('n_graph_failed'))} failed)"],
                 ["3D structures: given geometry", fmt(f.get("n_geometry_given"))],
                 ["3D structures: embedded (ETKDGv3 + MMFF)", fmt(f.get("n_conformers_embedded"))],
                 ["3D structures: failed", fmt(f.get("n_conformer_failed"))],
                 ["structure rate", pct(f.get("structure_rate"))]]
    b.add(table(["", "molecules"], rows))
    reasons = ing.info.get("rejects_by_reason") or {}
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = top[:10]
        b.add("Rejected input rows by reason (every row is in `rejects.csv` with its reason):",
              table(["reason", "rows"], [[r, fmt(n)] for r, n in shown]))
        if len(top) > len(shown):
            b.add(f"… and {len(top) - len(shown)} more reasons ({fmt(sum(n for _, n in top[10:]))} rows).")
    else:
        b.add("No input row was rejected.")


def _pretrain(b: _Builder) -> None:
    from molgnn.report.plots import learning_curve

    r = b.section("## 2. Pretraining (PaiNN: denoising + masked atoms [+ EHT orbitals])", "pretrain",
                  "_Not run (pretraining disabled or fine-tuning from scratch)._")
    if r is None:
        return
    b.add(b.runs_line("pretrain"), b.cached_note("pretrain"))
    b.add(table(["metric", "value"], [[k, fmt(v)] for k, v in r.metrics.items()]))
    for reason, d in r.info.get("eht_rejections", {}).items():
        b.add(f"No EHT targets for {fmt(d['count'])} structure(s), kept for the other objectives: {reason} "
              f"(e.g. {', '.join(d['examples'])}).")
    history = _read_json(r.outputs.get("history"))
    if history:
        b.figure(learning_curve(history, H.pretrain_curve_keys(history), "pretraining"),
                 "pretrain_loss.png", "pretraining loss")


def _finetune(b: _Builder) -> None:
    from molgnn.report.plots import learning_curve, parity

    r = b.section("## 3. Fine-tuning (PaiNN ensemble)", "finetune")
    if r is None:
        return
    m, units = r.metrics, r.info.get("units", {})
    b.add(b.runs_line("finetune") + f" — init `{r.info.get('init', '?')}`, split `{r.info.get('split', '?')}` "
          f"({fmt(m.get('n_train'))} train / {fmt(m.get('n_val'))} val / {fmt(m.get('n_test'))} test).",
          b.cached_note("finetune"))
    types = r.info.get("task_types", {})  # runs before task types: every target was regression
    why = r.info.get("task_type_reasons", {})
    regression = [t for t in units if types.get(t, "regression") == "regression"]
    classified = [t for t in units if types.get(t) == "classification"]
    b.add("Task types: " + ", ".join(f"`{t}` {types.get(t, 'regression')}" + (f" ({why[t]})" if t in why else "")
                                     for t in units) + ".")
    if regression:
        rows = [[t, "regression", units.get(t) or "–", fmt(m.get(H.test_metric("mae", t))),
                 fmt(m.get(H.test_metric("rmse", t))), fmt(m.get(H.test_metric("r2", t)))] for t in regression]
        b.add("Test-split errors (in the target's unit):",
              table(["target", "type", "unit", "MAE", "RMSE", "R²"], rows))
    if classified:
        names = ("roc_auc", "pr_auc", "ece", "ece_calibrated")
        rows = [[t, "classification", *(fmt(m.get(H.test_metric(k, t))) for k in names)] for t in classified]
        if len(classified) > 1:
            rows.append(["mean over tasks", "", *(fmt(m.get(H.test_average(k))) for k in names)])
        b.add("Test-split classification scores (ensemble-mean probability; ECE over 10 bins, raw and after "
              "the map (identity, temperature or Platt) chosen by cross-validation on the validation split, "
              "which screening applies):",
              table(["target", "type", "ROC-AUC", "PR-AUC", "ECE", "ECE (calibrated)"], rows))
    units = {t: units[t] for t in regression}  # calibration and parity: regression targets only
    if any(H.calib_metric(H.CALIB_SCALE, t) in m for t in units):
        def calib(name: str, t: str):
            return m.get(H.calib_metric(name, t))

        rows = [[t, fmt(calib(H.CALIB_SPEARMAN, t)), fmt(calib(H.CALIB_SCALE, t)),
                 f"{pct(calib(H.CALIB_COVERAGE95_RAW, t))} → {pct(calib(H.CALIB_COVERAGE95, t))}",
                 f"{fmt(calib(H.CALIB_MISCAL_AREA_RAW, t))} → {fmt(calib(H.CALIB_MISCAL_AREA, t))}"]
                for t in units]
        b.add("Uncertainty calibration on the test split (std scale fitted on the validation split; "
              "raw ensemble spread → calibrated):",
              table(["target", "Spearman(std, abs error)", "std scale", "95 % interval coverage",
                     "miscalibration area"], rows))
    preds = _read_csv(r.outputs.get("test_predictions"))
    if preds is not None:
        for t in units:
            sub = preds[preds["target"] == t].dropna(subset=["y_true", "y_pred"])
            if len(sub):
                b.figure(parity(sub["y_true"].tolist(), sub["y_pred"].tolist(), t, units.get(t, "")),
                         f"finetune_parity_{t}.png", f"parity {t}")
    histories = _read_json(r.outputs.get("history"))
    if histories:
        b.figure(learning_curve(histories[0], H.finetune_curve_keys(histories[0]), "fine-tuning (member 0)"),
                 "finetune_curve.png", "fine-tuning learning curve")


_SCORE_NAMES = {"mae": "MAE", "rmse": "RMSE", "r2": "R²", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "ece": "ECE"}


def _fast_tier(b: _Builder) -> None:
    """Both screening tiers on the fine-tuning test split: the 3D ensemble, and the 2D tier's two
    variants (labels only, distilled from the 3D ensemble) with the one kept by validation marked."""
    if "fast_tier" not in b.results:
        return
    r = b.results["fast_tier"]
    m, info = r.metrics, r.info
    b.add("### Screening tiers (fast 2D tier vs 3D ensemble)",
          b.runs_line("fast_tier") + f" — the 2D tier (GINE ensemble on SMILES) trained on the same split "
          f"({fmt(info.get('n_train'))} train / {fmt(info.get('n_val'))} val / {fmt(info.get('n_test'))} test) "
          f"on the labels and distilled from the 3D ensemble (teacher weight {fmt(info.get('teacher_weight'))}); "
          f"kept: **{info.get('chosen', '?')}** (better validation score). `molgnn screen` ranks every molecule "
          "with it and re-predicts the best and the most uncertain with the 3D ensemble.",
          b.cached_note("fast_tier"))
    types, units = info.get("task_types", {}), info.get("units", {})
    tiers = [("3D ensemble (PaiNN)", "3d"), ("2D, labels only", "2d_labels"), ("2D, distilled", "2d_distilled")]
    rows = []
    for t in info.get("targets", []):
        names = ("roc_auc", "pr_auc", "ece") if types.get(t) == "classification" else ("mae", "rmse", "r2")
        for label, tier in tiers:
            if any(f"tier{tier}_test_{k}_{t}" in m for k in names):
                kept = " (kept)" if tier == f"2d_{info.get('chosen')}" else ""
                rows.append([t, units.get(t) or "–", label + kept, ", ".join(
                    f"{_SCORE_NAMES[k]} {fmt(m.get(f'tier{tier}_test_{k}_{t}'))}" for k in names)])
    if rows:
        b.add("Test-split accuracy of each tier:", table(["target", "unit", "tier", "test scores"], rows))


def _generate(b: _Builder) -> None:
    from molgnn.report.figures import generator_figures

    b.add("## 4. Generation")
    kinds = [name.split("-", 1)[1] for name in b.results if name.startswith("generate-")]
    if not kinds:
        b.add("_No generator ran._")
        return
    rows = []
    for kind in kinds:
        r = b.results[f"generate-{kind}"]
        m = r.metrics
        rows.append([kind, pct(m.get("validity")), pct(m.get("validity_after_correction")),
                     pct(m.get("uniqueness")), pct(m.get("novelty")), fmt(m.get("mean_qed")), fmt(m.get("mean_sa")),
                     fmt(m.get("train_seconds")), fmt(m.get("sampling_molecules_per_second")),
                     f"{fmt(m.get('n_training_molecules'))} ({fmt(m.get('n_training_rejected'))} unrepresentable)",
                     code(r.info.get("mlflow_run_id") or r.info.get("produced_by_run"))])
    b.add(table(["generator", "validity", "validity after correction", "uniqueness", "novelty", "mean QED",
                 "mean SA", "training (s)", "sampling (molecules/s)", "training molecules", "MLflow run"], rows))
    b.add("Validity = RDKit-sanitizable samples / all samples (after correction: once valences are "
          "repaired); uniqueness over valid, novelty over unique (not in the training set).")
    training = _training_properties(b)
    for kind in kinds:
        r = b.results[f"generate-{kind}"]
        b.add(f"### {kind}", b.cached_note(f"generate-{kind}"))
        samples = _read_csv(r.outputs.get("samples"))
        if samples is None:
            b.add("_Samples file missing._")
            continue
        figs = generator_figures(kind, samples, training if training is not None else pd.DataFrame(),
                                 b.images / f"generate_{kind}_grid.png",
                                 b.images / f"generate_{kind}_properties.png")
        if "grid" in figs:
            b.add("Valid samples (legend: sample number, QED):",
                  image(f"{IMAGES}/{figs['grid'].name}", f"{kind} samples"))
        else:
            b.add("_No valid sample to draw._")
        b.add("Property distributions of the valid samples against the training set:",
              image(f"{IMAGES}/{figs['distributions'].name}", f"{kind} property distributions"))


def _training_properties(b: _Builder):
    from molgnn.report.properties import training_properties

    ing = b.results.get("ingest")
    path = ing.outputs.get("molecules") if ing else None
    if not path or not Path(path).exists():
        return None
    smiles = pd.read_parquet(path, columns=[schema.SMILES])[schema.SMILES].tolist()
    return training_properties(smiles, seed=int(b.meta.get("seed", 0) or 0))


def _filter(b: _Builder) -> None:
    r = b.section("## 5. Filtering", "filter")
    if r is None:
        return
    m = r.metrics
    kinds = [name.split("-", 1)[1] for name in b.results if name.startswith("generate-")]
    b.add(b.runs_line("filter") + f" — {fmt(m.get('n_samples'))} samples in, "
          f"{fmt(m.get('n_candidates'))} candidates out.", b.cached_note("filter"))
    headers = ["fraction of samples that are …", "all", *kinds]
    rows = [[label, pct(m.get(key)), *[pct(m.get(f"{k}_{key}")) for k in kinds]] for key, label in FILTER_CHECKS]
    b.add(table(headers, rows))
    rejects = r.info.get("rejects_by_stage") or {}
    if rejects:
        b.add("Rejected samples by the first check they failed (all in `filter_rejects.csv`):",
              table(["check", "samples"], [[k, fmt(v)] for k, v in sorted(rejects.items(), key=lambda kv: -kv[1])]))


def _screen(b: _Builder, top_k: int) -> None:
    r = b.section("## 6. Screening and ranked candidates", "screen")
    if r is None:
        return
    m = r.metrics
    b.add(b.runs_line("screen") + f" — {fmt(m.get('n_candidates'))} candidates, {fmt(m.get('n_ranked'))} ranked, "
          f"{fmt(m.get('n_rejected'))} rejected (each with its reason in `candidates.rejects.csv`).",
          b.cached_note("screen"))
    if r.info.get("tier") == "two-tier":
        b.add(f"Two-tier screen: the 2D tier ranked every candidate; the 3D ensemble re-predicted "
              f"{fmt(m.get('n_3d'))} of them (the best and the most uncertain; column `tier`).")
    elif r.info.get("tier"):
        b.add(f"Screened by the {r.info['tier'].upper()} tier alone." + (f" {r.info['tier_note']}"
                                                                      if r.info.get("tier_note") else ""))
    _domain_counts(b, m)
    preds = _read_csv(r.outputs.get("predictions"))
    if preds is None or not len(preds):
        b.add("_No candidate was ranked._")
        return
    shutil.copyfile(r.outputs["predictions"], b.root / CANDIDATES_FILE)
    targets = [c[:-len("_mean")] for c in preds.columns if c.endswith("_mean")]
    rank_by = b.meta.get("rank_by")
    b.add(f"Top {min(top_k, len(preds))} of {len(preds)}"
          + (f", ranked by predicted {rank_by}" if rank_by else "")
          + f" (full table: [{CANDIDATES_FILE}]({CANDIDATES_FILE})). Predictions are the ensemble mean ± "
          "its spread; the 95 % interval uses the calibrated spread where the fine-tune stage fitted one.")
    headers = ["rank", "SMILES", "generator"]
    for t in targets:
        headers.append(f"{t} (mean ± std)")
        if f"{t}_low95" in preds.columns:
            headers.append(f"{t} 95 % interval")
        if f"{t}_low90" in preds.columns:
            headers.append(f"{t} 90 % conformal")
    headers += ["QED", "SA", "generator run", "data md5", "property-model run"]
    if "domain_reason" in preds.columns:
        headers.append("domain")
    rows = []
    for rec in preds.head(top_k).to_dict("records"):
        row = [rec.get("rank"), f"`{rec.get(schema.SMILES)}`", rec.get("generator", "–")]
        for t in targets:
            row.append(f"{fmt(rec.get(f'{t}_mean'))} ± {fmt(rec.get(f'{t}_std'), 2)}")
            if f"{t}_low95" in preds.columns:
                row.append(f"[{fmt(rec.get(f'{t}_low95'))}, {fmt(rec.get(f'{t}_high95'))}]")
            if f"{t}_low90" in preds.columns:
                row.append(f"[{fmt(rec.get(f'{t}_low90'))}, {fmt(rec.get(f'{t}_high90'))}]")
        row += [fmt(rec.get(QED)), fmt(rec.get(SA)), code(_str(rec.get("generator_run"))),
                code(_str(rec.get("data_md5"))), code(_str(rec.get("property_model_run")))]
        if "domain_reason" in preds.columns:
            row.append(_domain_cell(rec))
        rows.append(row)
    b.add(table(headers, rows))
    _attributions(b, preds[schema.SMILES].head(3).tolist())


def _domain_counts(b: _Builder, m: dict) -> None:
    """The applicability-domain line of the screening section (molgnn.screen.domain.domain_summary)."""
    if "n_in_domain" not in m:
        b.add("Applicability domain: not checked (the fine-tune stage saved no domain).")
        return
    kinds = {"elements": "elements not seen in training", "size": "heavy-atom count outside the training range",
             "radical": "radicals", "charged": "charged atoms", "similarity": "low nearest-neighbour similarity"}
    reasons = ", ".join(f"{fmt(m.get(f'n_out_of_domain_{k}'))} {label}" for k, label in kinds.items()
                        if m.get(f"n_out_of_domain_{k}"))
    b.add(f"Applicability domain: {fmt(m['n_in_domain'])} candidates inside the training domain, "
          f"{fmt(m.get('n_out_of_domain'))} outside" + (f" ({reasons}; a molecule can have several reasons)"
                                                          if reasons else "")
          + ". Out-of-domain candidates rank after every in-domain one unless `screen.rank_out_of_domain_last` "
            "is false; `domain_reason` in the table says why.")


def _domain_cell(rec: dict) -> str:
    verdict = rec.get("in_domain")
    if verdict is None or (isinstance(verdict, float) and math.isnan(verdict)):
        return "–"
    return "in" if str(verdict) == "True" else f"out: {rec.get('domain_reason')}"


def _attributions(b: _Builder, smiles: list[str]) -> None:
    """Per-atom attributions of the top candidates (molgnn.report.attribution); under a second for
    three molecules. Skipped when the fine-tuned members are not on disk."""
    fin = b.results.get("finetune")
    members = [p for k, p in sorted(fin.outputs.items()) if k.startswith("member_")] if fin else []
    if not smiles or not members or not all(Path(p).is_file() for p in members):
        return
    from molgnn.report.attribution import candidate_attributions

    try:
        target, drawn = candidate_attributions(smiles, members, b.images, target=b.meta.get("rank_by"),
                                               seed=int(b.meta.get("seed") or 0))
    except ValueError as exc:      # an unreadable checkpoint costs the figures, not the report
        b.add(f"_Atom attributions not drawn: {exc}._")
        return
    b.add(f"Where the ensemble's predicted {target} comes from, atom by atom, for the top {len(drawn)} "
          "candidates (each atom's share of the prediction, its hydrogens included; red above the molecule's "
          "average share, blue below; `molgnn explain SMILES` draws any molecule):")
    for k, (smi, png, why) in enumerate(drawn, start=1):
        b.add(image(f"{IMAGES}/{png.name}", f"attributions of candidate {k}") if png
              else f"_#{k} `{smi}`: not drawn ({why})._")


def _traceability(b: _Builder) -> None:
    b.add("## Traceability",
          "Each stage's MLflow run in this pipeline invocation, and the run that computed its outputs "
          "(the same unless the stage was cached by content hash of its inputs and parameters).")
    rows = [[name, code(r.info.get("mlflow_run_id")), code(r.info.get("produced_by_run")), fmt(r.cached),
             fmt(r.seconds), code(r.key), f"`{r.out_dir}`"] for name, r in b.results.items()]
    b.add(table(["stage", "MLflow run", "outputs produced by run", "cached", "seconds", "stage key", "outputs"],
                rows))


# ---------------------------------------------------------------------------------------------- api

def write_report(results: dict[str, StageResult], out_dir: str | Path, meta: dict[str, Any] | None = None,
                 top_k: int = 20) -> Path:
    """Write ``out_dir/report.md`` with its images, the ranked table and ``results.json``, and the same
    as one self-contained page, ``report.html`` (``molgnn.report.html_report``).

    ``meta``: ``pipeline_run``, ``data_md5``, ``params_hash``, ``git_commit``, ``flow_run``, ``rank_by``,
    ``seed``, ``registered_models``, ``experiment_id`` (any may be missing). Returns the report's path. The folder is built beside ``out_dir``
    and swapped in whole: an interrupted report leaves the previous one untouched.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        b = _Builder(staging, results, meta)
        _header(b)
        _data(b)
        _pretrain(b)
        _finetune(b)
        _fast_tier(b)
        _generate(b)
        _filter(b)
        _screen(b, top_k)
        _traceability(b)
        with atomic_path(staging / RESULTS_FILE) as tmp:
            tmp.write_text(json.dumps({"meta": meta, "stages": {k: dataclasses.asdict(r) for k, r in results.items()}},
                                      indent=2, default=str))
        with atomic_path(staging / REPORT_FILE) as tmp:
            tmp.write_text("\n".join(b.lines))
        write_html(staging, meta, "\n".join(b.lines), _read_csv(str(staging / CANDIDATES_FILE)))
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / REPORT_FILE


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``staging``: two renames, so the report is either the old or the new one."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_results(report_dir: str | Path) -> tuple[dict[str, StageResult], dict[str, Any]]:
    """The StageResults and metadata a previous report was built from (its ``results.json``)."""
    data = json.loads((Path(report_dir) / RESULTS_FILE).read_text())
    return {k: StageResult(**v) for k, v in data["stages"].items()}, data.get("meta", {})


def results_from_run(run_dir: Path) -> dict[str, StageResult]:
    """Each stage's finished result as the run folder links it (its ``stage.json`` in the stage
    store), in pipeline order (no MLflow run of the invocation is known this way; ``produced_by_run`` is)."""
    order = ["ingest", "featurize", "pretrain", "finetune", "fast_tier", "generate-vae", "generate-diffusion",
             "filter", "screen"]
    out = {}
    for name in order:
        result = read_manifest(Path(run_dir) / name)
        if result is not None and result.stage == name:
            out[name] = result
    return out


def _read_json(path: str | None):
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _read_csv(path: str | None) -> pd.DataFrame | None:
    return pd.read_csv(path) if path and Path(path).exists() else None


def _str(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
