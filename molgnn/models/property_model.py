"""Property prediction: PaiNN encoder + one atomwise MLP head per target, outputs in physical units.

Each head predicts a standardized per-atom contribution o_a; the model returns
``aggregate_a(o_a * std + mean)``. For sum-aggregated (extensive) targets mean/std are per-atom
statistics of y / n_atoms (schnetpack's convention); for mean-aggregated targets they are the
per-molecule statistics, and mean_a(o_a * std + mean) = mean_a(o_a) * std + mean.
Sum targets may also carry per-element reference values (``atom_ref[Z]``, fitted by least squares on
the training compositions, like schnetpack's atomrefs): the network then only learns the residual,
which for total energies is ~1000x smaller than the energy itself.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import schnetpack.nn as snn
import schnetpack.properties as props
import torch
from torch import nn

from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import AtomisticDataset, gather_atoms, iterate_batches
from molgnn.models.painn_encoder import (N_EMBEDDINGS, AtomFeatureEmbedding, build_painn, encode,
                                         model_config_dict)

# QM9's properties by name (lower-case): extensive ones sum over atoms, intensive ones (orbital energies,
# the dipole) average. Any other regression target sums: the properties users bring (solubility,
# lipophilicity, hydration free energy, ...) grow with the molecule roughly group by group, and a sum
# readout measured better than a mean on ESOL (chemprop's default readout sums too). Classification
# logits always average (see PropertyModel).
DEFAULT_AGGREGATION: dict[str, str] = {
    "u0": "sum", "u": "sum", "h": "sum", "g": "sum", "zpve": "sum", "cv": "sum", "alpha": "sum", "r2": "sum",
    "u0_atom": "sum", "u_atom": "sum", "h_atom": "sum", "g_atom": "sum",
    "gap": "mean", "homo": "mean", "lumo": "mean", "mu": "mean",
}
OTHER_AGGREGATION = "sum"
AGGREGATIONS = ("sum", "mean")
REGRESSION, CLASSIFICATION = "regression", "classification"
TASK_TYPES = (REGRESSION, CLASSIFICATION)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into (wrong kind or architecture)."""


def resolve_aggregation(targets: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Aggregation per target: ``overrides`` first, then DEFAULT_AGGREGATION, else OTHER_AGGREGATION."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(targets)
    if unknown:
        raise ValueError(f"aggregation given for unknown target(s) {sorted(unknown)}; targets are {list(targets)}")
    out = {t: overrides.get(t, DEFAULT_AGGREGATION.get(t.lower(), OTHER_AGGREGATION)) for t in targets}
    bad = {t: a for t, a in out.items() if a not in AGGREGATIONS}
    if bad:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {bad}")
    return out


class PropertyModel(nn.Module):
    kind = "property"

    def __init__(self, model_cfg: ModelConfig | Mapping[str, Any], targets: Sequence[str], *,
                 aggregation: Mapping[str, str] | None = None, head_hidden: int | None = None,
                 head_layers: int = 2, task_types: Mapping[str, str] | None = None,
                 atom_features: str | None = None, atom_feature_dim: int | None = None):
        super().__init__()
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be a non-empty list of distinct names, got {list(targets)}")
        self.model_cfg = model_config_dict(model_cfg)
        self.targets = list(targets)
        self.task_types = {t: (task_types or {}).get(t, REGRESSION) for t in self.targets}
        bad = {t: k for t, k in self.task_types.items() if k not in TASK_TYPES}
        if bad or set(task_types or {}) - set(self.targets):
            raise ValueError(f"task_types must map targets {self.targets} to one of {TASK_TYPES}, got {task_types}")
        # a classification head's logit is the mean of per-atom logits unless aggregation says otherwise
        overrides = {t: "mean" for t, k in self.task_types.items() if k == CLASSIFICATION}
        self.aggregation = resolve_aggregation(self.targets, {**overrides, **dict(aggregation or {})})
        self.head_hidden = head_hidden
        self.head_layers = head_layers
        n = self.model_cfg["n_atom_basis"]
        self.encoder = build_painn(self.model_cfg)
        # per-atom 2D features (a featurizer name of molgnn.featurize.atom_features) beside Z
        self.atom_features = atom_features
        self.atom_feature_dim = atom_feature_dim
        if atom_features is not None:
            if not atom_feature_dim:
                raise ValueError(f"atom_features={atom_features!r} needs its atom_feature_dim")
            self.encoder.electronic_embeddings.append(AtomFeatureEmbedding(atom_feature_dim, n))
        self.heads = nn.ModuleList(
            snn.build_mlp(n_in=n, n_out=1, n_hidden=head_hidden, n_layers=head_layers) for _ in self.targets)
        self.register_buffer("target_mean", torch.zeros(len(self.targets)))
        self.register_buffer("target_std", torch.ones(len(self.targets)))
        self.register_buffer("atom_ref", torch.zeros(N_EMBEDDINGS, len(self.targets)))
        self.register_buffer("is_sum", torch.tensor([self.aggregation[t] == "sum" for t in self.targets]),
                             persistent=False)
        self.register_buffer("is_classification",
                             torch.tensor([self.task_types[t] == CLASSIFICATION for t in self.targets]),
                             persistent=False)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"model": dict(self.model_cfg), "targets": list(self.targets),
                "aggregation": dict(self.aggregation), "head_hidden": self.head_hidden,
                "head_layers": self.head_layers, "task_types": dict(self.task_types),
                "atom_features": self.atom_features, "atom_feature_dim": self.atom_feature_dim}

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> "PropertyModel":
        return cls(hparams["model"], hparams["targets"], aggregation=hparams["aggregation"],
                   head_hidden=hparams.get("head_hidden"), head_layers=hparams.get("head_layers", 2),
                   task_types=hparams.get("task_types"),  # checkpoints before task types: all regression
                   atom_features=hparams.get("atom_features"), atom_feature_dim=hparams.get("atom_feature_dim"))

    @property
    def cutoff(self) -> float:
        return float(self.model_cfg["cutoff"])

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.target_mean.copy_(torch.as_tensor(mean, dtype=self.target_mean.dtype))
        self.target_std.copy_(torch.as_tensor(std, dtype=self.target_std.dtype))

    def set_atom_refs(self, atom_ref: torch.Tensor) -> None:
        """Per-element reference values ``[N_EMBEDDINGS, n_targets]``; only sum targets may have any."""
        atom_ref = torch.as_tensor(atom_ref, dtype=self.atom_ref.dtype, device=self.atom_ref.device)
        if bool((atom_ref[:, ~self.is_sum.to(atom_ref.device)] != 0).any()):
            raise ValueError("atom references are only meaningful for sum-aggregated targets")
        self.atom_ref.copy_(atom_ref)

    def load_encoder(self, checkpoint: Mapping[str, Any]) -> None:
        """Copy the encoder weights of a pretraining (or property) checkpoint into this model."""
        kind = checkpoint.get("kind")
        if kind not in ("pretrain", "property"):
            raise CheckpointMismatchError(f"cannot take encoder weights from a {kind!r} checkpoint")
        theirs = dict(checkpoint["config"]["model"])
        if theirs != self.model_cfg:
            raise CheckpointMismatchError(f"checkpoint encoder config {theirs} differs from this model's {self.model_cfg}")
        prefix = "encoder."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if not state:
            raise CheckpointMismatchError("checkpoint holds no encoder weights")
        # the atom-feature embedding is this model's own when the checkpoint has none (it starts at zero)
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        own = [k for k in missing if not k.startswith("electronic_embeddings.")]
        if own or unexpected:
            raise CheckpointMismatchError(f"checkpoint encoder weights do not fit: missing {own}, unexpected {unexpected}")

    def _per_atom(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        q, _ = encode(self.encoder, batch)
        per_atom = torch.cat([head(q) for head in self.heads], dim=-1) * self.target_std + self.target_mean
        return per_atom + self.atom_ref[batch[props.Z]]

    def atom_contributions(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[n_atoms, n_targets]``: each atom's share of its molecule's prediction; summed over a
        molecule's atoms they give ``forward`` (a mean target's shares are divided by n_atoms)."""
        per_atom = self._per_atom(batch)
        n_per_atom = batch[props.n_atoms][batch[props.idx_m]].unsqueeze(-1).to(per_atom.dtype)
        return torch.where(self.is_sum, per_atom, per_atom / n_per_atom)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Predictions ``[n_molecules, n_targets]`` in the targets' physical units; logits for
        classification targets (:meth:`outputs` turns them into probabilities)."""
        per_atom = self._per_atom(batch)
        n_atoms = batch[props.n_atoms]
        summed = torch.zeros(n_atoms.numel(), per_atom.shape[1], dtype=per_atom.dtype, device=per_atom.device)
        summed.index_add_(0, batch[props.idx_m], per_atom)
        return torch.where(self.is_sum, summed, summed / n_atoms.unsqueeze(-1).to(summed.dtype))

    def outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """What is reported: ``forward``'s values with classification logits as probabilities."""
        if not bool(self.is_classification.any()):
            return raw
        return torch.where(self.is_classification.to(raw.device), torch.sigmoid(raw), raw)


def _labels(dataset: AtomisticDataset, idx: torch.Tensor, targets: Sequence[str]) -> torch.Tensor:
    if dataset.targets is None:
        raise ValueError("dataset has no targets")
    missing = [t for t in targets if t not in dataset.target_names]
    if missing:
        raise ValueError(f"dataset lacks target(s) {missing}")
    cols = [dataset.target_names.index(t) for t in targets]
    return dataset.targets.cpu()[idx][:, cols].double()


def element_counts(dataset: AtomisticDataset, indices: np.ndarray) -> torch.Tensor:
    """``[len(indices), N_EMBEDDINGS]`` float64 (CPU): how many atoms of each Z each molecule has."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    atom, idx_m, _ = gather_atoms(dataset.ptr.cpu(), idx)
    counts = torch.zeros(idx.numel(), N_EMBEDDINGS, dtype=torch.float64)
    counts.index_put_((idx_m, dataset.z.cpu()[atom].long()), torch.ones(atom.numel(), dtype=torch.float64),
                      accumulate=True)
    return counts


def fit_atom_refs(dataset: AtomisticDataset, indices: np.ndarray, targets: Sequence[str],
                  aggregation: Mapping[str, str]) -> torch.Tensor:
    """Least-squares per-element references ``[N_EMBEDDINGS, T]`` for sum targets (zero elsewhere):
    y ~ sum_Z count_Z * ref_Z over the labelled molecules ``indices``."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    y = _labels(dataset, idx, targets)
    counts = element_counts(dataset, idx)
    present = torch.nonzero(counts.sum(0) > 0).squeeze(-1)
    ref = torch.zeros(N_EMBEDDINGS, len(targets), dtype=torch.float64)
    for k, t in enumerate(targets):
        valid = ~torch.isnan(y[:, k])
        if aggregation[t] != "sum" or not bool(valid.any()):
            continue
        # gelsd gives the minimum-norm solution when compositions are collinear
        sol = torch.linalg.lstsq(counts[valid][:, present], y[valid, k:k + 1], driver="gelsd").solution
        ref[present, k] = sol[:, 0]
    return ref


def target_statistics(dataset: AtomisticDataset, indices: np.ndarray, targets: Sequence[str],
                      aggregation: Mapping[str, str], atom_ref: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN-aware (mean, std) per target over molecules ``indices``, after subtracting the atom
    references if given: per-atom for sum targets, per-molecule otherwise.

    A zero or undefined std (one label, constant target) falls back to 1 so scaling stays finite.
    """
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    y = _labels(dataset, idx, targets)
    if atom_ref is not None:
        y = y - element_counts(dataset, idx) @ atom_ref.double().cpu()
    n = dataset.n_atoms.cpu()[idx].double().unsqueeze(-1)
    is_sum = torch.tensor([aggregation[t] == "sum" for t in targets])
    y = torch.where(is_sum, y / n, y)
    valid = ~torch.isnan(y)
    count = valid.sum(0)
    empty = [t for t, c in zip(targets, count.tolist()) if c == 0]
    if empty:
        raise ValueError(f"no labelled training molecules for target(s) {empty}")
    y0 = torch.where(valid, y, torch.zeros_like(y))
    mean = y0.sum(0) / count
    var = (torch.where(valid, y - mean, torch.zeros_like(y)) ** 2).sum(0) / count
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float(), std.float()


@torch.no_grad()
def predict_properties(model: PropertyModel, dataset: AtomisticDataset, indices: np.ndarray | None = None, *,
                       batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """Predictions ``[len(indices), n_targets]`` (CPU) in the order of ``indices`` (default: all);
    probabilities for classification targets."""
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        out = [model.outputs(model(b)).cpu() for b in iterate_batches(dataset, indices, batch_size=batch_size,
                                                        cutoff=model.cutoff, device=device)]
    finally:
        model.train(was_training)
    dtype = model.target_mean.dtype
    return torch.cat(out) if out else torch.zeros(0, len(model.targets), dtype=dtype)
