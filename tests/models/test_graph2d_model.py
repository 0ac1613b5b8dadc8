"""The 2D screening model: exact atom-bond-v1 features, batching, training, checkpoints, ensemble."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molgnn.featurize.graph2d import get_featurizer
from molgnn.models import graph2d_model as g2

SMILES = ["CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "C/C=C/C", "[NH4+]", "C[C@H](N)C(=O)O", "[13CH4]",
          "O=S(=O)(O)c1ccc(Br)cc1", "C"]


def test_fast_featurizer_matches_atom_bond_v1_exactly():
    store, failed = g2.featurize_many(SMILES + ["not a smiles"])
    assert failed == [len(SMILES)]
    feat = get_featurizer("atom-bond-v1")
    for k, smi in enumerate(SMILES):
        ref = feat(smi)
        a, b = int(store["node_ptr"][k]), int(store["node_ptr"][k + 1])
        e0, e1 = int(store["edge_ptr"][k]), int(store["edge_ptr"][k + 1])
        assert torch.equal(store["x"][a:b], ref.x)
        assert torch.equal(store["edge_index"][:, e0:e1] - a, ref.edge_index)
        assert torch.equal(store["edge_attr"][e0:e1], ref.edge_attr)


def test_parallel_featurization_and_selection_agree_with_serial():
    serial, _ = g2.featurize_many(SMILES)
    par, failed = g2.featurize_parallel(SMILES + ["xx"] + SMILES, workers=2, chunk=5)
    assert failed == [len(SMILES)]
    sub = g2.select_graphs(par, torch.arange(len(SMILES)))
    for key in serial:
        assert torch.equal(sub[key], serial[key]), key
    again = g2.select_graphs(par, torch.arange(len(SMILES), 2 * len(SMILES)))
    assert torch.equal(again["edge_index"], serial["edge_index"])


def test_prediction_is_independent_of_batching_and_order():
    store, _ = g2.featurize_many(SMILES)
    torch.manual_seed(0)
    model = g2.Graph2DModel(g2.Graph2DConfig(["gap"], store["x"].shape[1], store["edge_attr"].shape[1]))
    full = g2.predict_store(model, store, batch_size=1000)
    small = g2.predict_store(model, store, batch_size=3)
    torch.testing.assert_close(full, small)
    perm = torch.tensor([3, 0, 10, 5])
    torch.testing.assert_close(g2.predict_store(model, g2.select_graphs(store, perm)), full[perm])


def test_training_fits_a_simple_graph_property_and_checkpoint_round_trips(tmp_path):
    smiles = ["C" * n for n in range(1, 9)] + ["C" * n + "O" for n in range(1, 9)] + ["c1ccccc1" + "C" * n for n in range(6)]
    store, _ = g2.featurize_many(smiles)
    y = torch.tensor([[float(s.count("C") + s.count("c"))] for s in smiles])  # carbon count
    y[0, 0] = float("nan")  # masked entry
    models = []
    for seed in (0, 1):
        m, hist = g2.train_graph2d(store, y, ["n_c"], val_store=store, val_y=y, seed=seed, epochs=80,
                                   batch_size=8, lr=3e-3, hidden=32, layers=2)
        assert hist[-1]["train_loss"] < hist[0]["train_loss"]
        models.append(m)
    ckpt = g2.checkpoint_from_models(models)
    torch.save(ckpt, tmp_path / "m.pt")
    loaded = g2.models_from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True))
    mean, std = g2.predict_ensemble_2d(loaded, store)
    ref_mean, _ = g2.predict_ensemble_2d(models, store)
    torch.testing.assert_close(mean, ref_mean)
    assert (std >= 0).all() and float(std.max()) > 0
    assert float((mean[1:] - y[1:]).abs().mean()) < 1.0
    with pytest.raises(ValueError, match="not a 2D screening model"):
        g2.models_from_checkpoint({"kind": "property"})


def test_own_gine_layer_equals_torch_geometric_and_indexed_prediction_equals_dense():
    from torch_geometric.nn import GINEConv

    store, _ = g2.featurize_many(SMILES)
    torch.manual_seed(0)
    model = g2.Graph2DModel(g2.Graph2DConfig(["gap"], store["x"].shape[1], store["edge_attr"].shape[1], hidden=16))
    conv = model.convs[0]
    pyg = GINEConv(conv.nn, edge_dim=store["edge_attr"].shape[1])
    pyg.load_state_dict(conv.state_dict())      # same parameter names: older checkpoints load
    h = model.embed(store["x"])
    torch.testing.assert_close(conv(h, store["edge_index"], conv.lin(store["edge_attr"])),
                               pyg(h, store["edge_index"], store["edge_attr"]))
    ind, _ = g2.featurize_indexed(SMILES)
    dense = g2.predict_store(model, store)
    torch.testing.assert_close(g2.predict_store(model, ind), dense)
    torch.testing.assert_close(g2.predict_store(model, ind, batch_size=4), dense)


def test_classification_target_trains_to_probabilities():
    smiles = ["C" * n for n in range(1, 9)] + ["C" * n + "O" for n in range(1, 9)]
    store, _ = g2.featurize_many(smiles)
    y = torch.tensor([[float("O" in s), len(s)] for s in smiles])   # has oxygen (0/1), length
    m, hist = g2.train_graph2d(store, y, ["has_o", "length"], val_store=store, val_y=y, epochs=60,
                               batch_size=8, lr=5e-3, hidden=16, layers=2,
                               task_types=["classification", "regression"])
    p = g2.predict_store(m, store)
    assert ((p[:, 0] >= 0) & (p[:, 0] <= 1)).all()
    assert float(((p[:, 0] > 0.5).float() == y[:, 0]).float().mean()) == 1.0
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    again = g2.models_from_checkpoint(g2.checkpoint_from_models([m]))[0]
    torch.testing.assert_close(g2.predict_store(again, store), p)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        g2.train_graph2d(store, y * 2, ["has_o", "length"], epochs=1, task_types=["classification", "regression"])
