"""Per-molecule properties whose distributions the report compares: generated vs training set."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from molgnn.chem.properties import PROPERTIES

#: one column per registered property (molgnn.chem.properties): qed, sa, logp, mol_weight, heavy_atoms
PROPERTY_COLUMNS = list(PROPERTIES)


def molecule_properties(smiles: Iterable[str | None]) -> pd.DataFrame:
    """QED, SA score, Crippen logP, molecular weight and heavy-atom count of each valid SMILES.

    ``index`` is the entry's position in ``smiles``. Invalid or empty entries are skipped (the
    generators' invalid samples; validity as ``molgnn.chem.canonical.get_mol``); each distinct molecule
    counts as often as it is given, so a generator that repeats itself shows it in the histogram.
    """
    from molgnn.chem.canonical import get_mol
    from molgnn.chem.properties import compute_properties

    rows = []
    for i, smi in enumerate(smiles):
        mol = get_mol(smi) if isinstance(smi, str) else None
        if mol is not None:
            rows.append({"index": i, "smiles": smi, **compute_properties(mol, PROPERTY_COLUMNS)})
    return pd.DataFrame(rows, columns=["index", "smiles", *PROPERTY_COLUMNS])


def training_properties(smiles: list[str], max_molecules: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Properties of a seeded subsample of the training set: enough for a histogram, cheap on 2 cores."""
    s = pd.Series(smiles, dtype=object)
    if len(s) > max_molecules:
        s = s.sample(max_molecules, random_state=seed)
    return molecule_properties(s.tolist())
