"""Fine-tune a trained generator on a few molecules (the design loop's selections).

The weights start from the trained generator; its vocabulary, size limit and (for the diffusion
model) noise process are kept, so molecules it cannot represent (unseen atom types, too many heavy
atoms) are recorded as rejects rather than changing the model. REINVENT's staged learning steers a
generator with reinforcement learning on a score; here the loop's multi-objective selection does
the scoring, and plain likelihood training on the selected molecules, mixed with replayed training
molecules, moves the generator toward them without forgetting its chemistry.
"""
from __future__ import annotations

from typing import Sequence

import torch

from molgnn.featurize.dense_graph import encode_many
from molgnn.generate.training import GeneratorTrainingError, TrainedGenerator, train_generator_on_graphs

_SHAPE_KEYS = ("n_node_classes", "n_edge_classes", "max_nodes")   # given by the vocabulary and the data


def finetune_generator(base: TrainedGenerator, smiles: Sequence[str], *, replay: Sequence[str] = (),
                       epochs: int, lr: float, batch_size: int, seed: int,
                       device: str | torch.device = "cpu") -> TrainedGenerator:
    """``base`` trained ``epochs`` more on ``smiles`` + ``replay`` (SMILES); returns a new generator
    (``base`` is left untouched) whose ``rejects`` list the molecules that could not be encoded."""
    molecules = list(smiles) + list(replay)
    x, e, kept, rejected = encode_many(molecules, base.vocab, base.max_nodes, dtype=torch.uint8)
    if not kept:
        raise GeneratorTrainingError(f"none of the {len(molecules)} fine-tuning molecules fit the generator "
                                     f"(first reason: {rejected[0][1] if rejected else 'no molecules'})")
    hparams = {k: v for k, v in base.hparams.items() if k not in _SHAPE_KEYS}
    state = {k: v.detach().cpu().clone() for k, v in base.model.state_dict().items()}
    tuned = train_generator_on_graphs(base.kind, x, e, base.vocab, epochs=epochs, batch_size=min(batch_size, len(kept)),
                                      lr=lr, seed=seed, device=device, init_state=state, **hparams)
    tuned.rejects = [(molecules[i], reason) for i, reason in rejected]
    return tuned
