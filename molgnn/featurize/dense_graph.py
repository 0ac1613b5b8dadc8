"""Molecules as dense, fixed-size categorical graphs for the generators (graph VAE, graph diffusion).

A molecule is its heavy-atom graph with implicit hydrogens: node ``i`` carries an atom token
(element, formal charge) and each pair ``(i, j)`` a bond class (none, single, double, triple) of the
Kekulé structure. Node class 0 is the padding "no atom" class, so a molecule with ``n < max_nodes``
atoms occupies the first ``n`` slots. Atoms are ordered as RDKit writes them in the canonical SMILES,
so a given molecule always gets the same ordering (the VAE decoder depends on that), and bonded atoms
tend to sit close together (a banded adjacency matrix is easier to decode).

Stereochemistry, isotopes and explicit-hydrogen counts are not represented: hydrogens are re-derived
from valence at decode time, so radicals are refused at encode time instead of being silently altered.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from rdkit import Chem, rdBase

PAD_NODE = 0     # node class: no atom in this slot
NO_BOND = 0      # edge class: no bond between the two atoms
BOND_CLASSES: tuple[str, ...] = ("none", "single", "double", "triple")
_RDKIT_BONDS = {
    Chem.BondType.SINGLE: 1,
    Chem.BondType.DOUBLE: 2,
    Chem.BondType.TRIPLE: 3,
}
_CLASS_TO_RDKIT_BOND = {v: k for k, v in _RDKIT_BONDS.items()}
_VOCAB_FORMAT = "molgnn-graph-vocab/1"

AtomToken = tuple[str, int]   # (element symbol, formal charge)


class GraphEncodingError(ValueError):
    """A molecule cannot be written as a dense graph with this vocabulary and size."""


class VocabError(ValueError):
    """A vocabulary dict is malformed or an encoded graph uses classes the vocabulary lacks."""


@dataclass(frozen=True)
class GraphVocab:
    """Atom tokens and bond classes of the dense graphs; node class ``k`` is ``atom_tokens[k - 1]``."""

    atom_tokens: tuple[AtomToken, ...]
    bond_classes: tuple[str, ...] = BOND_CLASSES

    def __post_init__(self) -> None:
        if not self.atom_tokens:
            raise VocabError("a graph vocabulary needs at least one atom token")
        if len(set(self.atom_tokens)) != len(self.atom_tokens):
            raise VocabError(f"duplicate atom tokens in {self.atom_tokens}")
        if tuple(self.bond_classes) != BOND_CLASSES:
            raise VocabError(f"bond classes must be {BOND_CLASSES}, got {self.bond_classes}")
        table = Chem.GetPeriodicTable()
        for element, charge in self.atom_tokens:
            if not isinstance(charge, int) or table.GetAtomicNumber(element) <= 0:
                raise VocabError(f"bad atom token ({element!r}, {charge!r})")

    @property
    def n_node_classes(self) -> int:
        """Atom tokens plus the padding class."""
        return len(self.atom_tokens) + 1

    @property
    def n_edge_classes(self) -> int:
        return len(self.bond_classes)

    def node_class(self, token: AtomToken) -> int:
        try:
            return self.atom_tokens.index(token) + 1
        except ValueError:
            raise GraphEncodingError(f"atom token {format_token(token)} is not in the vocabulary") from None

    def token(self, node_class: int) -> AtomToken:
        if not 1 <= node_class <= len(self.atom_tokens):
            raise VocabError(f"node class {node_class} is outside the vocabulary (1..{len(self.atom_tokens)})")
        return self.atom_tokens[node_class - 1]

    @classmethod
    def from_smiles(cls, smiles: Iterable[str], *, max_nodes: int | None = None) -> "GraphVocab":
        """Vocabulary of the molecules that parse and fit ``max_nodes`` (see ``fit_vocab``)."""
        return fit_vocab(smiles, max_nodes=max_nodes)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _VOCAB_FORMAT,
            "atom_tokens": [[element, charge] for element, charge in self.atom_tokens],
            "bond_classes": list(self.bond_classes),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "GraphVocab":
        if not isinstance(raw, dict) or raw.get("format") != _VOCAB_FORMAT:
            raise VocabError(f"not a graph vocabulary dict (expected format {_VOCAB_FORMAT!r}): {raw!r:.200}")
        try:
            tokens = tuple((str(e), int(c)) for e, c in raw["atom_tokens"])
            bonds = tuple(str(b) for b in raw["bond_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VocabError(f"malformed graph vocabulary dict: {exc}") from exc
        return cls(atom_tokens=tokens, bond_classes=bonds)


def fit_vocab(smiles: Iterable[str], *, max_nodes: int | None = None) -> tuple[GraphVocab, int]:
    """Collect atom tokens in one pass; returns (vocabulary, largest heavy-atom count counted).

    Unparseable or too-large molecules add nothing here; ``encode_many`` records them as rejects.
    Tokens are sorted by (atomic number, charge) so the vocabulary does not depend on data order.
    """
    counts: Counter[AtomToken] = Counter()
    largest = 0
    for smi in smiles:
        try:
            mol = prepare_molecule(smi)
        except GraphEncodingError:
            continue
        if max_nodes is not None and mol.GetNumAtoms() > max_nodes:
            continue
        largest = max(largest, mol.GetNumAtoms())
        counts.update(atom_token(a) for a in mol.GetAtoms())
    if not counts:
        raise VocabError("no molecule could be parsed (within max_nodes) to build a graph vocabulary")
    table = Chem.GetPeriodicTable()
    tokens = sorted(counts, key=lambda t: (table.GetAtomicNumber(t[0]), t[1]))
    return GraphVocab(atom_tokens=tuple(tokens)), largest


def format_token(token: AtomToken) -> str:
    element, charge = token
    if charge == 0:
        return element
    sign = "+" if charge > 0 else "-"
    return f"[{element}{sign}{abs(charge) if abs(charge) > 1 else ''}]"


def atom_token(atom: Chem.Atom) -> AtomToken:
    """The vocabulary token of an atom: (element symbol, formal charge)."""
    return (atom.GetSymbol(), atom.GetFormalCharge())


def prepare_molecule(smiles: str) -> Chem.Mol:
    """Parse, drop explicit hydrogens and renumber atoms in canonical-SMILES output order (aromatic):
    the molecule whose atoms and bonds :func:`encode` writes, in that order.

    Raises GraphEncodingError for an empty or unparseable SMILES or one without heavy atoms.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise GraphEncodingError(f"empty or non-string SMILES: {smiles!r}")
    blocker = rdBase.BlockLogs()   # parse failures are reported by our exception, not on stderr
    try:
        mol = Chem.MolFromSmiles(smiles)
    finally:
        del blocker
    if mol is None:
        raise GraphEncodingError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.RemoveHs(mol)
    if mol.GetNumAtoms() == 0:
        raise GraphEncodingError(f"SMILES {smiles!r} has no heavy atoms")
    Chem.MolToSmiles(mol)   # sets _smilesAtomOutputOrder: the canonical atom order
    order = list(mol.GetPropsAsDict(includePrivate=True, includeComputed=True)["_smilesAtomOutputOrder"])
    return Chem.RenumberAtoms(mol, order)


def encode(
    smiles: str, vocab: GraphVocab, max_nodes: int, *, dtype: torch.dtype = torch.long
) -> tuple[torch.Tensor, torch.Tensor]:
    """SMILES -> (node classes ``[max_nodes]``, symmetric bond classes ``[max_nodes, max_nodes]``).

    Raises GraphEncodingError (with the reason) for unparseable SMILES, more than ``max_nodes`` heavy
    atoms, atom tokens outside ``vocab``, radicals, or bonds other than single/double/triple.
    """
    mol = prepare_molecule(smiles)
    n = mol.GetNumAtoms()
    if n > max_nodes:
        raise GraphEncodingError(f"{smiles!r} has {n} heavy atoms, more than max_nodes={max_nodes}")
    nodes = torch.zeros(max_nodes, dtype=dtype)
    for atom in mol.GetAtoms():
        if atom.GetNumRadicalElectrons():
            raise GraphEncodingError(f"{smiles!r}: atom {atom.GetIdx()} ({atom.GetSymbol()}) is a radical, "
                                     "which implicit hydrogens cannot represent")
        nodes[atom.GetIdx()] = vocab.node_class(atom_token(atom))
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Chem.KekulizeException as exc:
        raise GraphEncodingError(f"{smiles!r} cannot be kekulized: {exc}") from exc
    edges = torch.zeros(max_nodes, max_nodes, dtype=dtype)
    for bond in mol.GetBonds():
        cls = _RDKIT_BONDS.get(bond.GetBondType())
        if cls is None:
            raise GraphEncodingError(f"{smiles!r}: bond {bond.GetIdx()} has unsupported type {bond.GetBondType()}")
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edges[i, j] = edges[j, i] = cls
    return nodes, edges


def encode_many(
    smiles: Sequence[str], vocab: GraphVocab, max_nodes: int, *, dtype: torch.dtype = torch.long
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[tuple[int, str]]]:
    """Encode a list; returns ``(X [M, N], E [M, N, N], kept_idx, rejects)``.

    ``kept_idx[k]`` is the input index of row ``k``; every other input index is in ``rejects`` as
    ``(index, reason)``. Pass ``dtype=torch.uint8`` for large sets (MOSES: 38x38 bytes per molecule).
    """
    xs: list[torch.Tensor] = []
    es: list[torch.Tensor] = []
    kept: list[int] = []
    rejects: list[tuple[int, str]] = []
    for idx, smi in enumerate(smiles):
        try:
            x, e = encode(smi, vocab, max_nodes, dtype=dtype)
        except GraphEncodingError as exc:
            rejects.append((idx, str(exc)))
            continue
        xs.append(x)
        es.append(e)
        kept.append(idx)
    if not xs:
        return (torch.zeros(0, max_nodes, dtype=dtype), torch.zeros(0, max_nodes, max_nodes, dtype=dtype),
                kept, rejects)
    return torch.stack(xs), torch.stack(es), kept, rejects


def _build_mol(node_types: torch.Tensor, edge_types: torch.Tensor, vocab: GraphVocab,
               keep: list[int] | None = None) -> tuple[Chem.RWMol, list[int]]:
    """RWMol of the non-padding nodes (or only ``keep``); bonds touching padding slots are ignored."""
    nodes = node_types.detach().cpu().long().tolist()
    edges = edge_types.detach().cpu().long()
    present = [i for i, c in enumerate(nodes) if c != PAD_NODE] if keep is None else keep
    mol = Chem.RWMol()
    slot_to_atom: dict[int, int] = {}
    for i in present:
        element, charge = vocab.token(nodes[i])
        atom = Chem.Atom(element)
        atom.SetFormalCharge(charge)
        slot_to_atom[i] = mol.AddAtom(atom)
    for a, i in enumerate(present):
        for j in present[a + 1:]:
            cls = int(edges[i, j])
            if cls == NO_BOND:
                continue
            if cls not in _CLASS_TO_RDKIT_BOND:
                raise VocabError(f"edge class {cls} at ({i}, {j}) is outside 0..{len(BOND_CLASSES) - 1}")
            mol.AddBond(slot_to_atom[i], slot_to_atom[j], _CLASS_TO_RDKIT_BOND[cls])
    return mol, present


def _sanitized_smiles(mol: Chem.RWMol) -> tuple[str | None, str]:
    blocker = rdBase.BlockLogs()   # the reason goes into our return value, not onto stderr
    try:
        Chem.SanitizeMol(mol)
        smiles = Chem.MolToSmiles(mol)
        if Chem.MolFromSmiles(smiles) is None:   # e.g. an aromatic system that does not re-kekulize
            return None, f"canonical SMILES {smiles!r} does not re-parse"
    except Exception as exc:   # RDKit raises several unrelated classes (valence, kekulize, ...)
        return None, f"sanitization failed: {type(exc).__name__}: {exc}"
    finally:
        del blocker
    return smiles, "ok"


def decode(node_types: torch.Tensor, edge_types: torch.Tensor, vocab: GraphVocab,
           *, correct: bool = False) -> tuple[str | None, str]:
    """Dense graph -> (canonical SMILES, "ok") or (None, reason).

    Uncorrected, a graph is valid only if it is one connected molecule that RDKit sanitizes.
    ``correct=True`` first keeps only the largest connected fragment (ties: the one with the lowest
    slot), the usual post-hoc correction; no valences are repaired.
    """
    if node_types.dim() != 1 or edge_types.shape != (node_types.shape[0], node_types.shape[0]):
        raise VocabError(f"expected node_types [N] and edge_types [N, N], got {tuple(node_types.shape)} "
                         f"and {tuple(edge_types.shape)}")
    mol, present = _build_mol(node_types, edge_types, vocab)
    if not present:
        return None, "empty graph: no atoms"
    fragments = Chem.GetMolFrags(mol, sanitizeFrags=False)
    if len(fragments) > 1:
        if not correct:
            return None, f"disconnected: {len(fragments)} fragments"
        largest = max(fragments, key=lambda f: (len(f), -min(f)))
        mol, present = _build_mol(node_types, edge_types, vocab, keep=[present[a] for a in sorted(largest)])
    return _sanitized_smiles(mol)


def decode_many(node_types: torch.Tensor, edge_types: torch.Tensor, vocab: GraphVocab,
                *, correct: bool = False) -> list[tuple[str | None, str]]:
    """``decode`` for a batch ``[M, N]``, ``[M, N, N]`` (moved to the CPU once)."""
    nodes, edges = node_types.detach().cpu(), edge_types.detach().cpu()
    return [decode(nodes[k], edges[k], vocab, correct=correct) for k in range(nodes.shape[0])]


def decode_largest_fragment(node_types: torch.Tensor, edge_types: torch.Tensor,
                            vocab: GraphVocab) -> tuple[str | None, str]:
    """``decode(..., correct=True)``: validity after keeping the largest connected fragment."""
    return decode(node_types, edge_types, vocab, correct=True)
