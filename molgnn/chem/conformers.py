"""3D conformers: RDKit ETKDGv3 embedding + MMFF94 (UFF fallback) optimisation, bounded in time.

``embed_3d`` works in-process: RDKit's own embedding time-out plus an elapsed-time check after each
step. A C++ call cannot be interrupted from Python, so the *hard* bound lives in ``embed_many``: it
runs each molecule in a worker process and kills a worker that overruns, recording a time-out and
starting a fresh worker for the remaining molecules. SMILES, not Mol objects, cross process
boundaries (Mol pickles lose their properties).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molgnn.chem.standardize import MoleculeParseError, parse_smiles, rdkit_messages

METHOD = "etkdgv3"


class ConformerError(Exception):
    """No 3D structure could be produced for a molecule; ``reason`` says why."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out

    def __reduce__(self):  # keep both fields when pickled
        return (type(self), (self.reason, self.timed_out))


@dataclass(frozen=True)
class Conformer:
    """All atoms incl. H. Unpacks as ``atomic_numbers, positions = conformer``."""
    atomic_numbers: np.ndarray   # (n,) int64
    positions: np.ndarray        # (n, 3) float64, Angstrom
    force_field: str             # "mmff" or "uff" (UFF only where MMFF94 lacks parameters)
    converged: bool              # False: optimisation stopped at max_iterations

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.atomic_numbers, self.positions))

    @property
    def geometry_source(self) -> str:
        return f"{METHOD}-{self.force_field}"


def _check_time(start: float, timeout_s: float, step: str) -> None:
    # The reason names the limit, not the measured seconds: it lands in structure_rejects.csv, whose
    # bytes (and the data's DVC md5) must not change with the machine's load.
    if time.monotonic() - start > timeout_s:
        raise ConformerError(f"time-out: {step} took more than {timeout_s} s", timed_out=True)


def embed_3d(smiles: str, seed: int = 0, timeout_s: float = 10.0, max_iterations: int = 200) -> Conformer:
    """Embed one molecule (explicit H added) and optimise it; raise :class:`ConformerError` on failure."""
    start = time.monotonic()
    try:
        mol = parse_smiles(smiles)
    except MoleculeParseError as exc:
        raise ConformerError(str(exc)) from None
    mol = Chem.AddHs(mol)

    params = rdDistGeom.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.timeout = max(1, math.ceil(timeout_s))   # RDKit's limit is whole seconds; 0 would mean none
    with rdkit_messages():
        status = rdDistGeom.EmbedMolecule(mol, params)
        if status != 0 and time.monotonic() - start < timeout_s:
            # Random starting coordinates succeed for many molecules where the eigenvalue start fails.
            params.useRandomCoords = True
            status = rdDistGeom.EmbedMolecule(mol, params)
    _check_time(start, timeout_s, "ETKDGv3 embedding")
    if status != 0:
        raise ConformerError("ETKDGv3 embedding failed (no conformer found)")

    with rdkit_messages():
        if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
            force_field = "mmff"
            rc = rdForceFieldHelpers.MMFFOptimizeMolecule(mol, maxIters=int(max_iterations))
        elif rdForceFieldHelpers.UFFHasAllMoleculeParams(mol):
            force_field = "uff"
            rc = rdForceFieldHelpers.UFFOptimizeMolecule(mol, maxIters=int(max_iterations))
        else:
            raise ConformerError("neither MMFF94 nor UFF has parameters for this molecule")
    if rc == -1:
        raise ConformerError(f"{force_field.upper()} force-field setup failed")
    _check_time(start, timeout_s, f"{force_field.upper()} optimisation")

    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    if not np.isfinite(positions).all():
        raise ConformerError("optimised coordinates are not finite")
    numbers = np.fromiter((a.GetAtomicNum() for a in mol.GetAtoms()), dtype=np.int64, count=mol.GetNumAtoms())
    return Conformer(numbers, positions, force_field, converged=rc == 0)


# ---------------------------------------------------------------------------------------------
# Worker processes with a per-molecule hard time limit.
# Workers are plain ``python -c`` subprocesses rather than multiprocessing children: nothing
# re-imports the caller's ``__main__`` (spawn/forkserver do, and fail in unguarded scripts) and
# nothing is forked from a parent that may hold torch or Prefect threads.

_WORKER_CODE = "from molgnn.chem.conformers import _worker_main; _worker_main()"


def _worker_main() -> None:
    """Worker process: config first, then (index, smiles) jobs answered with plain data; ``None`` ends."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed to stdout (by RDKit or Python) must not corrupt the protocol
    inbox, outbox = Connection(0, writable=False), Connection(protocol_fd, readable=False)
    try:
        seed, timeout_s, max_iterations = inbox.recv()
        outbox.send(("ready",))
        _serve(inbox, outbox, seed, timeout_s, max_iterations)
    except (EOFError, BrokenPipeError):   # the parent went away: nothing left to do
        pass


def _serve(inbox: Connection, outbox: Connection, seed: int, timeout_s: float, max_iterations: int) -> None:
    while (job := inbox.recv()) is not None:
        index, smiles = job
        try:
            c = embed_3d(smiles, seed, timeout_s, max_iterations)
            outbox.send((index, "ok", c.atomic_numbers, c.positions, c.force_field, c.converged))
        except ConformerError as exc:
            outbox.send((index, "error", exc.reason, exc.timed_out))
        except Exception as exc:  # an RDKit error we did not foresee must not kill the worker
            outbox.send((index, "error", f"{type(exc).__name__}: {exc}", False))


class _Worker:
    def __init__(self, config: tuple) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["OMP_NUM_THREADS"] = "1"
        self.process = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.inbox = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.outbox = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.ready = False
        self.job: int | None = None
        self.started = time.monotonic()
        self.outbox.send(config)

    def close(self, graceful: bool) -> None:
        if graceful and self.job is None and self.process.poll() is None:
            try:
                self.outbox.send(None)
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.inbox.close()
        self.outbox.close()


def embed_many(smiles_list: list[str], seed: int = 0, timeout_s: float = 10.0, max_iterations: int = 200,
               workers: int | None = None, *, grace_s: float = 1.0,
               startup_timeout_s: float = 120.0,
               progress: Callable[[int], None] | None = None) -> list[Conformer | ConformerError]:
    """Embed every SMILES in worker processes; results (or errors) come back in input order.

    A molecule still running ``timeout_s + grace_s`` seconds after it was handed to a worker has its
    worker killed and is recorded as a time-out; a worker that dies (e.g. a crash inside RDKit) is
    recorded as a failure for its molecule. Either way a fresh worker takes over the queue. Every
    molecule uses the same ``seed``, so results do not depend on which worker ran it.
    ``progress(1)`` is called as each molecule is done (a progress bar's update).
    """
    n = len(smiles_list)
    results: list[Conformer | ConformerError | None] = [None] * n
    if n == 0:
        return []
    n_workers = max(1, min(workers or os.cpu_count() or 1, n))
    config = (int(seed), float(timeout_s), int(max_iterations))
    pending = list(range(n - 1, -1, -1))   # a stack: pop() hands out indices in input order
    hard_limit = timeout_s + grace_s
    pool: list[_Worker] = []
    tick = progress or (lambda n: None)

    def retire(w: _Worker) -> None:
        pool.remove(w)
        w.close(graceful=False)
        if pending:
            pool.append(_Worker(config))

    try:
        pool.extend(_Worker(config) for _ in range(n_workers))
        while pending or any(w.job is not None for w in pool):
            for w in pool:
                if w.ready and w.job is None and pending:
                    w.job = pending.pop()
                    w.started = time.monotonic()
                    w.outbox.send((w.job, str(smiles_list[w.job])))
            deadlines = [w.started + (hard_limit if w.ready else startup_timeout_s)
                         for w in pool if w.job is not None or not w.ready]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            readable = wait([w.inbox for w in pool], timeout=timeout)
            for w in [w for w in pool if w.inbox in readable]:
                try:
                    msg = w.inbox.recv()
                except (EOFError, OSError):
                    code = w.process.poll()
                    if w.job is None:
                        raise RuntimeError(f"conformer worker exited before it was ready (exit code {code})") from None
                    results[w.job] = ConformerError(f"conformer worker died (exit code {code})")
                    tick(1)
                    retire(w)
                    continue
                if msg[0] == "ready":
                    w.ready = True
                    continue
                index, status, *payload = msg
                if status == "ok":
                    z, pos, ff, converged = payload
                    results[index] = Conformer(np.asarray(z, dtype=np.int64),
                                               np.asarray(pos, dtype=np.float64), ff, bool(converged))
                else:
                    results[index] = ConformerError(payload[0], timed_out=bool(payload[1]))
                w.job = None
                tick(1)
            now = time.monotonic()
            for w in list(pool):
                if not w.ready and now - w.started > startup_timeout_s:
                    raise RuntimeError(f"conformer worker did not start within {startup_timeout_s} s")
                if w.job is not None and now - w.started > hard_limit:
                    results[w.job] = ConformerError(
                        f"time-out: no conformer within {timeout_s} s (worker killed)", timed_out=True)
                    tick(1)
                    retire(w)
    finally:
        for w in pool:
            w.close(graceful=True)
    if any(r is None for r in results):
        raise RuntimeError("embed_many lost a molecule: this is a bug")
    return results  # type: ignore[return-value]


def mol_block_geometry(block: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Atoms and coordinates of a mol block exactly as written, if it holds a 3D conformer.

    A conformer whose z coordinates are all zero is a 2D depiction, not a geometry: ``None``.
    Also ``None`` where RDKit cannot read the block at all (the molecule is rejected elsewhere).
    """
    with rdkit_messages():
        mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
    if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumConformers() == 0:
        return None
    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    if not np.isfinite(positions).all() or not np.any(np.abs(positions[:, 2]) > 1e-6):
        return None
    numbers = np.fromiter((a.GetAtomicNum() for a in mol.GetAtoms()), dtype=np.int64, count=mol.GetNumAtoms())
    return numbers, positions


def geometry_matches(mol: Chem.Mol, atomic_numbers: np.ndarray) -> bool:
    """Whether a given geometry holds exactly the atoms of ``mol`` with its hydrogens (any order)."""
    heavy = [a.GetAtomicNum() for a in mol.GetAtoms()]
    n_h = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
    expected = np.sort(np.asarray(heavy + [1] * n_h, dtype=np.int64))
    given = np.sort(np.asarray(atomic_numbers, dtype=np.int64).ravel())
    return expected.shape == given.shape and bool(np.array_equal(expected, given))
