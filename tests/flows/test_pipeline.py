"""The whole flow on a tiny dataset under prefect_test_harness, with a real MLflow store and DVC.

One pipeline run (module fixture) is checked from every side: stage results, tracking, data
versioning, the CLI on its outputs, and a rerun that must recompute nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

STAGES = ["ingest", "featurize", "pretrain", "finetune", "fast_tier", "generate-vae", "generate-diffusion", "filter",
          "screen"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, prefect_harness, tiny_params):
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("pipeline")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    first = pipeline(params_path=str(root / "params.yaml"))
    second = pipeline(params_path=str(root / "params.yaml"))
    return root, first, second


def test_every_stage_ran_and_rerun_recomputes_nothing(pipeline_run):
    root, first, second = pipeline_run
    assert first["run_dir"] != second["run_dir"]
    for summary in (first, second):   # every stage linked into the run's own folder
        assert all((Path(summary["run_dir"]) / name / "stage.json").is_file() for name in STAGES)
    assert list(first["stages"]) == STAGES
    assert not any(s["cached"] for s in first["stages"].values())
    assert {n: s["cached"] for n, s in second["stages"].items()} == {n: True for n in STAGES}
    for name in STAGES:
        # compared as JSON so that NaN (e.g. a mean over zero valid samples) equals itself
        assert json.dumps(second["stages"][name]["metrics"]) == json.dumps(first["stages"][name]["metrics"])


def test_ingest_accounts_for_every_row(pipeline_run):
    root, first, _ = pipeline_run
    m = first["stages"]["ingest"]["metrics"]
    assert m["n_input_rows"] == 60 == m["n_kept"] + m["n_rejected"]
    molecules = pd.read_parquet(root / "data/molecules/molecules.parquet")
    assert len(molecules) == m["n_kept"]
    units = json.loads((root / "data/molecules/units.json").read_text())
    assert units["gap"] == "eV"


def test_finetune_reports_physical_units_and_screen_ranks_with_uncertainty(pipeline_run, tiny_params):
    root, first, _ = pipeline_run
    ft = first["stages"]["finetune"]["metrics"]
    assert 0 < ft["test_mae_gap"] < 5, "gap MAE in eV on the QM9 scale"
    # QM9's given geometries are put in their SMILES's atom order, so every atom gets its 2D features
    # (the first 60 molecules all pair; 33 of the 2,000 of qm9-sample do not)
    assert ft["n_without_atom_features"] == 0
    run = Path(first["run_dir"])
    preds = pd.read_csv(run / "screen/candidates.csv")
    rejects = pd.read_csv(run / "screen/candidates.rejects.csv")
    candidates = pd.read_csv(run / "filter/candidates.csv")
    assert len(preds) + len(rejects) == len(candidates)
    if len(preds):
        assert {"gap_mean", "gap_std", "homo_mean", "generator", "generator_run", "data_md5",
                "property_model_run"} <= set(preds.columns)
        assert (preds["gap_std"] >= 0).all()
        # two-tier by default: the 2D tier scored all, the 3D ensemble re-predicted top_k + uncertain_k
        sm = first["stages"]["screen"]["metrics"]
        assert json.loads((run / "screen/stage.json").read_text())["info"]["tier"] == "two-tier"
        three = (preds["tier"] == "3d").to_numpy()
        picked = tiny_params["screen"]["top_k"] + tiny_params["screen"]["uncertain_k"]
        assert (preds["selected_by"].fillna("") != "").sum() == min(picked, len(preds))
        assert three.sum() == sm["n_3d"] == min(picked, len(preds)) - sm["n_3d_failed"]
        assert (preds.loc[three, "gap_mean"] == preds.loc[three, "gap_mean_3d"]).all()
        assert (preds.loc[~three, "gap_mean"] == preds.loc[~three, "gap_mean_2d"]).all()
        # intervals: each tier's spread times the scale fitted on its own validation predictions
        scale = first["stages"]["finetune"]["metrics"]["calib_scale_gap"]
        scale_2d = json.loads((run / "fast_tier/calibration_2d.json").read_text())["gap"]["scale"]
        assert preds["gap_std_calibrated"].to_numpy() == pytest.approx(
            np.where(three, scale, scale_2d) * preds["gap_std"].to_numpy())
        assert (preds["gap_low95"] <= preds["gap_mean"]).all() and (preds["gap_mean"] <= preds["gap_high95"]).all()
        # out-of-domain candidates rank after every in-domain one; in each, 3D rows first, each by the score
        assert preds["in_domain"].is_monotonic_decreasing
        for _, group in preds.groupby("in_domain"):
            assert (group["tier"] == "3d").is_monotonic_decreasing
            for _, same_tier in group.groupby("tier"):
                assert same_tier["gap_mean"].is_monotonic_decreasing
        assert preds.loc[~preds["in_domain"], "domain_reason"].notna().all()   # every verdict says why
        assert (preds["gap_low90"] <= preds["gap_mean"]).all() and (preds["gap_mean"] <= preds["gap_high90"]).all()
        assert sm["n_in_domain"] + sm["n_out_of_domain"] == len(preds)
        assert preds["rank"].tolist() == list(range(1, len(preds) + 1))
    assert 0 <= ft["test_conformal_coverage90_gap"] <= 1 and 0 < ft["domain_similarity_threshold"] < 1
    f = first["stages"]["filter"]["metrics"]
    assert f["n_samples"] == 2 * tiny_params["generate"]["n_samples"]
    # generate.guidance is on in the tiny params: the diffusion stage also draws steered samples
    guided = pd.read_csv(run / "generate-diffusion/guided_samples.csv")
    assert len(guided) == tiny_params["generate"]["n_samples"]
    assert 0 <= first["stages"]["generate-diffusion"]["metrics"]["guided_validity"] <= 1


def test_fast_tier_trains_both_2d_variants_and_scores_both_tiers(pipeline_run, tiny_params):
    root, first, _ = pipeline_run
    folder = Path(first["run_dir"]) / "fast_tier"
    m, info = first["stages"]["fast_tier"]["metrics"], json.loads((folder / "stage.json").read_text())["info"]
    tiers = json.loads((folder / "tiers.json").read_text())
    # labels-only and distilled 2D tiers both trained and scored; the better on validation kept
    assert set(tiers["val_score"]) == {"labels", "distilled"} == {info["chosen"], *tiers["val_score"]}
    assert info["chosen"] == min(tiers["val_score"], key=lambda v: (tiers["val_score"][v], v != "labels"))
    assert m["tier2d_distilled_kept"] == float(info["chosen"] == "distilled")
    for t in tiny_params["finetune"]["targets"]:
        for tier in ("2d", "2d_labels", "2d_distilled", "3d"):
            assert 0 <= m[f"tier{tier}_test_mae_{t}"] < 10, (tier, t)
        assert m[f"tier2d_test_mae_{t}"] == m[f"tier2d_{info['chosen']}_test_mae_{t}"]
    # the 3D tier's score is the fine-tuning stage's own test score, on the same molecules
    assert m["tier3d_test_mae_gap"] == pytest.approx(first["stages"]["finetune"]["metrics"]["test_mae_gap"])
    # the folder is a whole screening model: the 2D tier beside the 3D members, calibration and domain
    import torch

    ckpt = torch.load(folder / "model_2d.pt", weights_only=True)
    assert ckpt["variant"] == info["chosen"] and len(ckpt["state_dicts"]) == tiny_params["fast_tier"]["members"]
    names = {p.name for p in folder.iterdir()}
    assert {"member_0.pt", "member_1.pt", "calibration.json", "calibration_2d.json",
            "applicability_domain.json"} <= names


def test_pretraining_trains_the_eht_objective(pipeline_run):
    root, first, _ = pipeline_run
    m = first["stages"]["pretrain"]["metrics"]
    assert m["n_structures_without_eht_targets"] == 0 and 0 < m["final_eht_loss"] < 10
    history = json.loads((Path(first["run_dir"]) / "pretrain/history.json").read_text())
    assert "eht_loss" in history[-1]


def test_tracking_nests_stages_and_tags_provenance(pipeline_run):
    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt
    from molgnn.tracking.dvc_data import data_md5, is_clean

    root, first, _ = pipeline_run
    params = load_params(root / "params.yaml")
    tracker = mt.Tracker.connect(params.tracking, root)
    parent = tracker.client.get_run(first["mlflow_run_id"])
    children = tracker.client.search_runs([tracker.experiment_id],
                                          f"tags.`{mt.TAG_PARENT}` = '{parent.info.run_id}'")
    assert sorted(r.data.tags[mt.TAG_STAGE] for r in children) == sorted(STAGES)
    md5 = data_md5(root)
    assert md5 == first["data_md5"]
    for run in [parent, *children]:
        assert run.data.tags[mt.TAG_DATA_MD5] == md5
        assert run.data.tags[mt.TAG_PARAMS_HASH] == params.digest()
        assert run.data.tags[mt.TAG_FLOW_RUN]
        assert run.data.tags[mt.TAG_GIT_COMMIT]
        assert run.info.status == "FINISHED"
    finetune = next(r for r in children if r.data.tags[mt.TAG_STAGE] == "finetune")
    artifacts = {a.path for a in tracker.client.list_artifacts(finetune.info.run_id)}
    assert {"model", "model_config.json", "test_predictions.csv", "parity_gap.png"} <= artifacts
    assert is_clean(root), "dvc status is clean after a run"


def test_models_are_registered_once_per_training_and_the_data_is_an_mlflow_dataset(pipeline_run):
    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt
    from molgnn.tracking.registry import CHAMPION, model_names

    root, first, second = pipeline_run
    params = load_params(root / "params.yaml")
    tracker = mt.Tracker.connect(params.tracking, root)
    names = model_names(params.tracking.experiment)
    assert set(first["registered_models"]) == set(names.values())
    # the rerun recomputed nothing, so it registered nothing new: the same versions
    assert second["registered_models"] == first["registered_models"]
    for name, version in first["registered_models"].items():
        assert [str(v.version) for v in tracker.client.search_model_versions(f"name = '{name}'")] == [version]
        assert str(tracker.client.get_model_version_by_alias(name, CHAMPION).version) == version
    screening = tracker.client.get_model_version(names["screening"], first["registered_models"][names["screening"]])
    files = {a.path.split("/")[-1] for a in tracker.client.list_artifacts(screening.run_id, "model_package")}
    assert {"member_0.pt", "model_2d.pt", "calibration.json", "applicability_domain.json"} <= files
    assert "stage.json" not in files
    finetune = tracker.client.search_runs([tracker.experiment_id], f"tags.`{mt.TAG_PARENT}` = "
                                          f"'{first['mlflow_run_id']}' and tags.`{mt.TAG_STAGE}` = 'finetune'")
    assert len(finetune) == 1
    for run_id in (first["mlflow_run_id"], finetune[0].info.run_id):
        inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
        assert [d.dataset.digest for d in inputs] == [first["data_md5"]]
    report = (Path(first["run_dir"]) / "report/report.md").read_text()
    assert f"models:/{names['screening']}/" in report
    # the HTML report beside it: one file, figures inlined, the pipeline run a link into the MLflow UI
    page = (Path(first["run_dir"]) / "report/report.html").read_text()
    assert 'src="images/' not in page and "data:image/png;base64," in page
    assert f"/#/experiments/{tracker.experiment_id}/runs/{first['mlflow_run_id']}" in page
    assert "id=candidates" in page or "No candidate was ranked" in page


def test_cli_loads_registered_models(pipeline_run, tmp_path):
    root, first, _ = pipeline_run
    lib = tmp_path / "library.csv"
    lib.write_text("smiles\nCCO\nc1ccccc1O\nCC(=O)N\n")
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "run.csv"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "reg.csv"),
                   "--models", "models:/molgnn-screening@champion")
    assert proc.returncode == 0, proc.stderr
    from_run, from_registry = pd.read_csv(tmp_path / "run.csv"), pd.read_csv(tmp_path / "reg.csv")
    pd.testing.assert_frame_equal(from_run, from_registry)
    proc = run_cli(root, "generate", "--checkpoint", "models:/molgnn-generator-vae/1", "-n", "3",
                   "--out", str(tmp_path / "gen.csv"))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "gen.csv")) == 3
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "x.csv"), "--models", "models:/nope@champion")
    assert proc.returncode == 2 and "molgnn-screening" in proc.stderr and "Traceback" not in proc.stderr


def test_screening_flow_reads_the_library_afresh_and_is_tracked(pipeline_run, tmp_path):
    from flows.screening import screen_flow
    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt

    root, _, _ = pipeline_run
    lib = tmp_path / "vendor.csv"
    lib.write_text("smiles\nCCO\nc1ccccc1O\n")
    first = screen_flow(library=str(lib), params_path=str(root / "params.yaml"))
    lib.write_text("smiles\nCCO\nc1ccccc1O\nCC(=O)N\nnot_a_smiles\n")   # the vendor drop, replaced in place
    second = screen_flow(library=str(lib), params_path=str(root / "params.yaml"))
    assert (first["n_input_rows"], second["n_input_rows"]) == (2, 4)
    assert second["n_ranked"] + second["n_rejected"] == 4 and first["library_sha256"] != second["library_sha256"]
    assert len(pd.read_csv(Path(second["out_dir"]) / "ranked.csv")) == second["n_ranked"]
    tracker = mt.Tracker.connect(load_params(root / "params.yaml").tracking, root)
    run = tracker.client.get_run(second["mlflow_run_id"])
    assert run.data.tags["molgnn.library_sha256"] == second["library_sha256"] and run.info.status == "FINISHED"
    assert run.data.metrics["n_ranked"] == second["n_ranked"]


def test_cli_compares_two_pipeline_runs(pipeline_run, tmp_path):
    root, first, second = pipeline_run
    out = tmp_path / "cmp"
    proc = run_cli(root, "compare", "--runs", first["run_id"], second["run_id"], "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "finetune: test_mae_gap" in proc.stdout and first["run_id"] in proc.stdout
    page = (out / "compare.html").read_text()
    assert first["run_id"] in page and second["run_id"] in page and "Top 12 candidates" in page
    proc = run_cli(root, "compare", "--runs", first["run_id"], first["run_id"])
    assert proc.returncode == 2 and "two or more" in proc.stderr


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molgnn.cli", *args], cwd=root, capture_output=True,
                          text=True, timeout=600)


def test_cli_screen_generate_and_compare_on_the_run(pipeline_run, tmp_path):
    root, _, _ = pipeline_run
    lib = tmp_path / "library.csv"
    lib.write_text("smiles,name\nCCO,ethanol\nnot_a_smiles,junk\n\nc1ccccc1O,phenol\nCCO,dup\n[Na+].[Cl-],salt\n")
    out = tmp_path / "preds.csv"
    proc = run_cli(root, "screen", str(lib), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    preds, rejects = pd.read_csv(out), pd.read_csv(tmp_path / "preds.rejects.csv")
    assert set(preds["smiles"]) == {"CCO", "Oc1ccccc1"}
    assert {"gap_mean", "gap_std", "gap_std_calibrated", "gap_low95", "gap_high95"} <= set(preds.columns)
    assert "calibrated 95% intervals" in proc.stdout
    # with no other flag: the run's fast_tier folder, two-tier (2D over all, 3D on the top + uncertain)
    assert "two-tier screen" in proc.stdout and "fast_tier" in proc.stderr
    assert set(preds["tier"]) == {"3d"} and preds["gap_mean_2d"].notna().all()   # 2 molecules < top_k
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "k1.csv"), "--top-k", "1", "--uncertain-k", "0")
    assert proc.returncode == 0, proc.stderr
    k1 = pd.read_csv(tmp_path / "k1.csv")
    assert k1["tier"].tolist() == ["3d", "2d"] and k1["selected_by"].fillna("").tolist() == ["top_k", ""]
    assert pd.isna(k1.loc[1, "gap_mean_3d"]) and pd.notna(k1.loc[0, "gap_mean_3d"])
    assert len(k1) + len(pd.read_csv(tmp_path / "k1.rejects.csv")) == 6
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "all3d.csv"), "--tier", "3d")
    assert proc.returncode == 0, proc.stderr
    assert "tier" not in pd.read_csv(tmp_path / "all3d.csv").columns
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "raw.csv"), "--calibration", "none")
    assert proc.returncode == 0, proc.stderr
    assert "gap_std_calibrated" not in pd.read_csv(tmp_path / "raw.csv").columns
    assert "applicability domain:" in proc.stdout
    assert {"gap_low90", "gap_high90", "in_domain"} <= set(preds.columns)
    # a model folder from before domains were saved still screens, with empty domain columns
    old = tmp_path / "old_models"
    old.mkdir()
    for member in (root / "runs/latest/finetune").glob("member_*.pt"):
        (old / member.name).write_bytes(member.read_bytes())
    proc = run_cli(root, "screen", str(lib), "--out", str(tmp_path / "old.csv"), "--models", str(old))
    assert proc.returncode == 0, proc.stderr
    assert "no domain check was possible" in proc.stdout
    old_preds = pd.read_csv(tmp_path / "old.csv")
    assert old_preds["in_domain"].isna().all() and len(old_preds) == len(preds)
    # the blank line is a row of its own: every non-header line ends in one of the two files
    assert len(preds) + len(rejects) == 6

    gen = tmp_path / "gen.csv"
    proc = run_cli(root, "generate", "--model", "vae", "-n", "5", "--out", str(gen))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(gen)) == 5

    proc = run_cli(root, "compare", "--stage", "finetune")
    assert proc.returncode == 0, proc.stderr
    assert "test_mae_gap" in proc.stdout

    proc = run_cli(root, "screen", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and "error" in proc.stderr and "Traceback" not in proc.stderr


def test_report_shows_every_stage_traceably(pipeline_run):
    import re

    from molgnn.config import load_params
    from molgnn.tracking import mlflow_tracking as mt

    root, first, second = pipeline_run
    report = Path(second["report"])
    # each invocation has its own run folder and report; runs/latest is the second one
    assert report == Path(second["run_dir"]) / "report/report.md" != Path(first["report"])
    assert (root / "runs/latest").resolve() == Path(second["run_dir"])
    text = report.read_text()
    for heading in ["## 1. Data", "## 2. Pretraining", "## 3. Fine-tuning", "### Screening tiers", "## 4. Generation",
                    "### vae", "### diffusion", "## 5. Filtering", "## 6. Screening", "## Traceability"]:
        assert heading in text, heading
    # every number traces back: the pipeline run, each stage's run in it, the data version
    assert second["mlflow_run_id"] in text and second["data_md5"] in text
    assert all(f"| {name} |" in text for name in STAGES)
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert {"images/generate_vae_properties.png", "images/generate_diffusion_properties.png",
            "images/finetune_parity_gap.png"} <= set(links)
    assert all((report.parent / link).is_file() for link in links)
    preds = pd.read_csv(Path(second["run_dir"]) / "screen/candidates.csv")
    if len(preds):
        top = preds.iloc[0]
        assert f"`{top['smiles']}`" in text
        assert top["generator_run"] in text and top["property_model_run"] in text

    tracker = mt.Tracker.connect(load_params(root / "params.yaml").tracking, root)
    logged = {a.path for a in tracker.client.list_artifacts(second["mlflow_run_id"], "report")}
    assert "report/report.md" in logged
    gen_run = tracker.client.search_runs([tracker.experiment_id],
                                         f"tags.`{mt.TAG_PARENT}` = '{first['mlflow_run_id']}' and "
                                         f"tags.`{mt.TAG_STAGE}` = 'generate-vae'")[0]
    assert "property_distributions.png" in {a.path for a in tracker.client.list_artifacts(gen_run.info.run_id)}

    # `molgnn report` rewrites it from the run's outputs (in-process: a fresh interpreter costs seconds)
    from molgnn.cli import main

    report.unlink()
    assert main(["report", "--root", str(root)]) == 0
    assert second["mlflow_run_id"] in report.read_text()
