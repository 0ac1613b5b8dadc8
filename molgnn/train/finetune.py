"""Supervised fine-tuning of the property model, single seed or as a seed ensemble.

Loss: MSE of residuals divided by each target's training-set std (so targets weigh equally), over
labelled entries only (NaN labels are masked); binary classification targets (molgnn.train.tasks)
contribute BCE-with-logits on their labelled entries instead. Model selection: early stopping on the
validation score (mean over targets of MAE / std for regression, 1 - ROC-AUC for classification),
keeping the best-validation weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import schnetpack.properties as props
import torch
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from molgnn.config import FinetuneConfig, ModelConfig
from molgnn.data import schema
from molgnn.featurize.atomistic import AtomisticDataset, DeviceBatcher, iterate_batches
from molgnn.models.property_model import (CLASSIFICATION, PropertyModel, element_counts, fit_atom_refs,
                                          predict_properties, target_statistics)
from molgnn.train import history_keys as H
from molgnn.train import tasks
from molgnn.train.checkpoints import checkpoint_from_model
from molgnn.train.cuda_graph_step import GraphedStep
from molgnn.train.pretrain import LogFn, TrainingDivergedError, as_dataset, sync
from molgnn.train.resume import Deadline, fingerprint, load_state, restore_rng, rng_state, save_state
from molgnn.train.steps import cosine_time_lr, masked_scaled_mse, optimizer_step, set_lr

log = logging.getLogger(__name__)

SCHEDULERS = ("plateau", "cosine", "cosine-time")
AMP_DTYPES: dict[str | None, torch.dtype | None] = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_PAD_BUCKETS = (128, 4096)  # atoms, pairs: ~3 atom x ~3 pair buckets for QM9 batches of 100


class SplitError(ValueError):
    """The train/validation/test indices are malformed, overlap or leave a needed part empty."""


@dataclass
class FinetuneResult:
    checkpoint: dict[str, Any]
    history: list[dict[str, float]]
    test_metrics: dict[str, dict[str, float]]   # {target: {mae, rmse, r2, n}} physical units
    val_metrics: dict[str, dict[str, float]]    # classification: {roc_auc, pr_auc, ece, brier, accuracy, n}
    test_predictions: pd.DataFrame              # mol_id, target, y_true, y_pred (probability if classification)
    completed: bool = True                      # False: max_seconds ended first; resume from state_path
    train_seconds: float = math.nan             # training wall-clock so far, resumed calls included
    task_types: dict[str, str] = dataclasses.field(default_factory=dict)  # target: regression | classification
    task_reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # why (declared, auto: ...)
    atom_features_missing: int = 0              # structures trained with zero atom-feature rows (not paired)


@dataclass
class EnsembleResult:
    members: list[FinetuneResult]
    test_metrics: dict[str, dict[str, float]]   # of the ensemble mean
    test_predictions: pd.DataFrame              # mol_id, target, y_true, y_pred (mean), y_std

    @property
    def task_types(self) -> dict[str, str]:
        return dict(self.members[0].task_types)

    @property
    def task_reasons(self) -> dict[str, str]:
        return dict(self.members[0].task_reasons)

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return [m.checkpoint for m in self.members]


def resolve_split(split: Any, dataset: AtomisticDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) dataset positions from a 3-sequence or an object with train/val/test
    attributes; each part holds integer positions or mol_id strings."""
    if all(hasattr(split, a) for a in ("train", "val", "test")):
        parts = [split.train, split.val, split.test]
    else:
        parts = list(split)
        if len(parts) != 3:
            raise SplitError(f"split must have three parts (train, val, test), got {len(parts)}")
    lookup = pd.Index(dataset.mol_ids)
    out = []
    for name, part in zip(("train", "val", "test"), parts):
        arr = np.asarray(part if part is not None else [])
        if arr.size == 0:
            arr = np.zeros(0, dtype=np.int64)
        elif arr.dtype.kind in "OUS":
            pos = lookup.get_indexer(arr.astype(str))
            if (pos < 0).any():
                raise SplitError(f"{name} split names mol_ids not in the structures: {list(arr[pos < 0][:5])}")
            arr = pos
        elif arr.dtype.kind in "iu":
            if arr.min() < 0 or arr.max() >= len(dataset):
                raise SplitError(f"{name} split indices must be in [0, {len(dataset)})")
        else:
            raise SplitError(f"{name} split must hold integer positions or mol_ids, got dtype {arr.dtype}")
        if len(np.unique(arr)) != len(arr):
            raise SplitError(f"{name} split repeats molecules")
        out.append(arr.astype(np.int64))
    for (a, x), (b, y) in [((0, out[0]), (1, out[1])), ((0, out[0]), (2, out[2])), ((1, out[1]), (2, out[2]))]:
        if np.intersect1d(x, y).size:
            names = ("train", "val", "test")
            raise SplitError(f"{names[a]} and {names[b]} splits share {np.intersect1d(x, y).size} molecules")
    return out[0], out[1], out[2]


def regression_metrics(y_true: torch.Tensor, y_pred: torch.Tensor) -> dict[str, float]:
    """MAE, RMSE, R^2 over labelled entries (NaN y_true skipped); NaN where undefined."""
    valid = ~torch.isnan(y_true)
    t, p = y_true[valid].double(), y_pred[valid].double()
    n = int(valid.sum())
    if n == 0:
        return {"mae": math.nan, "rmse": math.nan, "r2": math.nan, "n": 0}
    r2 = float(r2_score(p, t)) if n >= 2 and float(t.var()) > 0 else math.nan
    return {"mae": float(mean_absolute_error(p, t)), "rmse": float(mean_squared_error(p, t, squared=False)),
            "r2": r2, "n": n}


def _labels(dataset: AtomisticDataset, targets: Sequence[str]) -> torch.Tensor:
    cols = [dataset.target_names.index(t) for t in targets]
    return dataset.targets[:, cols].cpu().double()


def _metrics(y_true: torch.Tensor, y_pred: torch.Tensor, targets: Sequence[str],
             task_types: Mapping[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Per target: regression metrics, or classification metrics of probabilities ``y_pred``."""
    types = task_types or {}
    return {t: (tasks.classification_metrics(y_true[:, k], y_pred[:, k]) if types.get(t) == CLASSIFICATION
                else regression_metrics(y_true[:, k], y_pred[:, k])) for k, t in enumerate(targets)}


def _val_score(y_true: torch.Tensor, y_pred: torch.Tensor, metrics: Mapping[str, Mapping[str, float]],
               targets: Sequence[str], types: Mapping[str, str], scale: torch.Tensor) -> float:
    """Mean over targets of MAE / scale (regression) and 1 - ROC-AUC (classification; the mean BCE
    where the validation labels hold one class only, so that the score stays defined)."""
    parts = []
    for k, t in enumerate(targets):
        if types.get(t) == CLASSIFICATION:
            auc = metrics[t]["roc_auc"]
            parts.append(1.0 - auc if math.isfinite(auc) else tasks.bce(y_true[:, k], y_pred[:, k]))
        else:
            parts.append(metrics[t]["mae"] / float(scale[k]))
    return float(np.nanmean(parts))


def _long_predictions(mol_ids: np.ndarray, targets: Sequence[str], y_true: torch.Tensor,
                      y_pred: torch.Tensor, y_std: torch.Tensor | None = None) -> pd.DataFrame:
    m, t = len(mol_ids), len(targets)
    df = pd.DataFrame({schema.MOL_ID: np.repeat(mol_ids, t), "target": np.tile(np.asarray(targets, dtype=object), m),
                       "y_true": y_true.double().reshape(-1).numpy(), "y_pred": y_pred.double().reshape(-1).numpy()})
    if y_std is not None:
        df["y_std"] = y_std.double().reshape(-1).numpy()
    return df


def finetune(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None, split: Any,
             model_cfg: ModelConfig, finetune_cfg: FinetuneConfig, *, seed: int, device: str | torch.device = "cpu",
             pretrained: Mapping[str, Any] | None = None, log_fn: LogFn | None = None,
             scheduler: str = "plateau", weight_decay: float = 1e-2, lr_patience: int | None = None,
             aggregation: Mapping[str, str] | None = None, head_hidden: int | None = None,
             head_layers: int = 2, eval_batch_size: int = 256, grad_clip: float | None = 10.0,
             atom_refs: bool = True, amp: str | None = None, compile_model: bool = False,
             device_batches: bool = False, check_every: int = 1, eval_every: int = 1,
             eval_test: bool = False, fused_optimizer: bool | None = None,
             state_path: str | Path | None = None, max_seconds: float | None = None,
             time_budget_s: float | None = None, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
             dist_check_every: int = 25, cuda_graphs: bool = False,
             pad_buckets: tuple[int, int] | None = None, warmup_outside_budget: bool = False,
             atom_features: str | None = None) -> FinetuneResult:
    """Train a PropertyModel on ``finetune_cfg.targets``; ``pretrained`` (a pretrain checkpoint) seeds
    the encoder, None trains from scratch. A pretrained encoder trains at ``finetune_cfg.lr *
    finetune_cfg.encoder_lr_scale``, the heads at ``finetune_cfg.lr`` (every schedule scales both).

    ``atom_features`` (a featurizer of ``molgnn.featurize.atom_features``) gives the encoder each atom's
    2D features beside its element (the structures table needs its ``smiles`` column).

    ``atom_refs`` fits per-element references for sum-aggregated targets on the training set (the
    loss scale is then the std of what remains). ``structures`` may be an AtomisticDataset that
    already carries the targets (then ``targets_df`` must be None). ``split`` indexes the structures
    (positions or mol_ids); molecules of the train split without any label are skipped; test may be empty.

    Fast path (GPU; every option defaults to the plain behaviour):

    - ``device_batches``: neighbor lists computed once for the whole dataset and batches gathered on
      the device with no host synchronisation (:class:`DeviceBatcher`); same batches as the default.
    - ``check_every``: look at the loss on the host every N steps (1: every step, as before; 0: once
      per epoch). Between checks the loop never waits for the device.
    - ``amp``: ``"bf16"`` or ``"fp16"`` autocast of the forward pass (fp16 with a gradient scaler);
      evaluation stays in float32.
    - ``compile_model``: ``torch.compile(dynamic=True)`` of the training forward pass.
    - ``fused_optimizer``: fused AdamW (default: on CUDA).
    - ``pad_buckets=(atom_multiple, pair_multiple)``: training batches padded to ``batch_size + 1``
      molecule slots and atom/pair counts rounded up to these multiples (dummy atoms and pairs that
      change neither predictions nor loss nor gradients; :func:`~molgnn.featurize.atomistic.pad_batch`),
      so that batches come in a few shapes. Implies ``device_batches``.
    - ``cuda_graphs``: each padded shape's whole training step (forward, loss, backward, clipping,
      AdamW with ``capturable=True`` and a tensor lr) is captured once as a CUDA graph and replayed
      (:class:`~molgnn.train.cuda_graph_step.GraphedStep`); removes the per-kernel launch cost that
      bounds small batches. CUDA only, single process, not with fp16; ``pad_buckets`` defaults to
      ``DEFAULT_PAD_BUCKETS``. Works with ``compile_model`` (the compiled model is captured).
    - ``eval_every``: validate every N epochs (and after the last); ``eval_test`` also records the
      test MAE of the current weights in the history (a learning curve; never used for selection).

    Time budgets and resuming:

    - ``time_budget_s``: total training wall-clock (training steps + per-epoch evaluation, summed over
      resumed calls); training ends when it is spent. With ``scheduler="cosine-time"`` the learning
      rate follows a cosine from ``lr`` to ``lr * min_lr_ratio`` over this budget, after
      ``warmup_steps`` of linear warm-up.
    - ``state_path``: where the full training state (model, optimizer, scheduler, scaler, epoch and
      step, RNGs, best-so-far weights, history, time spent) is saved; if it exists the run resumes
      from it (same configuration required, else :class:`ResumeMismatchError`). Saved at the end of
      every epoch, when ``max_seconds`` ends, and when training completes (a completed state makes
      a rerun return at once).
    - ``max_seconds``: wall-clock limit of *this call's* training loop; when it ends the state is
      saved and the result (of the best weights so far) has ``completed=False``.
    - ``warmup_outside_budget``: the one-off warm-up of each call (torch.compile's first compiled
      step; with ``cuda_graphs`` also every warm-up and capture of a new batch shape) is timed with
      device syncs and kept off the training clock: ``time_budget_s``, the cosine schedule, the
      history's ``elapsed_seconds`` and the epoch's ``seconds``. ``max_seconds`` still counts it.
      The history's ``warmup_seconds`` says how long it took in each epoch either way.

    Distributed: when ``torch.distributed`` is initialised (see ``molgnn.train.ddp_finetune``) each
    rank trains on its shard of every epoch's shuffled training set through DistributedDataParallel;
    every rank evaluates the full validation set; only rank 0 writes the state file.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {list(AMP_DTYPES)}, got {amp!r}")
    if scheduler == "cosine-time" and not time_budget_s:
        raise ValueError("scheduler='cosine-time' needs time_budget_s")
    if warmup_steps and scheduler != "cosine-time":
        raise ValueError("warmup_steps is only supported with scheduler='cosine-time'")
    if check_every < 0 or eval_every < 1:
        raise ValueError(f"check_every must be >= 0 and eval_every >= 1, got {check_every}, {eval_every}")
    targets = list(finetune_cfg.targets)
    device = torch.device(device)
    dist = _dist_info()
    if cuda_graphs:
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, got {device} (pad_buckets alone works anywhere)")
        if dist.world > 1:
            raise ValueError("cuda_graphs=True is not supported with DistributedDataParallel")
        if amp == "fp16":
            raise ValueError("cuda_graphs=True does not support amp='fp16' (its gradient scaler syncs with the host)")
        pad_buckets = tuple(pad_buckets) if pad_buckets is not None else DEFAULT_PAD_BUCKETS
    dataset = _dataset_with_targets(structures, targets_df, targets, atom_features).to(device)
    train_idx, val_idx, test_idx = resolve_split(split, dataset)
    labels = _labels(dataset, targets)
    has_label = ~torch.isnan(labels).all(dim=1).numpy()
    train_idx = train_idx[has_label[train_idx]]  # molecules without any label add nothing to the loss
    if len(train_idx) == 0:
        raise SplitError("the train split has no labelled molecules")
    if not has_label[val_idx].any():
        raise SplitError("the validation split has no labelled molecules: early stopping needs some")
    if dist.world > 1 and len(train_idx) < dist.world:
        raise SplitError(f"{len(train_idx)} training molecules cannot be shared by {dist.world} ranks")

    types, reasons = tasks.resolve_task_types(labels, targets, getattr(finetune_cfg, "task_types", None))
    if dist.rank == 0:
        tasks.log_task_types(types, reasons)
    classify = [types[t] == CLASSIFICATION for t in targets]
    if any(classify) and cuda_graphs:
        raise ValueError("cuda_graphs=True does not support classification targets yet "
                         f"({[t for t, c in zip(targets, classify) if c]})")

    torch.manual_seed(seed)
    model = PropertyModel(model_cfg, targets, aggregation=aggregation, head_hidden=head_hidden,
                          head_layers=head_layers, task_types=types, atom_features=atom_features,
                          atom_feature_dim=None if atom_features is None else int(dataset.atom_features.shape[1]))
    y_train = labels[train_idx]
    ref = None
    if atom_refs and any(a == "sum" for a in model.aggregation.values()):
        ref = fit_atom_refs(dataset, train_idx, targets, model.aggregation)
        model.set_atom_refs(ref)
        y_train = y_train - element_counts(dataset, train_idx) @ ref  # the part the network must learn
    mean, std = target_statistics(dataset, train_idx, targets, model.aggregation, ref)
    is_cls = torch.tensor(classify)
    # a classification head predicts the logit itself: no standardization
    model.set_target_stats(torch.where(is_cls, 0.0, mean), torch.where(is_cls, 1.0, std))
    if pretrained is not None:
        model.load_encoder(pretrained)
    model.to(device)
    scale = torch.tensor([_nanstd(y_train[:, k]) for k in range(len(targets))], dtype=torch.float32)

    fused = (device.type == "cuda") if fused_optimizer is None else fused_optimizer
    opt_kw: dict[str, Any] = {"fused": True} if fused else {}
    enc_scale = finetune_cfg.encoder_lr_scale if pretrained is not None else 1.0
    if cuda_graphs:  # a graph reads each group's lr from a tensor; schedulers fill it in place
        opt_kw["capturable"] = True
    optimizer = torch.optim.AdamW(_param_groups(model, finetune_cfg.lr, enc_scale, device if cuda_graphs else None),
                                  lr=finetune_cfg.lr, weight_decay=weight_decay, **opt_kw)
    if scheduler == "plateau":
        sched: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=lr_patience if lr_patience is not None else max(1, finetune_cfg.patience // 2))
    elif scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, finetune_cfg.epochs))
    else:
        sched = None  # cosine-time: set per step from the time spent
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    order_gen = torch.Generator().manual_seed(seed)
    scale_dev = scale.to(device)
    is_cls_dev = is_cls.to(device)
    class_w = tasks.class_weights(y_train, types, targets,
                                  getattr(finetune_cfg, "class_weighting", "none")).to(device)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = math.inf, 0, _snapshot(model)
    epoch, start_step, global_step, spent = 1, 0, 0, 0.0
    running = {"loss_sum": 0.0, "n_mol": 0, "seconds": 0.0, "warmup": 0.0}
    completed = False

    fp = None
    if state_path is not None:
        fp = fingerprint(kind="finetune", model=model.hparams, finetune=dataclasses.asdict(finetune_cfg), seed=seed,
                         train=train_idx, val=val_idx, test=test_idx, scheduler=scheduler, weight_decay=weight_decay,
                         lr_patience=lr_patience, grad_clip=grad_clip, atom_refs=atom_refs, amp=amp,
                         time_budget_s=time_budget_s, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
                         world=dist.world, init="pretrained" if pretrained is not None else "scratch")
        state = load_state(state_path, kind="finetune-state", fingerprint_=fp)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            restore_rng(state, device)
            order_gen.set_state(state["epoch_order_rng"])
            best_score, best_epoch = float(state["best"]["score"]), int(state["best"]["epoch"])
            best_state = {k: v.to(device) for k, v in state["best"]["state"].items()}
            history = list(state["history"])
            epoch, start_step = int(state["epoch"]), int(state["step"])
            global_step, spent = int(state["global_step"]), float(state["train_seconds"])
            running = dict(state["running"])
            completed = bool(state["completed"])
            if cuda_graphs:
                _make_capturable(optimizer, device)

    train_model: torch.nn.Module = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(train_model, dynamic=True) if compile_model else train_model
    batcher = DeviceBatcher(dataset, model.cutoff) if device_batches or pad_buckets is not None else None
    graphed = (GraphedStep(forward, model, optimizer, targets, scale_dev, grad_clip, AMP_DTYPES[amp])
               if cuda_graphs else None)
    autocast = (torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp]) if amp is not None
                else contextlib.nullcontext())
    deadline = Deadline(max_seconds)
    loop_start = time.perf_counter()
    base_lr = finetune_cfg.lr
    measure_warmup = compile_model or graphed is not None
    compiled_step_done = False  # this call's first compiled step (torch.compile compiles there)
    off_clock = 0.0  # warm-up seconds of this call kept off the training clock (warmup_outside_budget)

    def total_spent() -> float:
        return spent + (time.perf_counter() - loop_start) - off_clock

    def save(done: bool, epoch_rng: torch.Tensor, at_epoch: int, at_step: int) -> None:
        if state_path is None or dist.rank != 0:
            return
        save_state(state_path, {
            "kind": "finetune-state", "fingerprint": fp, "model": model.state_dict(),
            "optimizer": _optimizer_state(optimizer), "scheduler": sched.state_dict() if sched is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None, "epoch": at_epoch, "step": at_step,
            "epoch_order_rng": epoch_rng, **rng_state(device),
            "best": {"score": best_score, "epoch": best_epoch, "state": best_state},
            "history": history, "train_seconds": total_spent(), "global_step": global_step,
            "running": running, "completed": done})

    def budget_spent() -> bool:
        return time_budget_s is not None and total_spent() >= time_budget_s

    stop_call = False  # this call's max_seconds ended
    while not completed and epoch <= finetune_cfg.epochs:
        epoch_rng = order_gen.get_state()  # the generator as this epoch began (restored from a state too)
        perm = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=order_gen)].numpy()
        if dist.world > 1:
            usable = (len(perm) // dist.world) * dist.world
            perm = perm[dist.rank:usable:dist.world]
        bs = finetune_cfg.batch_size
        todo = perm[start_step * bs:]
        if batcher is not None:
            batches = batcher.batches(todo, bs, pad=pad_buckets)
        else:
            batches = iterate_batches(dataset, todo, batch_size=bs, cutoff=model.cutoff, device=device)
        model.train()
        sync(device)
        t0 = time.perf_counter()
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        n_mol = 0
        step = start_step
        out_of_time = False
        epoch_warmup = 0.0
        for step, batch in enumerate(batches, start=start_step):
            if scheduler == "cosine-time":
                set_lr(optimizer, cosine_time_lr(base_lr, total_spent(), time_budget_s, global_step,
                                                  warmup_steps, min_lr_ratio))
            step_warmup = 0.0
            if graphed is not None:
                before = graphed.warmup_seconds
                loss = graphed(batch)  # the whole step, replayed from a CUDA graph
                step_warmup = graphed.warmup_seconds - before
            else:
                timed = compile_model and not compiled_step_done
                if timed:
                    sync(device)
                    tw = time.perf_counter()
                y = torch.stack([batch[t] for t in targets], dim=-1).to(torch.float32)
                with autocast:
                    pred = forward(batch)
                if any(classify):
                    if check_every == 1 and not bool((~torch.isnan(y)).any()):
                        raise ValueError("batch has no labelled entries")
                    loss = tasks.masked_task_loss(pred.float(), y, scale_dev, is_cls_dev, class_w)
                else:
                    loss = masked_scaled_mse(pred.float(), y, scale_dev, check=check_every == 1)
            if check_every and (step + 1) % check_every == 0:
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDivergedError(f"fine-tuning loss is {value} at epoch {epoch}, batch {step}")
            if graphed is None:
                optimizer.zero_grad(set_to_none=True)
                optimizer_step(loss, model, optimizer, scaler, grad_clip)
                if timed:  # forward and backward were compiled in this step
                    sync(device)
                    step_warmup, compiled_step_done = time.perf_counter() - tw, True
            epoch_warmup += step_warmup
            if warmup_outside_budget:
                off_clock += step_warmup
            b = int(min(bs, len(todo) - (step - start_step) * bs))
            loss_acc += loss.detach().double() * b
            n_mol += b
            global_step += 1
            if dist.world == 1 or (step + 1) % dist_check_every == 0:  # all ranks decide together
                call_over, budget_over = _agreed(dist, device, deadline.expired(), budget_spent())
                if call_over or budget_over:
                    out_of_time = True
                    break
        sync(device)
        seconds = time.perf_counter() - t0 - (epoch_warmup if warmup_outside_budget else 0.0)
        done_steps = step + 1 if n_mol else start_step
        loss_sum = float(_all_sum(dist, loss_acc, device))
        n_mol_all = int(_all_sum(dist, torch.tensor(float(n_mol), device=device), device))
        if not math.isfinite(loss_sum):
            raise TrainingDivergedError(f"fine-tuning loss is {loss_sum} in epoch {epoch} (checked every "
                                        f"{check_every or 'epoch'} steps)")
        running = {"loss_sum": running["loss_sum"] + loss_sum, "n_mol": running["n_mol"] + n_mol_all,
                   "seconds": running["seconds"] + seconds, "warmup": running.get("warmup", 0.0) + epoch_warmup}
        epoch_finished = not out_of_time or done_steps * bs >= len(perm)
        call_over, budget_over = _agreed(dist, device, deadline.expired(), budget_spent())
        if out_of_time and call_over and not budget_over and not epoch_finished:
            # this call's time is up mid-epoch: save where we are and return the best so far
            save(False, epoch_rng, epoch, done_steps)
            stop_call = True
            break
        start_step = 0
        last = epoch == finetune_cfg.epochs or budget_over
        metrics: dict[str, float] = {
            H.TRAIN_LOSS: running["loss_sum"] / max(running["n_mol"], 1), H.LR: float(optimizer.param_groups[-1]["lr"]),
            H.SECONDS: running["seconds"],
            H.MOLECULES_PER_SECOND: running["n_mol"] / running["seconds"] if running["seconds"] > 0 else math.nan}
        if graphed is not None:
            metrics[H.CUDA_GRAPHS_CAPTURED] = graphed.n_graphs
        if measure_warmup:
            metrics[H.WARMUP_SECONDS] = running["warmup"]
        running = {"loss_sum": 0.0, "n_mol": 0, "seconds": 0.0, "warmup": 0.0}
        evaluate = epoch % eval_every == 0 or last or out_of_time
        score = math.nan
        if evaluate:
            val_pred = predict_properties(model, dataset, val_idx, batch_size=eval_batch_size, device=device)
            val_m = _metrics(labels[val_idx], val_pred, targets, types)
            score = _val_score(labels[val_idx], val_pred, val_m, targets, types, scale)
            score = float(_all_sum(dist, torch.tensor(score, device=device), device)) / dist.world
            metrics.update({H.VAL_SCORE: score, **{H.val_mae(t): val_m[t]["mae"] for t in targets if "mae" in val_m[t]},
                            **{H.val_roc_auc(t): val_m[t]["roc_auc"] for t in targets if "roc_auc" in val_m[t]}})
            if eval_test and len(test_idx):
                test_pred = predict_properties(model, dataset, test_idx, batch_size=eval_batch_size, device=device)
                metrics.update({H.test_mae(t): m["mae"]
                                for t, m in _metrics(labels[test_idx], test_pred, targets, types).items() if "mae" in m})
            if scheduler == "plateau":
                sched.step(score)
        if scheduler == "cosine":
            sched.step()
        metrics[H.ELAPSED_SECONDS] = total_spent()
        history.append({H.EPOCH: epoch, **metrics})
        if log_fn is not None and dist.rank == 0:
            log_fn({f"finetune/{k}": v for k, v in metrics.items()}, epoch)
        if evaluate and score < best_score:
            best_score, best_epoch, best_state = score, epoch, _snapshot(model)
        elif evaluate and epoch - best_epoch >= finetune_cfg.patience:
            completed = True
        epoch += 1
        if epoch > finetune_cfg.epochs or budget_over:
            completed = True
        if completed:
            break
        save(False, order_gen.get_state(), epoch, 0)
        if call_over:
            stop_call = True
            break
    if not stop_call:
        completed = True
        save(True, order_gen.get_state(), epoch, 0)

    model.load_state_dict(best_state)
    val_pred = predict_properties(model, dataset, val_idx, batch_size=eval_batch_size, device=device)
    test_pred = predict_properties(model, dataset, test_idx, batch_size=eval_batch_size, device=device)
    val_metrics = _metrics(labels[val_idx], val_pred, targets, types)
    test_metrics = _metrics(labels[test_idx], test_pred, targets, types)
    ckpt = checkpoint_from_model(
        model, seed=seed, init="pretrained" if pretrained is not None else "scratch", best_epoch=best_epoch,
        finetune_config=dataclasses.asdict(finetune_cfg), val_metrics=val_metrics, test_metrics=test_metrics,
        history=history)
    return FinetuneResult(ckpt, history, test_metrics, val_metrics,
                          _long_predictions(dataset.mol_ids[test_idx], targets, labels[test_idx], test_pred),
                          completed=completed, train_seconds=total_spent(), task_types=types, task_reasons=reasons,
                          atom_features_missing=dataset.atom_features_missing)


def finetune_ensemble(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None, split: Any,
                      model_cfg: ModelConfig, finetune_cfg: FinetuneConfig, *, seed: int,
                      device: str | torch.device = "cpu", pretrained: Mapping[str, Any] | None = None,
                      log_fn: LogFn | None = None, ensemble_size: int | None = None,
                      **kwargs: Any) -> EnsembleResult:
    """``ensemble_size`` (default ``finetune_cfg.ensemble_size``) members with seeds seed, seed+1, ...;
    test metrics are those of the ensemble mean, ``y_std`` the spread over members (ddof=0)."""
    k = finetune_cfg.ensemble_size if ensemble_size is None else ensemble_size
    if k < 1:
        raise ValueError(f"ensemble_size must be at least 1, got {k}")
    dataset = _dataset_with_targets(structures, targets_df, list(finetune_cfg.targets),
                                    kwargs.get("atom_features")).to(device)
    members = []
    for m in range(k):
        member_log = None if log_fn is None else (
            lambda metrics, step, m=m: log_fn({f"member_{m}/{key}": v for key, v in metrics.items()}, step))
        members.append(finetune(dataset, None, split, model_cfg, finetune_cfg, seed=seed + m, device=device,
                                pretrained=pretrained, log_fn=member_log, **kwargs))
    first = members[0].test_predictions
    preds = torch.tensor(np.stack([r.test_predictions["y_pred"].to_numpy() for r in members]))
    mean, std = preds.mean(0), preds.std(0, unbiased=False)
    table = first[[schema.MOL_ID, "target", "y_true"]].assign(y_pred=mean.numpy(), y_std=std.numpy())
    targets = list(finetune_cfg.targets)
    t = len(targets)
    y_true = torch.tensor(table["y_true"].to_numpy()).reshape(-1, t)
    metrics = _metrics(y_true, mean.reshape(-1, t), targets, members[0].task_types)
    return EnsembleResult(members, metrics, table)


def _dataset_with_targets(structures: pd.DataFrame | AtomisticDataset, targets_df: pd.DataFrame | None,
                          targets: Sequence[str], atom_features: str | None = None) -> AtomisticDataset:
    if isinstance(structures, AtomisticDataset):
        if targets_df is not None:
            raise ValueError("pass targets_df=None with an AtomisticDataset: it already carries its targets")
        missing = [t for t in targets if t not in structures.target_names]
        if structures.targets is None or missing:
            raise ValueError(f"dataset lacks target(s) {missing or targets}")
        if atom_features is not None and structures.atom_features is None:
            raise ValueError(f"atom_features={atom_features!r} but the dataset has no atom features; build it "
                             "with AtomisticDataset.from_frames(..., atom_features=...)")
        return structures
    if targets_df is None:
        raise ValueError("fine-tuning needs a targets table (mol_id + target columns)")
    dataset = as_dataset(structures, targets=targets_df, target_columns=targets, atom_features=atom_features)
    if dataset.atom_features_missing:
        log.warning("%d of %d structures have no atom features (atoms not paired with their SMILES): zero "
                    "rows", dataset.atom_features_missing, len(dataset))
    return dataset


def _nanstd(y: torch.Tensor) -> float:
    y = y[~torch.isnan(y)].double()
    s = float(y.std(unbiased=False)) if y.numel() > 1 else 0.0
    return s if s > 0 else 1.0


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1


def _dist_info() -> _Dist:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return _Dist()


def _all_sum(dist: _Dist, value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum of ``value`` over ranks (the value itself in one process)."""
    if dist.world == 1:
        return value
    value = value.detach().to(device).clone()
    torch.distributed.all_reduce(value)
    return value


def _agreed(dist: _Dist, device: torch.device, *flags: bool) -> tuple[bool, ...]:
    """Each flag true on any rank, so that every rank takes the same branch (a collective in DDP)."""
    if dist.world == 1:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def _param_groups(model: PropertyModel, lr: float, encoder_scale: float,
                  tensor_lr_device: torch.device | None) -> list[dict[str, Any]]:
    """One parameter group, or two when the encoder trains at ``lr * encoder_scale`` (a pretrained
    encoder and a fresh head need not want the same step size). Each group carries its ``lr_scale``
    for the schedulers; ``tensor_lr_device`` makes each lr a tensor there (CUDA graphs)."""
    def group(params: list[torch.nn.Parameter], scale: float) -> dict[str, Any]:
        value: float | torch.Tensor = lr * scale
        if tensor_lr_device is not None:
            value = torch.tensor(value, dtype=torch.float32, device=tensor_lr_device)
        return {"params": params, "lr": value, "lr_scale": scale}

    if encoder_scale == 1.0:
        return [group(list(model.parameters()), 1.0)]
    encoder = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder]
    return [group(list(model.encoder.parameters()), encoder_scale), group(rest, 1.0)]


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict as a run without CUDA graphs saves it (float learning rates, not
    capturable), so that a state loads the same with or without them (:func:`_make_capturable`)."""
    sd = optimizer.state_dict()
    for group in sd["param_groups"]:
        group["capturable"] = False
        for key in ("lr", "initial_lr"):
            if torch.is_tensor(group.get(key)):
                group[key] = float(group[key])
    return sd


def _make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """After loading a state saved without CUDA graphs: the hyperparameters loaded with it (float lr,
    capturable off, steps on the host) made ready for capture again."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        lr = group["lr"]
        if not torch.is_tensor(lr) or lr.device != device:
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            if torch.is_tensor(st.get("step")) and st["step"].device != p.device:
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)

