import math

import numpy as np
import pytest
import torch

from molgnn.featurize.dense_graph import GraphVocab, encode_many
from molgnn.generate.guidance import (
    GuidanceError,
    PropertyTarget,
    RegressorGuidance,
    evaluate_regressor,
    load_regressor,
    property_values,
    save_regressor,
    train_noisy_regressor,
)
from molgnn.generate.sampling import sample_graphs, sample_smiles
from molgnn.models.graph_diffusion import GraphDiffusion
from molgnn.models.graph_vae import GraphVAE

# Small molecules whose oxygen count (the toy property) ranges over 0..3.
SMILES = ["CCCC", "CCCO", "CCOC", "OCCO", "OCOC", "CC(O)O", "CCCCC", "OCC(O)CO", "CC=O", "O=CCO", "CCN",
          "NCCO", "C1CC1", "C1CO1", "OC1CC1O", "CC(C)C", "CC(C)O", "OCC(C)CO", "NC=O", "CCCN", "CC#N", "OC#N"]
N_MAX = 6
T = 12


@pytest.fixture(scope="module")
def data():
    vocab = GraphVocab.from_smiles(SMILES)
    x, e, kept, rejects = encode_many(SMILES, vocab, N_MAX)
    assert not rejects
    oxygen = vocab.node_class(("O", 0))
    labels = (x == oxygen).sum(1).float().numpy()
    torch.manual_seed(0)
    diffusion = GraphDiffusion(vocab.n_node_classes, vocab.n_edge_classes, N_MAX, timesteps=T, hidden_dim=16,
                               n_layers=1, n_heads=2)
    diffusion.set_data_statistics(x, e)
    return vocab, x, e, labels, diffusion, oxygen


@pytest.fixture(scope="module")
def trained(data):
    _, x, e, labels, diffusion, _ = data
    return train_noisy_regressor(diffusion, x, e, labels, properties=["n_oxygen"], epochs=60, batch_size=8,
                                 lr=3e-3, seed=0, hidden_dim=32, n_layers=2, n_heads=4)


def test_regressor_loss_decreases_and_fits_clean_graphs(data, trained):
    _, x, e, labels, diffusion, _ = data
    losses = [h["loss"] for h in trained.history]
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])   # per-epoch losses of 22 graphs are noisy
    clean = evaluate_regressor(trained.regressor, diffusion, x, e, labels, t=0)
    noisy = evaluate_regressor(trained.regressor, diffusion, x, e, labels, t=T)
    assert clean["r2"] > 0.8 and clean["mae"] < noisy["mae"]   # t = T carries no information
    assert torch.isclose(trained.regressor.label_mean, torch.tensor([labels.mean()])).all()


def test_regressor_training_is_deterministic(data):
    _, x, e, labels, diffusion, _ = data
    # one thread (tests/conftest.py): two CPU threads may split sums differently between runs
    a, b = (train_noisy_regressor(diffusion, x, e, labels, properties=["n_oxygen"], epochs=20, batch_size=8,
                                  lr=3e-3, seed=0, hidden_dim=32, n_layers=2, n_heads=4).regressor.state_dict()
            for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zero_scale_reproduces_unguided_sampling_exactly(data, trained):
    vocab, _, _, _, diffusion, _ = data
    plain = sample_graphs(diffusion, 40, seed=3, batch_size=16)
    zero = sample_graphs(diffusion, 40, seed=3, batch_size=16,
                         guidance=RegressorGuidance(trained.regressor, {"n_oxygen": (3, None)}, scale=0.0))
    assert torch.equal(plain[0], zero[0]) and torch.equal(plain[1], zero[1])
    guided = sample_graphs(diffusion, 40, seed=3, batch_size=16,
                           guidance=RegressorGuidance(trained.regressor, {"n_oxygen": (3, None)}, scale=5.0))
    assert not torch.equal(plain[0], guided[0])
    # sizes come first from the same uniforms: guidance changes atoms and bonds, not the atom count
    assert torch.equal(plain[0] > 0, guided[0] > 0)
    res = sample_smiles(diffusion, vocab, 8, seed=3,
                        guidance=RegressorGuidance(trained.regressor, {"n_oxygen": 2.0}, scale=1.0))
    assert len(res.smiles) == 8


def test_guidance_toward_a_high_target_shifts_the_property(data, trained):
    _, _, _, _, diffusion, oxygen = data
    n = 128
    guided = lambda target: sample_graphs(  # noqa: E731
        diffusion, n, seed=7, batch_size=n, guidance=RegressorGuidance(trained.regressor, {"n_oxygen": target}, scale=2.0))
    plain_x, plain_e = sample_graphs(diffusion, n, seed=7, batch_size=n)
    (high_x, high_e), (low_x, _) = guided((3, None)), guided((None, 0))
    count = lambda x: (x == oxygen).sum(1).float().mean().item()  # noqa: E731
    # measured on this toy: 2.10 (high) vs 1.41 (unguided) vs 1.21 (low) oxygens per graph
    assert count(high_x) > count(plain_x) + 0.4 and count(low_x) < count(plain_x)
    # the regressor agrees on the final (clean) graphs: |prediction - 0| is the predicted count
    reg = trained.regressor
    pred = lambda x, e: evaluate_regressor(reg, diffusion, x, e, np.zeros(n), t=0)["mae"]  # noqa: E731
    assert pred(high_x, high_e) > pred(plain_x, plain_e)


def test_regressor_checkpoint_round_trip(data, trained, tmp_path):
    _, x, e, labels, diffusion, _ = data
    path = save_regressor(trained, tmp_path / "reg.pt")
    loaded = load_regressor(path)
    assert loaded.properties == ("n_oxygen",) and len(loaded.history) == len(trained.history)
    assert evaluate_regressor(loaded.regressor, diffusion, x, e, labels, t=3) == \
        evaluate_regressor(trained.regressor, diffusion, x, e, labels, t=3)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GuidanceError, match="not a readable"):
        load_regressor(tmp_path / "junk.pt")
    with pytest.raises(GuidanceError, match="not found"):
        load_regressor(tmp_path / "missing.pt")


def test_property_values():
    from rdkit import Chem
    from rdkit.Chem import QED

    qed = property_values(["c1ccccc1O", None, "not-a-smiles"], "qed")
    assert qed[0] == pytest.approx(QED.qed(Chem.MolFromSmiles("c1ccccc1O"))) and np.isnan(qed[1:]).all()
    assert property_values(["CCO"], "mol_weight")[0] == pytest.approx(46.069, abs=1e-2)


def test_bad_inputs_raise_clear_errors(data, trained):
    vocab, x, e, labels, diffusion, _ = data
    with pytest.raises(GuidanceError, match="unknown property 'homo'"):
        property_values(["CCO"], "homo")
    with pytest.raises(GuidanceError, match="does not predict \\['qed'\\]"):
        RegressorGuidance(trained.regressor, {"qed": (0.5, None)}, scale=1.0)
    bad = labels.copy()
    bad[2] = np.nan
    with pytest.raises(GuidanceError, match="1 of 22 molecules have NaN"):
        train_noisy_regressor(diffusion, x, e, bad, properties=["n_oxygen"], epochs=1)
    with pytest.raises(GuidanceError, match="labels must be"):
        train_noisy_regressor(diffusion, x, e, labels[:5], properties=["n_oxygen"], epochs=1)
    with pytest.raises(GuidanceError, match="inverted"):
        PropertyTarget(0.8, 0.5)
    with pytest.raises(GuidanceError, match="inverted"):
        RegressorGuidance(trained.regressor, {"n_oxygen": (3, 1)}, scale=1.0)
    with pytest.raises(GuidanceError, match="NaN bound"):
        PropertyTarget(float("nan"), 1.0)
    with pytest.raises(GuidanceError, match="steers nowhere"):
        PropertyTarget()
    with pytest.raises(GuidanceError, match="scale"):
        RegressorGuidance(trained.regressor, {"n_oxygen": 2}, scale=-1.0)
    other = GraphDiffusion(vocab.n_node_classes, vocab.n_edge_classes, N_MAX, timesteps=T + 1, hidden_dim=16,
                           n_layers=1, n_heads=2)
    with pytest.raises(GuidanceError, match="does not match the diffusion model"):
        sample_graphs(other, 2, seed=0, guidance=RegressorGuidance(trained.regressor, {"n_oxygen": 2}, scale=1.0))
    vae = GraphVAE(vocab.n_node_classes, vocab.n_edge_classes, N_MAX, latent_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match="cannot be guided"):
        sample_graphs(vae, 2, seed=0, guidance=RegressorGuidance(trained.regressor, {"n_oxygen": 2}, scale=1.0))


def test_target_parsing_and_membership():
    assert PropertyTarget.parse((0.5, None)) == PropertyTarget(0.5, math.inf)
    assert PropertyTarget.parse({"high": 2}) == PropertyTarget(-math.inf, 2.0)
    assert PropertyTarget.parse(1.5) == PropertyTarget(1.5, 1.5)
    tg = PropertyTarget(0.5, 0.7)
    assert tg.contains(np.array([0.4, 0.5, 0.6, 0.7, np.nan])).tolist() == [False, True, True, True, False]
    d = tg.squared_distance(torch.tensor([0.3, 0.6, 1.0]))
    assert torch.allclose(d, torch.tensor([0.04, 0.0, 0.09]))
    assert tg.describe() == "in [0.5, 0.7]" and PropertyTarget(0.5).describe() == ">= 0.5"


def test_guided_sampling_for_the_pipeline():
    from molgnn.config import ConfigError, GuidanceConfig
    from molgnn.generate.guidance import guided_sampling
    from molgnn.generate.training import train_generator

    trained = train_generator("diffusion", SMILES, epochs=1, batch_size=8, lr=1e-3, seed=0, max_nodes=N_MAX,
                              timesteps=5, hidden_dim=16, n_layers=1, n_heads=2)
    unguided = sample_smiles(trained, None, 6, seed=0)
    guided, reg, metrics = guided_sampling(trained, SMILES, property="qed", low=0.4, high=None, scale=1.0,
                                           n_samples=6, seed=0, epochs=1, hidden_dim=16, n_layers=1,
                                           unguided=unguided)
    assert len(guided.smiles) == 6 and reg.properties == ("qed",)
    assert {"guided_validity", "unguided_qed_hit_rate", "guided_qed_hit_rate", "training_qed_hit_rate"} <= set(metrics)
    with pytest.raises(GuidanceError, match="unknown property"):
        guided_sampling(trained, SMILES, property="gap", low=0.4, high=None, scale=1.0, n_samples=2, seed=0, epochs=1)
    with pytest.raises(ConfigError, match=r"low = 0.8: expected at most high \(0.5\)"):
        GuidanceConfig(low=0.8, high=0.5)
    with pytest.raises(ConfigError, match="low and/or high"):
        GuidanceConfig(low=None, high=None)


def test_regressor_trunk_can_start_from_the_denoiser(data):
    from molgnn.generate.guidance import NoisyGraphRegressor, _copy_trunk

    _, x, e, labels, diffusion, _ = data
    reg = NoisyGraphRegressor(diffusion.n_x, diffusion.n_e, ["n_oxygen"], timesteps=T, hidden_dim=16, n_layers=1,
                              n_heads=2)
    assert _copy_trunk(diffusion.denoiser, reg) > 0
    assert torch.equal(reg.layers[0].q.weight, diffusion.denoiser.layers[0].q.weight)
    wide = NoisyGraphRegressor(diffusion.n_x, diffusion.n_e, ["n_oxygen"], timesteps=T, hidden_dim=32, n_layers=1)
    assert _copy_trunk(diffusion.denoiser, wide) == 0   # widths differ: nothing copied
    trained = train_noisy_regressor(diffusion, x, e, labels, properties=["n_oxygen"], epochs=1, batch_size=8,
                                    init_from_denoiser=True, t_exponent=2.0)
    assert trained.regressor.hparams["hidden_dim"] == 16   # defaults to the denoiser's width
    with pytest.raises(GuidanceError, match="t_exponent > 0"):
        train_noisy_regressor(diffusion, x, e, labels, properties=["n_oxygen"], epochs=1, t_exponent=0.0)


def test_separate_node_and_edge_strengths(data, trained):
    """node_scale / edge_scale default to scale; a zero side returns exact zeros, the other side the
    same log-weights as one shared strength."""
    from molgnn.generate.guidance import _noisy_batch

    _, x, e, _, diffusion, _ = data
    gen = torch.Generator().manual_seed(0)
    t = torch.full((x.shape[0],), T // 3, dtype=torch.long)
    xt, et, mask = _noisy_batch(diffusion, x.long(), e.long(), t, gen)
    make = lambda **kw: RegressorGuidance(trained.regressor, {"n_oxygen": (3, None)}, **kw)  # noqa: E731
    both = make(scale=2.0)
    assert (both.node_scale, both.edge_scale) == (2.0, 2.0)
    wx, we = both(xt, et, t, mask)
    assert wx.abs().sum() > 0 and we.abs().sum() > 0
    ax, ae = make(scale=2.0, edge_scale=0.0)(xt, et, t, mask)   # atom types only
    assert torch.equal(ax, wx) and torch.equal(ae, torch.zeros_like(et))
    bx, be = make(scale=0.0, edge_scale=2.0)(xt, et, t, mask)   # bonds only
    assert torch.equal(bx, torch.zeros_like(xt)) and torch.equal(be, we)
    mx, me = make(scale=5.0, node_scale=2.0, edge_scale=1.0)(xt, et, t, mask)
    assert torch.equal(mx, wx) and torch.allclose(me, we / 2)
    for bad in ({"edge_scale": -1.0}, {"node_scale": float("nan")}, {"edge_scale": True}):
        with pytest.raises(GuidanceError, match="scale must be"):
            make(scale=1.0, **bad)


def test_zero_edge_scale_leaves_bond_draws_unguided(data):
    """One reverse step (T = 1): bonds and atom types are drawn from posteriors of the same prior graph,
    so edge_scale 0 must give bit-identical bonds to the unguided draw (and node_scale 0 identical atoms)
    while the tilted side changes; over T steps, both scales 0 reproduce unguided sampling exactly."""
    vocab, x, e, _, diffusion, _ = data
    torch.manual_seed(1)
    one_step = GraphDiffusion(vocab.n_node_classes, vocab.n_edge_classes, N_MAX, timesteps=1, hidden_dim=16,
                              n_layers=1, n_heads=2)
    one_step.set_data_statistics(x, e)
    reg = _untrained_regressor(one_step)   # any non-zero gradient will do
    guide = lambda **kw: RegressorGuidance(reg, {"p": (50.0, None)}, **kw)  # noqa: E731
    draw = lambda g=None: sample_graphs(one_step, 64, seed=5, batch_size=64, guidance=g)  # noqa: E731
    plain_x, plain_e = draw()
    atoms_x, atoms_e = draw(guide(scale=20.0, edge_scale=0.0))
    bonds_x, bonds_e = draw(guide(scale=20.0, node_scale=0.0))
    assert torch.equal(atoms_e, plain_e) and not torch.equal(atoms_x, plain_x)
    assert torch.equal(bonds_x, plain_x) and not torch.equal(bonds_e, plain_e)

    none = sample_graphs(diffusion, 24, seed=3, batch_size=12)
    off = sample_graphs(diffusion, 24, seed=3, batch_size=12, guidance=RegressorGuidance(
        _untrained_regressor(diffusion), {"p": (50.0, None)}, scale=5.0, node_scale=0.0, edge_scale=0.0))
    assert torch.equal(none[0], off[0]) and torch.equal(none[1], off[1])


def _untrained_regressor(diffusion):
    from molgnn.generate.guidance import NoisyGraphRegressor

    torch.manual_seed(2)
    return NoisyGraphRegressor(diffusion.n_x, diffusion.n_e, ["p"], timesteps=diffusion.timesteps, hidden_dim=16,
                               n_layers=1, n_heads=2)
