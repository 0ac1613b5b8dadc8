"""Ensemble prediction with fine-tuned property checkpoints: per-molecule mean and spread."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from molgnn.data import schema
from molgnn.featurize.atomistic import AtomisticDataset
from molgnn.models.property_model import PropertyModel, predict_properties
from molgnn.train.checkpoints import CheckpointError, model_from_checkpoint


def predict_ensemble(checkpoints: Sequence[Mapping[str, Any]], structures_df: pd.DataFrame | AtomisticDataset, *,
                     device: str | torch.device = "cpu", batch_size: int = 256) -> pd.DataFrame:
    """DataFrame(mol_id, <target>_mean, <target>_std per target), rows in the structures' order.

    The std is over ensemble members (ddof=0): zero for a single member or identical members.
    Every checkpoint must be a "property" checkpoint predicting the same targets.
    """
    if not checkpoints:
        raise CheckpointError("predict_ensemble needs at least one checkpoint")
    targets: list[str] | None = None
    for k, ckpt in enumerate(checkpoints):
        if ckpt.get("kind") != "property":
            raise CheckpointError(f"checkpoint {k} is of kind {ckpt.get('kind')!r}, not a fine-tuned 'property' model")
        these = list(ckpt["config"]["targets"])
        if targets is None:
            targets = these
        elif these != targets:
            raise CheckpointError(f"checkpoint {k} predicts {these}, checkpoint 0 predicts {targets}")
    assert targets is not None
    if len(structures_df) == 0:
        return pd.DataFrame({schema.MOL_ID: pd.Series(dtype=str),
                             **{f"{t}_{s}": pd.Series(dtype=float) for t in targets for s in ("mean", "std")}})
    kinds = {ckpt["config"].get("atom_features") for ckpt in checkpoints}
    if len(kinds) > 1:
        raise CheckpointError(f"the members read different atom features {sorted(map(str, kinds))}")
    atom_features = kinds.pop()
    if isinstance(structures_df, AtomisticDataset):
        dataset = structures_df
        if atom_features is not None and dataset.atom_features is None:
            raise CheckpointError(f"the models read atom features ({atom_features}); the dataset has none")
    else:
        dataset = AtomisticDataset.from_frames(structures_df, atom_features=atom_features)
    dataset = dataset.to(device)
    preds = []
    for ckpt in checkpoints:
        model = model_from_checkpoint(ckpt, device=device)
        assert isinstance(model, PropertyModel)
        preds.append(predict_properties(model, dataset, batch_size=batch_size, device=device).double())
    stacked = torch.stack(preds)                      # [K, M, T]
    mean, std = stacked.mean(0), stacked.std(0, unbiased=False)
    out = {schema.MOL_ID: np.asarray(dataset.mol_ids)}
    for k, t in enumerate(targets):
        out[f"{t}_mean"] = mean[:, k].numpy()
        out[f"{t}_std"] = std[:, k].numpy()
    return pd.DataFrame(out)
