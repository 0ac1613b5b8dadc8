"""Validity, uniqueness and novelty of generated molecules: the one definition of each.

Both the pipeline's generation rates (``chem.filters.generation_rates``) and the MOSES metrics
(``generate.metrics``) compute them with these functions over :func:`molgnn.chem.canonical.canonical_smiles`.
Let G be the generated list, V its valid entries as canonical SMILES (duplicates kept), U = set(V)
and T the canonical SMILES of the valid training molecules:

- validity   = |V| / |G|; G must not be empty (there is nothing to rate).
- uniqueness = |U| / |V|
- novelty    = |U minus T| / |U|

A rate over an empty set (no valid molecule: uniqueness, novelty; no distinct one: novelty) is
undefined: NaN with a :class:`MetricWarning`, never 0.0, so "nothing valid" is not read as
"nothing novel".
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence


class MetricWarning(UserWarning):
    """A metric was computed on fewer molecules than its definition asks for, or is undefined."""


def fraction(k: int, n: int, what: str, *, stacklevel: int = 2) -> float:
    """k / n, or NaN with a MetricWarning naming ``what`` when n is 0.

    >>> fraction(1, 4, "novelty")
    0.25
    """
    if n == 0:
        warnings.warn(f"{what} of an empty set is undefined", MetricWarning, stacklevel=stacklevel + 1)
        return math.nan
    return k / n


def validity(canonical: Sequence[str | None]) -> float:
    """|V| / |G| for the canonical SMILES of every draw (None where a draw is invalid)."""
    if not len(canonical):
        raise ValueError("validity needs at least one generated entry")
    return sum(c is not None for c in canonical) / len(canonical)


def uniqueness(valid: Sequence[str]) -> float:
    """|U| / |V| for the canonical SMILES of the valid draws, duplicates kept."""
    return fraction(len(set(valid)), len(valid), "uniqueness", stacklevel=2)


def novelty(unique: Collection[str], training: Collection[str]) -> float:
    """|U minus T| / |U| for distinct canonical SMILES ``unique`` and canonical training SMILES."""
    training = training if isinstance(training, (set, frozenset)) else set(training)
    return novel_fraction(len(unique), sum(u in training for u in unique))


def novel_fraction(n_unique: int, n_in_training: int) -> float:
    """Novelty from counts: (|U| - |U in T|) / |U|; for callers that find U in T faster themselves."""
    return fraction(n_unique - n_in_training, n_unique, "novelty", stacklevel=3)
