"""Extended-Hückel frontier orbitals of 3D structures (RDKit's YAeHMOP binding), as pretraining targets.

EHT needs only elements and coordinates, runs in ~1 ms for a QM9-sized molecule and its HOMO-LUMO gap
correlates with the DFT gap (r ~ 0.85 on QM9), so predicting it teaches an encoder about conjugation
and heteroatoms from unlabeled structures: no DFT label is read. The electron count comes from the
elements and the structure's net charge (``total_charge`` of the structures table; 0 where unknown);
an odd count (a radical) has no closed-shell HOMO/LUMO and is rejected with that reason, as is a
YAeHMOP failure.
"""
from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

import numpy as np

EHT_TARGETS = ("eht_homo", "eht_lumo", "eht_gap")  # eV


class EHTError(ValueError):
    """EHT has no closed-shell frontier orbitals for this structure."""


@contextlib.contextmanager
def _quiet_c_output() -> Iterator[None]:
    """YAeHMOP writes warnings ("distance ... is suspicious" for every O-H bond) from C straight to
    file descriptors 1 and 2; Python-level redirection cannot catch them."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1), os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def frontier_orbitals(atomic_numbers: np.ndarray, positions: np.ndarray, charge: int = 0) -> tuple[float, float]:
    """(HOMO, LUMO) in eV of a closed-shell structure of net ``charge``; raises ``EHTError``."""
    from rdkit import Chem
    from rdkit.Chem import rdEHTTools
    from rdkit.Geometry import Point3D

    z = np.asarray(atomic_numbers).astype(int)
    xyz = np.asarray(positions, dtype=float).reshape(-1, 3)
    n_electrons = int(z.sum()) - int(charge)
    if n_electrons % 2:
        raise EHTError(f"odd electron count ({n_electrons}) at net charge {int(charge)}: no closed-shell HOMO/LUMO")
    mol = Chem.RWMol()
    for number in z:
        atom = Chem.Atom(int(number))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    mol.GetAtomWithIdx(0).SetFormalCharge(int(charge))  # YAeHMOP takes the electron count from the net charge
    conf = Chem.Conformer(len(z))
    for k, p in enumerate(xyz):
        conf.SetAtomPosition(k, Point3D(*map(float, p)))
    mol = mol.GetMol()
    mol.AddConformer(conf, assignId=True)
    with _quiet_c_output():
        ok, res = rdEHTTools.RunMol(mol)
    if not ok:
        raise EHTError("YAeHMOP did not converge")
    energies = np.asarray(res.GetOrbitalEnergies(), dtype=float)
    n_occ = res.numElectrons // 2
    if res.numElectrons % 2 or not 0 < n_occ < len(energies):
        raise EHTError(f"{res.numElectrons} valence electrons in {len(energies)} orbitals: no closed-shell HOMO/LUMO")
    homo, lumo = float(energies[n_occ - 1]), float(energies[n_occ])
    if not (np.isfinite(homo) and np.isfinite(lumo)):
        raise EHTError("non-finite orbital energies")
    return homo, lumo


def _chunk(args: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    z, r, ptr, charges = args
    out = np.full((len(ptr) - 1, len(EHT_TARGETS)), np.nan)
    failed: list[tuple[int, str]] = []
    for m in range(len(ptr) - 1):
        try:
            homo, lumo = frontier_orbitals(z[ptr[m]:ptr[m + 1]], r[ptr[m]:ptr[m + 1]], int(charges[m]))
        except EHTError as exc:
            failed.append((m, str(exc)))
            continue
        out[m] = (homo, lumo, lumo - homo)
    return out, failed


def eht_targets(atomic_numbers: np.ndarray, positions: np.ndarray, ptr: np.ndarray,
                charges: np.ndarray | None = None, *, workers: int = 1,
                chunk_size: int = 2000) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """``[M, 3]`` (HOMO, LUMO, gap) in eV for molecules ``z[ptr[m]:ptr[m+1]]`` of net ``charges[m]`` (default
    0), NaN where EHT failed, and the failures as (molecule index, reason): a rejected molecule keeps its
    row, it only lacks targets."""
    z = np.asarray(atomic_numbers)
    r = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    ptr = np.asarray(ptr, dtype=np.int64)
    m_total = len(ptr) - 1
    charges = np.zeros(m_total, np.int64) if charges is None else np.asarray(charges, dtype=np.int64)
    if charges.shape != (m_total,):
        raise ValueError(f"charges must hold one value per molecule ({m_total}), got shape {charges.shape}")
    jobs, starts = [], list(range(0, m_total, chunk_size))
    for s in starts:
        e = min(s + chunk_size, m_total)
        jobs.append((z[ptr[s]:ptr[e]], r[ptr[s]:ptr[e]], ptr[s:e + 1] - ptr[s], charges[s:e]))
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            parts = list(pool.map(_chunk, jobs))
    else:
        parts = [_chunk(job) for job in jobs]
    values = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, len(EHT_TARGETS)))
    failed = [(s + m, why) for s, (_, fails) in zip(starts, parts) for m, why in fails]
    return values, failed
