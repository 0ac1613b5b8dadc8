"""Pareto ranking, crowding distance and the diversity-constrained pick of the design loop."""
from __future__ import annotations

import numpy as np
import pytest

from molgnn.design.pareto import crowding_distance, pareto_ranks, select_diverse, selection_order


def _dominates(a, b, maximize):
    sign = np.where(maximize, 1.0, -1.0)
    a, b = a * sign, b * sign
    return bool((a >= b).all() and (a > b).any())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fronts_match_the_definition(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, size=(300, 3)).astype(float)   # small integers: many ties
    maximize = [True, False, True]
    ranks = pareto_ranks(values, maximize)
    for i in range(len(values)):
        dominators = [j for j in range(len(values)) if _dominates(values[j], values[i], maximize)]
        if ranks[i] == 1:
            assert not dominators
        else:   # beaten by a row of the front before it, by none of its own front or later
            assert any(ranks[j] == ranks[i] - 1 for j in dominators)
            assert all(ranks[j] < ranks[i] for j in dominators)


def test_direction_matters_and_blocks_agree():
    values = np.array([[1.0, 1.0], [2.0, 2.0], [2.0, 0.0], [0.0, 3.0]])
    assert pareto_ranks(values, [True, True]).tolist() == [2, 1, 2, 1]
    assert pareto_ranks(values, [True, False]).tolist() == [2, 2, 1, 3]
    big = np.random.default_rng(3).normal(size=(700, 2))    # more rows than one block of the matrix
    ranks = pareto_ranks(big, [True, True])
    front = big[ranks == 1]
    assert not any(_dominates(b, f, [True, True]) for f in front for b in big)


def test_crowding_prefers_the_ends_and_sparse_regions():
    values = np.array([[0.0, 4.0], [1.0, 3.0], [1.1, 2.9], [4.0, 0.0]])   # one front
    ranks = pareto_ranks(values, [True, True])
    assert (ranks == 1).all()
    crowd = crowding_distance(values, ranks)
    assert np.isinf(crowd[[0, 3]]).all() and np.isfinite(crowd[[1, 2]]).all()
    order, _, _ = selection_order(values, [True, True])
    assert set(order[:2].tolist()) == {0, 3}


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        pareto_ranks(np.array([[1.0, np.nan]]), [True, True])
    with pytest.raises(ValueError, match="one column per objective"):
        pareto_ranks(np.zeros((3, 2)), [True])


def test_diverse_pick_skips_near_duplicates_and_earlier_picks():
    from molgnn.chem.similarity import smiles_bits

    smiles = ["c1ccccc1CCO", "c1ccccc1CCO", "CCN(CC)CC", "O=C(O)c1ccncc1", "CCCCCCCCO"]
    fps = smiles_bits(smiles)
    kept, skipped = select_diverse(range(len(smiles)), fps, k=3, max_similarity=0.9)
    assert kept == [0, 2, 3]
    assert list(skipped) == [1] and "Tanimoto 1.00" in skipped[1]
    # an earlier round's pick counts as already chosen
    kept, skipped = select_diverse(range(len(smiles)), fps, k=2, max_similarity=0.9, already=smiles_bits(["CCN(CC)CC"]))
    assert kept == [0, 3] and set(skipped) == {1, 2}
