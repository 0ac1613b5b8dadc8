"""The generate stage's pictures, shared by its MLflow run and the run report: a grid of valid
samples and their property distributions against the training set."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from molgnn.report.plots import molecule_grid, property_distributions, save_figure
from molgnn.chem.properties import QED
from molgnn.report.properties import molecule_properties


def generator_figures(kind: str, samples: pd.DataFrame, training: pd.DataFrame, grid_path: Path,
                      distributions_path: Path, max_grid: int = 24) -> dict[str, Path]:
    """Write the sample grid and the property-distribution figure of one generator.

    ``samples``: the stage's ``samples.csv`` (``sample``, ``smiles``: None where invalid before
    correction); ``training``: :func:`molgnn.report.properties.training_properties`. Returns the
    paths written (no grid when no sample is valid).
    """
    smiles = samples["smiles"].where(samples["smiles"].notna(), None).tolist()
    props = molecule_properties(smiles)
    out: dict[str, Path] = {}
    shown = props.head(max_grid)
    legends = [f"#{samples['sample'].iloc[i]}  QED {q:.2f}" for i, q in zip(shown["index"], shown[QED])]
    grid = molecule_grid(shown["smiles"].tolist(), grid_path, max_mols=max_grid, legends=legends)
    if grid is not None:
        out["grid"] = grid
    n, n_valid = len(samples), len(props)
    title = f"{kind}: {n_valid} of {n} samples valid vs training set"
    out["distributions"] = save_figure(property_distributions({"training": training, kind: props}, title),
                                       distributions_path)
    return out
