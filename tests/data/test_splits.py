"""Splits: disjoint, covering, deterministic; scaffold split never shares a scaffold across splits."""
from __future__ import annotations

import numpy as np
import pytest

from molgnn.chem.scaffolds import murcko_scaffold
from molgnn.data.splits import SplitError, random_split, scaffold_split

# 10 scaffolds x a few substituents, plus acyclic molecules (the empty scaffold)
RINGS = ["c1ccccc1", "c1ccncc1", "C1CCCCC1", "C1CCNCC1", "c1ccoc1", "c1ccsc1", "C1CC1", "C1CCOC1",
         "c1ccc2ccccc2c1", "c1cnccn1"]
SUBSTITUENTS = ["C", "CC", "O", "N", "Cl"]
SMILES = [f"{s}{r}" if s != "Cl" else f"{r}Cl" for r in RINGS for s in SUBSTITUENTS[: 2 + RINGS.index(r) % 4]]
SMILES += ["CCO", "CCCN", "CC(C)O"]


def _check_partition(parts, n):
    all_idx = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert len(all_idx) == n and set(all_idx.tolist()) == set(range(n))


def test_random_split_sizes_partition_and_determinism():
    tr, va, te = random_split(100, [0.8, 0.1, 0.1], seed=0)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    _check_partition((tr, va, te), 100)
    again = random_split(100, [0.8, 0.1, 0.1], seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    other = random_split(100, [0.8, 0.1, 0.1], seed=1)
    assert not np.array_equal(tr, other[0])


def test_scaffold_split_keeps_scaffolds_apart():
    parts = scaffold_split(SMILES, [0.7, 0.15, 0.15], seed=0)
    _check_partition(parts, len(SMILES))
    scaffolds = [{murcko_scaffold(SMILES[i]) for i in p} for p in parts]
    assert not (scaffolds[0] & scaffolds[1]) and not (scaffolds[0] & scaffolds[2]) \
        and not (scaffolds[1] & scaffolds[2])
    assert all(len(p) > 0 for p in parts)
    again = scaffold_split(SMILES, [0.7, 0.15, 0.15], seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert any(not np.array_equal(a, b) for a, b in
               zip(parts, scaffold_split(SMILES, [0.7, 0.15, 0.15], seed=5)))


def test_big_scaffold_groups_go_to_train():
    smiles = [f"{'C' * k}c1ccccc1" for k in range(1, 13)] + ["c1ccncc1", "Cc1ccncc1", "C1CC1", "CC1CC1",
                                                              "C1CCC1", "C1CCCC1"]
    tr, _, _ = scaffold_split(smiles, [0.8, 0.1, 0.1], seed=3)
    assert set(range(12)) <= set(tr.tolist())          # the 12 benzenes cannot be in val or test


@pytest.mark.parametrize("fractions", [[0.8, 0.2], [0.8, 0.3, -0.1], [0.5, 0.2, 0.2], [0.0, 0.5, 0.5],
                                       [float("nan"), 0.5, 0.5]])
def test_bad_fractions(fractions):
    with pytest.raises(SplitError):
        random_split(100, fractions, 0)
    with pytest.raises(SplitError):
        scaffold_split(SMILES, fractions, 0)


def test_too_few_molecules():
    with pytest.raises(SplitError, match="too few"):
        random_split(5, [0.8, 0.1, 0.1], 0)
    with pytest.raises(SplitError, match="too few"):
        scaffold_split(["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O"], [0.8, 0.1, 0.1], 0)   # one scaffold
    with pytest.raises(SplitError):
        random_split(0, [0.8, 0.1, 0.1], 0)


def test_zero_test_fraction_leaves_test_empty():
    tr, va, te = scaffold_split(SMILES, [0.8, 0.2, 0.0], seed=0)
    assert len(te) == 0 and len(tr) + len(va) == len(SMILES)
    tr, va, te = random_split(11, [0.9, 0.1, 0.0], seed=0)
    assert len(te) == 0 and len(tr) + len(va) == 11
