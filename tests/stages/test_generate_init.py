"""generate.<model>.init_from: the pipeline's generator stage fine-tunes a given generator on the
run's molecules instead of training one from nothing."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from molgnn.config import ConfigError, check_runnable, from_dict
from molgnn.generate.checkpoints import load_generator, save_generator
from molgnn.generate.training import train_generator
from molgnn.stages.common import RunContext

BASE = ["CCO", "CCN", "CCC", "CC=O", "CCCO", "OCCO", "CC(C)O", "CCOC", "NCCO", "C1CC1"] * 3


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    trained = train_generator("diffusion", BASE, epochs=2, batch_size=16, lr=1e-3, seed=0, timesteps=10,
                              hidden_dim=16, n_layers=1, n_heads=2)
    return save_generator(trained, tmp_path_factory.mktemp("init") / "base", half=True, shards=True)


def _params(init_from):
    return from_dict({"device": "cpu", "generate": {"models": ["diffusion"], "n_samples": 8,
                                                    "diffusion": {"epochs": 1, "init_from": str(init_from),
                                                                  "hidden_dim": 32, "timesteps": 50}}})


def test_the_stage_fine_tunes_the_given_generator_and_records_what_it_cannot_hold(tmp_path, base_checkpoint):
    from molgnn.stages.generate import run_generate

    molecules = tmp_path / "molecules.parquet"
    pd.DataFrame({"smiles": ["CCO", "OCCO", "CCS", "CCCN"]}).to_parquet(molecules)
    ctx = RunContext(params=_params(base_checkpoint), root=tmp_path, store_dir=tmp_path / "store")
    result = run_generate(ctx, molecules, "diffusion")
    assert result.info["init_from"] == str(base_checkpoint)
    tuned = load_generator(result.path("checkpoint"))
    base = load_generator(base_checkpoint)
    assert tuned.hparams == base.hparams                  # the given architecture, not the config's 32 x 50 steps
    assert tuned.n_train == 3 and len(result.path("samples").read_text().splitlines()) == 9
    rejects = pd.read_csv(result.path("training_rejects"))
    assert rejects["smiles"].tolist() == ["CCS"]          # S is not in the base generator's vocabulary
    assert torch.equal(tuned.model.node_marginals, base.model.node_marginals)


def test_a_missing_generator_is_refused_before_any_stage(tmp_path):
    with pytest.raises(ConfigError, match="generate.diffusion.init_from: 'nowhere.pt' is neither a shipped generator"):
        check_runnable(from_dict({"device": "cpu", "generate": {"diffusion": {"init_from": "nowhere.pt"}}}), tmp_path)
