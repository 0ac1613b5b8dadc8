"""Per-atom 2D features for 3D structures: paired with the atoms by the SMILES order, carried by
every kind of batch, zero where the atoms cannot be paired."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.chem.atom_order import smiles_order
from molgnn.featurize.atom_features import atom_feature_rows, structure_atom_features
from molgnn.featurize.atomistic import (ATOM_FEATURES, AtomisticDataset, DeviceBatcher, StructureTableError,
                                        make_batch, pad_batch)
from molgnn.featurize.graph2d import get_featurizer

NAME = "atom-bond-v1"


def test_heavy_atoms_get_the_2d_tiers_features_and_hydrogens_their_own(embed_structures):
    table = embed_structures(["CC(=O)N", "c1ccncc1"])
    for smi, z in zip(table["smiles"], table["atomic_numbers"]):
        rows = atom_feature_rows(smi, z, NAME)
        graph = get_featurizer(NAME)(smi)
        n_heavy = graph.x.shape[0]
        assert rows.shape == (len(z), graph.x.shape[1])
        np.testing.assert_array_equal(rows[:n_heavy], graph.x.numpy())   # hydrogens counted, not listed
        h_slot = get_featurizer(NAME).elements.index(1)
        assert (rows[n_heavy:, h_slot] == 1).all() and (rows[:n_heavy, h_slot] == 0).all()
    # pyridine's aromatic nitrogen and acetamide's amide nitrogen differ only beyond the element
    amide_n = atom_feature_rows("CC(=O)N", table["atomic_numbers"][0], NAME)[3]
    pyridine_n = atom_feature_rows("c1ccncc1", table["atomic_numbers"][1], NAME)[3]
    assert not np.array_equal(amide_n, pyridine_n)


def test_atoms_out_of_the_smiles_order_get_zero_rows_and_are_counted(embed_structures):
    table = embed_structures(["CCO", "CN"])
    swapped = list(table["atomic_numbers"][0])
    swapped[1], swapped[2] = swapped[2], swapped[1]                   # C, O, C: not CCO's order
    assert atom_feature_rows("CCO", swapped, NAME) is None
    rows, found = structure_atom_features(["CCO", "CN"], [swapped, table["atomic_numbers"][1]], NAME)
    assert found.tolist() == [False, True]
    assert not rows[:9].any() and rows[9:].any()
    ds = AtomisticDataset.from_frames(table.assign(atomic_numbers=[swapped, table["atomic_numbers"][1]]),
                                      atom_features=NAME)
    assert ds.atom_features_missing == 1 and ds.atom_features.shape[0] == int(ds.ptr[-1])


def test_smiles_order_recovers_a_shuffled_geometry(embed_structures):
    table = embed_structures(["OC(=O)c1ccccc1N"])
    z = np.asarray(table["atomic_numbers"][0])
    xyz = np.asarray(table["positions"][0]).reshape(-1, 3)
    perm = np.random.default_rng(0).permutation(len(z))
    back = smiles_order("OC(=O)c1ccccc1N", z[perm], xyz[perm])
    np.testing.assert_array_equal(z[perm][back], z)
    np.testing.assert_allclose(xyz[perm][back][:10], xyz[:10])       # heavy atoms exactly where they were
    assert smiles_order("OC(=O)c1ccccc1O", z[perm], xyz[perm]) is None  # another molecule's atoms


def test_every_batch_carries_them_and_padding_adds_zero_rows(embed_structures):
    table = embed_structures(["CCO", "c1ccncc1", "CC#N"])
    ds = AtomisticDataset.from_frames(table, atom_features=NAME)
    b = make_batch(ds, [2, 0], cutoff=5.0)
    assert b[ATOM_FEATURES].shape == (b["_atomic_numbers"].shape[0], ds.atom_features.shape[1])
    np.testing.assert_array_equal(b[ATOM_FEATURES][:6].numpy(), ds.atom_features[20:26].numpy())  # CC#N first
    d = next(DeviceBatcher(ds, 5.0).batches([2, 0], batch_size=2))
    assert torch.equal(d[ATOM_FEATURES], b[ATOM_FEATURES])
    n = b[ATOM_FEATURES].shape[0]
    padded = pad_batch(d, atoms=n + 6, pairs=d["_idx_i"].shape[0] + 4, molecules=3, cutoff=5.0)
    assert padded[ATOM_FEATURES].shape[0] == n + 6 and not padded[ATOM_FEATURES][n:].any()


def test_a_table_without_smiles_is_refused_for_atom_features(embed_structures):
    table = embed_structures(["CCO"]).drop(columns=["smiles"])
    with pytest.raises(StructureTableError, match="no 'smiles' column"):
        AtomisticDataset.from_frames(table, atom_features=NAME)
    assert AtomisticDataset.from_frames(table).atom_features is None
