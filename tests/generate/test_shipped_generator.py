"""The drug-like generator that ships inside the package (``molgnn generate --model moses``): its card
describes the weights it sits beside, damaged weights are refused, and it samples on a fresh checkout
before any run."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from molgnn.cli import main
from molgnn.config import check_runnable, from_dict
from molgnn.data.shards import read_manifest
from molgnn.data.shipped_generators import GENERATORS_DIR, generator_card, resolve_generator, shipped_generators
from molgnn.generate.checkpoints import CheckpointError, load_generator


def test_the_moses_card_describes_the_weights_beside_it():
    assert "moses" in shipped_generators()
    card = generator_card("moses")
    trained = load_generator(resolve_generator("moses"))        # every shard's SHA-256 checked
    assert trained.hparams == card["hparams"]
    assert [t for t, _charge in trained.vocab.atom_tokens] == card["vocabulary"]
    assert sum(p.numel() for p in trained.model.parameters()) == card["parameters"]
    assert card["sample_steps"] in {s["steps"] for s in card["scores"]}     # its default was measured
    assert all(f.stat().st_size < 16 * 2**20 for f in (GENERATORS_DIR / "moses").iterdir())


def test_a_damaged_shard_is_refused(tmp_path):
    folder = tmp_path / "moses"
    shutil.copytree(GENERATORS_DIR / "moses", folder)
    shard = folder / read_manifest(folder)["shards"][-1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged.*SHA-256 differs"):
        load_generator(folder)


def test_generate_with_the_shipped_model_works_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                                  # no runs/, no params.yaml
    assert main(["generate", "--model", "moses", "-n", "6", "--steps", "3", "--out", "gen.csv"]) == 0
    table = pd.read_csv(tmp_path / "gen.csv")
    assert len(table) == 6 and set(table["generator"]) == {"moses"}
    assert table["valid"].dtype == bool
    assert (table["smiles"].notna() == table["valid"]).all()
    assert "6 samples from" in capsys.readouterr().out


def test_the_pipeline_accepts_the_shipped_generator_as_its_start(tmp_path):
    params = from_dict({"device": "cpu", "generate": {"diffusion": {"init_from": "moses"}}})
    check_runnable(params, tmp_path)                             # no ConfigError: it exists and loads
