"""Self-supervised pretraining of the PaiNN encoder (coordinate denoising + masked atom types)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import schnetpack.properties as props
import torch

from molgnn.chem.eht import EHT_TARGETS, eht_targets
from molgnn.config import ModelConfig, PretrainConfig
from molgnn.data.schema import TOTAL_CHARGE
from molgnn.featurize.atomistic import AtomisticDataset, gather_atoms, iterate_batches
from molgnn.models.pretraining import PretrainingModel, pretraining_loss
from molgnn.models.property_model import CheckpointMismatchError
from molgnn.train import history_keys as H
from molgnn.train.checkpoints import checkpoint_from_model
from molgnn.train.steps import cosine_time_lr, optimizer_step, set_lr

LogFn = Callable[[dict[str, float], int], None]


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class PretrainResult:
    checkpoint: dict[str, Any]
    history: list[dict[str, float]]


def as_dataset(structures: pd.DataFrame | AtomisticDataset, **kwargs: Any) -> AtomisticDataset:
    return structures if isinstance(structures, AtomisticDataset) else AtomisticDataset.from_frames(structures, **kwargs)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pretrain(structures: pd.DataFrame | AtomisticDataset, model_cfg: ModelConfig, pretrain_cfg: PretrainConfig, *,
             seed: int, device: str | torch.device = "cpu", log_fn: LogFn | None = None,
             weight_decay: float = 0.0, grad_clip: float | None = 10.0, amp: str | None = None,
             check_every: int = 1, fused_optimizer: bool | None = None,
             max_seconds: float | None = None, cosine_lr: bool = False,
             init_from: Mapping[str, Any] | None = None,
             elements: Sequence[int] | None = None) -> PretrainResult:
    """Pretrain a PaiNN encoder on unlabeled structures.

    ``pretrain_cfg.max_molecules`` keeps a seeded random subset. Per-epoch metrics are averaged over
    molecules (loss), atoms (denoising) or masked atoms (mask loss/accuracy) and passed to
    ``log_fn(metrics, epoch)``. Returns the final weights as a "pretrain" checkpoint.

    GPU options (defaults keep the plain behaviour): ``amp`` ("bf16"/"fp16") autocasts the forward
    pass; ``check_every`` reads the loss on the host every N steps (0: once per epoch) and keeps the
    epoch sums on the device otherwise; ``fused_optimizer`` (default: on CUDA) uses fused AdamW;
    ``max_seconds`` ends training at the first epoch boundary after that many seconds; ``cosine_lr``
    then decays the lr over those seconds to 1 % (a decayed end gives a better encoder than a constant lr).
    Without it, ``pretrain_cfg.lr_schedule == "cosine"`` decays the lr to 1 % over the configured epochs;
    ``"cosine-time"`` means ``cosine_lr=True``.

    ``init_from``: a pretraining checkpoint to continue from (its weights; a fresh optimizer), e.g. to
    pretrain longer than one GPU command or to adapt a shipped encoder to a user's molecules; the model
    config must match and its history is kept in front. A checkpoint pretrained without the EHT head may
    be continued with it (the head starts fresh). The masked-type vocabulary is the checkpoint's plus
    any element of this dataset it lacks (that element's classifier row starts fresh).

    ``elements``: the masked-type vocabulary (default: this dataset's elements); a wider one lets a
    checkpoint be continued on data with elements its pretraining set lacked, without new rows.

    ``pretrain_cfg.eht_weight > 0`` adds the EHT orbital objective: targets are the dataset's
    ``EHT_TARGETS`` columns when it has them (precomputed), else computed here on the CPU (with each
    structure's ``total_charge`` column where a table has one, else neutral); molecules EHT rejects stay
    in the set for the other objectives, and the checkpoint's "eht" entry counts them.
    """
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if check_every < 0:
        raise ValueError(f"check_every must be >= 0, got {check_every}")
    device = torch.device(device)
    charges = (structures[TOTAL_CHARGE].fillna(0).to_numpy(np.int64)
               if isinstance(structures, pd.DataFrame) and TOTAL_CHARGE in structures.columns else None)
    dataset = as_dataset(structures).to(device)  # whole table on the device: batches gather there
    n = len(dataset)
    if n == 0:
        raise ValueError("pretraining needs at least one structure")
    indices = np.arange(n)
    if pretrain_cfg.max_molecules is not None and pretrain_cfg.max_molecules < n:
        if pretrain_cfg.max_molecules < 1:
            raise ValueError(f"pretrain.max_molecules must be positive, got {pretrain_cfg.max_molecules}")
        indices = np.sort(np.random.default_rng(seed).choice(n, pretrain_cfg.max_molecules, replace=False))
    elements = sorted(set(torch.unique(dataset.z).tolist()) | set(elements or ())
                      | set(init_from.get("element_vocab", ()) if init_from is not None else ()))
    eht_stats, eht_info = None, None
    if pretrain_cfg.eht_weight > 0:
        dataset, eht_info = with_eht_targets(dataset, indices, charges)
        y = dataset.targets[torch.as_tensor(indices, device=dataset.device)]
        y = y[torch.isfinite(y).all(-1)]
        if len(y) == 0:
            raise ValueError("pretrain.eht_weight > 0 but EHT gave no targets for any structure: "
                             f"{eht_info['reasons']}")
        std = y.std(0) if len(y) > 1 else torch.ones(y.shape[-1], dtype=y.dtype)
        eht_stats = {"mean": y.mean(0).tolist(), "std": torch.where(std > 0, std, torch.ones_like(std)).tolist()}

    cosine_lr = cosine_lr or pretrain_cfg.lr_schedule == "cosine-time"   # the config's name for it
    if cosine_lr and not max_seconds:
        raise ValueError("cosine_lr=True needs max_seconds (the schedule runs over them)")
    torch.manual_seed(seed)
    model = PretrainingModel(model_cfg, elements, eht_stats)
    earlier: list[dict[str, float]] = []
    if init_from is not None:
        earlier = _warm_start(model, init_from)
    model.to(device)
    fused = (device.type == "cuda") if fused_optimizer is None else fused_optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=pretrain_cfg.lr, weight_decay=weight_decay,
                                  **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp is not None else contextlib.nullcontext())
    total_steps = pretrain_cfg.epochs * math.ceil(len(indices) / pretrain_cfg.batch_size)
    started = time.perf_counter()
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    history: list[dict[str, float]] = []
    step_count = 0

    model.train()
    for epoch in range(1, pretrain_cfg.epochs + 1):
        sync(device)
        start = time.perf_counter()
        sums = dict(loss=0.0, denoise=0.0, mask=0.0, correct=0.0, eht=0.0, n_eht=0.0)
        n_mol = n_atoms = n_masked = 0
        for step, batch in enumerate(iterate_batches(dataset, indices, batch_size=pretrain_cfg.batch_size,
                                                     cutoff=model.cutoff, shuffle=True, generator=order_gen,
                                                     device=device)):
            if cosine_lr:
                set_lr(optimizer, cosine_time_lr(pretrain_cfg.lr, time.perf_counter() - started, max_seconds,
                                                 step_count, 0, 0.01))
            elif pretrain_cfg.lr_schedule == "cosine":  # the same cosine over steps: the last one at 1 %
                set_lr(optimizer, cosine_time_lr(pretrain_cfg.lr, step_count, max(1, total_steps - 1),
                                                 step_count, 0, 0.01))
            step_count += 1
            with autocast:
                out = pretraining_loss(model, batch, noise_std=pretrain_cfg.noise_std,
                                       mask_rate=pretrain_cfg.mask_rate, denoise_weight=pretrain_cfg.denoise_weight,
                                       mask_weight=pretrain_cfg.mask_weight, eht_weight=pretrain_cfg.eht_weight,
                                       generator=noise_gen)
            if check_every and (step + 1) % check_every == 0:
                value = float(out.loss.detach())
                if not math.isfinite(value):
                    raise TrainingDivergedError(f"pretraining loss is {value} at epoch {epoch}, batch {step}")
            optimizer.zero_grad(set_to_none=True)
            optimizer_step(out.loss.float() if scaler is not None else out.loss, model, optimizer, scaler, grad_clip)
            b, a = batch[props.n_atoms].numel(), batch[props.Z].numel()
            # device-side sums: read once per epoch (no host sync per step)
            sums["loss"] += out.loss.detach().double() * b
            sums["denoise"] += out.denoise_loss.double() * a
            sums["mask"] += out.mask_loss.double() * out.n_masked
            sums["correct"] += out.mask_accuracy.double() * out.n_masked
            if out.eht_loss is not None:
                sums["eht"] += out.eht_loss.double() * out.n_eht
                sums["n_eht"] += out.n_eht
            n_mol, n_atoms, n_masked = n_mol + b, n_atoms + a, n_masked + out.n_masked
        sync(device)
        seconds = time.perf_counter() - start
        sums = {k: float(v) for k, v in sums.items()}
        if not math.isfinite(sums["loss"]):
            raise TrainingDivergedError(f"pretraining loss is {sums['loss']} in epoch {epoch}")
        metrics = {
            H.LOSS: sums["loss"] / n_mol,
            H.DENOISE_LOSS: sums["denoise"] / n_atoms,
            H.MASK_LOSS: sums["mask"] / n_masked if n_masked else float("nan"),
            H.MASK_ACCURACY: sums["correct"] / n_masked if n_masked else float("nan"),
            **({H.EHT_LOSS: sums["eht"] / sums["n_eht"] if sums["n_eht"] else float("nan")} if eht_stats else {}),
            H.SECONDS: seconds,
            H.MOLECULES_PER_SECOND: n_mol / seconds if seconds > 0 else float("nan"),
        }
        metrics[H.LR] = float(optimizer.param_groups[0]["lr"])
        history.append({H.EPOCH: len(earlier) + epoch, **metrics})
        if log_fn is not None:
            log_fn({f"pretrain/{k}": v for k, v in metrics.items()}, epoch)
        if max_seconds is not None and time.perf_counter() - started >= max_seconds:
            break

    history = earlier + history
    ckpt = checkpoint_from_model(model, seed=seed, pretrain_config=dataclasses.asdict(pretrain_cfg),
                                 n_molecules=int(len(indices)), history=history,
                                 **({"eht": eht_info} if eht_info is not None else {}))
    return PretrainResult(ckpt, history)


def with_eht_targets(dataset: AtomisticDataset, indices: np.ndarray, charges: np.ndarray | None = None,
                     ) -> tuple[AtomisticDataset, dict[str, Any]]:
    """``dataset`` whose targets are the EHT (HOMO, LUMO, gap): its own ``EHT_TARGETS`` columns, or
    computed for molecules ``indices`` (others NaN) at net ``charges`` (per dataset molecule; None:
    neutral); and what happened to the molecules without targets (count, and per reason the count and
    up to 5 mol_ids)."""
    reasons: dict[str, list[str]] = {}
    if all(t in dataset.target_names for t in EHT_TARGETS):
        y = dataset.targets[:, [dataset.target_names.index(t) for t in EHT_TARGETS]].double()
        source = "given"
    else:
        atoms, _, counts = gather_atoms(dataset.ptr.cpu(), torch.as_tensor(indices))
        values, failed = eht_targets(dataset.z.cpu()[atoms].numpy(), dataset.positions.cpu()[atoms].numpy(),
                                     np.concatenate([[0], np.cumsum(counts.numpy())]),
                                     None if charges is None else charges[indices])
        for m, why in failed:
            reasons.setdefault(why, []).append(str(dataset.mol_ids[indices[m]]))
        y_np = np.full((len(dataset), len(EHT_TARGETS)), np.nan)
        y_np[indices] = values
        y = torch.from_numpy(y_np).to(dataset.device)
        source = "computed"
    missing = ~torch.isfinite(y[torch.as_tensor(indices, device=y.device)]).all(-1)
    info = {"source": source, "n_molecules": int(len(indices)), "n_without_targets": int(missing.sum()),
            "reasons": {why: {"count": len(ids), "examples": ids[:5]} for why, ids in reasons.items()}}
    return dataclasses.replace(dataset, targets=y, target_names=list(EHT_TARGETS)), info


def _warm_start(model: PretrainingModel, ckpt: Mapping[str, Any]) -> list[dict[str, float]]:
    """Load a pretraining checkpoint's weights into ``model``; returns its history. ``model``'s element
    vocabulary must contain the checkpoint's: the masked-type classifier's rows are copied per element."""
    if ckpt.get("kind") != "pretrain":
        raise CheckpointMismatchError(f"init_from must be a pretraining checkpoint, not {ckpt.get('kind')!r}")
    old_elements = list(ckpt["config"]["elements"])
    if dict(ckpt["config"]["model"]) != model.model_cfg or not set(old_elements) <= set(model.elements):
        raise CheckpointMismatchError(
            f"init_from was pretrained with {ckpt['config']['model']} on elements {old_elements}; "
            f"this run has {model.model_cfg} on {model.elements}")
    state = dict(ckpt["state_dict"])
    if old_elements != model.elements:   # the type head's last layer has one row per element: place them
        rows = torch.tensor([model.elements.index(z) for z in old_elements])
        for key, value in model.state_dict().items():
            if key.startswith("type_head.") and key in state and state[key].shape != value.shape:
                grown = value.detach().clone()
                grown[rows] = state[key].to(grown.dtype)
                state[key] = grown
    missing, unexpected = model.load_state_dict(state, strict=False)
    # only the EHT head may be new (continuing a checkpoint pretrained without it); nothing may be left over
    if unexpected or any(not k.startswith("eht_head.") for k in missing):
        raise CheckpointMismatchError(f"init_from's weights do not fit: missing {missing}, unexpected {unexpected}")
    return list(ckpt.get("history", []))
