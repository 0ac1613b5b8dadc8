"""Parse and standardize one molecule: the parent that ingest keys, deduplicates and stores.

Pipeline: parse -> sanitize -> largest organic fragment -> neutralize -> element and size checks ->
canonical SMILES + InChIKey. Every failure is returned as a :class:`Rejection` (stage + reason, with
RDKit's own message where it has one) rather than raised, so a batch loop records it and moves on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize

# Elements a parent molecule may contain. Everything else (metals, noble gases, dummy atoms) is
# rejected: the featurizers, force fields and generators downstream are built for organic chemistry.
ORGANIC_ELEMENTS: frozenset[str] = frozenset(
    {"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"})

_ORGANIC_Z = frozenset(Chem.GetPeriodicTable().GetAtomicNumber(s) for s in ORGANIC_ELEMENTS)


class MoleculeParseError(ValueError):
    """A SMILES string or mol block that RDKit cannot turn into a sanitized molecule."""


@dataclass(frozen=True)
class Standardized:
    smiles: str          # canonical isomeric SMILES of the parent
    inchikey: str
    mol: Chem.Mol        # the parent, sanitized, implicit hydrogens


@dataclass(frozen=True)
class Rejection:
    stage: str           # parse | sanitize | fragment | elements | size | inchi | standardize
    reason: str


@contextlib.contextmanager
def rdkit_messages() -> Iterator[rdBase.CaptureErrorLog]:
    """Silence RDKit's stderr logging while capturing its error messages for rejection reasons."""
    with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as capture:
        yield capture


def _last_message(capture: rdBase.CaptureErrorLog) -> str:
    """RDKit's captured messages, timestamps removed, joined on one line."""
    try:
        text = capture.messages
    except UnicodeDecodeError:   # RDKit echoed a multi-byte character cut in half
        return ""
    lines = [ln.split("] ", 1)[-1].strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines) if lines else ""


def _bad_characters(text: str) -> str | None:
    """Why ``text`` cannot be a SMILES before RDKit sees it, or None.

    RDKit reads "CCO junk" as CCO named "junk" (in a SMILES field that hides a malformed value)
    and stops at a NUL byte; SMILES are ASCII by definition.
    """
    text = text.strip()
    if not text.isascii():
        return "contains non-ASCII characters"
    if any(ch.isspace() for ch in text):
        return "contains whitespace"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "contains control characters"
    return None


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse and sanitize a SMILES string; raise :class:`MoleculeParseError` with RDKit's reason."""
    if not isinstance(smiles, str) or not smiles.strip():
        raise MoleculeParseError(f"empty SMILES: {smiles!r}")
    if (bad := _bad_characters(smiles)) is not None:
        raise MoleculeParseError(f"invalid SMILES {smiles!r}: {bad}")
    with rdkit_messages() as capture:
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        raise MoleculeParseError(f"invalid SMILES {smiles!r}: {_last_message(capture) or 'RDKit could not parse it'}")
    return mol


def _parse_unsanitized(text: str, is_mol_block: bool) -> Chem.Mol | Rejection:
    with rdkit_messages() as capture:
        if is_mol_block:
            mol = Chem.MolFromMolBlock(text, sanitize=False, removeHs=False)
        else:
            mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None:
        what = "mol block" if is_mol_block else "SMILES"
        return Rejection("parse", f"unparsable {what}: {_last_message(capture) or 'RDKit returned no molecule'}")
    return mol


def _sanitize(mol: Chem.Mol) -> Chem.Mol | Rejection:
    mol = Chem.Mol(mol)
    with rdkit_messages():
        try:
            Chem.SanitizeMol(mol)
            if mol.GetNumAtoms() and any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()):
                mol = Chem.RemoveHs(mol)
        except Exception as exc:  # RDKit raises several exception types (valence, kekulization, ...)
            return Rejection("sanitize", str(exc).strip() or type(exc).__name__)
    return mol


def _largest_organic_fragment(mol: Chem.Mol) -> Chem.Mol | Rejection:
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) <= 1:
        return mol
    if not any(a.GetAtomicNum() == 6 for a in mol.GetAtoms()):
        # Largest-fragment selection strips counter-ions from an organic parent; an all-inorganic
        # mixture such as [Na+].[Cl-] has no parent to keep.
        return Rejection("fragment", f"no organic fragment among {len(frags)} fragments")
    return rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)


def _standardize_parsed(mol: Chem.Mol, max_heavy_atoms: int) -> Standardized | Rejection:
    if mol.GetNumAtoms() == 0:
        return Rejection("parse", "molecule has no atoms")
    sanitized = _sanitize(mol)
    if isinstance(sanitized, Rejection):
        return sanitized
    try:
        with rdkit_messages():
            parent = _largest_organic_fragment(sanitized)
            if isinstance(parent, Rejection):
                return parent
            parent = rdMolStandardize.Uncharger().uncharge(parent)
    except Exception as exc:
        return Rejection("standardize", f"fragment/charge standardization failed: {exc}")

    bad = sorted({a.GetSymbol() if a.GetAtomicNum() else "*" for a in parent.GetAtoms()
                  if a.GetAtomicNum() not in _ORGANIC_Z})
    if bad:
        return Rejection("elements", f"element(s) outside the organic allow-list: {', '.join(bad)}")
    n_heavy = parent.GetNumHeavyAtoms()
    if n_heavy > max_heavy_atoms:
        return Rejection("size", f"{n_heavy} heavy atoms > max_heavy_atoms={max_heavy_atoms}")

    with rdkit_messages() as capture:
        smiles = Chem.MolToSmiles(parent)
        try:
            inchikey, error = Chem.MolToInchiKey(parent), ""
        except Exception as exc:  # the InChI library reports most failures as an empty key instead
            inchikey, error = "", str(exc)
    if not inchikey:
        why = error or _last_message(capture) or "empty key"
        return Rejection("inchi", f"InChI generation failed: {why}")
    return Standardized(smiles=smiles, inchikey=inchikey, mol=parent)


def standardize(raw: str | Chem.Mol, max_heavy_atoms: int = 50) -> Standardized | Rejection:
    """Standardize a SMILES string or an (unsanitized or sanitized) RDKit molecule."""
    if isinstance(raw, Chem.Mol):
        return _standardize_parsed(raw, max_heavy_atoms)
    if not isinstance(raw, str) or not raw.strip():
        return Rejection("parse", "empty input")
    if (bad := _bad_characters(raw)) is not None:
        return Rejection("parse", f"unparsable SMILES: {bad}")
    parsed = _parse_unsanitized(raw.strip(), is_mol_block=False)
    if isinstance(parsed, Rejection):
        return parsed
    return _standardize_parsed(parsed, max_heavy_atoms)


def standardize_mol_block(block: str, max_heavy_atoms: int = 50) -> Standardized | Rejection:
    """Standardize one MDL mol block (an SDF record without its data fields)."""
    if not isinstance(block, str) or not block.strip():
        return Rejection("parse", "empty input")
    parsed = _parse_unsanitized(block, is_mol_block=True)
    if isinstance(parsed, Rejection):
        return parsed
    return _standardize_parsed(parsed, max_heavy_atoms)
