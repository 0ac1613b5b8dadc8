"""Report figures from a handful of SMILES, and the run report from hand-made stage results.

The report of a real (tiny) pipeline run is checked in tests/flows/test_pipeline.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from molgnn.report.figures import generator_figures
from molgnn.report.plots import molecule_grid, property_distributions, save_figure
from molgnn.report.properties import PROPERTY_COLUMNS, molecule_properties, training_properties
from molgnn.report.run_report import load_results, write_report
from molgnn.stages.common import StageResult

TRAINING = ["CCO", "CC(=O)O", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OCC1OC(O)C(O)C(O)C1O",
            "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "C1CCNCC1"]
SAMPLES = pd.DataFrame({"generator": "vae", "sample": range(6),
                        "smiles": ["CCCO", None, "c1ccncc1", "C1CC1", "CC(N)C(=O)O", "CCCO"]})


def test_properties_skip_unparsable_and_keep_positions():
    props = molecule_properties(["CCO", None, "", "not a smiles", "c1ccccc1"])
    assert props["index"].tolist() == [0, 4]
    assert set(PROPERTY_COLUMNS) <= set(props.columns)
    benzene = props.iloc[1]
    assert benzene["heavy_atoms"] == 6 and benzene["mol_weight"] == pytest.approx(78.11, abs=0.01)
    assert 1 <= benzene["sa"] <= 10 and 0 < benzene["qed"] < 1
    assert len(training_properties(TRAINING, max_molecules=3)) == 3


def test_distribution_figure_and_grid_are_pngs(tmp_path):
    fig = property_distributions({"training": molecule_properties(TRAINING),
                                  "vae": molecule_properties(SAMPLES["smiles"]),
                                  "empty": molecule_properties([])}, "vae vs training")
    assert len(fig.axes) == len(PROPERTY_COLUMNS)
    path = save_figure(fig, tmp_path / "dist.png")
    assert Image.open(path).format == "PNG"

    grid = molecule_grid(["CCO", "junk", "c1ccccc1"], tmp_path / "grid.png", legends=["a", "b", "c"])
    assert Image.open(grid).format == "PNG"
    assert molecule_grid(["junk", None], tmp_path / "none.png") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.png", "grid.png"], "no temp files left"


def test_generator_figures(tmp_path):
    out = generator_figures("vae", SAMPLES, molecule_properties(TRAINING), tmp_path / "g.png", tmp_path / "d.png")
    assert set(out) == {"grid", "distributions"} and all(p.exists() for p in out.values())
    nothing_valid = SAMPLES.assign(smiles=None)
    out = generator_figures("vae", nothing_valid, molecule_properties(TRAINING), tmp_path / "g2.png",
                            tmp_path / "d2.png")
    assert set(out) == {"distributions"}


def _fake_run(tmp_path: Path) -> dict[str, StageResult]:
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"smiles": TRAINING}).to_parquet(data / "molecules.parquet")
    gen = tmp_path / "gen"
    gen.mkdir()
    SAMPLES.to_csv(gen / "samples.csv", index=False)
    screen = tmp_path / "screen"
    screen.mkdir()
    pd.DataFrame({"rank": [1, 2], "smiles": ["CC(N)C(=O)O", "c1ccncc1"], "generator": "vae",
                  "gap_mean": [7.1, 6.2], "gap_std": [0.2, 0.3], "qed": [0.4, 0.5], "sa": [2.0, 1.57],
                  "generator_run": "genrun123", "data_md5": "md5abc", "property_model_run": "ftrun456"}
                 ).to_csv(screen / "candidates.csv", index=False)

    def res(stage, outputs=None, metrics=None, info=None):
        return StageResult(stage=stage, key=f"key-{stage}", out_dir=str(tmp_path), outputs=outputs or {},
                           metrics=metrics or {}, info={"mlflow_run_id": f"run-{stage}", **(info or {})})

    return {
        "ingest": res("ingest", {"molecules": str(data / "molecules.parquet")},
                      {"n_input_rows": 10, "n_kept": 8, "n_rejected": 2, "kept_rate": 0.8},
                      {"rejects_by_reason": {"unparsable SMILES": 2}}),
        "finetune": res("finetune", {}, {"test_mae_gap": 0.25, "calib_scale_gap": 1.3}, {"units": {"gap": "eV"}}),
        "generate-vae": res("generate-vae", {"samples": str(gen / "samples.csv")},
                            {"validity": 5 / 6, "validity_after_correction": 1.0, "uniqueness": 0.8,
                             "novelty": 1.0, "train_seconds": 3.5, "sampling_molecules_per_second": 120.0}),
        "filter": res("filter", {}, {"n_samples": 6, "n_candidates": 2, "pass_rate": 1 / 3, "vae_pass_rate": 1 / 3},
                      {"rejects_by_stage": {"validity": 1, "qed": 3}}),
        "screen": res("screen", {"predictions": str(screen / "candidates.csv")},
                      {"n_candidates": 2, "n_ranked": 2, "n_rejected": 0}),
    }


def test_report_from_stage_results(tmp_path):
    results = _fake_run(tmp_path)
    path = write_report(results, tmp_path / "report", {"pipeline_run": "parent789", "data_md5": "md5abc"})
    text = path.read_text()
    for needle in ["parent789", "md5abc", "unparsable SMILES", "0.25", "83.3 %", "run-generate-vae",
                   "genrun123", "ftrun456", "`CC(N)C(=O)O`", "Not run", "1.57"]:   # 1.57: the SA column read
        assert needle in text, needle
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert any(link.endswith("generate_vae_grid.png") for link in links)
    assert all((path.parent / link).exists() for link in links if not link.startswith("#"))
    assert (path.parent / "candidates.csv").exists()
    again, meta = load_results(path.parent)
    assert meta["pipeline_run"] == "parent789" and again["screen"].metrics == results["screen"].metrics


def test_interrupted_report_keeps_the_previous_one(tmp_path, monkeypatch):
    from molgnn.report import run_report

    results = _fake_run(tmp_path)
    path = write_report(results, tmp_path / "report", {"pipeline_run": "first"})
    before = path.read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(run_report, "_screen", boom)
    with pytest.raises(RuntimeError):
        write_report(results, tmp_path / "report", {"pipeline_run": "second"})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == [], "staging removed"
    assert json.loads((path.parent / "results.json").read_text())["meta"]["pipeline_run"] == "first"
