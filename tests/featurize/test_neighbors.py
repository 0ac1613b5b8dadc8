"""The batched torch neighbor list against a brute-force loop and ASE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from molgnn.featurize.neighbors import DegenerateGeometryError, add_neighbors, neighbor_pairs


def _random_batch(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    R = np.concatenate([rng.uniform(0, 4.0, size=(n, 3)) for n in sizes])
    return torch.tensor(R), torch.tensor(sizes)


def _brute_force(R: np.ndarray, sizes: list[int], cutoff: float) -> set[tuple[int, int]]:
    pairs, start = set(), 0
    for n in sizes:
        for i in range(start, start + n):
            for j in range(start, start + n):
                if i != j and np.linalg.norm(R[j] - R[i]) < cutoff:
                    pairs.add((i, j))
        start += n
    return pairs


@pytest.mark.parametrize("cutoff", [1.5, 3.0, 100.0])
def test_pairs_match_brute_force(cutoff):
    sizes = [1, 5, 12, 2, 9]
    R, n = _random_batch(sizes)
    idx_i, idx_j = neighbor_pairs(R, n, cutoff)
    got = list(zip(idx_i.tolist(), idx_j.tolist()))
    assert len(got) == len(set(got))  # no duplicates
    assert set(got) == _brute_force(R.numpy(), sizes, cutoff)
    assert got == sorted(got)  # sorted by center atom, then neighbor


def test_pairs_match_ase_per_molecule():
    sizes = [7, 11]
    R, n = _random_batch(sizes, seed=3)
    idx_i, idx_j = neighbor_pairs(R, n, 2.5)
    start = 0
    for size in sizes:
        atoms = Atoms(numbers=[6] * size, positions=R[start:start + size].numpy(), pbc=False)
        ai, aj = neighbor_list("ij", atoms, 2.5)
        ours = {(i - start, j - start) for i, j in zip(idx_i.tolist(), idx_j.tolist()) if start <= i < start + size}
        assert ours == set(zip(ai.tolist(), aj.tolist()))
        start += size


def test_add_neighbors_uses_schnetpack_direction_convention():
    R, n = _random_batch([4], seed=1)
    batch = add_neighbors({"_positions": R, "_n_atoms": n}, 10.0)
    i, j = batch["_idx_i"], batch["_idx_j"]
    assert torch.equal(batch["_Rij"], R[j] - R[i])
    assert torch.equal(batch["_offsets"], torch.zeros_like(batch["_Rij"]))


def test_coincident_atoms_raise():
    R = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(DegenerateGeometryError, match="atoms 1 and 2 of batch molecule 0"):
        neighbor_pairs(R, torch.tensor([3]), 5.0)


def test_n_atoms_must_cover_positions():
    R, _ = _random_batch([3])
    with pytest.raises(ValueError, match="n_atoms sums to 2"):
        neighbor_pairs(R, torch.tensor([2]), 5.0)
