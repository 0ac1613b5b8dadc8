"""Per-molecule properties whose distributions the report compares: generated vs training set."""
from __future__ import annotations

from typing import Iterable

import pandas as pd

PROPERTY_COLUMNS = ["qed", "sa_score", "logp", "mol_wt", "heavy_atoms"]


def molecule_properties(smiles: Iterable[str | None]) -> pd.DataFrame:
    """QED, SA score, Crippen logP, molecular weight and heavy-atom count of each parsable SMILES.

    ``index`` is the entry's position in ``smiles``. Unparsable or empty entries are skipped (the generators' invalid samples); each distinct molecule
    counts as often as it is given, so a generator that repeats itself shows it in the histogram.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import QED, Crippen, Descriptors

    from molgnn.chem.filters import sa_score

    rows = []
    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) and smi else None
            if mol is None:
                continue
            rows.append({"index": i, "smiles": smi, "qed": QED.qed(mol), "sa_score": sa_score(mol),
                         "logp": Crippen.MolLogP(mol), "mol_wt": Descriptors.MolWt(mol),
                         "heavy_atoms": mol.GetNumHeavyAtoms()})
    finally:
        RDLogger.EnableLog("rdApp.*")
    return pd.DataFrame(rows, columns=["index", "smiles", *PROPERTY_COLUMNS])


def training_properties(smiles: list[str], max_molecules: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Properties of a seeded subsample of the training set: enough for a histogram, cheap on 2 cores."""
    s = pd.Series(smiles, dtype=object)
    if len(s) > max_molecules:
        s = s.sample(max_molecules, random_state=seed)
    return molecule_properties(s.tolist())
