"""`molgnn design` on a tiny dataset under prefect_test_harness, with a real MLflow store.

One design (two rounds) is checked from every side: each draw accounted for, rounds as MLflow runs
named ``design-round-<k>`` nested under the design run, the generator fine-tuned between rounds, the
report with its Pareto front and lineage, and a rerun that recomputes no round.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

DESIGN = {"rounds": 2, "generator": "vae", "n_samples": 64, "select": 4, "in_domain_only": False, "finetune_epochs": 1, "replay": 16,
          "objectives": {"gap": "max", "qed": "max", "sa": "min", "novelty": "max", "uncertainty": "min"}}


@pytest.fixture(scope="module")
def design_run(tmp_path_factory, prefect_harness, tiny_params):
    from flows.design import design

    root = tmp_path_factory.mktemp("design")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    params = {**tiny_params, "design": DESIGN}
    params["generate"] = {**params["generate"], "guidance": {"enabled": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    first = design(params_path=str(root / "params.yaml"))
    second = design(params_path=str(root / "params.yaml"))
    return root, first, second


def test_every_draw_is_accounted_for(design_run):
    root, first, _ = design_run
    for r in first["rounds"]:
        folder = Path(first["run_dir"]) / "design" / f"design-round-{r['round']}"
        table = pd.read_csv(folder / "round.csv")
        filtered = pd.read_csv(folder / "filter_rejects.csv")
        screen_rejects = pd.read_csv(folder / "screened.rejects.csv") if (folder / "screened.rejects.csv").is_file() \
            else pd.DataFrame()
        assert len(table) + len(filtered) + len(screen_rejects) == DESIGN["n_samples"]
        assert (table["round"] == r["round"]).all()
        assert table["selected"].sum() == r["metrics"]["n_selected"] <= DESIGN["select"]
        assert (table.loc[~table["selected"], "selection_note"].fillna("") != "").all()   # each says why
        for col in ("generator_run", "data_md5", "property_model_run"):
            assert table[col].notna().all() and (table[col].astype(str) != "").all()


def test_rounds_are_nested_mlflow_runs_and_the_generator_moves_between_them(design_run):
    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt

    root, first, _ = design_run
    tracker = mt.Tracker.connect(load_params(root / "params.yaml").tracking, root)
    children = tracker.client.search_runs([tracker.experiment_id],
                                          f"tags.`{mt.TAG_PARENT}` = '{first['mlflow_run_id']}'")
    names = {c.info.run_name for c in children}
    assert {"design-round-1", "design-round-2"} <= names
    assert all("round" in r.info.run_name for r in children if r.info.run_name.startswith("design"))
    assert tracker.client.get_run(first["mlflow_run_id"]).info.run_name == "design"
    one = pd.read_csv(Path(first["run_dir"]) / "design/design-round-1/round.csv")
    two = pd.read_csv(Path(first["run_dir"]) / "design/design-round-2/round.csv")
    round1_run = first["rounds"][0]["mlflow_run_id"]
    if first["rounds"][0]["metrics"]["n_selected"]:   # a fine-tuned generator: round 2 draws from it
        assert (two["generator_run"] == round1_run).all() and (one["generator_run"] != round1_run).all()
        assert (Path(first["run_dir"]) / "design/design-round-1/generator.pt").is_file()
    assert not (Path(first["run_dir"]) / "design/design-round-2/generator.pt").exists()   # the last round: none


def test_report_shows_front_moves_and_lineage(design_run):
    _, first, _ = design_run
    folder = Path(first["report"]).parent
    md = Path(first["report"]).read_text()
    for heading in ("## Rounds", "## Final candidates and their lineage"):
        assert heading in md
    final = pd.read_csv(folder / "final_candidates.csv")
    selected = sum(r["metrics"]["n_selected"] for r in first["rounds"])
    assert len(final) == selected
    if len(final):
        assert "## Pareto front" in md and (folder / "pareto_front.png").stat().st_size > 0
        assert (folder / "objectives_by_round.png").stat().st_size > 0
        assert final["final_pareto_rank"].is_monotonic_increasing and (final["final_pareto_rank"] >= 1).all()
        assert set(final["round"]) <= {1, 2}
        html = (folder / "design_report.html").read_text()
        assert "property_model_run" in html or "property model run" in html


def test_rerun_recomputes_no_round_and_latest_stays_a_pipeline_run(design_run):
    root, first, second = design_run
    assert [r["cached"] for r in first["rounds"]] == [False, False]
    assert [r["cached"] for r in second["rounds"]] == [True, True]
    assert json.dumps([r["metrics"] for r in first["rounds"]]) == json.dumps([r["metrics"] for r in second["rounds"]])
    latest = root / "runs" / "latest"
    assert not latest.exists() or Path(os_readlink(latest)).name not in (Path(first["run_dir"]).name,
                                                                           Path(second["run_dir"]).name)


def os_readlink(path: Path) -> str:
    import os

    return os.readlink(path)


def test_rounds_from_the_command_line(design_run, tiny_params):
    from molgnn.config import ConfigError, load_params

    root, _, _ = design_run
    assert load_params(root / "params.yaml", overrides=["design.rounds=5"]).design.rounds == 5
    with pytest.raises(ConfigError, match="design.objectives.logd"):
        load_params(root / "params.yaml", overrides=["design.objectives={logd: max}"])
    with pytest.raises(ConfigError, match="design.generator"):
        load_params(root / "params.yaml", overrides=["generate.models=[vae]", "design.generator=diffusion"])
