"""The one canonicaliser: when a SMILES counts as a valid molecule, and its canonical form.

Filtering, generation rates, the MOSES metrics and novelty against a training set all compare
molecules by this canonical SMILES, so "the same molecule" means the same thing in each of them.
Standardization for ingest (salts stripped, charges neutralized) is another matter: ``standardize``.
"""
from __future__ import annotations

from rdkit import Chem, rdBase


def get_mol(smiles: str | Chem.Mol | None) -> Chem.Mol | None:
    """The sanitized RDKit molecule of a SMILES, or None when it is not a valid molecule.

    None, non-strings and the empty string are invalid; otherwise ``Chem.MolFromSmiles`` (which
    sanitizes) decides. A SMILES of several fragments (``"CC.O"``) is valid, as in MOSES. A Mol passes
    through unchanged.

    >>> get_mol("c1ccccc1").GetNumAtoms(), get_mol("c1cccc1"), get_mol(None), get_mol("")
    (6, None, None, None)
    """
    if isinstance(smiles, Chem.Mol):
        return smiles
    if not isinstance(smiles, str) or not smiles:
        return None
    try:
        with rdBase.BlockLogs():  # invalid draws are expected: keep RDKit quiet, for this call only
            return Chem.MolFromSmiles(smiles)
    except Exception:  # RDKit raises only on exotic input; treat it as invalid
        return None


def canonical_smiles(smiles: str | Chem.Mol | None) -> str | None:
    """RDKit's canonical isomeric SMILES (``Chem.MolToSmiles`` defaults), or None when invalid.

    >>> canonical_smiles("OCC"), canonical_smiles("C1CC")
    ('CCO', None)
    """
    mol = get_mol(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)
