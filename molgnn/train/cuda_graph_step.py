"""Fine-tuning steps replayed from CUDA graphs, one graph per padded batch shape.

At QM9 sizes a PaiNN step at batch 100 is several hundred small kernels (forward, backward, gradient
clipping, AdamW); launched one by one from Python the GPU mostly waits for the host. Padded batches
(:func:`molgnn.featurize.atomistic.pad_batch`) come in a handful of shapes, so the whole step of each
shape is captured once into a ``torch.cuda.CUDAGraph`` and then replayed with one launch: new batch
data is copied into the graph's static input tensors first.

Requirements (checked): an optimizer with ``capturable=True`` and a tensor learning rate (so that
schedulers change the value the graph reads, not a constant baked into it), no gradient scaler (fp16
AMP syncs with the host), no DistributedDataParallel.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Mapping, Sequence

import schnetpack.properties as props
import torch

from molgnn.train.steps import masked_scaled_mse

INPUT_KEYS = (props.Z, props.R, props.idx_m, props.n_atoms, props.idx_i, props.idx_j)
TARGETS_KEY = "_targets"


class _EagerReplay:
    """Stands in for a CUDAGraph off CUDA (tests only): replaying runs the step on the static inputs."""

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def replay(self) -> None:
        self.fn()


class GraphedStep:
    """``step(batch) -> loss``: one optimizer step on a padded batch, replayed from a CUDA graph.

    The first call (while the optimizer has no state yet) runs eagerly: the optimizer state must be
    created outside any graph, else each replay would reset it. A new batch shape is then warmed up
    (forward + backward only, weights untouched) on a side stream and captured; every later batch
    of that shape is a copy into the static inputs plus one replay. The returned loss is a copy.
    ``warmup_seconds`` adds up the wall-clock of the first eager step (where torch.compile compiles)
    and of every warm-up and capture, device work included, so a caller can keep them off its clock.
    ``emulate=True`` (CPU tests) replaces capture and replay by eager calls on the same static tensors.
    """

    def __init__(self, forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, targets: Sequence[str], scale: torch.Tensor,
                 grad_clip: float | None, amp_dtype: torch.dtype | None = None, emulate: bool = False):
        if not emulate and scale.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {scale.device}")
        for group in optimizer.param_groups:  # (capturable optimizers exist on CUDA only, hence not emulated)
            if not (group.get("capturable") or emulate) or not torch.is_tensor(group["lr"]):
                raise ValueError("CUDA graphs need an optimizer with capturable=True and a tensor lr")
        self.forward, self.model, self.optimizer = forward, model, optimizer
        self.targets, self.scale, self.grad_clip = list(targets), scale, grad_clip
        self.device = scale.device
        self.emulate = emulate
        # the autocast weight cache must not outlive a capture
        self.autocast = (torch.autocast(device_type=self.device.type, dtype=amp_dtype, cache_enabled=False)
                         if amp_dtype is not None else contextlib.nullcontext())
        self.graphs: dict[tuple, tuple[dict[str, torch.Tensor], torch.Tensor, object]] = {}
        self.warmup_seconds = 0.0

    def _inputs(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inp = {k: batch[k] for k in INPUT_KEYS}
        inp[TARGETS_KEY] = torch.stack([batch[t] for t in self.targets], dim=-1).to(torch.float32)
        return inp

    def _loss(self, inp: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with self.autocast:
            pred = self.forward({k: inp[k] for k in INPUT_KEYS})
        return masked_scaled_mse(pred.float(), inp[TARGETS_KEY], self.scale, check=False)  # no host sync

    def _step(self, inp: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # set_to_none: under capture the gradients are then allocated inside the graph and every
        # replay writes the same memory that its clipping and optimizer step read
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(inp)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach()

    @property
    def n_graphs(self) -> int:
        return len(self.graphs)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inp = self._inputs(batch)
        if not self.optimizer.state:
            return self._warm_up(self._step, inp)
        key = tuple((k, tuple(v.shape)) for k, v in inp.items())
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._warm_up(self._capture, inp)
        static, loss, graph = entry
        for k, v in inp.items():
            static[k].copy_(v)
        graph.replay()
        return loss.clone()

    def _warm_up(self, fn: Callable, inp: Mapping[str, torch.Tensor]):
        """``fn(inp)`` timed into ``warmup_seconds``, the device drained before and after (a one-off sync)."""
        if not self.emulate:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn(inp)
        if not self.emulate:
            torch.cuda.synchronize(self.device)
        self.warmup_seconds += time.perf_counter() - t0
        return out

    def _capture(self, inp: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
        static = {k: v.clone() for k, v in inp.items()}
        if self.emulate:
            loss = torch.zeros((), device=self.device)
            return static, loss, _EagerReplay(lambda: loss.copy_(self._step(static)))
        n_state = len(self.optimizer.state)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            # warm-up without an optimizer step (weights unchanged): lazy initialisations, library
            # workspaces and torch.compile's code for this shape are made here, not under capture
            self.optimizer.zero_grad(set_to_none=True)
            self._loss(static).backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = self._step(static)
        if len(self.optimizer.state) != n_state:
            raise RuntimeError("optimizer state was created inside a CUDA graph capture (a parameter got its "
                               "first gradient there); replays would reset it")
        return static, loss, graph
