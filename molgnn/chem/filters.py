"""Drug-likeness of one molecule and the standard quality rates of a set of generated samples."""
from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from types import ModuleType
from typing import Any, Iterable

from rdkit import Chem, RDConfig
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from molgnn.chem.standardize import MoleculeParseError, parse_smiles, rdkit_messages


@functools.cache
def _sascorer() -> ModuleType:
    """RDKit ships SA_Score in Contrib, outside any package: import it from there, once."""
    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if not os.path.isfile(os.path.join(path, "sascorer.py")):
        raise ImportError(f"RDKit's SA_Score contribution not found at {path}")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module("sascorer")


@functools.cache
def _catalog(name: str) -> FilterCatalog:
    params = FilterCatalogParams()
    params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog(params)


def _alerts(mol: Chem.Mol, catalog: str) -> list[str]:
    return sorted({m.GetDescription() for m in _catalog(catalog).GetMatches(mol)})


def sa_score(mol: Chem.Mol) -> float:
    """Ertl-Schuffenhauer synthetic accessibility, 1 (easy) .. 10 (hard)."""
    return float(_sascorer().calculateScore(mol))


def lipinski_violations(mol: Chem.Mol) -> int:
    """Rule-of-five violations: MW > 500, Crippen logP > 5, H-bond donors > 5, acceptors > 10."""
    return (int(Descriptors.MolWt(mol) > 500) + int(Crippen.MolLogP(mol) > 5)
            + int(Lipinski.NumHDonors(mol) > 5) + int(Lipinski.NumHAcceptors(mol) > 10))


def drug_likeness(smiles: str | Chem.Mol) -> dict[str, Any]:
    """QED, SA score (1 easy .. 10 hard), Lipinski violations, PAINS and Brenk alert names.

    Raises :class:`MoleculeParseError` for a SMILES RDKit cannot parse.
    """
    mol = smiles if isinstance(smiles, Chem.Mol) else parse_smiles(smiles)
    with rdkit_messages():
        return {
            "qed": float(QED.qed(mol)),
            "sa_score": float(_sascorer().calculateScore(mol)),
            "lipinski_violations": lipinski_violations(mol),
            "pains_alerts": _alerts(mol, "PAINS"),
            "brenk_alerts": _alerts(mol, "BRENK"),
        }


def _canonical(smiles: str | None) -> tuple[str, Chem.Mol] | None:
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    try:
        mol = parse_smiles(smiles)
    except MoleculeParseError:
        return None
    return Chem.MolToSmiles(mol), mol


def generation_rates(samples: list[str | None], training_smiles: Iterable[str], *,
                     max_lipinski_violations: int = 1) -> dict[str, float | int]:
    """Quality of a batch of generated molecules.

    Let N = number of samples (``None`` or "" counts as an invalid sample), V = the samples RDKit
    parses and sanitizes, U = the distinct canonical SMILES among V, T = the canonical SMILES of the
    parsable training molecules.

    - ``validity``    = |V| / N
    - ``uniqueness``  = |U| / |V|
    - ``novelty``     = |U \\ T| / |U|
    - ``pains_free``  = fraction of U with no PAINS alert
    - ``lipinski_pass`` = fraction of U with at most ``max_lipinski_violations`` rule-of-five violations
    - ``mean_qed``, ``mean_sa`` = means of QED and SA score over U (each distinct molecule once)

    Rates with an empty denominator are 0.0; means over an empty U are NaN. Counts ``n_samples``,
    ``n_valid``, ``n_unique`` and ``n_novel`` are included.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("generation_rates needs at least one sample")
    valid = [c for c in map(_canonical, samples) if c is not None]
    unique: dict[str, Chem.Mol] = {}
    for smi, mol in valid:
        unique.setdefault(smi, mol)
    training = {c[0] for c in map(_canonical, training_smiles) if c is not None}
    novel = [s for s in unique if s not in training]
    props = [drug_likeness(mol) for mol in unique.values()]

    def rate(k: int, n: int) -> float:
        return k / n if n else 0.0

    def mean(xs: list[float]) -> float:
        return math.fsum(xs) / len(xs) if xs else float("nan")

    return {
        "n_samples": len(samples),
        "n_valid": len(valid),
        "n_unique": len(unique),
        "n_novel": len(novel),
        "validity": rate(len(valid), len(samples)),
        "uniqueness": rate(len(unique), len(valid)),
        "novelty": rate(len(novel), len(unique)),
        "pains_free": rate(sum(not p["pains_alerts"] for p in props), len(unique)),
        "lipinski_pass": rate(sum(p["lipinski_violations"] <= max_lipinski_violations for p in props), len(unique)),
        "mean_qed": mean([p["qed"] for p in props]),
        "mean_sa": mean([p["sa_score"] for p in props]),
    }
