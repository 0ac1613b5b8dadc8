"""The shared 3D encoder: schnetpack's PaiNN with Gaussian radial basis and cosine cutoff.

Atomic number 0 is the MASK token of masked-atom pretraining. PaiNN's default nuclear embedding is an
``nn.Embedding(100, F)`` indexed by Z, and real atoms have Z >= 1, so row 0 is a spare trainable
vector that only masked atoms ever see.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import schnetpack.properties as props
import torch
from schnetpack.nn import CosineCutoff, GaussianRBF
from schnetpack.representation import PaiNN
from torch import nn

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import ATOM_FEATURES
from molgnn.featurize.neighbors import neighbor_pairs, pair_vectors

MASK_TOKEN = 0
N_EMBEDDINGS = 100  # PaiNN default: Z in 0..99, 0 = MASK


def model_config_from(raw: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """Accept a ModelConfig or its dict form (as stored in checkpoints)."""
    return raw if isinstance(raw, ModelConfig) else ModelConfig(**dict(raw))


def build_painn(cfg: ModelConfig | Mapping[str, Any]) -> PaiNN:
    cfg = model_config_from(cfg)
    model = PaiNN(
        n_atom_basis=cfg.n_atom_basis,
        n_interactions=cfg.n_interactions,
        radial_basis=GaussianRBF(n_rbf=cfg.n_rbf, cutoff=cfg.cutoff),
        cutoff_fn=CosineCutoff(cfg.cutoff),
    )
    if model.embedding.num_embeddings != N_EMBEDDINGS:  # the MASK row relies on this layout
        raise RuntimeError(f"unexpected PaiNN embedding size {model.embedding.num_embeddings}")
    return model


class AtomFeatureEmbedding(nn.Module):
    """Adds a linear map of each atom's 2D features to its nuclear embedding, through PaiNN's own
    hook for extra atom embeddings (``electronic_embeddings``: called as ``module(q, inputs)``, the
    result added to ``q`` before the first interaction). Zero-initialised, so a pretrained encoder
    starts out computing exactly what it was pretrained to."""

    def __init__(self, n_features: int, n_atom_basis: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_atom_basis, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, q: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if ATOM_FEATURES not in inputs:
            raise KeyError("this model needs per-atom 2D features (atom_features) in its input batch; build "
                           "the dataset with AtomisticDataset.from_frames(..., atom_features=NAME)")
        return self.linear(inputs[ATOM_FEATURES].to(q.dtype))


def model_config_dict(cfg: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    return dataclasses.asdict(model_config_from(cfg))


def encode(model: PaiNN, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scalar ``[n_atoms, F]``, vector ``[n_atoms, 3, F]``) features of a batch.

    Rij is always recomputed from the batch's current R (so corrupted positions are seen); the
    batch's idx_i/idx_j are reused when present, else the neighbor list is built with the model's cutoff.
    """
    R = batch[props.R]
    if props.idx_i in batch and props.idx_j in batch:
        idx_i, idx_j = batch[props.idx_i], batch[props.idx_j]
    else:
        idx_i, idx_j = neighbor_pairs(R, batch[props.n_atoms], float(model.cutoff))
    inputs = {
        props.Z: batch[props.Z],
        props.Rij: pair_vectors(R, idx_i, idx_j),
        props.idx_i: idx_i,
        props.idx_j: idx_j,
    }
    if ATOM_FEATURES in batch:  # read by an AtomFeatureEmbedding, where the model has one
        inputs[ATOM_FEATURES] = batch[ATOM_FEATURES]
    out = model(inputs)
    return out["scalar_representation"], out["vector_representation"]
