"""Atom-level attributions of a fine-tuned PaiNN ensemble's predictions.

The property heads predict one value per atom and the prediction is their sum (or their mean), so
each atom's output is an exact decomposition of the prediction, not an approximation: the
attributions of a molecule add up to its predicted value. A hydrogen's share is folded into the heavy
atom it is bonded to (a drawing of the heavy-atom graph shows every part of the prediction). The
ensemble's attribution is the members' mean; their spread is reported beside it. For a
classification target the decomposition is of the logit (the probability is its sigmoid).

The 3D structure is made exactly as the screen makes it (standardize, then ETKDGv3 + MMFF with the
same seed and limits), so explain and screen predict the same value for a molecule.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from rdkit import Chem

from molgnn.chem.conformers import ConformerError, embed_3d
from molgnn.chem.standardize import Rejection, parse_smiles, standardize
from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.featurize.atomistic import AtomisticDataset, make_batch
from molgnn.models.property_model import PropertyModel
from molgnn.train.checkpoints import CheckpointError, model_from_checkpoint


class ExplainError(ValueError):
    """A molecule cannot be explained (unparsable, rejected by standardization, no 3D structure)."""


@dataclass(frozen=True)
class Explanation:
    """Attributions of one molecule; rows of the arrays are the heavy atoms of ``mol`` in index order."""
    raw: str                      # the SMILES as given
    smiles: str                   # the standardized SMILES the model saw
    mol: Chem.Mol                 # heavy-atom molecule (atom i = row i)
    targets: list[str]
    prediction: np.ndarray        # [T] ensemble mean prediction
    prediction_std: np.ndarray    # [T] spread over members (ddof=0)
    attribution: np.ndarray       # [n_heavy, T] ensemble mean, hydrogens folded in
    attribution_std: np.ndarray   # [n_heavy, T] spread over members
    hydrogen_share: np.ndarray    # [n_heavy, T] part of ``attribution`` from the atom's hydrogens
    logit_targets: tuple[str, ...] = ()   # classification targets: prediction and attributions are logits

    def table(self) -> pd.DataFrame:
        """One row per heavy atom: index, element, neighbours' count of H, and per target the
        attribution, its ensemble spread and the hydrogens' part of it."""
        atoms = list(self.mol.GetAtoms())
        out: dict[str, Any] = {
            schema.SMILES: self.smiles, "atom_index": [a.GetIdx() for a in atoms],
            "element": [a.GetSymbol() for a in atoms], "n_hydrogens": [a.GetTotalNumHs() for a in atoms]}
        for k, t in enumerate(self.targets):
            out[f"{t}_attribution"] = self.attribution[:, k]
            out[f"{t}_attribution_std"] = self.attribution_std[:, k]
            out[f"{t}_from_hydrogens"] = self.hydrogen_share[:, k]
            out[f"{t}_prediction"] = self.prediction[k]
            out[f"{t}_scale"] = "logit" if t in self.logit_targets else "value"
        return pd.DataFrame(out)


def ensemble_models(checkpoints: Sequence[Mapping[str, Any]], device: str | torch.device = "cpu"
                    ) -> list[PropertyModel]:
    """The members as PropertyModels in eval mode; every one must predict the same targets."""
    if not checkpoints:
        raise CheckpointError("explaining needs at least one fine-tuned model checkpoint")
    models = []
    for k, ckpt in enumerate(checkpoints):
        if ckpt.get("kind") != "property":
            raise CheckpointError(f"checkpoint {k} is of kind {ckpt.get('kind')!r}, not a fine-tuned 'property' model")
        model = model_from_checkpoint(ckpt, device=device)
        assert isinstance(model, PropertyModel)
        if models and model.targets != models[0].targets:
            raise CheckpointError(f"checkpoint {k} predicts {model.targets}, checkpoint 0 predicts {models[0].targets}")
        models.append(model.eval())
    return models


def structure_for(raw: str, *, seed: int = 0, timeout_s: float = 10.0, max_iterations: int = 200,
                  max_heavy_atoms: int = 50) -> tuple[str, Chem.Mol, np.ndarray, np.ndarray]:
    """(standardized SMILES, molecule with explicit H in the conformer's atom order, Z, positions [n, 3])."""
    std = standardize(raw, max_heavy_atoms=max_heavy_atoms)
    if isinstance(std, Rejection):
        raise ExplainError(f"cannot explain {raw!r}: {std.stage}: {std.reason}")
    try:
        conf = embed_3d(std.smiles, seed=seed, timeout_s=timeout_s, max_iterations=max_iterations)
    except ConformerError as exc:
        raise ExplainError(f"cannot explain {raw!r}: no 3D structure: {exc.reason}") from None
    # embed_3d parses the same SMILES and appends the hydrogens after the heavy atoms: same order here
    mol_h = Chem.AddHs(parse_smiles(std.smiles))
    z = np.array([a.GetAtomicNum() for a in mol_h.GetAtoms()], dtype=np.int64)
    if not np.array_equal(z, conf.atomic_numbers):
        raise AssertionError(f"conformer atoms {conf.atomic_numbers.tolist()} differ from {z.tolist()}: a bug")
    return std.smiles, mol_h, conf.atomic_numbers, conf.positions


@torch.no_grad()
def atom_attributions(models: Sequence[PropertyModel], atomic_numbers: np.ndarray, positions: np.ndarray,
                      device: str | torch.device = "cpu", smiles: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(per-member atom contributions ``[K, n_atoms, T]``, per-member predictions ``[K, T]``) of one
    structure; ``smiles`` (atoms in its order with hydrogens) for models that read atom features."""
    frame = pd.DataFrame({schema.MOL_ID: ["m"], schema.SMILES: [smiles or ""],
                          schema.ATOMIC_NUMBERS: [np.asarray(atomic_numbers).tolist()],
                          schema.POSITIONS: [np.asarray(positions, dtype=np.float64).ravel().tolist()]})
    datasets: dict[str | None, AtomisticDataset] = {}
    contribs, preds = [], []
    for model in models:
        if model.atom_features not in datasets:
            datasets[model.atom_features] = AtomisticDataset.from_frames(
                frame, atom_features=model.atom_features).to(device)
        dataset = datasets[model.atom_features]
        if dataset.atom_features_missing:
            raise ExplainError(f"the atoms of {smiles!r} cannot be paired with its SMILES for atom features")
        batch = make_batch(dataset, [0], cutoff=model.cutoff, device=device)
        c = model.atom_contributions(batch).double()
        p = model(batch).double()[0]
        # the decomposition is exact by construction; a readout that breaks it must not be drawn as one
        if not torch.allclose(c.sum(0), p, rtol=1e-4, atol=1e-4 * float(p.abs().max()) + 1e-6):
            raise AssertionError(f"atom contributions sum to {c.sum(0).tolist()}, the model predicts {p.tolist()}")
        contribs.append(c.cpu().numpy())
        preds.append(p.cpu().numpy())
    return np.stack(contribs), np.stack(preds)


def explain_smiles(raw: str, models: Sequence[PropertyModel], *, seed: int = 0, timeout_s: float = 10.0,
                   max_iterations: int = 200, max_heavy_atoms: int = 50,
                   device: str | torch.device = "cpu") -> Explanation:
    """Attributions of one molecule given as SMILES; :class:`ExplainError` if it cannot be made 3D."""
    smiles, mol_h, z, pos = structure_for(raw, seed=seed, timeout_s=timeout_s, max_iterations=max_iterations,
                                          max_heavy_atoms=max_heavy_atoms)
    per_atom, preds = atom_attributions(models, z, pos, device=device, smiles=smiles)  # [K, N, T], [K, T]
    mol = parse_smiles(smiles)           # the atoms AddHs started from: indices 0..n-1 of mol_h
    n = mol.GetNumAtoms()
    folded = per_atom[:, :n].copy()
    from_h = np.zeros_like(folded)
    for i in range(n, z.size):           # every added hydrogen has exactly one neighbour among them
        owner = mol_h.GetAtomWithIdx(i).GetNeighbors()[0].GetIdx()
        folded[:, owner] += per_atom[:, i]
        from_h[:, owner] += per_atom[:, i]
    return Explanation(raw=raw, smiles=smiles, mol=mol, targets=list(models[0].targets),
                       prediction=preds.mean(0), prediction_std=preds.std(0),
                       attribution=folded.mean(0), attribution_std=folded.std(0), hydrogen_share=from_h.mean(0),
                       logit_targets=tuple(t for t, kind in getattr(models[0], "task_types", {}).items()
                                           if kind == "classification"))


def write_attributions_csv(explanations: Sequence[Explanation], path: str | Path) -> Path:
    """All molecules' per-atom tables in one CSV (``input`` names the SMILES as given)."""
    frames = [e.table().assign(input=e.raw) for e in explanations]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
