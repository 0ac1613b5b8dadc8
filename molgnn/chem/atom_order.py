"""One atom order for every structure: that of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``.

Conformers embedded from a SMILES already follow it (heavy atoms in SMILES order, then each heavy
atom's hydrogens). A geometry given by the source (an SDF, QM9's xyz) lists its atoms in its own
order, so per-atom 2D features computed from the SMILES could not be paired with its atoms.
:func:`smiles_order` finds the permutation from the geometry's bonds, perceived from distances
(RDKit's ``DetermineConnectivity``), matched onto the SMILES graph with bond orders ignored (they are
not perceived). The 3D models are invariant to the atom order, so reordering changes no prediction.
"""
from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D


def smiles_atoms(smiles: str) -> Chem.Mol | None:
    """The SMILES molecule with explicit hydrogens (the reference order), or None if it does not parse."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None else Chem.AddHs(mol)


def _generic_bond_query(mol: Chem.Mol) -> Chem.Mol:
    params = Chem.AdjustQueryParameters.NoAdjustments()
    params.makeBondsGeneric = True
    return Chem.AdjustQueryProperties(mol, params)


def smiles_order(smiles: str, atomic_numbers, positions) -> np.ndarray | None:
    """Indices ``perm`` such that ``atomic_numbers[perm]`` / ``positions[perm]`` follow the SMILES's
    order with hydrogens; None where the geometry's perceived bonds do not form the SMILES's graph
    (or it does not parse). ``positions`` is ``[n, 3]`` or flattened."""
    ref = smiles_atoms(smiles)
    z = np.asarray(atomic_numbers, dtype=np.int64).ravel()
    xyz = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if ref is None or ref.GetNumAtoms() != len(z) or len(xyz) != len(z):
        return None
    if [a.GetAtomicNum() for a in ref.GetAtoms()] == z.tolist():
        return np.arange(len(z))
    rw = Chem.RWMol()
    for number in z.tolist():
        rw.AddAtom(Chem.Atom(int(number)))
    conf = Chem.Conformer(len(z))
    for i, (x, y, w) in enumerate(xyz.tolist()):
        conf.SetAtomPosition(i, Point3D(x, y, w))
    rw.AddConformer(conf, assignId=True)
    geo = rw.GetMol()
    try:
        rdDetermineBonds.DetermineConnectivity(geo, charge=int(Chem.GetFormalCharge(ref)))
    except (ValueError, RuntimeError):
        return None
    match = geo.GetSubstructMatch(_generic_bond_query(ref), useChirality=False)
    if len(match) != len(z) or geo.GetNumBonds() != ref.GetNumBonds():
        return None
    return np.asarray(match, dtype=np.int64)
