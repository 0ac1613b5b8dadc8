"""The one vocabulary of computed molecular properties: a name, an axis label and the RDKit function.

Filtering (``chem.filters``, ``stages.filter``), guidance (``generate.guidance``), the MOSES property
distances (``generate.metrics``) and the report (``report.properties``, ``report.plots``) all take a
property's name, label and value from here, so a column called ``sa`` means the same number
everywhere. Use the constants (``QED``, ``SA``, ...) rather than bare strings.

MOSES publishes its property distances under its own keys (``logP``, ``SA``, ``QED``, ``weight``);
``MolProperty.moses_key`` keeps those for the metrics that reproduce its tables.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:   # RDKit is imported by the functions that compute: the registry itself loads fast
    from rdkit import Chem

QED = "qed"
LOGP = "logp"
SA = "sa"
MOL_WEIGHT = "mol_weight"
HEAVY_ATOMS = "heavy_atoms"


@functools.cache
def sa_scorer() -> ModuleType:
    """RDKit's Contrib SA_Score (Ertl & Schuffenhauer 2009, the scorer MOSES imports), loaded once.

    Contrib is not a package, so the file is loaded by path under a private module name (no
    ``sys.path`` change, no clash with another ``sascorer`` on the path).
    """
    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    spec = importlib.util.spec_from_file_location("molgnn_sascorer", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"RDKit's SA_Score contribution not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sa_score(mol: Chem.Mol) -> float:
    """Ertl-Schuffenhauer synthetic accessibility, 1 (easy) .. 10 (hard)."""
    return float(sa_scorer().calculateScore(mol))


def _qed(mol: Chem.Mol) -> float:
    from rdkit.Chem import QED as rdkit_qed
    return float(rdkit_qed.qed(mol))


def _logp(mol: Chem.Mol) -> float:
    from rdkit.Chem import Crippen
    return float(Crippen.MolLogP(mol))


def _mol_weight(mol: Chem.Mol) -> float:
    from rdkit.Chem import Descriptors
    return float(Descriptors.MolWt(mol))


def _heavy_atoms(mol: Chem.Mol) -> float:
    return float(mol.GetNumHeavyAtoms())


@dataclass(frozen=True)
class MolProperty:
    name: str                              # column / key / params value, e.g. "sa"
    label: str                             # axis label and report text
    compute: Callable[["Chem.Mol"], float]   # of a sanitized RDKit molecule
    moses_key: str | None = None           # MOSES's key for its property distance, when it has one


PROPERTIES: dict[str, MolProperty] = {p.name: p for p in (
    MolProperty(QED, "QED", _qed, "QED"),
    MolProperty(SA, "SA score (1 easy .. 10 hard)", sa_score, "SA"),
    MolProperty(LOGP, "Crippen logP", _logp, "logP"),
    MolProperty(MOL_WEIGHT, "molecular weight (Da)", _mol_weight, "weight"),
    MolProperty(HEAVY_ATOMS, "heavy atoms", _heavy_atoms),
)}

#: MOSES's property distances, in the order of its tables (logP, SA, QED, weight).
MOSES_PROPERTIES: tuple[str, ...] = (LOGP, SA, QED, MOL_WEIGHT)


def get_property(name: str) -> MolProperty:
    """The registered property ``name``; a KeyError naming the known ones otherwise."""
    try:
        return PROPERTIES[name]
    except KeyError:
        raise KeyError(f"unknown molecular property {name!r}; known: {sorted(PROPERTIES)}") from None


def compute_properties(mol: Chem.Mol, names: tuple[str, ...] | list[str] = tuple(PROPERTIES)) -> dict[str, float]:
    """``{name: value}`` of the named properties of one sanitized molecule."""
    return {n: get_property(n).compute(mol) for n in names}
