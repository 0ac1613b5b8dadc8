"""Extended-Hückel frontier orbitals: physically ordered, failures recorded, YAeHMOP's chatter silenced."""
from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molgnn.chem.eht import EHTError, eht_targets, frontier_orbitals


def _geometry(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), mol.GetConformer().GetPositions()


def _packed(geoms):
    z = np.concatenate([g[0] for g in geoms])
    r = np.concatenate([g[1] for g in geoms])
    ptr = np.concatenate([[0], np.cumsum([len(g[0]) for g in geoms])])
    return z, r, ptr


def test_conjugation_narrows_the_gap_and_the_output_is_quiet(capfd):
    gaps = {}
    for smi in ("CC", "C=C", "C=CC=C", "c1ccccc1"):
        homo, lumo = frontier_orbitals(*_geometry(smi))
        assert homo < lumo
        gaps[smi] = lumo - homo
    # saturated > one double bond > conjugated diene: the chemistry the gap target is chosen for
    assert gaps["CC"] > gaps["C=C"] > gaps["C=CC=C"]
    assert gaps["c1ccccc1"] < gaps["C=C"]
    frontier_orbitals(*_geometry("CO"))  # an O-H bond: YAeHMOP warns "suspicious distance" from C
    out = capfd.readouterr()
    assert "suspicious" not in out.out + out.err


def test_rejections_keep_their_row_with_a_reason_and_workers_agree():
    ethanol, water = _geometry("CCO"), _geometry("O")
    z_me, r_me = _geometry("C")
    methyl = (z_me[:4], r_me[:4])  # CH3: 9 electrons, no closed shell
    z, r, ptr = _packed([ethanol, methyl, water])
    values, failed = eht_targets(z, r, ptr)
    assert values.shape == (3, 3)
    assert np.isfinite(values[[0, 2]]).all() and np.isnan(values[1]).all()
    assert [m for m, _ in failed] == [1] and "odd electron count (9)" in failed[0][1]
    np.testing.assert_allclose(values[0, 2], values[0, 1] - values[0, 0])
    pooled, failed2 = eht_targets(z, r, ptr, workers=2, chunk_size=1)
    np.testing.assert_allclose(pooled, values)
    assert failed2 == failed
    with pytest.raises(EHTError, match="odd electron"):
        frontier_orbitals(*methyl)


def test_the_net_charge_sets_the_electron_count():
    z, r = _geometry("C[N+](C)(C)C")  # tetramethylammonium: 43 electrons if taken as neutral
    with pytest.raises(EHTError, match=r"odd electron count \(43\) at net charge 0"):
        frontier_orbitals(z, r)
    homo, lumo = frontier_orbitals(z, r, charge=1)
    assert homo < lumo
    values, failed = eht_targets(*_packed([(z, r), _geometry("CCO")]), np.array([1, 0]))
    assert np.isfinite(values).all() and failed == []
    with pytest.raises(ValueError, match="one value per molecule"):
        eht_targets(*_packed([(z, r)]), np.array([1, 0]))
