"""Drug-likeness of one molecule and the standard quality rates of a set of generated samples."""
from __future__ import annotations

import functools
import math
from typing import Any, Iterable

from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, Lipinski
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from molgnn.chem import properties as P
from molgnn.chem.canonical import canonical_smiles, get_mol
from molgnn.chem.sample_rates import fraction, novelty, uniqueness, validity
from molgnn.chem.standardize import parse_smiles, rdkit_messages


@functools.cache
def _catalog(name: str) -> FilterCatalog:
    params = FilterCatalogParams()
    params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog(params)


def _alerts(mol: Chem.Mol, catalog: str) -> list[str]:
    return sorted({m.GetDescription() for m in _catalog(catalog).GetMatches(mol)})


def lipinski_violations(mol: Chem.Mol) -> int:
    """Rule-of-five violations: MW > 500, Crippen logP > 5, H-bond donors > 5, acceptors > 10."""
    return (int(Descriptors.MolWt(mol) > 500) + int(Crippen.MolLogP(mol) > 5)
            + int(Lipinski.NumHDonors(mol) > 5) + int(Lipinski.NumHAcceptors(mol) > 10))


def drug_likeness(smiles: str | Chem.Mol) -> dict[str, Any]:
    """QED, SA score (1 easy .. 10 hard), Lipinski violations, PAINS and Brenk alert names; the
    properties under their registry names (``molgnn.chem.properties``: ``qed``, ``sa``).

    Raises :class:`MoleculeParseError` for a SMILES RDKit cannot parse.
    """
    mol = smiles if isinstance(smiles, Chem.Mol) else parse_smiles(smiles)
    with rdkit_messages():
        return {
            **P.compute_properties(mol, (P.QED, P.SA)),
            "lipinski_violations": lipinski_violations(mol),
            "pains_alerts": _alerts(mol, "PAINS"),
            "brenk_alerts": _alerts(mol, "BRENK"),
        }


def generation_rates(samples: list[str | None], training_smiles: Iterable[str], *,
                     max_lipinski_violations: int = 1) -> dict[str, float | int]:
    """Quality of a batch of generated molecules.

    Let N = number of samples (``None`` or "" counts as an invalid sample), V = the samples that are
    valid molecules, U = the distinct canonical SMILES among V, T = the canonical SMILES of the
    valid training molecules (validity and canonical form: ``molgnn.chem.canonical``).

    - ``validity``, ``uniqueness``, ``novelty``: as defined in ``molgnn.chem.sample_rates`` (the
      definitions the MOSES metrics use too)
    - ``pains_free``  = fraction of U with no PAINS alert
    - ``lipinski_pass`` = fraction of U with at most ``max_lipinski_violations`` rule-of-five violations
    - ``mean_qed``, ``mean_sa`` = means of QED and SA score over U (each distinct molecule once)

    Rates and means over an empty set (no valid sample) are NaN. Counts ``n_samples``, ``n_valid``,
    ``n_unique`` and ``n_novel`` are included.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("generation_rates needs at least one sample")
    canon = [canonical_smiles(s) for s in samples]
    valid = [c for c in canon if c is not None]
    unique = list(dict.fromkeys(valid))   # first occurrence order
    training = {c for c in map(canonical_smiles, training_smiles) if c is not None}
    novel = [s for s in unique if s not in training]
    props = [drug_likeness(get_mol(s)) for s in unique]

    def mean(xs: list[float]) -> float:
        return math.fsum(xs) / len(xs) if xs else float("nan")

    return {
        "n_samples": len(samples),
        "n_valid": len(valid),
        "n_unique": len(unique),
        "n_novel": len(novel),
        "validity": validity(canon),
        "uniqueness": uniqueness(valid),
        "novelty": novelty(unique, training),
        "pains_free": fraction(sum(not p["pains_alerts"] for p in props), len(unique), "pains_free"),
        "lipinski_pass": fraction(sum(p["lipinski_violations"] <= max_lipinski_violations for p in props),
                                  len(unique), "lipinski_pass"),
        "mean_qed": mean([p[P.QED] for p in props]),
        "mean_sa": mean([p[P.SA] for p in props]),
    }
