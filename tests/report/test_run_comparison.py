"""Two pipeline runs side by side: differing parameters, metrics per task, the shift of the
predicted property (KS against the first run), each run's top molecules drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from molgnn.data.stage_store import StageResult, save_manifest
from molgnn.report.run_comparison import COMPARE_HTML, COMPARE_MD, RunInput, compare_run_folders

SMILES = ["CCO", "c1ccccc1O", "CC(=O)N", "CCN", "CCCl", "OCCO", "CC(C)O", "c1ccncc1"]


def run_folder(root: Path, name: str, seed: int, shift: float, mae: float) -> RunInput:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump({"seed": seed, "finetune": {"epochs": 50}}))
    rng = np.random.default_rng(seed)
    for stage, metrics in (("finetune", {"test_mae_logS": mae, "test_rmse_logS": mae * 1.3}),
                           ("screen", {"n_ranked": len(SMILES)})):
        out = folder / stage
        out.mkdir()
        outputs = {}
        if stage == "screen":
            preds = pd.DataFrame({"smiles": SMILES, "logS_mean": rng.normal(shift, 0.3, len(SMILES))})
            preds = preds.sort_values("logS_mean", ascending=False).assign(rank=range(1, len(SMILES) + 1))
            preds.to_csv(out / "candidates.csv", index=False)
            outputs["predictions"] = str(out / "candidates.csv")
        save_manifest(StageResult(stage=stage, key=f"k{seed}", out_dir=str(out), outputs=outputs, metrics=metrics))
    return RunInput(label=name, folder=folder, record={"status": "finished", "mlflow_run_id": "a" * 32})


def test_two_runs_side_by_side(tmp_path):
    runs = [run_folder(tmp_path, "run-a", 0, -2.0, 0.61), run_folder(tmp_path, "run-b", 1, 1.0, 0.55)]
    html = compare_run_folders(runs, tmp_path / "out", top=4, meta={"experiment_id": "3"})
    assert html.name == COMPARE_HTML
    md = (tmp_path / "out" / COMPARE_MD).read_text()
    assert "`seed`" in md and "`finetune.epochs`" not in md.split("## Metrics")[0], "only differing params"
    assert "`finetune: test_mae_logS` | 0.610 | 0.550" in md
    ks_row = next(line for line in md.splitlines() if line.startswith("| run-b | 8 |"))
    assert float(ks_row.split("|")[6]) == 1.0, "disjoint predicted distributions: KS statistic 1"
    assert (tmp_path / "out/images/top_run-a.png").is_file() and (tmp_path / "out/images/shift_logS.png").is_file()
    page = html.read_text()
    assert 'src="images/' not in page and page.count("data:image/png;base64,") == 3
    assert "/#/experiments/3/runs/" + "a" * 32 in page


def test_one_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        compare_run_folders([run_folder(tmp_path, "only", 0, 0.0, 1.0)], tmp_path / "out")
