"""Progress on stderr (bar on a terminal, periodic lines in a log) and the screening model folder
(a run folder resolves to its fast_tier folder; without a 2D tier the screen falls back to 3D)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.screen.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_in_a_log_and_a_bar_on_a_terminal():
    log = io.StringIO()
    with Progress("2D tier", 4, stream=log, every_s=0.0) as p:
        p.update(1)
        p.update(3)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("2D tier: 1/4 mol (25 %) after") and "done in" in lines[-1] and "4/4" in lines[-1]
    quiet = io.StringIO()
    with Progress("x", None, stream=quiet, enabled=False) as p:
        p.update(5)
    assert quiet.getvalue() == "" and p.done == 5
    tty = _Tty()
    with Progress("bar", 10, stream=tty) as p:
        p.update(10)
    assert "bar" in tty.getvalue() and "10/10" in tty.getvalue()


def test_run_folder_resolves_to_its_fast_tier_else_finetune(tmp_path):
    from molgnn.screen.model_folder import resolve_folder

    run = tmp_path / "run"
    (run / "finetune").mkdir(parents=True)
    (run / "finetune" / "member_0.pt").write_bytes(b"")
    assert resolve_folder(run) == run / "finetune"
    (run / "fast_tier").mkdir()
    assert resolve_folder(run) == run / "finetune"        # a fast_tier folder without its model is skipped
    (run / "fast_tier" / "model_2d.pt").write_bytes(b"")
    assert resolve_folder(run) == run / "fast_tier"
    assert resolve_folder(run / "finetune") == run / "finetune"
    with pytest.raises(FileNotFoundError, match="no fine-tuned models"):
        from molgnn.screen.model_folder import load_screening_model
        load_screening_model(tmp_path / "empty")


def test_screen_library_without_a_2d_tier_falls_back_to_3d_and_says_so(tmp_path):
    from molgnn.config import ModelConfig
    from molgnn.models.property_model import PropertyModel
    from molgnn.screen.model_folder import load_screening_model, screen_library
    from molgnn.train.checkpoints import checkpoint_from_model

    torch.manual_seed(0)
    m = PropertyModel(ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=4, cutoff=4.0), ["gap"])
    m.set_target_stats(torch.tensor([6.0]), torch.tensor([1.0]))
    torch.save(checkpoint_from_model(m, seed=0), tmp_path / "member_0.pt")
    lib = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": ["CCO", "CCN", "bad(("]}).to_csv(lib, index=False)
    model = load_screening_model(tmp_path)
    assert model.model_2d is None and model.targets == ["gap"]
    res = screen_library(model, [str(lib)], tmp_path / "out.csv", workers=1)
    assert res.tier == "3d" and "no 2D tier" in res.note
    assert res.n_ranked + res.n_rejected == res.n_input_rows == 3
    with pytest.raises(FileNotFoundError, match="no 2D tier"):
        screen_library(model, [str(lib)], tmp_path / "out2.csv", tier="2d")
    assert np.isfinite(pd.read_csv(res.predictions_path)["gap_mean"]).all()
