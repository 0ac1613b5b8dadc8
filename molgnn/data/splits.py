"""Train / validation / test splits: random, and Bemis-Murcko scaffold (no scaffold in two splits).

Both return three sorted, disjoint numpy int64 index arrays that together cover ``range(n)``, and
depend only on their inputs and ``seed``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from molgnn.chem.scaffolds import murcko_scaffold
from molgnn.chem.standardize import MoleculeParseError

SPLIT_NAMES = ("train", "validation", "test")


class SplitError(ValueError):
    """Bad fractions, or too few molecules (or scaffolds) to fill every requested split."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise SplitError(f"fractions must be three numbers (train, validation, test), not {list(fractions)}")
    if any(not np.isfinite(f) or f < 0 for f in fr):
        raise SplitError(f"fractions must be finite and non-negative, not {list(fractions)}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise SplitError(f"fractions must sum to 1, not {sum(fr)} ({list(fractions)})")
    if fr[0] == 0:
        raise SplitError("the training fraction must be positive")
    return fr  # type: ignore[return-value]


def _check_filled(parts: list[list[int]] | list[np.ndarray], fractions: tuple[float, float, float],
                  n: int, what: str) -> None:
    for name, part, f in zip(SPLIT_NAMES, parts, fractions):
        if f > 0 and len(part) == 0:
            raise SplitError(f"{what}: the {name} split is empty ({n} molecules, fractions {list(fractions)}); "
                             f"too few molecules for these fractions")


def _sorted(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def random_split(n: int, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded permutation cut at ``floor(f_train * n)`` and ``floor((f_train + f_val) * n)``."""
    fr = _check_fractions(fractions)
    if n < 1:
        raise SplitError(f"cannot split {n} molecules")
    perm = np.random.default_rng(seed).permutation(n)
    a = int(fr[0] * n)
    b = n if fr[2] == 0 else int((fr[0] + fr[1]) * n)
    parts = [perm[:a], perm[a:b], perm[b:]]
    _check_filled(parts, fr, n, "random split")
    return _sorted(parts)


def scaffold_split(smiles_list: Sequence[str], fractions: Sequence[float],
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group molecules by Bemis-Murcko scaffold and assign whole groups (chemprop's balanced split).

    Groups larger than half the validation or test size go first, largest first (they belong in
    train), the rest follow in seeded random order; each group goes to train while it fits, else
    validation while it fits, else test. Acyclic molecules share the empty scaffold: one group.
    """
    fr = _check_fractions(fractions)
    n = len(smiles_list)
    if n < 1:
        raise SplitError("cannot split an empty molecule list")
    groups: dict[str, list[int]] = {}
    for i, smi in enumerate(smiles_list):
        try:
            scaffold = murcko_scaffold(smi)
        except MoleculeParseError as exc:
            raise SplitError(f"molecule {i} has no scaffold: {exc}") from None
        groups.setdefault(scaffold, []).append(i)

    train_size, val_size = fr[0] * n, fr[1] * n
    test_size = n - train_size - val_size
    sets = list(groups.values())                 # first-occurrence order: independent of hashing
    big = [g for g in sets if len(g) > val_size / 2 or len(g) > test_size / 2]
    small = [g for g in sets if not (len(g) > val_size / 2 or len(g) > test_size / 2)]
    rng = np.random.default_rng(seed)
    # Big groups largest first (seeded order among equal sizes), so the largest scaffolds land in
    # train as DeepChem does; the rest in seeded random order, as chemprop's balanced split does.
    big = sorted((big[i] for i in rng.permutation(len(big))), key=len, reverse=True)
    small = [small[i] for i in rng.permutation(len(small))]

    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for g in big + small:
        if len(train) + len(g) <= train_size:
            train += g
        elif len(val) + len(g) <= val_size:
            val += g
        else:
            test += g
    if fr[2] == 0 and test:   # nothing may go to a split asked to be empty
        (val if fr[1] > 0 else train).extend(test)
        test = []
    parts = [train, val, test]
    _check_filled(parts, fr, n, f"scaffold split ({len(groups)} scaffolds)")
    return _sorted(parts)
