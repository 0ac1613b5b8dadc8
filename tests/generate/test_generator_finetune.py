"""Fine-tuning a trained generator (the design loop's step) and its half-precision shard checkpoints."""
from __future__ import annotations

import pytest
import torch

from molgnn.data.shards import ShardError, read_shards, write_shards
from molgnn.generate.checkpoints import (CheckpointError, export_training_state, import_training_state,
                                         load_generator, save_generator)
from molgnn.generate.finetune import finetune_generator
from molgnn.generate.sampling import sample_smiles
from molgnn.generate.training import GeneratorTrainingError, train_generator

SMILES = ["CCO", "CCN", "CCC", "CC=O", "CCCO", "OCCO", "CC(C)O", "CCOC", "NCCO", "C1CC1", "CC#N", "COC=O"] * 4


@pytest.fixture(scope="module")
def diffusion():
    return train_generator("diffusion", SMILES, epochs=3, batch_size=16, lr=1e-3, seed=0, timesteps=10,
                           hidden_dim=16, n_layers=1, n_heads=2)


def test_finetune_starts_from_the_weights_and_keeps_the_noise_process(diffusion):
    before = {k: v.clone() for k, v in diffusion.model.state_dict().items()}
    tuned = finetune_generator(diffusion, ["OCCO"] * 8, replay=SMILES[:8], epochs=1, lr=1e-9, batch_size=8, seed=1)
    for k, v in tuned.model.state_dict().items():   # a vanishing lr: the weights it started from
        assert torch.allclose(v, before[k], atol=1e-5), k
    for k, v in diffusion.model.state_dict().items():   # the base is untouched
        assert torch.equal(v, before[k])
    # the marginals were not re-fitted to the small set (all O-C-C-O would change them)
    assert torch.equal(tuned.model.node_marginals, diffusion.model.node_marginals)
    moved = finetune_generator(diffusion, ["OCCO"] * 8, epochs=3, lr=1e-2, batch_size=8, seed=1)
    assert any(not torch.allclose(v, before[k]) for k, v in moved.model.state_dict().items()
               if v.dtype.is_floating_point)


def test_molecules_the_generator_cannot_hold_are_recorded(diffusion):
    tuned = finetune_generator(diffusion, ["CCS", "CCO", "CCCCCCCCCCCCC"], epochs=1, lr=1e-4, batch_size=4, seed=0)
    assert {s for s, _ in tuned.rejects} == {"CCS", "CCCCCCCCCCCCC"}
    assert tuned.n_train == 1
    with pytest.raises(GeneratorTrainingError, match="none of the 1 fine-tuning molecules"):
        finetune_generator(diffusion, ["CCS"], epochs=1, lr=1e-4, batch_size=4, seed=0)


def test_half_precision_shards_round_trip_and_refuse_damage(diffusion, tmp_path):
    folder = save_generator(diffusion, tmp_path / "gen", half=True, shards=True, max_bytes=4096)
    shards = sorted(folder.glob("shard_*.bin"))
    assert len(shards) > 1 and all(p.stat().st_size <= 4096 for p in shards)
    loaded = load_generator(folder)
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == diffusion.model.state_dict()[k].dtype
        assert torch.allclose(v.float(), diffusion.model.state_dict()[k].float(), atol=1e-2, rtol=1e-2)
    a = sample_smiles(diffusion, None, 32, seed=5)
    b = sample_smiles(loaded, None, 32, seed=5)
    assert sum(x == y for x, y in zip(a.smiles, b.smiles)) >= 28   # float16 weights: nearly the same draws
    good = shards[0].read_bytes()
    data = bytearray(good)
    data[100] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="shard_000.bin is damaged"):
        load_generator(folder)
    shards[0].write_bytes(good)
    shards[1].unlink()
    with pytest.raises(ShardError, match="missing"):
        read_shards(folder)


def test_write_shards_replaces_a_folder_whole(tmp_path):
    write_shards({"a": torch.arange(1000)}, tmp_path / "s", max_bytes=1000)
    n_before = len(list((tmp_path / "s").glob("shard_*")))
    write_shards({"a": torch.arange(10)}, tmp_path / "s", max_bytes=1000)
    assert torch.equal(read_shards(tmp_path / "s")["a"], torch.arange(10))
    assert len(list((tmp_path / "s").glob("shard_*"))) < n_before        # no stale pieces left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or trash left


def test_a_training_state_travels_as_shards_and_resumes(tmp_path):
    kwargs = dict(batch_size=16, lr=1e-3, seed=0, timesteps=10, hidden_dim=16, n_layers=1, n_heads=2)
    state = tmp_path / "state.pt"
    train_generator("diffusion", SMILES, epochs=1, state_path=state, **kwargs)
    export_training_state(state, tmp_path / "state_shards", half=True, max_bytes=8192)
    state.unlink()
    import_training_state(tmp_path / "state_shards", tmp_path / "elsewhere.pt")
    resumed = train_generator("diffusion", SMILES, epochs=2, state_path=tmp_path / "elsewhere.pt", **kwargs)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]   # epoch 1 came from the imported state


def test_fewer_reverse_steps(diffusion):
    model = diffusion.model
    a = sample_smiles(diffusion, None, 16, seed=2)
    b = sample_smiles(diffusion, None, 16, seed=2, steps=model.timesteps)   # all steps: the same draws
    assert a.smiles == b.smiles
    c = sample_smiles(diffusion, None, 16, seed=2, steps=3)
    assert len(c.smiles) == 16
    with pytest.raises(ValueError, match="sampling steps must be in 1..10"):
        sample_smiles(diffusion, None, 4, seed=0, steps=11)
    vae = train_generator("vae", SMILES, epochs=1, batch_size=16, lr=1e-3, seed=0, hidden_dim=16, latent_dim=4)
    with pytest.raises(ValueError, match="diffusion model"):
        sample_smiles(vae, None, 4, seed=0, steps=3)
