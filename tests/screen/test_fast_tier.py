"""Two-tier screening: every row accounted for, top-k and uncertain molecules re-predicted in 3D."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.models.property_model import PropertyModel
from molgnn.screen.fast_tier import distill_2d, screen_two_tier
from molgnn.train.checkpoints import checkpoint_from_model

TRAIN = ["CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "CCCC", "CC(C)O", "c1ccccc1", "CCN", "C=CC=O",
         "OC1CC1", "CC(=O)C"]


@pytest.fixture(scope="module")
def model_2d():
    labels = np.array([[len(s) / 3.0] for s in TRAIN])
    teacher = labels + 0.1
    return distill_2d(TRAIN, labels, teacher, ["gap"], val_smiles=TRAIN[:4], val_labels=labels[:4],
                      members=2, epochs=5, hidden=16, layers=2)


@pytest.fixture(scope="module")
def members_3d():
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = PropertyModel(ModelConfig(n_atom_basis=16, n_interactions=1, n_rbf=8, cutoff=4.0), ["gap"])
        m.set_target_stats(torch.tensor([6.0]), torch.tensor([1.0]))
        out.append(checkpoint_from_model(m, seed=seed))
    return out


def _library(tmp_path):
    rows = ["CCO", "CCCO", "c1ccccc1O", "not_a_smiles", "OCC", "[Na+].[Cl-]", "CC(=O)Nc1ccccc1",
            "C1CC1N", "CCOC(=O)C", "FC(F)(F)c1ccccc1", "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", "CN"]
    path = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": rows}).to_csv(path, index=False)
    return path, rows


def test_two_tier_accounts_for_every_row_and_sends_top_and_uncertain_to_3d(tmp_path, model_2d, members_3d):
    lib, rows = _library(tmp_path)
    res = screen_two_tier([str(lib)], tmp_path / "out.csv", members_3d, model_2d, top_k=2, uncertain_k=2,
                          workers=1, timeout_s=20)
    table, rejects = pd.read_csv(res.predictions_path), pd.read_csv(res.rejects_path)
    assert res.n_input_rows == len(rows) == len(table) + len(rejects)
    assert sorted(table["row"].tolist() + rejects["row"].tolist()) == list(range(len(rows)))
    assert set(rejects["stage"]) == {"parse", "fragment", "deduplicate", "size"}
    assert rejects.loc[rejects["stage"] == "deduplicate", "raw"].tolist() == ["OCC"]
    assert (table["tier"] == "3d").sum() == res.n_3d == 4 - res.n_3d_failed
    assert table["selected_by"].fillna("").value_counts().to_dict() == {"top_k": 2, "uncertain": 2, "": len(table) - 4}
    # 3D rows first, ranked by the 3D mean; the 2D rows after them by the 2D mean
    three = table[table["tier"] == "3d"]
    assert three.index.tolist() == list(range(len(three)))
    assert three["gap_mean"].is_monotonic_decreasing and (three["gap_mean"] == three["gap_mean_3d"]).all()
    assert three["mol_id"].str.len().eq(27).all()
    two = table[table["tier"] == "2d"]
    assert two["gap_mean"].is_monotonic_decreasing and (two["gap_mean"] == two["gap_mean_2d"]).all()
    # the top-k are the best by the 2D model
    best2d = table.sort_values("gap_mean_2d", ascending=False).head(2)
    assert set(best2d["selected_by"]) == {"top_k"}
    assert table["rank"].tolist() == list(range(1, len(table) + 1))


def test_two_tier_without_3d_models_is_2d_only_and_parallel_equals_serial(tmp_path, model_2d):
    lib, rows = _library(tmp_path)
    a = screen_two_tier([str(lib)], tmp_path / "a.csv", None, model_2d, workers=1)
    from molgnn.models.graph2d_model import models_from_checkpoint
    from molgnn.screen.fast_tier import screen_2d

    members = models_from_checkpoint(model_2d)
    kept, rej, n = screen_2d([str(lib)], members, workers=2, chunk=3)     # forked workers, 4 chunks
    kept1, rej1, n1 = screen_2d([str(lib)], members, workers=1)
    assert n == n1 == len(rows) and rej.equals(rej1)
    pd.testing.assert_frame_equal(kept, kept1)
    ta = pd.read_csv(a.predictions_path)
    assert set(ta["tier"]) == {"2d"} and a.n_3d == 0
    assert ta["gap_mean"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="cannot rank"):
        screen_two_tier([str(lib)], tmp_path / "b.csv", None, model_2d, rank_by="homo")


def test_cli_fast_tier_flag(tmp_path, model_2d, capsys):
    from molgnn.cli import main

    lib, rows = _library(tmp_path)
    torch.save(model_2d, tmp_path / "m2d.pt")
    rc = main(["screen", str(lib), "--out", str(tmp_path / "cli.csv"), "--fast-tier", str(tmp_path / "m2d.pt"),
               "--top-k", "0", "--uncertain-k", "0", "--models", str(tmp_path / "none"), "--workers", "1"])
    assert rc == 0
    out = pd.read_csv(tmp_path / "cli.csv")
    assert len(out) + len(pd.read_csv(tmp_path / "cli.rejects.csv")) == len(rows)
    # asking for a 3D tier without 3D models is a one-line user error
    rc = main(["screen", str(lib), "--out", str(tmp_path / "cli2.csv"), "--fast-tier", str(tmp_path / "m2d.pt"),
               "--models", str(tmp_path / "none")])
    assert rc == 2 and "no fine-tuned 3D models" in capsys.readouterr().err
