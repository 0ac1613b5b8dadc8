"""2D molecular graphs for torch-geometric, from named and versioned atom/bond featurizers.

A featurizer is looked up by name (``get_featurizer("atom-bond-v1")``) and its name is stored with
every dataset and checkpoint, so a model is never fed features it was not trained on. A changed
featurizer gets a new name; an existing one never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from rdkit import Chem

if TYPE_CHECKING:   # torch_geometric costs seconds to import; the screening tier needs only the features
    from torch_geometric.data import Data


class FeaturizerError(ValueError):
    """A SMILES that cannot be featurized, or an unknown featurizer name."""


def _one_hot(value, choices: tuple) -> list[float]:
    """One-hot over ``choices`` plus a final 'other' slot, so unseen values still encode."""
    out = [0.0] * (len(choices) + 1)
    out[choices.index(value) if value in choices else len(choices)] = 1.0
    return out


@dataclass(frozen=True)
class AtomBondFeaturizerV1:
    """Atom: element, degree, formal charge, total H, hybridization, aromaticity, ring, mass/100.
    Bond: type, conjugation, ring, stereo. Close to chemprop v2's default multi-hot featurizer."""

    name: str = "atom-bond-v1"
    elements: tuple = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53)
    degrees: tuple = (0, 1, 2, 3, 4, 5)
    charges: tuple = (-2, -1, 0, 1, 2)
    num_hs: tuple = (0, 1, 2, 3, 4)
    hybridizations: tuple = (
        Chem.HybridizationType.S,
        Chem.HybridizationType.SP,
        Chem.HybridizationType.SP2,
        Chem.HybridizationType.SP3,
        Chem.HybridizationType.SP3D,
        Chem.HybridizationType.SP3D2,
    )
    bond_types: tuple = (
        Chem.BondType.SINGLE,
        Chem.BondType.DOUBLE,
        Chem.BondType.TRIPLE,
        Chem.BondType.AROMATIC,
    )
    stereos: tuple = (
        Chem.BondStereo.STEREONONE,
        Chem.BondStereo.STEREOANY,
        Chem.BondStereo.STEREOZ,
        Chem.BondStereo.STEREOE,
        Chem.BondStereo.STEREOCIS,
        Chem.BondStereo.STEREOTRANS,
    )

    def atom_features(self, atom: Chem.Atom) -> list[float]:
        return (
            _one_hot(atom.GetAtomicNum(), self.elements)
            + _one_hot(atom.GetTotalDegree(), self.degrees)
            + _one_hot(atom.GetFormalCharge(), self.charges)
            + _one_hot(atom.GetTotalNumHs(), self.num_hs)
            + _one_hot(atom.GetHybridization(), self.hybridizations)
            + [float(atom.GetIsAromatic()), float(atom.IsInRing()), atom.GetMass() / 100.0]
        )

    def bond_features(self, bond: Chem.Bond) -> list[float]:
        return (
            _one_hot(bond.GetBondType(), self.bond_types)
            + [float(bond.GetIsConjugated()), float(bond.IsInRing())]
            + _one_hot(bond.GetStereo(), self.stereos)
        )

    @property
    def atom_dim(self) -> int:
        return len(self.atom_features(Chem.MolFromSmiles("C").GetAtomWithIdx(0)))

    @property
    def bond_dim(self) -> int:
        return len(self.bond_features(Chem.MolFromSmiles("CC").GetBondWithIdx(0)))

    def __call__(self, smiles: str) -> "Data":
        from torch_geometric.data import Data

        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None or mol.GetNumAtoms() == 0:
            raise FeaturizerError(f"cannot featurize SMILES {smiles!r}: RDKit cannot parse it")
        x = torch.tensor([self.atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
        src, dst, feats = [], [], []
        for bond in mol.GetBonds():
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            f = self.bond_features(bond)
            src += [i, j]
            dst += [j, i]
            feats += [f, f]
        edge_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)
        edge_attr = torch.tensor(feats, dtype=torch.float32).reshape(-1, self.bond_dim)
        return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles)


FEATURIZERS = {"atom-bond-v1": AtomBondFeaturizerV1}


def get_featurizer(name: str) -> AtomBondFeaturizerV1:
    try:
        return FEATURIZERS[name]()
    except KeyError:
        raise FeaturizerError(f"unknown featurizer {name!r}; known: {sorted(FEATURIZERS)}") from None
