"""Per-atom 2D features for 3D structures: the equivariant model's view of the chemical graph.

PaiNN embeds an atom by its element alone; hybridization, aromaticity, formal charge, attached
hydrogens and ring membership must then be inferred from distances, which a few thousand drug-like
molecules do not teach. The 2D featurizer's atom features (``molgnn.featurize.graph2d``, the same
vocabulary the 2D tier uses) give them directly: heavy atoms are featurized on the SMILES graph
(hydrogens implicit, so "total H" counts them), hydrogens on the graph with explicit hydrogens. Rows
follow the structures' atom order, which is the SMILES's with hydrogens (``featurize.structures``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from rdkit import Chem

from molgnn.featurize.graph2d import get_featurizer

ATOM_FEATURIZERS = ("atom-bond-v1",)


def atom_feature_dim(name: str) -> int:
    return get_featurizer(name).atom_dim


def atom_feature_rows(smiles: str, atomic_numbers: Sequence[int], name: str) -> np.ndarray | None:
    """``[n_atoms, d]`` float32 for a structure whose atoms follow the SMILES's order with hydrogens;
    None when they do not (the element sequence differs) or the SMILES does not parse."""
    featurizer = get_featurizer(name)
    heavy = Chem.MolFromSmiles(smiles) if smiles else None
    if heavy is None:
        return None
    full = Chem.AddHs(heavy)   # what smiles_atoms gives, without parsing the SMILES again
    if [a.GetAtomicNum() for a in full.GetAtoms()] != [int(z) for z in atomic_numbers]:
        return None
    n_heavy = heavy.GetNumAtoms()   # AddHs keeps the heavy atoms' indices and appends the hydrogens
    rows = [featurizer.atom_features(a) for a in heavy.GetAtoms()]
    rows += [featurizer.atom_features(full.GetAtomWithIdx(i)) for i in range(n_heavy, full.GetNumAtoms())]
    return np.asarray(rows, dtype=np.float32)


def structure_atom_features(smiles: Sequence[str], atomic_numbers: Sequence[Sequence[int]], name: str
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(``[total atoms, d]`` features of every structure in turn, ``[n_structures]`` bool: features
    found). A structure whose atoms cannot be paired with its SMILES gets zero rows, the input a
    model without atom features would have seen, and is counted by the caller."""
    if name not in ATOM_FEATURIZERS:
        raise ValueError(f"unknown atom featurizer {name!r}; known: {list(ATOM_FEATURIZERS)}")
    d = atom_feature_dim(name)
    blocks, found = [], np.zeros(len(smiles), dtype=bool)
    for k, (smi, z) in enumerate(zip(smiles, atomic_numbers)):
        rows = atom_feature_rows(smi, z, name)
        found[k] = rows is not None
        blocks.append(rows if rows is not None else np.zeros((len(z), d), dtype=np.float32))
    return (np.concatenate(blocks) if blocks else np.zeros((0, d), dtype=np.float32)), found
