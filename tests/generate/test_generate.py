from pathlib import Path

import pandas as pd
import pytest
import torch

from molgnn.config import DiffusionConfig, VAEConfig
from molgnn.generate.checkpoints import CheckpointError, load_generator, save_generator
from molgnn.generate.sampling import sample_smiles
from molgnn.generate.training import GeneratorTrainingError, train_generator, train_generator_from_config

TINY = ["CC(=O)O", "c1ccoc1", "C#N", "OCC1CC1", "[NH3+]CC([O-])=O", "CC1(C)CN1", "N#CC1=CC=CN1", "O=C1CC2OC12"]
BAD = ["CCCCCCCCCCCC", "not-a-smiles"]
SMALL = {
    "vae": dict(latent_dim=8, hidden_dim=32, n_layers=2),
    "diffusion": dict(timesteps=10, hidden_dim=32, n_layers=2),
}


def train(kind: str, seed: int = 0, epochs: int = 3):
    return train_generator(kind, TINY + BAD, epochs=epochs, batch_size=4, lr=1e-3, seed=seed, max_nodes=9,
                           **SMALL[kind])


@pytest.mark.parametrize("kind", ["vae", "diffusion"])
def test_training_records_rejects_history_and_is_deterministic(kind):
    a, b, c = train(kind), train(kind), train(kind, seed=1)
    assert [s for s, _ in a.rejects] == BAD
    assert "more than max_nodes=9" in a.rejects[0][1] and "parse" in a.rejects[1][1]
    assert a.n_train == len(TINY) and a.max_nodes == 9 and a.kind == kind
    assert [h["epoch"] for h in a.history] == [1.0, 2.0, 3.0] and all("loss" in h for h in a.history)
    untimed = lambda hist: [{k: v for k, v in h.items() if k not in ("seconds", "molecules_per_second", "elapsed")}  # noqa: E731
                            for h in hist]
    assert untimed(a.history) == untimed(b.history)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_max_nodes_defaults_to_the_largest_training_molecule():
    trained = train_generator("vae", ["CC", "CCO", "C1CC1C"], epochs=1, batch_size=2, lr=1e-3, seed=0,
                              **SMALL["vae"])
    assert trained.max_nodes == 4 and not trained.rejects


def test_bad_requests_raise_clear_errors():
    with pytest.raises(GeneratorTrainingError, match="unknown generator kind"):
        train_generator("gan", TINY, epochs=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(GeneratorTrainingError, match="none of the 1 training SMILES"):
        train_generator("vae", ["CCCCCCCCCCCC"], epochs=1, batch_size=2, lr=1e-3, seed=0, max_nodes=9,
                        vocab=train("vae", epochs=1).vocab)
    with pytest.raises(GeneratorTrainingError, match="needs a VAEConfig"):
        train_generator_from_config("vae", TINY, DiffusionConfig(), seed=0)


def test_train_from_config_uses_its_knobs():
    cfg = VAEConfig(epochs=2, batch_size=4, lr=1e-3, latent_dim=4, hidden_dim=16)
    trained = train_generator_from_config("vae", TINY, cfg, seed=0, max_nodes=9, n_layers=1)
    assert len(trained.history) == 2
    assert trained.hparams["latent_dim"] == 4 and trained.hparams["hidden_dim"] == 16
    cfg_d = DiffusionConfig(epochs=1, batch_size=4, timesteps=5, hidden_dim=16, n_layers=1)
    assert train_generator_from_config("diffusion", TINY, cfg_d, seed=0).hparams["timesteps"] == 5


@pytest.mark.parametrize("kind", ["vae", "diffusion"])
def test_sampling_and_checkpoint_round_trip(kind, tmp_path: Path):
    trained = train(kind)
    res = sample_smiles(trained, None, 12, seed=5, batch_size=5)
    assert len(res.smiles) == len(res.reasons) == len(res.corrected_smiles) == 12
    for smi, reason, fixed in zip(res.smiles, res.reasons, res.corrected_smiles):
        assert (smi is None) == (reason != "ok")
        if smi is not None:
            assert fixed == smi
    assert 0 <= res.validity <= res.validity_corrected <= 1 and res.molecules_per_second > 0
    batches = []
    again = sample_smiles(trained, None, 12, seed=5, batch_size=5, progress=batches.append)
    assert again.smiles == res.smiles and batches == [5, 5, 2]    # progress: graphs per finished batch

    path = save_generator(trained, tmp_path / "gen" / f"{kind}.pt")
    assert [p.name for p in path.parent.iterdir()] == [f"{kind}.pt"]   # no temporary file left behind
    loaded = load_generator(path)
    assert loaded.kind == kind and loaded.vocab == trained.vocab and loaded.hparams == trained.hparams
    assert loaded.history == trained.history
    again = sample_smiles(loaded, None, 12, seed=5, batch_size=5)
    assert again.smiles == res.smiles and again.corrected_smiles == res.corrected_smiles
    # A bare model needs the vocabulary passed in and gives the same draws.
    assert sample_smiles(loaded.model, loaded.vocab, 12, seed=5, batch_size=5).smiles == res.smiles


def test_load_rejects_non_checkpoints(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_generator(junk)
    other = tmp_path / "other.pt"
    torch.save({"kind": "vae"}, other)
    with pytest.raises(CheckpointError, match="not a molgnn generator"):
        load_generator(other)


def _qm9_smiles(n: int) -> list[str]:
    sample = Path(__file__).resolve().parents[2] / "molgnn" / "resources" / "qm9_sample.csv.gz"
    if not sample.exists():
        pytest.skip(f"{sample} not present")
    return pd.read_csv(sample, usecols=["SMILES"])["SMILES"].sample(n, random_state=0).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("kind,settings", [
    ("vae", dict(epochs=150, batch_size=32, lr=1e-3, latent_dim=32, hidden_dim=128)),
    ("diffusion", dict(epochs=120, batch_size=32, lr=1e-3, timesteps=100, hidden_dim=64, n_layers=3)),
])
def test_quality_smoke_on_qm9_sample(kind, settings):
    """About a minute of CPU training on 300 QM9 molecules; prints validity/uniqueness/novelty."""
    smiles = _qm9_smiles(300)
    trained = train_generator(kind, smiles, seed=0, max_nodes=9, **settings)
    res = sample_smiles(trained, None, 500, seed=1)
    valid = {s for s in res.smiles if s is not None}
    novelty = len(valid - {s for s in smiles}) / max(len(valid), 1)
    print(f"\n{kind}: train {trained.train_seconds:.0f}s, {res.metrics()}, novelty {novelty:.3f}")
    # Loose floors: far above what an untrained model reaches (~0.1), far below what training gives.
    assert res.validity > 0.4 and res.validity_corrected > 0.6 and res.uniqueness > 0.5


def test_cpu_sampling_keeps_freed_memory_where_glibc_allows():
    import platform

    from molgnn.generate.cpu_allocator import retain_freed_memory

    assert retain_freed_memory() is retain_freed_memory()        # set once per process
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert retain_freed_memory() is True
