"""Batched neighbor lists for isolated molecules, in pure torch.

Every intra-molecular pair (i != j) closer than the cutoff, for a whole batch at once: the candidate
pairs of molecule m are the n_m x n_m grid of its atoms, enumerated for all molecules together with
tensor arithmetic (no Python loop over molecules), then filtered by distance. Cost is sum(n_m^2) per
batch, which is small for molecules (QM9: <= 29 atoms) and runs on whatever device R lives on.
Pairs follow schnetpack's convention: Rij = R[idx_j] - R[idx_i] (+ offsets, zero without periodicity).
"""
from __future__ import annotations

import schnetpack.properties as props
import torch


class DegenerateGeometryError(ValueError):
    """Two atoms of one molecule sit on top of each other (distance ~ 0): PaiNN directions are undefined."""


def neighbor_pairs(R: torch.Tensor, n_atoms: torch.Tensor, cutoff: float,
                   min_distance: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx_i, idx_j) of all ordered pairs i != j of the same molecule with |R_j - R_i| < cutoff.

    ``R`` is ``[N, 3]`` with each molecule's atoms contiguous, in the order given by ``n_atoms`` ``[M]``.
    Pairs are sorted by idx_i, then idx_j. Raises ``DegenerateGeometryError`` if two atoms are closer
    than ``min_distance``.
    """
    n_atoms = n_atoms.to(device=R.device, dtype=torch.long)
    if int(n_atoms.sum()) != R.shape[0]:
        raise ValueError(f"n_atoms sums to {int(n_atoms.sum())} but R has {R.shape[0]} atoms")
    n_pairs = n_atoms * n_atoms
    total = int(n_pairs.sum())
    mol = torch.repeat_interleave(torch.arange(n_atoms.numel(), device=R.device), n_pairs,
                                  output_size=total)
    pair_start = torch.cumsum(n_pairs, 0) - n_pairs
    atom_start = torch.cumsum(n_atoms, 0) - n_atoms
    local = torch.arange(total, device=R.device) - pair_start[mol]
    n_m = n_atoms[mol]
    li = torch.div(local, n_m, rounding_mode="floor")
    lj = local - li * n_m
    keep = li != lj
    idx_i = (atom_start[mol] + li)[keep]
    idx_j = (atom_start[mol] + lj)[keep]
    d2 = (R[idx_j] - R[idx_i]).pow(2).sum(-1)
    too_close = d2 < min_distance ** 2
    if bool(too_close.any()):
        k = int(torch.nonzero(too_close)[0])
        m = int(mol[keep][k])
        raise DegenerateGeometryError(
            f"atoms {int(idx_i[k] - atom_start[m])} and {int(idx_j[k] - atom_start[m])} of batch molecule {m} "
            f"are closer than {min_distance} Angstrom")
    within = d2 < cutoff * cutoff
    return idx_i[within], idx_j[within]


def pair_vectors(R: torch.Tensor, idx_i: torch.Tensor, idx_j: torch.Tensor) -> torch.Tensor:
    """Rij = R[idx_j] - R[idx_i] (schnetpack's direction convention)."""
    return R[idx_j] - R[idx_i]


def add_neighbors(batch: dict[str, torch.Tensor], cutoff: float) -> dict[str, torch.Tensor]:
    """A copy of ``batch`` with idx_i, idx_j, Rij and (zero) offsets computed from its current R."""
    R = batch[props.R]
    idx_i, idx_j = neighbor_pairs(R, batch[props.n_atoms], cutoff)
    out = dict(batch)
    out[props.idx_i] = idx_i
    out[props.idx_j] = idx_j
    out[props.Rij] = pair_vectors(R, idx_i, idx_j)
    out[props.offsets] = torch.zeros(idx_i.numel(), 3, dtype=R.dtype, device=R.device)
    return out


def pair_table(R: torch.Tensor, ptr: torch.Tensor, cutoff: float, *, chunk_atoms: int = 1 << 20,
               min_distance: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor lists of every molecule of a dataset, computed once: (pair_ptr ``[M + 1]`` int64,
    local ``[P, 2]`` int16).

    Molecule ``m``'s pairs are ``local[pair_ptr[m]:pair_ptr[m+1]]``, as atom positions *within* the
    molecule, in :func:`neighbor_pairs` order (by i, then j). For fixed geometries (fine-tuning) a
    batch then gathers its pairs with tensor indexing like its atoms, with no distance computation
    and no host synchronisation per step. Runs on R's device, ``chunk_atoms`` atoms at a time.
    """
    ptr = ptr.to(device=R.device, dtype=torch.long)
    n_mol = ptr.numel() - 1
    n_atoms = ptr[1:] - ptr[:-1]
    if n_mol and int(n_atoms.max()) > torch.iinfo(torch.int16).max:
        raise ValueError("molecules of more than 32767 atoms do not fit the int16 pair table")
    counts = torch.zeros(n_mol, dtype=torch.long, device=R.device)
    locals_: list[torch.Tensor] = []
    ptr_cpu = ptr.cpu()
    m0 = 0
    while m0 < n_mol:
        # largest m1 with ptr[m1] - ptr[m0] <= chunk_atoms (at least one molecule)
        m1 = int(torch.searchsorted(ptr_cpu, ptr_cpu[m0] + chunk_atoms, right=True)) - 1
        m1 = min(max(m1, m0 + 1), n_mol)
        a0, a1 = int(ptr_cpu[m0]), int(ptr_cpu[m1])
        n = n_atoms[m0:m1]
        idx_i, idx_j = neighbor_pairs(R[a0:a1], n, cutoff, min_distance)
        mol = torch.repeat_interleave(torch.arange(m1 - m0, device=R.device), n)
        first = (ptr[m0:m1] - a0)
        pm = mol[idx_i]
        counts[m0:m1] = torch.bincount(pm, minlength=m1 - m0)
        locals_.append(torch.stack([idx_i - first[pm], idx_j - first[pm]], dim=1).to(torch.int16))
        m0 = m1
    pair_ptr = torch.zeros(n_mol + 1, dtype=torch.long, device=R.device)
    torch.cumsum(counts, 0, out=pair_ptr[1:])
    local = torch.cat(locals_) if locals_ else torch.zeros(0, 2, dtype=torch.int16, device=R.device)
    return pair_ptr, local
