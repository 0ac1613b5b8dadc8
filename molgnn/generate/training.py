"""Train a molecule generator (graph VAE or discrete graph diffusion) from SMILES.

One loop serves both models: each exposes ``loss(X, E, generator) -> {"loss", ...}`` on dense graphs
in vocabulary encoding. The whole encoded set lives on the device as uint8 (MOSES at 38 atoms is
~2.3 GB) and batches are cast there, so the loop never touches Python per molecule.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from molgnn.config import DiffusionConfig, VAEConfig
from molgnn.featurize.dense_graph import GraphVocab, encode_many, fit_vocab
from molgnn.models.graph_diffusion import GraphDiffusion
from molgnn.models.graph_vae import GraphVAE

GENERATOR_CLASSES: dict[str, type[nn.Module]] = {"vae": GraphVAE, "diffusion": GraphDiffusion}


class GeneratorTrainingError(ValueError):
    """Generator training cannot start: unknown kind, bad settings or no encodable molecule."""


@dataclass
class TrainedGenerator:
    """A trained model with what is needed to sample from it and to audit its training."""

    kind: str
    model: nn.Module
    vocab: GraphVocab
    history: list[dict[str, float]] = field(default_factory=list)   # one dict per epoch
    rejects: list[tuple[str, str]] = field(default_factory=list)    # (smiles, reason) left out
    train_seconds: float = 0.0
    n_train: int = 0

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
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    **hparams: Any,
) -> TrainedGenerator:
    """Fit a ``kind`` ("vae" | "diffusion") generator to ``smiles``; deterministic under ``seed``.

    ``max_nodes`` defaults to the largest molecule in the data; larger molecules, unparseable SMILES
    and atom tokens outside ``vocab`` (learned from the data when None) become ``rejects``.
    ``hparams`` go to the model constructor (latent_dim, hidden_dim, n_layers, timesteps, ...).
    ``on_epoch_end`` receives each epoch's history dict (e.g. to log it to MLflow).
    """
    if kind not in GENERATOR_CLASSES:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GeneratorTrainingError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
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

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):   # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = build_generator(kind, n_node_classes=vocab.n_node_classes, n_edge_classes=vocab.n_edge_classes,
                                max_nodes=max_nodes, **hparams)
    if isinstance(model, GraphDiffusion):
        model.set_data_statistics(x_all, e_all)
    model.to(device)
    x_all, e_all = x_all.to(device), e_all.to(device)

    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    n = x_all.shape[0]
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle_gen).to(device)
        sums: dict[str, torch.Tensor] = {}
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            parts = model.loss(x_all[idx].long(), e_all[idx].long(), generator=noise_gen)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            for key, value in parts.items():   # accumulate on the device: no sync per step
                sums[key] = sums.get(key, 0) + value.detach() * idx.numel()
        seconds = time.perf_counter() - epoch_start
        record = {"epoch": float(epoch), **{k: float(v) / n for k, v in sums.items()},
                  "seconds": seconds, "molecules_per_second": n / max(seconds, 1e-9)}
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"{kind} training diverged at epoch {epoch}: loss {record['loss']}")
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return TrainedGenerator(kind=kind, model=model, vocab=vocab, history=history, rejects=rejects,
                            train_seconds=time.perf_counter() - started, n_train=n)


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
    ``max_nodes`` is ``generate.max_heavy_atoms``. ``overrides`` win over the config (e.g. n_heads)."""
    expected = {"vae": VAEConfig, "diffusion": DiffusionConfig}.get(kind)
    if expected is None:
        raise GeneratorTrainingError(f"unknown generator kind {kind!r}; use one of {sorted(GENERATOR_CLASSES)}")
    if not isinstance(cfg, expected):
        raise GeneratorTrainingError(f"{kind} needs a {expected.__name__}, got {type(cfg).__name__}")
    if isinstance(cfg, VAEConfig):
        model_kwargs: dict[str, Any] = {"latent_dim": cfg.latent_dim, "hidden_dim": cfg.hidden_dim}
    else:
        model_kwargs = {"timesteps": cfg.timesteps, "hidden_dim": cfg.hidden_dim, "n_layers": cfg.n_layers}
    kwargs: dict[str, Any] = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, **model_kwargs}
    kwargs.update(overrides)
    return train_generator(kind, smiles, seed=seed, device=device, max_nodes=max_nodes, **kwargs)
