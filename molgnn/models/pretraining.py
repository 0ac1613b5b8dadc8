"""Self-supervised objectives for the PaiNN encoder on unlabeled 3D structures.

(a) Coordinate denoising: positions get Gaussian noise; an equivariant head on PaiNN's vector
    features predicts each atom's noise vector (in units of noise_std). The noise is made zero-mean
    per molecule because a translation-invariant model cannot see a common shift.
(b) Masked atom types: a fraction of atoms get Z = 0 (MASK); a scalar head classifies their original
    element over a vocabulary fixed from the pretraining set.
(c) Optional, extended-Hückel frontier orbitals (``molgnn.chem.eht``): a scalar head, averaged over
    each molecule's atoms, predicts the EHT HOMO, LUMO and gap computed from the clean structure
    (standardized by the pretraining set's mean and std). Masking alone is nearly solved from geometry
    (>99.9 % accuracy); EHT adds electronic structure, which the QM9 gap depends on.
All corruptions are applied to the same forward pass; the loss is the weighted sum of the parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import schnetpack.nn as snn
import schnetpack.properties as props
import torch
import torch.nn.functional as F
from torch import nn

from molgnn.chem.eht import EHT_TARGETS
from molgnn.config import ModelConfig
from molgnn.featurize.neighbors import add_neighbors
from molgnn.models.painn_encoder import MASK_TOKEN, N_EMBEDDINGS, build_painn, encode, model_config_dict


class PretrainingModel(nn.Module):
    """PaiNN encoder + equivariant denoising head + masked-element classifier (+ EHT orbital head when
    ``eht_stats`` = {"mean": [3], "std": [3]} of the pretraining targets, in eV, is given)."""

    kind = "pretrain"

    def __init__(self, model_cfg: ModelConfig | Mapping[str, Any], elements: Sequence[int],
                 eht_stats: Mapping[str, Sequence[float]] | None = None):
        super().__init__()
        elements = sorted({int(z) for z in elements})
        if not elements or elements[0] < 1 or elements[-1] >= N_EMBEDDINGS:
            raise ValueError(f"element vocabulary must be atomic numbers in 1..{N_EMBEDDINGS - 1}, got {elements}")
        self.model_cfg = model_config_dict(model_cfg)
        self.elements = elements
        n = self.model_cfg["n_atom_basis"]
        self.encoder = build_painn(self.model_cfg)
        # gated equivariant blocks keep the output a true vector: it rotates with the input
        self.denoise_head = snn.build_gated_equivariant_mlp(n_in=n, n_out=1, n_hidden=n, n_layers=2)
        self.type_head = snn.build_mlp(n_in=n, n_out=len(elements), n_hidden=n, n_layers=2)
        lookup = torch.full((N_EMBEDDINGS,), -1, dtype=torch.long)
        lookup[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_class", lookup, persistent=False)
        self.eht_stats = None
        self.eht_head = None
        if eht_stats is not None:
            mean, std = (torch.as_tensor(eht_stats[k], dtype=torch.float32) for k in ("mean", "std"))
            if mean.shape != (len(EHT_TARGETS),) or std.shape != mean.shape or not bool((std > 0).all()):
                raise ValueError(f"eht_stats needs {len(EHT_TARGETS)} means and positive stds, got {dict(eht_stats)}")
            self.eht_stats = {"mean": mean.tolist(), "std": std.tolist()}
            self.eht_head = snn.build_mlp(n_in=n, n_out=len(EHT_TARGETS), n_hidden=n, n_layers=2)
            self.register_buffer("eht_mean", mean, persistent=False)
            self.register_buffer("eht_std", std, persistent=False)

    @property
    def hparams(self) -> dict[str, Any]:
        h = {"model": dict(self.model_cfg), "elements": list(self.elements)}
        return h | ({"eht_stats": dict(self.eht_stats)} if self.eht_stats is not None else {})

    @property
    def cutoff(self) -> float:
        return float(self.model_cfg["cutoff"])

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(noise prediction ``[n_atoms, 3]`` in noise_std units, element logits ``[n_atoms, C]``,
        standardized EHT (HOMO, LUMO, gap) ``[n_molecules, 3]`` or None without the EHT head)."""
        q, mu = encode(self.encoder, batch)
        _, v = self.denoise_head((q, mu))
        eht = None
        if self.eht_head is not None:
            idx_m, n_atoms = batch[props.idx_m], batch[props.n_atoms]
            per_atom = self.eht_head(q)
            eht = (per_atom.new_zeros(n_atoms.numel(), per_atom.shape[-1]).index_add_(0, idx_m, per_atom)
                   / n_atoms.unsqueeze(-1).to(per_atom.dtype))
        return v.squeeze(-1), self.type_head(q), eht


@dataclass
class Corruption:
    batch: dict[str, torch.Tensor]  # noised positions, masked Z, neighbor list rebuilt
    noise: torch.Tensor             # [n_atoms, 3] Angstrom, zero mean per molecule
    mask: torch.Tensor              # [n_atoms] bool, atoms whose Z was replaced by MASK


def corrupt(batch: Mapping[str, torch.Tensor], *, noise_std: float, mask_rate: float, cutoff: float,
            generator: torch.Generator | None = None) -> Corruption:
    """Noise positions and mask atom types; at least one atom per molecule is masked when mask_rate > 0
    so that every molecule contributes to the classification loss."""
    R, Z, idx_m, n_atoms = batch[props.R], batch[props.Z], batch[props.idx_m], batch[props.n_atoms]
    n_mol = n_atoms.numel()
    noise = torch.randn(R.shape, generator=generator, device=R.device, dtype=R.dtype) * noise_std
    mol_mean = torch.zeros(n_mol, 3, device=R.device, dtype=R.dtype).index_add_(0, idx_m, noise)
    noise = noise - (mol_mean / n_atoms.unsqueeze(-1).to(R.dtype))[idx_m]

    if mask_rate > 0:
        mask = torch.rand(Z.shape, generator=generator, device=Z.device) < mask_rate
        per_mol = torch.zeros(n_mol, dtype=torch.long, device=Z.device).index_add_(0, idx_m, mask.long())
        first = torch.cumsum(n_atoms, 0) - n_atoms
        pick = first + (torch.rand(n_mol, generator=generator, device=Z.device) * n_atoms).long()
        forced = torch.zeros_like(mask)
        forced[pick] = True
        mask = mask | (forced & (per_mol == 0)[idx_m])
    else:
        mask = torch.zeros(Z.shape, dtype=torch.bool, device=Z.device)

    out = dict(batch)
    out[props.R] = R + noise
    out[props.Z] = torch.where(mask, torch.full_like(Z, MASK_TOKEN), Z)
    return Corruption(add_neighbors(out, cutoff), noise, mask)


@dataclass
class PretrainLosses:
    loss: torch.Tensor
    denoise_loss: torch.Tensor
    mask_loss: torch.Tensor
    mask_accuracy: torch.Tensor
    n_masked: int
    eht_loss: torch.Tensor | None = None  # MSE of the standardized EHT targets (None: not trained)
    n_eht: torch.Tensor | int = 0         # molecules of the batch with EHT targets (a device tensor)


def pretraining_loss(model: PretrainingModel, batch: Mapping[str, torch.Tensor], *, noise_std: float,
                     mask_rate: float, denoise_weight: float = 1.0, mask_weight: float = 1.0,
                     eht_weight: float = 0.0, generator: torch.Generator | None = None) -> PretrainLosses:
    """Corrupt ``batch``, run the model, return the weighted loss and its parts.

    The denoising target is noise / noise_std, so its MSE is ~1 for a model that predicts nothing; the
    EHT targets (batch keys ``EHT_TARGETS``, NaN where EHT failed) are standardized for the same reason.
    """
    if denoise_weight > 0 and noise_std <= 0:
        raise ValueError(f"coordinate denoising needs noise_std > 0, got {noise_std}")
    if mask_weight > 0 and not 0 < mask_rate <= 1:
        raise ValueError(f"masked atom prediction needs 0 < mask_rate <= 1, got {mask_rate}")
    if eht_weight > 0 and (model.eht_head is None or any(t not in batch for t in EHT_TARGETS)):
        raise ValueError("eht_weight > 0 needs a model built with eht_stats and batches carrying "
                         f"{list(EHT_TARGETS)} (molgnn.chem.eht.eht_targets)")
    c = corrupt(batch, noise_std=noise_std, mask_rate=mask_rate if mask_weight > 0 else 0.0,
                cutoff=model.cutoff, generator=generator)
    noise_pred, logits, eht_pred = model(c.batch)
    zero = noise_pred.new_zeros(())
    denoise = F.mse_loss(noise_pred, c.noise / noise_std) if denoise_weight > 0 else zero
    n_masked = int(c.mask.sum())
    if n_masked:
        classes = model.element_class[batch[props.Z][c.mask]]
        if bool((classes < 0).any()):
            unknown = sorted(set(batch[props.Z][c.mask][classes < 0].tolist()))
            raise ValueError(f"elements {unknown} are not in the pretraining vocabulary {model.elements}")
        masked_logits = logits[c.mask]
        mask_loss = F.cross_entropy(masked_logits, classes)
        accuracy = (masked_logits.argmax(-1) == classes).float().mean()
    else:
        mask_loss, accuracy = zero, zero
    loss = denoise_weight * denoise + mask_weight * mask_loss
    eht_loss, n_eht = None, 0
    if eht_weight > 0:
        target = torch.stack([batch[t] for t in EHT_TARGETS], dim=-1).to(eht_pred.dtype)
        have = torch.isfinite(target).all(-1)
        z = (torch.nan_to_num(target) - model.eht_mean) / model.eht_std
        # masked mean over molecules with targets, without a host sync on the count
        sq = ((eht_pred - z) ** 2).mean(-1) * have
        n_have = have.sum()
        eht_loss = sq.sum() / n_have.clamp(min=1)
        loss = loss + eht_weight * eht_loss
        eht_loss, n_eht = eht_loss.detach(), n_have.detach()
    return PretrainLosses(loss, denoise.detach(), mask_loss.detach(), accuracy.detach(), n_masked, eht_loss, n_eht)
