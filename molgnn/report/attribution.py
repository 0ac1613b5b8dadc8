"""Atom attributions drawn on the molecule (PNG and SVG) and written as a CSV.

Colours show each heavy atom's attribution minus the molecule's mean attribution (red: pushes the
prediction up, blue: down, white: an average share), on a scale symmetric around zero; every atom
is labelled with its raw attribution. The raw values are in the CSV.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from molgnn.screen.explain import Explanation, ensemble_models, explain_smiles, write_attributions_csv

ATTRIBUTIONS_FILE = "attributions.csv"


def _colour(value: float) -> tuple[float, float, float]:
    """-1 -> blue, 0 -> white, +1 -> red (linear in between)."""
    v = float(np.clip(value, -1.0, 1.0))
    return (1.0, 1.0 - v, 1.0 - v) if v >= 0 else (1.0 + v, 1.0 + v, 1.0)


def draw_attributions(expl: Explanation, target: str, stem: str | Path, size: tuple[int, int] = (420, 320),
                      legend: str | None = None) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` of ``expl``'s attributions for ``target``."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    if target not in expl.targets:
        raise ValueError(f"target {target!r} is not predicted by the model; it predicts {expl.targets}")
    k = expl.targets.index(target)
    values = expl.attribution[:, k]
    centred = values - values.mean()
    scale = float(np.abs(centred).max()) or 1.0
    mol = Chem.Mol(expl.mol)
    for atom, v in zip(mol.GetAtoms(), values):
        atom.SetProp("atomNote", f"{v:+.2f}")
    atoms = list(range(mol.GetNumAtoms()))
    colours = {i: _colour(centred[i] / scale) for i in atoms}
    radii = {i: 0.45 for i in atoms}
    legend = legend if legend is not None else (
        f"{expl.smiles}  {target}{' (logit)' if target in expl.logit_targets else ''} = "
        f"{expl.prediction[k]:.3g} ± {expl.prediction_std[k]:.2g}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for drawer, suffix in ((rdMolDraw2D.MolDraw2DCairo(*size), ".png"), (rdMolDraw2D.MolDraw2DSVG(*size), ".svg")):
        drawer.drawOptions().annotationFontScale = 0.6
        rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol, legend=legend, highlightAtoms=atoms,
                                           highlightAtomColors=colours, highlightAtomRadii=radii,
                                           highlightBonds=[])
        drawer.FinishDrawing()
        path = stem.with_suffix(suffix)
        data = drawer.GetDrawingText()
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        paths.append(path)
    return paths[0], paths[1]


@dataclass
class ExplainResult:
    csv_path: Path
    images: list[Path]                # PNG then SVG of each molecule, in input order
    explanations: list[Explanation]


def explain_to_folder(smiles: Sequence[str], checkpoints: Sequence[Mapping[str, Any]], out_dir: str | Path, *,
                      target: str | None = None, seed: int = 0, timeout_s: float = 10.0,
                      max_iterations: int = 200, device: str = "cpu") -> ExplainResult:
    """Explain every SMILES (all are checked before anything is written): ``out_dir/attributions.csv``
    and ``mol_<k>_<target>.png/.svg`` (k from 1, in input order). ``target`` defaults to the model's first."""
    models = ensemble_models(checkpoints, device=device)
    target = target or models[0].targets[0]
    if target not in models[0].targets:
        raise ValueError(f"--target {target!r} is not predicted by the model; it predicts {models[0].targets}")
    explanations = [explain_smiles(s, models, seed=seed, timeout_s=timeout_s, max_iterations=max_iterations,
                                   device=device) for s in smiles]
    out_dir = Path(out_dir)
    images: list[Path] = []
    for k, expl in enumerate(explanations, start=1):
        images += draw_attributions(expl, target, out_dir / f"mol_{k}_{target}")
    return ExplainResult(write_attributions_csv(explanations, out_dir / ATTRIBUTIONS_FILE), images, explanations)


def candidate_attributions(smiles: Sequence[str], checkpoint_paths: Sequence[str | Path], images_dir: str | Path,
                           *, target: str | None = None, seed: int = 0, timeout_s: float = 10.0
                           ) -> tuple[str, list[tuple[str, Path | None, str]]]:
    """Attribution images (``attribution_<k>.png/.svg``) of a few ranked molecules for the run report:
    (the target drawn, [(SMILES, PNG or None, why not)]). A molecule that cannot be explained is
    skipped with its reason; the rest are still drawn. ``target`` falls back to the model's first."""
    from molgnn.screen.explain import ExplainError
    from molgnn.train.checkpoints import load_checkpoint

    models = ensemble_models([load_checkpoint(p) for p in checkpoint_paths])
    target = target if target in models[0].targets else models[0].targets[0]
    drawn: list[tuple[str, Path | None, str]] = []
    for k, smi in enumerate(smiles, start=1):
        try:
            expl = explain_smiles(smi, models, seed=seed, timeout_s=timeout_s)
        except ExplainError as exc:
            drawn.append((smi, None, str(exc)))
            continue
        png, _ = draw_attributions(expl, target, Path(images_dir) / f"attribution_{k}")
        drawn.append((smi, png, ""))
    return target, drawn
