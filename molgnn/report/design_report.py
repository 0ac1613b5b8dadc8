"""The design loop's report: the Pareto front, how the objectives move round by round, and lineage.

Written into the design run's folder as ``design_report.md`` and a self-contained
``design_report.html``, beside ``final_candidates.csv``: every molecule selected in any round,
re-ranked by its Pareto front among everything the rounds screened, with the round that proposed
it, the MLflow run that trained the generator that drew it, the data version (DVC md5) and the
property-model run that scored it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from molgnn.design.objectives import column, describe, is_range, objective_matrix
from molgnn.design.pareto import pareto_ranks
from molgnn.report.run_report import code, fmt, image, table

FINAL_FILE = "final_candidates.csv"
MD_FILE = "design_report.md"
HTML_FILE = "design_report.html"
LINEAGE = ("round", "generator_run", "data_md5", "property_model_run")


def _eligible(t: pd.DataFrame) -> pd.Series:
    """Rows that took part in a round's Pareto ranking (the others say why in selection_note)."""
    return t["pareto_rank"].notna() | t["selected"].astype(bool)


def final_candidates(rounds: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """The selected molecules of all rounds, each with its front among every ranked molecule of all rounds."""
    pool = rounds[_eligible(rounds)].drop_duplicates("smiles").reset_index(drop=True)
    if not len(pool):
        return pool.assign(final_pareto_rank=pd.Series(dtype="Int64"))
    values, maximize = objective_matrix(pool, objectives)
    pool["final_pareto_rank"] = pareto_ranks(values, maximize)
    final = pool[pool["selected"].astype(bool)].sort_values(["final_pareto_rank", "round"], kind="stable")
    final = final.rename(columns={"rank": "screen_rank"}).reset_index(drop=True)   # the round's screen order
    final.insert(0, "rank", range(1, len(final) + 1))
    return final


def pareto_figure(rounds: pd.DataFrame, final: pd.DataFrame, objectives: dict[str, str], path: Path) -> Path | None:
    """The first two objectives of every ranked molecule, by round; the final front and picks marked."""
    from molgnn.report.plots import plt, save_figure

    names = list(objectives)
    if len(names) < 2:
        return None
    x, y = column(names[0]), column(names[1])
    ranked = rounds[_eligible(rounds)]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("viridis")
    n_rounds = max(int(rounds["round"].max()), 1) if len(rounds) else 1
    for k, sub in ranked.groupby("round"):
        ax.scatter(sub[x], sub[y], s=10, alpha=0.45, color=cmap((k - 1) / max(n_rounds - 1, 1)),
                   label=f"round {k} (n {len(sub)})")
    if len(final):
        front = final[final["final_pareto_rank"] == 1]
        ax.scatter(final[x], final[y], s=60, marker="*", color="crimson", label=f"selected (n {len(final)})")
        ax.scatter(front[x], front[y], s=140, facecolors="none", edgecolors="black",
                   label=f"front 1 of all rounds (n {len(front)})")
    def label(name):
        d = objectives[name]
        return f"{name} ({'target ' + describe(d) if is_range(d) else {'max': 'higher', 'min': 'lower'}[d] + ' is better'})"

    ax.set_xlabel(label(names[0]))
    ax.set_ylabel(label(names[1]))
    ax.set_title("Pareto front: " + ", ".join(names))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def objectives_figure(rounds: pd.DataFrame, objectives: dict[str, str], path: Path) -> Path | None:
    """One panel per objective: its distribution over every screened molecule of each round (boxes)
    and the mean of the molecules selected in that round (stars)."""
    from molgnn.report.plots import plt, save_figure

    if not len(rounds):
        return None
    names = list(objectives)
    ks = sorted(int(k) for k in rounds["round"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        col = column(name)
        data = [pd.to_numeric(rounds.loc[rounds["round"] == k, col], errors="coerce").dropna().to_numpy() for k in ks]
        ax.boxplot([d if len(d) else np.array([np.nan]) for d in data], showfliers=False)
        ax.set_xticks(range(1, len(ks) + 1), [str(k) for k in ks])
        picked = [pd.to_numeric(rounds.loc[(rounds["round"] == k) & rounds["selected"].astype(bool), col],
                                errors="coerce").mean() for k in ks]
        ax.plot(range(1, len(ks) + 1), picked, "*", color="crimson", ms=10, label="selected mean")
        ax.set_title(f"{name} ({describe(objectives[name])})")
        ax.set_xlabel("round")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _summary_rows(rounds: pd.DataFrame, round_info: Sequence[dict], objectives: dict[str, str]) -> list[list[Any]]:
    rows = []
    for info in round_info:
        k = info["round"]
        t = rounds[rounds["round"] == k]
        m = info["metrics"]
        rows.append([k, int(m.get("n_samples", 0)), fmt(m.get("validity")), fmt(m.get("filter_pass_rate")),
                     int(m.get("n_screened", 0)), fmt(m.get("in_domain_fraction")), int(m.get("n_front_1", 0)),
                     int(t["selected"].astype(bool).sum()), fmt(m.get("hit_rate"))]
                    + [f"{fmt(m.get(f'{o}_mean'))} / {fmt(m.get(f'{o}_mean_selected'))}" for o in objectives]
                    + [code(info.get("mlflow_run_id", "")), code(info.get("generator_run", ""))])
    return rows


def write_design_report(round_files: Sequence[Path], out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write the report, its figures and ``final_candidates.csv`` into ``out_dir``; returns the .md path.

    ``meta``: ``objectives`` (name -> max|min), ``round_runs`` (MLflow run per round), the design
    run's ids (``pipeline_run`` is the design run, for the HTML page's links), ``data_md5``..."""
    import json

    from molgnn.data.artifacts import atomic_path
    from molgnn.report.html_report import write_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objectives = dict(meta["objectives"])
    tables = [pd.read_csv(f) for f in round_files]
    rounds = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    round_info = []
    for f, run_id in zip(round_files, meta.get("round_runs", [""] * len(round_files))):
        info = json.loads((Path(f).parent / "round.json").read_text())
        round_info.append({"round": info["info"]["round"], "metrics": info["metrics"], "mlflow_run_id": run_id,
                           "generator_run": info["lineage"]["generator_run"]})
    final = final_candidates(rounds, objectives) if len(rounds) else pd.DataFrame()
    with atomic_path(out_dir / FINAL_FILE) as tmp:
        final.to_csv(tmp, index=False)
    pareto = pareto_figure(rounds, final, objectives, out_dir / "pareto_front.png") if len(rounds) else None
    moves = objectives_figure(rounds, objectives, out_dir / "objectives_by_round.png")

    lines = [f"# molgnn design report: run {code(meta.get('pipeline_run', ''))}", "",
             f"- run folder: {code(meta.get('run_dir', ''))}; flow run {code(meta.get('flow_run', ''))}",
             f"- data version (DVC md5): {code(meta.get('data_md5', ''))}; params {code(meta.get('params_hash', ''))}; "
             f"commit {code(meta.get('git_commit', ''))}",
             "- objectives: " + ", ".join(f"{k} ({describe(v)})" for k, v in objectives.items()), "",
             "## Rounds", "",
             "Each round draws from the generator fine-tuned after the round before it (round 1: the trained "
             "generator). The objective columns give the mean over every screened molecule / over the selected ones.",
             "",
             table(["round", "draws", "validity", "passed filters", "screened", "in domain", "front 1", "selected",
                    "in target"]
                   + [f"{o} all / selected" for o in objectives] + ["round run", "generator run"],
                   _summary_rows(rounds, round_info, objectives)), ""]
    if pareto is not None:
        lines += ["## Pareto front", "",
                  f"Every molecule ranked in any round on the first two objectives ({', '.join(list(objectives)[:2])}); "
                  "the ranking uses all of them. Ringed: the molecules no other one beats on every objective.", "",
                  image(pareto.name, "Pareto front"), ""]
    if moves is not None:
        lines += ["## How the objectives move round by round", "", image(moves.name, "objectives by round"), ""]
    lines += ["## Final candidates and their lineage", "",
              f"{len(final)} molecules selected over {len(round_files)} rounds, ordered by their Pareto front among "
              f"all {int(_eligible(rounds).sum()) if len(rounds) else 0} ranked molecules. `{FINAL_FILE}` has every column.",
              ""]
    if len(final):
        lines.append(table(["rank", "SMILES", "front", *objectives, "round", "generator run", "data md5",
                            "property-model run"],
                           [[r["rank"], code(r["smiles"]), r["final_pareto_rank"],
                             *[fmt(r[column(o)]) for o in objectives], r["round"], code(r["generator_run"]),
                             code(r["data_md5"]), code(r["property_model_run"])] for r in final.head(30).to_dict("records")]))
    md = "\n".join(lines) + "\n"
    path = out_dir / MD_FILE
    path.write_text(md)
    extra = (("final_pareto_rank", "front"), *((column(o), o) for o in objectives if o not in ("qed", "sa")),
             *((c, c.replace("_", " ")) for c in LINEAGE))
    write_html(out_dir, meta, md, final if len(final) else None, name=HTML_FILE, title="molgnn design report",
               extra_columns=extra)
    return path
