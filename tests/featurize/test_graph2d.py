import pytest
import torch

from molgnn.featurize.graph2d import FeaturizerError, get_featurizer
from molgnn.featurize.graph_store import featurize_graphs, load_graphs, save_graphs


def test_featurizer_shapes_and_symmetric_edges():
    f = get_featurizer("atom-bond-v1")
    g = f("CC(=O)O")
    assert g.x.shape == (4, f.atom_dim)
    assert g.edge_index.shape == (2, 6) and g.edge_attr.shape == (6, f.bond_dim)
    pairs = {tuple(e) for e in g.edge_index.t().tolist()}
    assert all((j, i) in pairs for i, j in pairs)
    # each atom's element block is one-hot
    assert torch.all(g.x[:, : len(f.elements) + 1].sum(1) == 1)


def test_unseen_element_goes_to_other_slot_and_bad_smiles_raise():
    f = get_featurizer("atom-bond-v1")
    g = f("[Te]")
    assert g.x[0, len(f.elements)] == 1
    with pytest.raises(FeaturizerError, match="cannot parse"):
        f("C1CC")
    with pytest.raises(FeaturizerError, match="unknown featurizer"):
        get_featurizer("atom-bond-v9")


def test_store_round_trip_records_failures(tmp_path):
    smiles = ["CCO", "not-a-smiles", "c1ccccc1"]
    store, rejects = featurize_graphs(smiles, ["a", "b", "c"], "atom-bond-v1")
    assert [i for i, _ in rejects] == [1]
    save_graphs(store, tmp_path / "g.pt")
    name, graphs = load_graphs(tmp_path / "g.pt")
    assert name == "atom-bond-v1"
    assert [g.mol_id for g in graphs] == ["a", "c"]
    f = get_featurizer(name)
    assert torch.equal(graphs[1].x, f("c1ccccc1").x)
    assert torch.equal(graphs[1].edge_index, f("c1ccccc1").edge_index)


def test_saved_store_bytes_are_reproducible(tmp_path):
    """Equal graphs give equal files, so the DVC md5 of data/ only moves when the data does."""
    store, _ = featurize_graphs(["CCO", "c1ccccc1"], ["a", "b"], "atom-bond-v1")
    save_graphs(store, tmp_path / "one.pt")
    save_graphs(store, tmp_path / "two.pt")
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
