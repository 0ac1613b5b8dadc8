"""Applicability domain: is a screened molecule like the molecules the model was trained on?

A model trained on small H/C/N/O molecules still returns a number (and a small ensemble spread) for a
sulfonamide of 30 heavy atoms; the number means nothing. :func:`fit_domain` records, from the
fine-tuning training set,

- the elements seen, the heavy-atom count range, whether charged atoms or radicals occurred;
- Morgan fingerprints (radius 2, 2048 bits) of up to ``max_reference`` training molecules, and a
  similarity threshold taken from the training set itself: the ``percentile``-th percentile of each
  reference molecule's leave-one-out nearest-neighbour Tanimoto similarity.

:meth:`Domain.check` then gives every molecule ``(in_domain, reason)``, with a reason such as
``"elements not seen in training: Cl, S; 14 heavy atoms > training max 9; nearest training
similarity 0.12 < 0.31"``. Saved as ``applicability_domain.json`` plus the packed fingerprints in
``applicability_domain_fps.npy`` beside it.

>>> d = fit_domain(["CCO", "CCN", "CCC", "CCCO", "CC(C)O", "OCCO"], percentile=0)
>>> d.check(["CCO", "CCS"])[1]
(False, 'elements not seen in training: S')
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from molgnn.chem.similarity import FP_BITS, FP_RADIUS, mol_or_none, morgan_bits, nearest_similarity

DOMAIN_FILE = "applicability_domain.json"
FPS_SUFFIX = "_fps.npy"

@dataclass
class Domain:
    """What the training set covered; see the module docstring."""
    elements: list[str]
    heavy_atoms_min: int
    heavy_atoms_max: int
    charged_seen: bool
    radicals_seen: bool
    similarity_threshold: float
    similarity_percentile: float
    n_train: int
    n_reference: int
    fp_radius: int = FP_RADIUS
    fp_bits: int = FP_BITS
    loo_similarity_median: float = math.nan
    reference_fps: np.ndarray = field(default_factory=lambda: np.zeros((0, FP_BITS), dtype=bool), repr=False)

    def check(self, smiles: Sequence[str]) -> list[tuple[bool, str]]:
        """``(in_domain, reason)`` per SMILES; the reason is empty when in domain."""
        return self.check_mols([mol_or_none(s) for s in smiles], smiles)

    def check_mols(self, mols: Sequence, smiles: Sequence[str] | None = None) -> list[tuple[bool, str]]:
        """:meth:`check` of molecules already parsed (sanitized, None where unparsable): the same verdicts.

        ``smiles`` (each molecule's own SMILES) lets molecules written without a bracket atom skip
        the per-atom radical count: outside brackets a SMILES atom carries no unpaired electron.
        Unseen elements and charged atoms are looked for with one substructure query each first."""
        from rdkit.Chem import Descriptors

        sims = nearest_similarity(morgan_bits(mols), self.reference_fps, ref_f32=self._reference_f32())
        seen = set(self.elements)
        unseen_query, charged_query = self._queries()
        out = []
        for k, (m, sim) in enumerate(zip(mols, sims)):
            if m is None:
                out.append((False, "SMILES does not parse"))
                continue
            reasons = []
            if unseen_query is None or m.HasSubstructMatch(unseen_query):
                unseen = sorted({a.GetSymbol() for a in m.GetAtoms()} - seen - {"H"})
                if unseen:
                    reasons.append("elements not seen in training: " + ", ".join(unseen))
            n = m.GetNumHeavyAtoms()
            if n > self.heavy_atoms_max:
                reasons.append(f"{n} heavy atoms > training max {self.heavy_atoms_max}")
            elif n < self.heavy_atoms_min:
                reasons.append(f"{n} heavy atoms < training min {self.heavy_atoms_min}")
            bracketed = smiles is None or "[" in smiles[k]
            if not self.radicals_seen and bracketed and Descriptors.NumRadicalElectrons(m) > 0:
                reasons.append("radical (unpaired electrons), none in training")
            if not self.charged_seen and m.HasSubstructMatch(charged_query):
                reasons.append("charged atoms, none in training")
            if sim < self.similarity_threshold:
                reasons.append(f"nearest training similarity {sim:.2f} < {self.similarity_threshold:.2f}")
            out.append((not reasons, "; ".join(reasons)))
        return out

    def _queries(self):
        """(SMARTS matching an atom of an element not seen in training, or None where a seen symbol
        has no atomic number; SMARTS matching a charged atom)."""
        from rdkit import Chem

        table = Chem.GetPeriodicTable()
        try:
            numbers = sorted({table.GetAtomicNumber(e) for e in self.elements} | {1})
        except RuntimeError:
            numbers = None
        unseen = Chem.MolFromSmarts("[" + ";".join(f"!#{z}" for z in numbers) + "]") if numbers else None
        return unseen, Chem.MolFromSmarts("[!+0]")

    def _reference_f32(self) -> np.ndarray:
        """The reference fingerprints as float32 (the similarity product's operand), made once."""
        cached = self.__dict__.get("_ref_f32")
        if cached is None or cached.shape[0] != len(self.reference_fps):
            cached = self.__dict__["_ref_f32"] = self.reference_fps.astype(np.float32)
        return cached

    def save(self, path: str | Path) -> list[Path]:
        """Write the JSON and the packed fingerprints beside it; returns both paths."""
        from molgnn.data.artifacts import atomic_path

        path = Path(path)
        fps_path = path.with_name(path.stem + FPS_SUFFIX)
        meta = {k: v for k, v in asdict(self).items() if k != "reference_fps"}
        meta["fingerprints_file"] = fps_path.name
        with atomic_path(fps_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.packbits(self.reference_fps, axis=1))
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return [path, fps_path]


def load_domain(path: str | Path) -> Domain:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
        packed = np.load(path.parent / meta.pop("fingerprints_file"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot read the applicability domain {path}: {exc}") from exc
    bits = int(meta.get("fp_bits", FP_BITS))
    fps = np.unpackbits(packed, axis=1, count=bits).astype(bool) if packed.size else np.zeros((0, bits), bool)
    return Domain(**meta, reference_fps=fps)


def fit_domain(train_smiles: Sequence[str], percentile: float = 5.0, max_reference: int = 5000,
               seed: int = 0) -> Domain:
    """The domain of ``train_smiles`` (see the module docstring); molecules that do not parse are skipped.

    At most ``max_reference`` molecules (a seeded random subset) are kept as similarity references;
    the threshold is the ``percentile``-th percentile of their leave-one-out nearest-neighbour
    similarities, so by construction about ``percentile`` % of training molecules would fall below it.
    """
    from rdkit.Chem import Descriptors

    if not 0 <= percentile < 100:
        raise ValueError(f"domain similarity percentile must lie in [0, 100), got {percentile}")
    mols = [m for m in (mol_or_none(s) for s in train_smiles) if m is not None]
    if len(mols) < 2:
        raise ValueError(f"an applicability domain needs at least 2 parsable training molecules, got {len(mols)}")
    heavy = [m.GetNumHeavyAtoms() for m in mols]
    elements = sorted({a.GetSymbol() for m in mols for a in m.GetAtoms()} - {"H"})
    rng = np.random.default_rng(seed)
    ref_idx = np.sort(rng.choice(len(mols), size=min(max_reference, len(mols)), replace=False))
    ref = morgan_bits([mols[i] for i in ref_idx])
    loo = nearest_similarity(ref, ref, exclude_self=True)
    return Domain(
        elements=elements, heavy_atoms_min=int(min(heavy)), heavy_atoms_max=int(max(heavy)),
        charged_seen=any(a.GetFormalCharge() for m in mols for a in m.GetAtoms()),
        radicals_seen=any(Descriptors.NumRadicalElectrons(m) > 0 for m in mols),
        similarity_threshold=float(np.percentile(loo, percentile)), similarity_percentile=float(percentile),
        n_train=len(mols), n_reference=int(len(ref_idx)), loo_similarity_median=float(np.median(loo)),
        reference_fps=ref)


def domain_columns(table, domain: Domain | None, smiles_column: str) -> None:
    """Add ``in_domain`` and ``domain_reason`` to ``table`` in place. Without a domain (a model
    folder from before domains were saved) both are empty: no check was possible."""
    if domain is None:
        table["in_domain"] = pd_na(len(table))
        table["domain_reason"] = ""
        return
    verdicts = domain.check(table[smiles_column].tolist()) if len(table) else []
    table["in_domain"] = [v for v, _ in verdicts]
    table["domain_reason"] = [r for _, r in verdicts]


def pd_na(n: int):
    import pandas as pd

    return pd.array([pd.NA] * n, dtype="boolean")


def domain_summary(table) -> dict[str, int]:
    """Counts for metrics: in/out of domain, and out-of-domain molecules per reason kind."""
    if "in_domain" not in table.columns or table["in_domain"].isna().all():
        return {}
    inside = table["in_domain"].astype(bool)
    out = {"n_in_domain": int(inside.sum()), "n_out_of_domain": int((~inside).sum())}
    kinds = {"elements": "elements not seen", "size": "heavy atoms", "radical": "radical",
             "charged": "charged atoms", "similarity": "nearest training similarity"}
    reasons = table.loc[~inside, "domain_reason"].astype(str)
    for name, needle in kinds.items():
        out[f"n_out_of_domain_{name}"] = int(reasons.str.contains(needle, regex=False).sum())
    return out
