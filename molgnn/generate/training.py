"""Train a molecule generator (graph VAE or discrete graph diffusion) from SMILES.

One loop serves both models: each exposes ``loss(X, E, generator) -> {"loss", ...}`` on dense graphs
in vocabulary encoding. The whole encoded set lives on the device as uint8 (MOSES at 27 atoms is
~1.2 GB) and batches are cast there, so the loop never touches Python per molecule.

Long runs are resumable: with ``state_path`` the loop writes a training-state file (weights,
optimizer, EMA weights, step, epoch and position inside it, RNG states, elapsed seconds, history)
atomically every ``checkpoint_every`` seconds, when it stops and at the end, and a later call with
the same arguments continues from it. Resuming at a saved point reproduces the uninterrupted run
bit for bit on the CPU (same data order, noise and optimizer state); ``max_seconds`` stops cleanly
once that much training time (summed over all calls) is spent.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from molgnn.config import DiffusionConfig, VAEConfig
from molgnn.data.artifacts import atomic_path
from molgnn.featurize.dense_graph import GraphVocab, encode_many, fit_vocab
from molgnn.models.graph_diffusion import GraphDiffusion
from molgnn.models.graph_vae import GraphVAE

GENERATOR_CLASSES: dict[str, type[nn.Module]] = {"vae": GraphVAE, "diffusion": GraphDiffusion}
STATE_FORMAT = "molgnn-generator-training-state/1"
LR_SCHEDULES = ("constant", "cosine")


class GeneratorTrainingError(ValueError):
    """Generator training cannot start: unknown kind, bad settings or no encodable molecule."""


class TrainingStateError(GeneratorTrainingError):
    """A training-state file is unreadable or belongs to another run (model, data, batch size)."""


@dataclass
class TrainedGenerator:
    """A trained model with what is needed to sample from it and to audit its training.

    With ``ema_decay`` set, ``model`` holds the exponential moving average of the weights (what one
    samples from); the raw weights stay in the training-state file."""

    kind: str
    model: nn.Module
    vocab: GraphVocab
    history: list[dict[str, float]] = field(default_factory=list)   # one dict per (possibly partial) epoch
    rejects: list[tuple[str, str]] = field(default_factory=list)    # (smiles, reason) left out
    train_seconds: float = 0.0
    n_train: int = 0
    steps: int = 0
    stop_reason: str = "epochs"      # "epochs" | "time budget" | "deadline" | "callback"
    ema_decay: float | None = None

    @property
    def max_nodes(self) -> int:
        return int(self.model.hparams["max_nodes"])

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.model.hparams)


def build_generator(kind: str, **hparams: Any) -> nn.Module:
    """Instantiate a generator from its ``hparams`` dict (as stored in ``model.hparams``)."""
    if kind not in GENERATOR_CLASSES:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    try:
        return GENERATOR_CLASSES[kind](**hparams)
    except TypeError as exc:
        raise GeneratorTrainingError(f"bad hyper-parameters for {kind}: {exc}") from exc


def learning_rate(lr: float, step: int, *, warmup_steps: int, schedule: str, progress: float,
                  min_lr_ratio: float = 0.05) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine from ``lr`` down to
    ``min_lr_ratio * lr`` as ``progress`` (fraction of the run done, by steps or by time) goes 0 -> 1."""
    scale = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine":
        p = min(max(progress, 0.0), 1.0)
        scale *= min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return lr * scale


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file (``weights_only``: no pickled code runs); clear errors for bad files."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # UnpicklingError, RuntimeError, EOFError... depending on the damage
        raise TrainingStateError(f"{path} is not a readable training-state file ({type(exc).__name__}: {exc}); "
                                 "delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingStateError(f"{path} is not a molgnn generator training state (format {STATE_FORMAT!r})")
    return state


def _rng_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state().cpu()


def bf16_autocast_hooks(module: nn.Module, device: torch.device) -> list[Any]:
    """Run ``module``'s forward under bf16 autocast and hand fp32 outputs back: removable hooks (call
    ``.remove()`` on each), so a model trains in bf16 without changing its code."""
    contexts: list[Any] = []

    def enter(_module: nn.Module, _args: Any) -> None:
        ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        ctx.__enter__()
        contexts.append(ctx)

    def leave(_module: nn.Module, _args: Any, output: Any) -> Any:
        contexts.pop().__exit__(None, None, None)
        if isinstance(output, tuple):
            return tuple(o.float() if torch.is_tensor(o) else o for o in output)
        return output.float() if torch.is_tensor(output) else output

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]


def train_generator(
    kind: str,
    smiles: Sequence[str],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    max_nodes: int | None = None,
    vocab: GraphVocab | None = None,
    grad_clip: float = 1.0,
    on_epoch_end: Callable[[dict[str, float]], bool | None] | None = None,
    **kwargs: Any,
) -> TrainedGenerator:
    """Fit a ``kind`` ("vae" | "diffusion") generator to ``smiles``; deterministic under ``seed``.

    ``max_nodes`` defaults to the largest molecule in the data; larger molecules, unparseable SMILES
    and atom tokens outside ``vocab`` (learned from the data when None) become ``rejects``.
    ``on_epoch_end`` receives each epoch's history dict (e.g. to log it to MLflow); returning True
    stops training there (the state is saved). Other keyword arguments are the training options of
    ``train_generator_on_graphs`` (max_seconds, state_path, lr_schedule, ema_decay, ...) or go to the
    model constructor (latent_dim, hidden_dim, n_layers, timesteps, ...).
    """
    if kind not in GENERATOR_CLASSES:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    smiles = list(smiles)
    if vocab is None or max_nodes is None:
        fitted, largest = fit_vocab(smiles, max_nodes=max_nodes)
        vocab = vocab or fitted
        max_nodes = max_nodes or largest
    if vocab.n_node_classes > 255:
        raise GeneratorTrainingError(f"{vocab.n_node_classes} node classes do not fit the uint8 graph store")
    x_all, e_all, kept, rejected = encode_many(smiles, vocab, max_nodes, dtype=torch.uint8)
    rejects = [(smiles[i], reason) for i, reason in rejected]
    if not kept:
        raise GeneratorTrainingError(f"none of the {len(smiles)} training SMILES could be encoded "
                                     f"(first reason: {rejects[0][1] if rejects else 'empty input'})")
    trained = train_generator_on_graphs(kind, x_all, e_all, vocab, epochs=epochs, batch_size=batch_size, lr=lr,
                                        seed=seed, device=device, grad_clip=grad_clip, on_epoch_end=on_epoch_end,
                                        **kwargs)
    trained.rejects = rejects
    return trained


def train_generator_on_graphs(
    kind: str,
    x_all: torch.Tensor,
    e_all: torch.Tensor,
    vocab: GraphVocab,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    grad_clip: float = 1.0,
    weight_decay: float = 0.01,
    lr_schedule: str = "constant",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.05,
    ema_decay: float | None = None,
    bf16: bool = False,
    max_seconds: float | None = None,
    deadline: float | None = None,
    state_path: str | Path | None = None,
    checkpoint_every: float = 300.0,
    evaluate_every: float | None = None,
    on_evaluate: Callable[[nn.Module, dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[dict[str, float]], bool | None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    **hparams: Any,
) -> TrainedGenerator:
    """The training loop on pre-encoded graphs ``x_all [M, N]``, ``e_all [M, N, N]`` (uint8 is best).

    ``lr_schedule``: "constant" or "cosine" (to ``min_lr_ratio * lr``), after ``warmup_steps`` of
    linear warm-up; the cosine runs over ``epochs`` or, when sooner, over ``max_seconds`` of training.
    ``ema_decay`` (e.g. 0.999): keep an EMA of the weights and return it as the model.
    ``bf16``: bfloat16 autocast of the network (the diffusion denoiser only; the whole VAE loss).
    ``max_seconds``: training-time budget over all calls; the loop stops at the first step past it.
    ``deadline``: a wall-clock time (``time.time()``) at which to stop whatever the budget (the
    state is saved, so a later call goes on; the cosine still runs over ``max_seconds``).
    ``state_path``: resume from this training-state file if it exists and keep it up to date
    (every ``checkpoint_every`` seconds, at the end); its run must match kind, hparams, data size,
    batch size and seed. ``on_evaluate(model, info)`` is called every ``evaluate_every`` training
    seconds with the sampling model (EMA if any) in eval mode, e.g. to sample a learning curve; its
    time does not count as training time. ``hparams`` go to the model constructor.
    ``init_state``: start from these weights (a trained generator's ``state_dict``, same hparams and
    vocabulary) instead of a random init: fine-tuning. The diffusion model then keeps the noise
    process it was trained with (its marginals and size distribution) rather than re-fitting them
    to the new, typically small, set: the denoiser was trained against that process.
    """
    if kind not in GENERATOR_CLASSES:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GeneratorTrainingError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if lr_schedule not in LR_SCHEDULES:
        raise GeneratorTrainingError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise GeneratorTrainingError(f"ema_decay must be in (0, 1), got {ema_decay}")
    if max_seconds is not None and not max_seconds > 0:
        raise GeneratorTrainingError(f"max_seconds must be > 0, got {max_seconds}")
    n = x_all.shape[0]
    if n == 0:
        raise GeneratorTrainingError("no training graphs")
    max_nodes = int(x_all.shape[1])

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):   # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = build_generator(kind, n_node_classes=vocab.n_node_classes, n_edge_classes=vocab.n_edge_classes,
                                max_nodes=max_nodes, **hparams)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            raise GeneratorTrainingError(f"init_state does not fit a {kind} of these hparams: {exc}") from exc
    elif isinstance(model, GraphDiffusion):
        model.set_data_statistics(x_all, e_all)
    model.to(device)
    x_all, e_all = x_all.to(device), e_all.to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay is not None else None

    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    run_id = {"kind": kind, "hparams": dict(model.hparams), "n_train": n, "batch_size": batch_size, "seed": seed,
              "vocab": vocab.to_dict(), "ema": ema_decay is not None,
              **({"fine_tuned": True} if init_state is not None else {})}   # absent when off: old states resume

    # Loop position; a training state restores all of it.
    epoch, batch_start, step, elapsed = 1, 0, 0, 0.0
    epoch_shuffle_state = _rng_state(shuffle_gen)   # generator state the epoch's permutation came from
    epoch_sums: dict[str, torch.Tensor] = {}
    epoch_seconds = 0.0
    history: list[dict[str, float]] = []
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        state = load_training_state(state_path)
        saved = state.get("run", {})
        if saved != run_id:
            diff = sorted(k for k in set(saved) | set(run_id) if saved.get(k) != run_id.get(k))
            raise TrainingStateError(f"{state_path} belongs to another run (differs in {diff}); "
                                     "delete it or pass the same settings")
        try:
            model.load_state_dict(state["model"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            shuffle_gen.set_state(state["shuffle_rng"])
            noise_gen.set_state(state["noise_rng"])
            torch.set_rng_state(state["torch_rng"])
            epoch, batch_start, step = int(state["epoch"]), int(state["batch_start"]), int(state["step"])
            elapsed, epoch_seconds = float(state["elapsed"]), float(state["epoch_seconds"])
            epoch_shuffle_state = state["epoch_shuffle_rng"]
            epoch_sums = {k: v.to(device) for k, v in state["epoch_sums"].items()}
            history = [dict(h) for h in state["history"]]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise TrainingStateError(f"{state_path}: cannot restore the training state: {exc}") from exc

    def save_state() -> None:
        if state_path is None:
            return
        with atomic_path(state_path) as tmp:
            torch.save({
                "format": STATE_FORMAT, "run": run_id,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()} if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "shuffle_rng": _rng_state(shuffle_gen), "noise_rng": _rng_state(noise_gen),
                "torch_rng": torch.get_rng_state(), "epoch_shuffle_rng": epoch_shuffle_state,
                "epoch": epoch, "batch_start": batch_start, "step": step, "elapsed": elapsed,
                "epoch_seconds": epoch_seconds, "epoch_sums": {k: v.detach().cpu() for k, v in epoch_sums.items()},
                "history": history, "max_seconds": max_seconds,
            }, tmp)

    def sampling_model() -> nn.Module:
        return ema if ema is not None else model

    # bf16 only around the network: the diffusion noise (categorical draws from Qbar-rows) and the
    # losses stay in fp32, where bf16's 8-bit mantissa would round small transition probabilities away.
    net = getattr(model, "denoiser", None) if bf16 else None
    hooks = bf16_autocast_hooks(net, device) if net is not None else []
    params = [p for p in model.parameters() if p.requires_grad]
    ema_params = [p for p in ema.parameters()] if ema is not None else []
    stop_reason = "epochs"
    last_save = last_eval = elapsed
    order: torch.Tensor | None = None
    model.train()
    while epoch <= epochs:
        if max_seconds is not None and elapsed >= max_seconds:
            stop_reason = "time budget"
            break
        if deadline is not None and time.time() >= deadline:
            stop_reason = "deadline"
            break
        if order is None:   # (re)draw this epoch's permutation from the state the epoch started with
            shuffle_gen.set_state(epoch_shuffle_state)
            order = torch.randperm(n, generator=shuffle_gen).to(device)
        tick = time.perf_counter()
        idx = order[batch_start:batch_start + batch_size]
        progress = step / (epochs * steps_per_epoch)
        if max_seconds is not None:
            progress = max(progress, elapsed / max_seconds)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, step, warmup_steps=warmup_steps, schedule=lr_schedule,
                                        progress=progress, min_lr_ratio=min_lr_ratio)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and net is None):
            parts = model.loss(x_all[idx].long(), e_all[idx].long(), generator=noise_gen)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        step += 1
        if ema is not None:
            # Short effective horizon early on, so the average does not drag the random init along.
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - decay)
        for key, value in parts.items():   # accumulate on the device: no sync per step
            epoch_sums[key] = epoch_sums.get(key, 0) + value.detach().float() * idx.numel()
        batch_start += idx.numel()
        dt = time.perf_counter() - tick
        elapsed += dt
        epoch_seconds += dt

        stop = False
        if batch_start >= n:   # epoch done
            record = {"epoch": float(epoch), **{k: float(v) / n for k, v in epoch_sums.items()},
                      "seconds": epoch_seconds, "molecules_per_second": n / max(epoch_seconds, 1e-9),
                      "elapsed": elapsed, "step": float(step), "lr": optimizer.param_groups[0]["lr"]}
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"{kind} training diverged at epoch {epoch}: loss {record['loss']}")
            history.append(record)
            epoch, batch_start, epoch_seconds, epoch_sums, order = epoch + 1, 0, 0.0, {}, None
            epoch_shuffle_state = _rng_state(shuffle_gen)
            if on_epoch_end is not None and on_epoch_end(record):
                stop_reason, stop = "callback", True
        if on_evaluate is not None and evaluate_every and elapsed - last_eval >= evaluate_every:
            last_eval = elapsed
            sampler = sampling_model().eval()
            on_evaluate(sampler, {"elapsed": elapsed, "step": float(step), "epoch": float(epoch),
                                  "loss": float(parts["loss"].detach())})
            model.train()
        if state_path is not None and elapsed - last_save >= checkpoint_every:
            last_save = elapsed
            save_state()
        if stop:
            break
    if 0 < batch_start < n and epoch_sums:   # stopped inside an epoch: record what it did so far
        seen = batch_start
        record = {"epoch": float(epoch) - 1 + seen / n, **{k: float(v) / seen for k, v in epoch_sums.items()},
                  "seconds": epoch_seconds, "molecules_per_second": seen / max(epoch_seconds, 1e-9),
                  "elapsed": elapsed, "step": float(step), "lr": optimizer.param_groups[0]["lr"], "partial": 1.0}
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"{kind} training diverged in epoch {epoch}: loss {record['loss']}")
        history_out = history + [record]
    else:
        history_out = history
    save_state()
    for handle in hooks:
        handle.remove()
    model.eval()
    out_model = sampling_model().eval()
    return TrainedGenerator(kind=kind, model=out_model, vocab=vocab, history=history_out, rejects=[],
                            train_seconds=elapsed, n_train=n, steps=step, stop_reason=stop_reason,
                            ema_decay=ema_decay)


def train_generator_from_config(
    kind: str,
    smiles: Sequence[str],
    cfg: VAEConfig | DiffusionConfig,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    max_nodes: int | None = None,
    **overrides: Any,
) -> TrainedGenerator:
    """``train_generator`` with the knobs of ``params.yaml``'s ``generate.vae`` / ``generate.diffusion``;
    ``max_nodes`` is ``generate.max_heavy_atoms``. Every field of the config is passed on (training
    options and model hyper-parameters; ``time_budget_s`` as ``max_seconds``). ``overrides`` win over
    the config (e.g. n_heads, max_seconds, state_path)."""
    expected = {"vae": VAEConfig, "diffusion": DiffusionConfig}.get(kind)
    if expected is None:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    if not isinstance(cfg, expected):
        raise GeneratorTrainingError(f"{kind} needs a {expected.__name__}, got {type(cfg).__name__}")
    kwargs: dict[str, Any] = dataclasses.asdict(cfg)
    kwargs["max_seconds"] = kwargs.pop("time_budget_s")
    if kwargs.pop("init_from"):
        raise GeneratorTrainingError(f"{kind}.init_from is set: fine-tune that generator "
                                     "(molgnn.generate.finetune) instead of training one from the config")
    kwargs.update(overrides)
    return train_generator(kind, smiles, seed=seed, device=device, max_nodes=max_nodes, **kwargs)
