"""The pretraining stage starts from the encoder shipped with molgnn (``pretrain.init_from``)."""
import json

import torch

from molgnn.config import from_dict
from molgnn.data.shipped_encoders import ENCODERS_DIR, encoder_card, resolve_encoder
from molgnn.stages.common import RunContext
from molgnn.stages.pretrain import run_pretrain
from molgnn.train.checkpoints import load_checkpoint


def test_shipped_encoder_card_matches_its_weights_and_the_default_model():
    card = encoder_card("druglike-v1")
    ckpt = load_checkpoint(resolve_encoder("druglike-v1"))   # md5 checked against the card
    defaults = from_dict({}).model
    assert ckpt["kind"] == "pretrain" and ckpt["config"]["model"] == card["model"] == {
        "n_atom_basis": defaults.n_atom_basis, "n_interactions": defaults.n_interactions,
        "n_rbf": defaults.n_rbf, "cutoff": defaults.cutoff}
    assert {"corpus", "command", "commit", "machine", "held_out"} <= set(card)
    assert card["corpus"]["molecules"] > 10_000 and len(ckpt["history"]) == card["epochs"]


def test_pretrain_stage_continues_the_shipped_encoder(tmp_path, embed_structures):
    structures = embed_structures(("CCO", "c1ccncc1", "CC(=O)N", "CCS"))
    path = tmp_path / "structures.parquet"
    structures.to_parquet(path)
    # lr ~ 0 keeps the weights where they started, so "started from the shipped encoder" is checkable
    params = from_dict({"device": "cpu", "pretrain": {"epochs": 1, "batch_size": 4, "lr": 1e-30}})
    res = run_pretrain(RunContext(params=params, root=tmp_path, store_dir=tmp_path / "store"), path)
    shipped = load_checkpoint(resolve_encoder("druglike-v1"))
    got = load_checkpoint(res.path("checkpoint"))
    for k, v in shipped["state_dict"].items():
        if k.startswith("encoder."):
            torch.testing.assert_close(got["state_dict"][k], v, msg=k)
    assert res.info["init_from"] == "druglike-v1" and res.info["epochs_before"] == len(shipped["history"])
    history = json.loads(res.path("history").read_text())
    assert len(history) == len(shipped["history"]) + 1
    # another start is another cache key; so is another shipped file content (the key hashes the bytes)
    scratch = from_dict({"device": "cpu", "pretrain": {"epochs": 1, "batch_size": 4, "lr": 1e-30, "init_from": None}})
    other = run_pretrain(RunContext(params=scratch, root=tmp_path, store_dir=tmp_path / "store"), path)
    assert other.key != res.key and other.info["epochs_before"] == 0
    assert (ENCODERS_DIR / "druglike-v1.pt").is_file()
