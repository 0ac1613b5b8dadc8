"""The design report: rounds, Pareto front, objectives by round, final candidates with lineage;
its HTML page checked in headless Chromium like the run report's."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from molgnn.config import TargetRange
from molgnn.design.objectives import column
from molgnn.report.design_report import FINAL_FILE, HTML_FILE, write_design_report

OBJECTIVES = {"gap": "max", "qed": TargetRange(low=0.5), "sa": "min"}
SMILES = [["CCO", "CCCO", "c1ccccc1O", "CC(=O)N", "OCCO"], ["CCCCO", "CCN(C)C", "c1ccncc1", "CC(C)O", "NCCO"]]


def _round(folder, k, rng):
    n = len(SMILES[k - 1])
    t = pd.DataFrame({"smiles": SMILES[k - 1], "in_domain": True, "round": k, "generator_run": f"gen{k}" * 4,
                      "data_md5": "d" * 32, "property_model_run": "p" * 32,
                      column("gap"): rng.normal(7, 1, n), column("qed"): rng.uniform(0.3, 0.7, n),
                      column("sa"): rng.uniform(1, 5, n)})
    t["pareto_rank"] = [1, 1, 2, 2, pd.NA]
    t["selected"] = [True, True, True, False, False]
    t["selection_note"] = ["", "", "", "not among the 3 picked", "an objective has no value"]
    folder.mkdir(parents=True)
    t.to_csv(folder / "round.csv", index=False)
    (folder / "round.json").write_text(json.dumps({"metrics": {"n_samples": 10, "validity": 0.5, "n_screened": n,
                                                               "hit_rate": 0.4, "gap_mean": 7.0},
                                                   "info": {"round": k}, "lineage": {"generator_run": f"gen{k}"}}))
    return folder / "round.csv"


@pytest.fixture
def design_report(tmp_path):
    rng = np.random.default_rng(0)
    files = [_round(tmp_path / f"design-round-{k}", k, rng) for k in (1, 2)]
    md = write_design_report(files, tmp_path / "report", {"objectives": OBJECTIVES, "round_runs": ["r1", "r2"],
                                                           "pipeline_run": "0123456789abcdef0123456789abcdef"})
    return md


def test_report_has_rounds_front_and_lineage(design_report):
    folder = design_report.parent
    text = design_report.read_text()
    assert "qed (in [0.5, ∞])" in text and "## Pareto front" in text and "objectives_by_round.png" in text
    final = pd.read_csv(folder / FINAL_FILE)
    assert len(final) == 6 and final["rank"].tolist() == list(range(1, 7))
    assert final["final_pareto_rank"].is_monotonic_increasing
    assert set(final["generator_run"]) == {"gen1" * 4, "gen2" * 4}
    assert (folder / "pareto_front.png").stat().st_size > 0


def test_in_chromium_the_design_page_loads_and_renders(design_report, browser_page):
    page, errors = browser_page(design_report.parent / HTML_FILE)
    sizes = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert len(sizes) == 2 and all(w > 0 for w in sizes)      # the Pareto front and the objectives
    assert page.locator("#candidates tbody tr").count() == 6
    boxes = page.eval_on_selector_all("#candidates svg", "els => els.map(e => e.getBBox().width)")
    assert len(boxes) == 6 and all(w > 0 for w in boxes)
    page.locator("#candidates th", has_text="round").first.click()
    rounds = page.locator("#candidates tbody tr td:nth-last-child(4)").all_inner_texts()
    assert [r.strip() for r in rounds] == sorted(r.strip() for r in rounds)
    assert errors == []
