"""Bemis-Murcko scaffolds: the ring systems and their linkers, side chains removed."""
from __future__ import annotations

from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molgnn.chem.standardize import parse_smiles, rdkit_messages


def murcko_scaffold(smiles_or_mol: str | Chem.Mol, include_chirality: bool = False) -> str:
    """Canonical scaffold SMILES; ``""`` for acyclic molecules.

    Raises :class:`molgnn.chem.standardize.MoleculeParseError` for SMILES RDKit cannot parse.
    """
    mol = smiles_or_mol if isinstance(smiles_or_mol, Chem.Mol) else parse_smiles(smiles_or_mol)
    with rdkit_messages():
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def murcko_scaffolds(smiles_list: list[str], include_chirality: bool = False) -> list[str]:
    """Scaffold of every SMILES, in order (one parse per molecule, no pairwise work)."""
    return [murcko_scaffold(s, include_chirality) for s in smiles_list]
