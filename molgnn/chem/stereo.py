"""Stereo bookkeeping for 3D-invariant models.

PaiNN's outputs are invariant under reflections, so a molecule and its mirror image (enantiomers)
always get identical predictions. Screening reports, per molecule, how many stereocenters it has and
how many were left unassigned in the input (ETKDG then picks one configuration at random), so a user
can see which predictions stand for a pair of enantiomers rather than one of them.
"""
from __future__ import annotations

from rdkit import Chem


def stereo_counts(smiles: str) -> tuple[int, int]:
    """(stereocenters, unassigned stereocenters) of a SMILES; (0, 0) if it does not parse.

    >>> stereo_counts("C[C@H](N)C(=O)O"), stereo_counts("CC(N)C(=O)O"), stereo_counts("CCO")
    ((1, 0), (1, 1), (0, 0))
    """
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return 0, 0
    centers = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)
    return len(centers), sum(1 for _, label in centers if label == "?")
