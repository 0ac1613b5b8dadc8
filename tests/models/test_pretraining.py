"""Self-supervised objectives and the pretraining loop."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ModelConfig, PretrainConfig
from molgnn.featurize.atomistic import AtomisticDataset, make_batch
from molgnn.models.painn_encoder import MASK_TOKEN
from molgnn.models.pretraining import PretrainingModel, corrupt, pretraining_loss
from molgnn.train.checkpoints import model_from_checkpoint
from molgnn.train.pretrain import pretrain

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)
SMILES = ("CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "CCOC")


@pytest.fixture(scope="module")
def data(embed_structures):
    df = embed_structures(SMILES)
    ds = AtomisticDataset.from_frames(df)
    return df, ds, make_batch(ds, range(len(ds)), cutoff=CFG.cutoff)


def test_corruption(data):
    _, _, batch = data
    original = {k: v.clone() for k, v in batch.items()}
    c = corrupt(batch, noise_std=0.1, mask_rate=0.15, cutoff=CFG.cutoff, generator=torch.Generator().manual_seed(0))
    for k, v in original.items():  # the input batch is left untouched
        assert torch.equal(batch[k], v)
    idx_m, n_mol = batch["_idx_m"], batch["_n_atoms"].numel()
    per_mol_mean = torch.zeros(n_mol, 3).index_add_(0, idx_m, c.noise)
    assert per_mol_mean.abs().max() < 1e-5  # zero-mean noise: a common shift is unlearnable
    assert 0.05 < float(c.noise.std()) < 0.15
    torch.testing.assert_close(c.batch["_positions"], batch["_positions"] + c.noise)
    assert torch.all(torch.zeros(n_mol, dtype=torch.long).index_add_(0, idx_m, c.mask.long()) >= 1)
    assert torch.all(c.batch["_atomic_numbers"][c.mask] == MASK_TOKEN)
    assert torch.equal(c.batch["_atomic_numbers"][~c.mask], batch["_atomic_numbers"][~c.mask])
    assert torch.equal(c.batch["_Rij"], c.batch["_positions"][c.batch["_idx_j"]] - c.batch["_positions"][c.batch["_idx_i"]])


def test_overfits_one_fixed_corruption(data):
    """Same corruption every step: both heads can memorise it, so the loss must collapse."""
    _, ds, batch = data
    torch.manual_seed(0)
    model = PretrainingModel(CFG, torch.unique(ds.z).tolist())
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def step():
        out = pretraining_loss(model, batch, noise_std=0.1, mask_rate=0.3, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        return out

    first = step()
    for _ in range(150):
        last = step()
    assert float(last.loss.detach()) < float(first.loss.detach()) / 20
    assert float(last.mask_accuracy) == 1.0 and float(last.denoise_loss) < float(first.denoise_loss) / 10


def test_loss_rejects_bad_settings_and_unknown_elements(data):
    _, _, batch = data
    model = PretrainingModel(CFG, [1, 6])  # no N, O, F classes
    with pytest.raises(ValueError, match="noise_std > 0"):
        pretraining_loss(model, batch, noise_std=0.0, mask_rate=0.15)
    with pytest.raises(ValueError, match="mask_rate"):
        pretraining_loss(model, batch, noise_std=0.1, mask_rate=0.0)
    with pytest.raises(ValueError, match="not in the pretraining vocabulary"):
        pretraining_loss(model, batch, noise_std=0.1, mask_rate=1.0)


def test_pretrain_is_deterministic_and_reports_history(data):
    df, _, _ = data
    cfg = PretrainConfig(epochs=2, batch_size=4, lr=1e-3, max_molecules=5)
    logged = []
    a = pretrain(df, CFG, cfg, seed=3, log_fn=lambda m, s: logged.append((s, m)))
    b = pretrain(df, CFG, cfg, seed=3)
    c = pretrain(df, CFG, cfg, seed=4)
    for k, v in a.checkpoint["state_dict"].items():
        assert torch.equal(v, b.checkpoint["state_dict"][k])
    assert any(not torch.equal(v, c.checkpoint["state_dict"][k]) for k, v in a.checkpoint["state_dict"].items())
    assert [h["epoch"] for h in a.history] == [1, 2]
    assert set(a.history[0]) == {"epoch", "loss", "denoise_loss", "mask_loss", "mask_accuracy", "eht_loss", "seconds",
                                 "lr", "molecules_per_second"}
    assert [s for s, _ in logged] == [1, 2] and "pretrain/mask_accuracy" in logged[0][1]
    assert a.checkpoint["kind"] == "pretrain" and a.checkpoint["n_molecules"] == 5
    assert a.checkpoint["element_vocab"] == [1, 6, 7, 8, 9]
    rebuilt = model_from_checkpoint(a.checkpoint)
    assert isinstance(rebuilt, PretrainingModel) and rebuilt.elements == [1, 6, 7, 8, 9]


def test_pretraining_continues_from_a_checkpoint_with_a_cosine_lr(data):
    from molgnn.models.property_model import CheckpointMismatchError

    structures = data[0]
    cfg = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=4.0)
    first = pretrain(structures, cfg, PretrainConfig(epochs=2, batch_size=4), seed=0).checkpoint
    more = pretrain(structures, cfg, PretrainConfig(epochs=50, batch_size=4, lr=1e-3), seed=1, init_from=first,
                    max_seconds=0.5, cosine_lr=True)
    assert [h["epoch"] for h in more.history[:3]] == [1, 2, 3]  # earlier epochs kept in front
    assert more.history[2]["lr"] > more.history[-1]["lr"]  # decayed over the 0.5 s
    assert more.history[-1]["lr"] < 1e-3 * 0.5
    # the continued run starts from the checkpoint's weights, not a fresh init (an lr of 1e-30, below
    # float32 resolution, keeps them; the config wants lr > 0)
    kept = pretrain(structures, cfg, PretrainConfig(epochs=1, batch_size=4, lr=1e-30), seed=1, init_from=first)
    for k, v in first["state_dict"].items():
        torch.testing.assert_close(kept.checkpoint["state_dict"][k], v, msg=k)
    with pytest.raises(CheckpointMismatchError, match="pretrained with"):
        pretrain(structures, ModelConfig(n_atom_basis=16, n_interactions=1, n_rbf=6, cutoff=4.0),
                 PretrainConfig(epochs=1, batch_size=4), seed=0, init_from=first)
    with pytest.raises(ValueError, match="needs max_seconds"):
        pretrain(structures, cfg, PretrainConfig(epochs=1, batch_size=4), seed=0, cosine_lr=True)


def test_continuing_on_data_with_a_new_element_grows_the_vocabulary(embed_structures):
    cfg = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=4.0)
    first = pretrain(embed_structures(("CCO", "CCN")), cfg, PretrainConfig(epochs=1, batch_size=2), seed=0).checkpoint
    assert first["element_vocab"] == [1, 6, 7, 8]
    # sulfur is new: its classifier row starts fresh, every other weight is the checkpoint's (lr ~ 0)
    more = pretrain(embed_structures(("CCS", "CCO")), cfg, PretrainConfig(epochs=1, batch_size=2, lr=1e-30),
                    seed=1, init_from=first).checkpoint
    assert more["element_vocab"] == [1, 6, 7, 8, 16]
    for k, v in first["state_dict"].items():
        got = more["state_dict"][k]
        if got.shape != v.shape:   # the type head's last layer: rows of the old elements are copied over
            got = got[[0, 1, 2, 3]]
        torch.testing.assert_close(got, v, msg=k)
    # a wider vocabulary given up front keeps the checkpoint's shape on data with fewer elements
    wide = pretrain(embed_structures(("CCO",)), cfg, PretrainConfig(epochs=1, batch_size=2), seed=0,
                    elements=(1, 6, 7, 8, 16)).checkpoint
    assert wide["element_vocab"] == [1, 6, 7, 8, 16]


def test_pretraining_cosine_schedule_over_the_configured_epochs(data):
    from molgnn.config import ConfigError

    cfg = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=4.0)
    res = pretrain(data[0], cfg, PretrainConfig(epochs=4, batch_size=2, lr=1e-3, lr_schedule="cosine"), seed=0)
    lrs = [h["lr"] for h in res.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-3
    assert lrs[-1] == pytest.approx(1e-3 * 0.01, rel=0.05)  # the last step ends the decay
    flat = pretrain(data[0], cfg, PretrainConfig(epochs=2, batch_size=2, lr=1e-3), seed=0)
    assert [h["lr"] for h in flat.history] == [1e-3, 1e-3]
    with pytest.raises(ConfigError, match="lr_schedule"):
        PretrainConfig(lr_schedule="linear")


def test_eht_head_ignores_missing_targets_and_learns(data):  # its invariance: test_painn_encoder.py
    from molgnn.chem.eht import EHT_TARGETS

    _, ds, batch = data
    torch.manual_seed(0)
    model = PretrainingModel(CFG, torch.unique(ds.z).tolist(), {"mean": [-13.0, -5.0, 8.0], "std": [0.5, 4.0, 4.0]})
    targets = torch.tensor([[-13.0 + k * 0.3, -5.0 + k, 8.0 - k * 0.7] for k in range(len(ds))])
    targets[1] = float("nan")  # a molecule EHT rejected: trains the other objectives only
    labelled = dict(batch, **{t: targets[:, k] for k, t in enumerate(EHT_TARGETS)})
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(150):
        out = pretraining_loss(model, labelled, noise_std=0.1, mask_rate=0.15, eht_weight=1.0,
                               generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.loss) and int(out.n_eht) == len(ds) - 1
        first = float(out.eht_loss) if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.eht_loss) < first / 20
    with pytest.raises(ValueError, match="eht_weight > 0 needs"):
        pretraining_loss(model, batch, noise_std=0.1, mask_rate=0.15, eht_weight=1.0)
    with pytest.raises(ValueError, match="eht_weight > 0 needs"):
        pretraining_loss(PretrainingModel(CFG, model.elements), labelled, noise_std=0.1, mask_rate=0.15, eht_weight=1.0)
    with pytest.raises(ValueError, match="positive stds"):
        PretrainingModel(CFG, model.elements, {"mean": [0.0, 0.0, 0.0], "std": [1.0, 0.0, 1.0]})


def test_pretraining_with_eht_targets_records_them_and_continues_a_plain_checkpoint(data):
    from molgnn.config import ConfigError
    from molgnn.models.property_model import CheckpointMismatchError

    cfg = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=4.0)
    structures = pd.concat([data[0], pd.DataFrame([{  # CH3 radical: EHT rejects it, pretraining keeps it
        "mol_id": "methyl", "atomic_numbers": [6, 1, 1, 1],
        "positions": [0.0, 0.0, 0.0, 1.08, 0.0, 0.0, -0.54, 0.935, 0.0, -0.54, -0.935, 0.0]}])], ignore_index=True)
    plain = pretrain(structures, cfg, PretrainConfig(epochs=1, batch_size=4, eht_weight=0.0), seed=0).checkpoint
    res = pretrain(structures, cfg, PretrainConfig(epochs=2, batch_size=4, eht_weight=1.0), seed=0, init_from=plain)
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and "eht_loss" in res.history[-1]
    assert np.isfinite(res.history[-1]["eht_loss"])
    info = res.checkpoint["eht"]
    assert info["source"] == "computed" and info["n_molecules"] == 7 and info["n_without_targets"] == 1
    (reason, detail), = info["reasons"].items()
    assert "odd electron count" in reason and detail == {"count": 1, "examples": ["methyl"]}
    stats = res.checkpoint["config"]["eht_stats"]
    assert len(stats["mean"]) == 3 and all(s > 0 for s in stats["std"])
    rebuilt = model_from_checkpoint(res.checkpoint)
    assert rebuilt.eht_head is not None
    # warm start: the shared weights come from the plain checkpoint (an lr of 1e-30 keeps them), the head is new
    kept = pretrain(structures, cfg, PretrainConfig(epochs=1, batch_size=4, lr=1e-30, eht_weight=1.0), seed=1,
                    init_from=plain).checkpoint
    assert set(kept["state_dict"]) - set(plain["state_dict"]) == {k for k in kept["state_dict"] if k.startswith("eht_head.")}
    for k, v in plain["state_dict"].items():
        torch.testing.assert_close(kept["state_dict"][k], v, msg=k)
    # a checkpoint with the EHT head cannot continue without it (weights would be dropped silently)
    with pytest.raises(CheckpointMismatchError, match="do not fit"):
        pretrain(structures, cfg, PretrainConfig(epochs=1, batch_size=4, eht_weight=0.0), seed=0,
                 init_from=res.checkpoint)
    with pytest.raises(ConfigError, match="eht_weight"):
        PretrainConfig(eht_weight=-1.0)


def test_eht_targets_use_the_structures_net_charge(embed_structures):
    structures = embed_structures(["C[N+](C)(C)C", "CCO"])
    cfg = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=4.0)
    pcfg = PretrainConfig(epochs=1, batch_size=4, eht_weight=1.0)
    as_neutral = pretrain(structures, cfg, pcfg, seed=0).checkpoint["eht"]  # no charge column: all neutral
    assert as_neutral["n_without_targets"] == 1 and "C[N+](C)(C)C" in str(as_neutral["reasons"])
    charged = pretrain(structures.assign(total_charge=[1, 0]), cfg, pcfg, seed=0).checkpoint["eht"]
    assert charged["n_without_targets"] == 0
    with pytest.raises(ValueError, match="no targets for any structure"):
        pretrain(structures.iloc[:1], cfg, pcfg, seed=0)
