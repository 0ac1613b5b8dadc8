"""Per-molecule pieces of the MOSES metrics (RDKit and numpy only, so worker processes start fast).

Every function here follows the definitions MOSES used for its published tables (molsets 0.3.1,
``moses/metrics/utils.py``), re-implemented on RDKit 2026 and numpy 2; see ``molgnn.generate.metrics``
for the set-level metrics built on them.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.rdmolops import FragmentOnBRICSBonds
from rdkit.Chem.Scaffolds import MurckoScaffold

from molgnn.chem.canonical import canonical_smiles, get_mol
from molgnn.chem.properties import MOSES_PROPERTIES, PROPERTIES
from molgnn.generate.metrics_filters import MCF_SMARTS, PAINS_SMARTS

#: Morgan fingerprint used by SNN and IntDiv: radius 2, 1024 bits, no chirality, no features
#: (bit-identical to RDKit's legacy ``GetMorganFingerprintAsBitVect(mol, 2, nBits=1024)`` that MOSES used).
FP_RADIUS = 2
FP_BITS = 1024
#: Scaf keeps a Bemis-Murcko scaffold only when it has at least this many rings (MOSES ``min_rings=2``).
MIN_SCAFFOLD_RINGS = 2
#: MOSES filters: only these elements, no formal charges, no ring of 8 or more atoms, no MCF/PAINS alert.
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_RING_SIZE = 7


@lru_cache(maxsize=1)
def _morgan_generator():
    return rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)


def morgan_fingerprint(mol: Chem.Mol) -> np.ndarray:
    """The 1024-bit Morgan fingerprint (radius 2) of a molecule as a uint8 0/1 vector.

    >>> int(morgan_fingerprint(get_mol("CCO")).sum())
    6
    """
    return _morgan_generator().GetFingerprintAsNumPy(mol).astype(np.uint8, copy=False)


def brics_fragments(mol: Chem.Mol) -> list[str]:
    """BRICS fragments of a molecule, one entry per fragment (repeats kept), as MOSES's Frag counts them.

    All BRICS bonds are broken at once (``FragmentOnBRICSBonds``, dummy atoms labelled with the
    BRICS environment) and the canonical SMILES of the result is split at ``"."``.

    >>> brics_fragments(get_mol("CCN(CC)C(=O)c1ccccc1"))
    ['[1*]C([6*])=O', '[16*]c1ccccc1', '[4*]CC', '[4*]CC', '[5*]N([5*])[5*]']
    >>> brics_fragments(get_mol("c1ccccc1"))
    ['c1ccccc1']
    """
    return Chem.MolToSmiles(FragmentOnBRICSBonds(mol)).split(".")


def murcko_scaffold(mol: Chem.Mol, min_rings: int = MIN_SCAFFOLD_RINGS) -> str | None:
    """Canonical SMILES of the Bemis-Murcko scaffold, or None when it has fewer than ``min_rings`` rings.

    Scaffold = ``MurckoScaffold.GetScaffoldForMol`` (ring systems plus linkers, side chains removed,
    atom types and bond orders kept); rings counted by RDKit's SSSR. MOSES's Scaf uses
    ``min_rings=2``: acyclic and single-ring molecules contribute no scaffold.

    >>> murcko_scaffold(get_mol("Cc1ccc(CC2CCNCC2)cc1")), murcko_scaffold(get_mol("Cc1ccccc1"))
    ('c1ccc(CC2CCNCC2)cc1', None)
    """
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if not smiles or scaffold.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


@lru_cache(maxsize=1)
def _filter_patterns() -> tuple[Chem.Mol, ...]:
    patterns = tuple(Chem.MolFromSmarts(smarts) for _, smarts in MCF_SMARTS + PAINS_SMARTS)
    if any(p is None for p in patterns):
        raise RuntimeError("a MOSES filter SMARTS no longer parses with this RDKit")
    return patterns


def passes_filters(mol: Chem.Mol | None) -> bool:
    """Whether a molecule passes the MOSES filters (the rules the MOSES data set was built with).

    Fails when any of these holds: the molecule is None; it has a ring (SSSR) of 8 or more atoms; an
    atom carries a formal charge; an atom is not C, N, S, O, F, Cl, Br or H; the molecule with explicit
    hydrogens matches one of the 22 MCF or 480 PAINS SMARTS of ``metrics_filters``; its non-isomeric
    SMILES is empty or does not parse back.

    >>> passes_filters(get_mol("CC(=O)Nc1ccc(O)cc1")), passes_filters(get_mol("CC=O"))
    (True, False)
    >>> passes_filters(get_mol("C[N+](C)(C)C")), passes_filters(get_mol("CP(C)C"))
    (False, False)
    """
    if mol is None:
        return False
    if any(len(ring) > MAX_RING_SIZE for ring in mol.GetRingInfo().AtomRings()):
        return False
    atoms = list(mol.GetAtoms())
    if any(atom.GetFormalCharge() != 0 for atom in atoms):
        return False
    if any(atom.GetSymbol() not in ALLOWED_ATOMS for atom in atoms):
        return False
    with_h = Chem.AddHs(mol)
    if any(with_h.HasSubstructMatch(pattern) for pattern in _filter_patterns()):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


# Heavy-atom element multiset read straight from a SMILES string (no parsing): invariant under
# RDKit canonicalization, so it lets novelty() canonicalize only training SMILES that could match.
_ATOM_TOKEN = re.compile(r"\[[^\]]*\]|Cl|Br|[BCNOSPFIbcnops*]")
_BRACKET_ELEMENT = re.compile(r"\[\d*([A-Z][a-z]?|se|as|te|[bcnops]|\*)")


def element_signature(smiles: str) -> tuple[tuple[str, int], ...]:
    """Sorted (element, count) pairs of the non-hydrogen atoms written in a SMILES string.

    Read from the string alone (aromatic symbols upper-cased, hydrogens ignored), so it costs
    microseconds and is equal for every SMILES of one molecule, canonical or not.

    >>> element_signature("OCc1ccccc1Cl") == element_signature("Clc1ccccc1CO")
    True
    >>> element_signature("[13CH3][nH+]")
    (('C', 1), ('N', 1))
    """
    counts: Counter[str] = Counter()
    for token in _ATOM_TOKEN.findall(smiles):
        if token[0] == "[":
            match = _BRACKET_ELEMENT.match(token)
            symbol = match.group(1) if match else token
        else:
            symbol = token
        symbol = symbol.capitalize() if len(symbol) == 2 else symbol.upper()
        if symbol != "H":
            counts[symbol] += 1
    return tuple(sorted(counts.items()))


# Worker functions: one parse per molecule, everything the set-level metrics need, picklable output.

def packed_fingerprint(smiles: str | None) -> bytes | None:
    """``np.packbits`` of the Morgan fingerprint (128 bytes), or None when invalid."""
    mol = get_mol(smiles)
    return None if mol is None else np.packbits(morgan_fingerprint(mol)).tobytes()


def describe_reference(smiles: str) -> tuple[str, bytes, list[str], str | None] | None:
    """(canonical SMILES, packed fingerprint bytes, BRICS fragments, scaffold) of a reference
    molecule, or None when it is invalid."""
    mol = get_mol(smiles)
    if mol is None:
        return None
    return (Chem.MolToSmiles(mol), np.packbits(morgan_fingerprint(mol)).tobytes(),
            brics_fragments(mol), murcko_scaffold(mol))


def describe_generated(smiles: str | None) -> tuple[str, bytes, list[str], str | None, bool] | None:
    """``describe_reference`` plus whether the molecule passes the MOSES filters."""
    mol = get_mol(smiles)
    if mol is None:
        return None
    return (Chem.MolToSmiles(mol), np.packbits(morgan_fingerprint(mol)).tobytes(),
            brics_fragments(mol), murcko_scaffold(mol), passes_filters(mol))


# ----------------------------------------------------------------------------------------------
# MOSES property distributions (logP, SA, QED, weight)

#: MOSES's keys for them (its published tables), from the property registry (molgnn.chem.properties).
PROPERTY_NAMES = tuple(PROPERTIES[name].moses_key for name in MOSES_PROPERTIES)


def molecular_properties(smiles: str | None) -> tuple[float, ...] | None:
    """(logP, SA, QED, weight) as MOSES computes them (Crippen MolLogP, SA_Score, QED, MolWt);
    None for an invalid SMILES."""
    mol = get_mol(smiles)
    if mol is None:
        return None
    return tuple(PROPERTIES[name].compute(mol) for name in MOSES_PROPERTIES)
