"""Draw molecules from a trained generator and decode them to SMILES, before and after correction."""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from molgnn.chem.sample_rates import uniqueness, validity
from molgnn.featurize.dense_graph import GraphVocab, decode
from molgnn.generate.cpu_allocator import retain_freed_memory
from molgnn.generate.training import TrainedGenerator
from molgnn.models.graph_diffusion import Guidance


@dataclass
class SampleResult:
    """Per-draw results: ``smiles[i]`` is None when draw i is not a valid single molecule as
    sampled (``reasons[i]`` says why); ``corrected_smiles[i]`` keeps its largest fragment."""

    smiles: list[str | None]
    reasons: list[str]
    corrected_smiles: list[str | None]
    seconds: float
    molecules_per_second: float

    # validity and uniqueness as molgnn.chem.sample_rates defines them (decoded SMILES are canonical)
    @property
    def validity(self) -> float:
        """Fraction of draws valid without correction (the number papers report)."""
        return validity(self.smiles)

    @property
    def validity_corrected(self) -> float:
        return validity(self.corrected_smiles)

    @property
    def uniqueness(self) -> float:
        """Distinct canonical SMILES among the uncorrected valid draws (NaN when none is valid)."""
        return uniqueness([s for s in self.smiles if s is not None])

    def metrics(self) -> dict[str, float]:
        return {"validity": self.validity, "validity_corrected": self.validity_corrected,
                "uniqueness": self.uniqueness, "n_samples": float(len(self.smiles)),
                "seconds": self.seconds, "molecules_per_second": self.molecules_per_second}


def sample_graphs(model: nn.Module, n: int, *, seed: int, device: str | torch.device = "cpu",
                  batch_size: int = 512, guidance: Guidance | None = None,
                  steps: int | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` dense graphs (X [n, N], E [n, N, N], on the CPU) in batches from one seeded generator.

    ``guidance`` (diffusion only) steers each reverse step and ``steps`` (diffusion only; None: all
    its timesteps) sets the number of reverse steps, see ``GraphDiffusion.sample``; ``progress`` is
    called with the number of graphs of each finished batch."""
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got {n}, {batch_size}")
    extra = {}
    if guidance is not None:
        if "guidance" not in inspect.signature(model.sample).parameters:
            raise ValueError(f"{type(model).__name__} cannot be guided; guidance needs the diffusion model")
        check = getattr(guidance, "check_model", None)
        if check is not None:
            check(model)
        extra["guidance"] = guidance
    if steps is not None:
        if "steps" not in inspect.signature(model.sample).parameters:
            raise ValueError(f"{type(model).__name__} samples in one pass; sampling steps apply to the diffusion model")
        extra["steps"] = steps
    device = torch.device(device)
    if device.type == "cpu":
        retain_freed_memory()
    model = model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    xs, es = [], []
    for start in range(0, n, batch_size):
        x, e = model.sample(min(batch_size, n - start), generator=generator, device=device, **extra)
        xs.append(x.cpu())
        es.append(e.cpu())
        if progress is not None:
            progress(x.shape[0])
    n_max = int(model.hparams["max_nodes"])
    if not xs:
        return torch.zeros(0, n_max, dtype=torch.long), torch.zeros(0, n_max, n_max, dtype=torch.long)
    return torch.cat(xs), torch.cat(es)


def sample_smiles(
    generator: TrainedGenerator | nn.Module,
    vocab: GraphVocab | None,
    n: int,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    guidance: Guidance | None = None,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Sample ``n`` molecules and decode each twice: as drawn, and keeping the largest fragment.

    ``vocab`` may be None when a TrainedGenerator (which carries its vocabulary) is given;
    ``guidance``, ``steps`` and ``progress`` go to ``sample_graphs``.
    Timing covers sampling and decoding.
    """
    if isinstance(generator, TrainedGenerator):
        model, vocab = generator.model, vocab or generator.vocab
    else:
        model = generator
    if vocab is None:
        raise ValueError("sample_smiles needs a vocabulary to decode a bare model")
    started = time.perf_counter()
    x, e = sample_graphs(model, n, seed=seed, device=device, batch_size=batch_size, guidance=guidance, steps=steps,
                         progress=progress)
    smiles: list[str | None] = []
    reasons: list[str] = []
    corrected: list[str | None] = []
    for k in range(x.shape[0]):
        smi, reason = decode(x[k], e[k], vocab)
        smiles.append(smi)
        reasons.append(reason)
        # A graph valid as drawn needs no correction; decode again only the failures.
        corrected.append(smi if smi is not None else decode(x[k], e[k], vocab, correct=True)[0])
    seconds = time.perf_counter() - started
    return SampleResult(smiles=smiles, reasons=reasons, corrected_smiles=corrected, seconds=seconds,
                        molecules_per_second=n / max(seconds, 1e-9))
