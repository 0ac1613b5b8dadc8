"""Conformers: geometry sanity, determinism, force-field fallback, and bounded time."""
from __future__ import annotations

import time

import numpy as np
import pytest
from rdkit import Chem

from molgnn.chem.conformers import (Conformer, ConformerError, embed_3d, embed_many, geometry_matches,
                                    mol_block_geometry)

# A cyclic 16-residue peptide: ETKDG needs seconds for it, so it stands in for a hung embedding.
SLOW = ("CC(C)C[C@@H]1NC(=O)[C@H](CCCN)NC(=O)[C@H](C(C)C)NC(=O)[C@@H](CC(C)C)NC(=O)[C@H](Cc2ccccc2)"
        "NC(=O)[C@@H]2CCCN2C(=O)[C@H](CC(C)C)NC(=O)[C@H](CCCN)NC(=O)[C@H](C(C)C)NC(=O)[C@@H](CC(C)C)"
        "NC(=O)[C@H](Cc2ccccc2)NC(=O)[C@@H]2CCCN2C1=O")


def test_ethanol_geometry_is_chemically_sensible():
    conf = embed_3d("CCO", seed=0, timeout_s=10, max_iterations=500)
    z, pos = conf                               # unpacks as (atomic_numbers, positions)
    assert z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert pos.shape == (9, 3) and pos.dtype == np.float64
    assert conf.force_field == "mmff" and conf.geometry_source == "etkdgv3-mmff" and conf.converged
    c_o = np.linalg.norm(pos[1] - pos[2])
    assert 1.38 < c_o < 1.46                    # C-O single bond, MMFF94: ~1.42 A


def test_same_seed_same_coordinates():
    a, b = embed_3d("CC(=O)Nc1ccc(O)cc1", seed=3), embed_3d("CC(=O)Nc1ccc(O)cc1", seed=3)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_uff_fallback_where_mmff_has_no_parameters():
    conf = embed_3d("C[Se]C", seed=0)           # MMFF94 has no selenium types
    assert conf.force_field == "uff" and conf.geometry_source == "etkdgv3-uff"


def test_failures_raise_conformer_error():
    with pytest.raises(ConformerError, match="invalid SMILES"):
        embed_3d("C1CC")
    with pytest.raises(ConformerError) as info:
        embed_3d("CC(=O)Nc1ccc(O)cc1", timeout_s=1e-9)
    assert info.value.timed_out and "time-out" in info.value.reason


def test_embed_many_keeps_order_and_matches_in_process():
    smiles = ["CCO", "C1CC", "c1ccccc1"]
    out = embed_many(smiles, seed=1, timeout_s=10, max_iterations=200, workers=2)
    assert isinstance(out[0], Conformer) and isinstance(out[2], Conformer)
    assert isinstance(out[1], ConformerError) and "unclosed ring" in out[1].reason
    np.testing.assert_allclose(out[2].positions, embed_3d("c1ccccc1", seed=1).positions)
    assert embed_many([], seed=0) == []


def test_hung_molecule_is_killed_recorded_and_the_queue_goes_on():
    start = time.monotonic()
    out = embed_many([SLOW, "CCN"], seed=0, timeout_s=0.3, max_iterations=200, workers=1, grace_s=0.0)
    assert time.monotonic() - start < 20         # the pool did not hang
    assert isinstance(out[0], ConformerError) and out[0].timed_out
    assert "worker killed" in out[0].reason
    assert isinstance(out[1], Conformer)         # a fresh worker took over


def test_given_geometry_helpers():
    mol = Chem.AddHs(Chem.MolFromSmiles("CO"))
    from rdkit.Chem import AllChem
    AllChem.EmbedMolecule(mol, randomSeed=1)
    z, pos = mol_block_geometry(Chem.MolToMolBlock(mol))
    assert sorted(z.tolist()) == [1, 1, 1, 1, 6, 8] and pos.shape == (6, 3)
    flat = Chem.MolFromSmiles("CO")
    AllChem.Compute2DCoords(flat)
    assert mol_block_geometry(Chem.MolToMolBlock(flat)) is None          # 2D depiction
    assert geometry_matches(Chem.MolFromSmiles("CO"), z)
    assert not geometry_matches(Chem.MolFromSmiles("CC"), z)
    assert not geometry_matches(Chem.MolFromSmiles("CO"), z[z != 1])      # heavy atoms only
