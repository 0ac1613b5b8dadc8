"""3D structures for every molecule: the source's geometry where ingest kept one, else ETKDGv3 + force field.

``structures.parquet``: ``mol_id``, ``smiles`` (the standardized SMILES), ``atomic_numbers`` (all
atoms incl. H), ``positions`` (flattened xyz, Angstrom), ``geometry_source`` (``given``,
``etkdgv3-mmff``, or ``etkdgv3-uff`` where MMFF94 has no parameters), ``total_charge`` (the
standardized molecule's net formal charge: the electron count of a structure, which extended-Hückel
pretraining targets need). Atoms follow the order of
``Chem.AddHs(Chem.MolFromSmiles(smiles))`` (:mod:`molgnn.chem.atom_order`; a given geometry is
reordered where its perceived bonds match the SMILES, else kept as given), so per-atom 2D features
pair with the 3D atoms (:mod:`molgnn.featurize.atom_features`). Molecules without a structure are in
``structure_rejects.csv`` with the reason. Both files' bytes depend only on the molecules, the seed
and the conformer settings, not on the number of workers (every molecule is embedded with the same
seed; results return in input order). The one outcome a slower machine can change is a time-out:
``featurize.conformers.timeout_s`` is a wall-clock limit.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from molgnn.chem.atom_order import smiles_order
from molgnn.chem.conformers import Conformer, embed_many
from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.data.columns import list_column

STRUCTURES_FILE = "structures.parquet"
STRUCTURE_REJECTS_FILE = "structure_rejects.csv"
GEOMETRY_SOURCE = "geometry_source"
GIVEN = "given"


def net_charge(smiles: str) -> int:
    """Sum of formal charges of a standardized SMILES (ingest already parsed it, so it parses)."""
    from rdkit import Chem

    return int(Chem.GetFormalCharge(Chem.MolFromSmiles(smiles)))


@dataclass
class StructuresResult:
    path: Path
    rejects_path: Path
    n_given: int
    n_embedded: int
    n_failed: int


def _given_geometry(z: object, pos: object) -> tuple[np.ndarray, np.ndarray] | str | None:
    """(Z, flat positions), a reason string if malformed, or None if there is no given geometry."""
    if z is None or pos is None or (isinstance(z, float) and np.isnan(z)):
        return None
    z_arr = np.asarray(z, dtype=np.int64).ravel()
    p_arr = np.asarray(pos, dtype=np.float64).ravel()
    if z_arr.size == 0 or p_arr.size != 3 * z_arr.size:
        return f"given geometry has {z_arr.size} atoms but {p_arr.size} coordinates"
    if not np.isfinite(p_arr).all():
        return "given geometry has non-finite coordinates"
    return z_arr, p_arr


def build_structures(molecules: pd.DataFrame, out_dir: str | Path, *, seed: int, timeout_s: float,
                     max_iterations: int, workers: int | None = None,
                     progress: Callable[[int], None] | None = None) -> StructuresResult:
    """Write ``structures.parquet`` and ``structure_rejects.csv`` for the rows of ``molecules``.

    ``molecules`` has molecules.parquet's columns (geometry columns optional). Rows keep their order.
    ``progress(1)`` is called per embedded molecule.
    """
    needed = [schema.MOL_ID, schema.SMILES, schema.SOURCE, schema.ROW, schema.RAW]
    missing = [c for c in needed if c not in molecules.columns]
    if missing:
        raise ValueError(f"build_structures: molecules table lacks column(s) {missing}")
    out_dir = Path(out_dir)
    n = len(molecules)
    has_geometry = schema.ATOMIC_NUMBERS in molecules.columns and schema.POSITIONS in molecules.columns
    zs = molecules[schema.ATOMIC_NUMBERS].tolist() if has_geometry else [None] * n
    ps = molecules[schema.POSITIONS].tolist() if has_geometry else [None] * n

    numbers: list[np.ndarray | None] = [None] * n
    positions: list[np.ndarray | None] = [None] * n
    sources: list[str | None] = [None] * n
    failures: dict[int, tuple[str, str]] = {}
    to_embed: list[int] = []
    smiles = molecules[schema.SMILES].astype(str).tolist()
    for i, (z, pos) in enumerate(zip(zs, ps)):
        given = _given_geometry(z, pos)
        if given is None:
            to_embed.append(i)
        elif isinstance(given, str):
            failures[i] = ("geometry", given)
        else:
            z_arr, p_arr = given
            perm = smiles_order(smiles[i], z_arr, p_arr)
            if perm is not None:  # the SMILES's atom order (see the module docstring)
                z_arr, p_arr = z_arr[perm], p_arr.reshape(-1, 3)[perm].ravel()
            numbers[i], positions[i], sources[i] = z_arr, p_arr, GIVEN
    n_given = sum(s == GIVEN for s in sources)

    results = embed_many([smiles[i] for i in to_embed], seed=seed, timeout_s=timeout_s,
                         max_iterations=max_iterations, workers=workers, progress=progress)
    n_embedded = 0
    for i, res in zip(to_embed, results):
        if isinstance(res, Conformer):
            numbers[i], positions[i], sources[i] = res.atomic_numbers, res.positions.ravel(), res.geometry_source
            n_embedded += 1
        else:
            failures[i] = ("conformer", res.reason)

    ok = [i for i in range(n) if sources[i] is not None]
    mol_ids = molecules[schema.MOL_ID].astype(str).tolist()
    table = pa.table({
        schema.MOL_ID: pa.array([mol_ids[i] for i in ok], type=pa.string()),
        schema.SMILES: pa.array([smiles[i] for i in ok], type=pa.string()),
        schema.ATOMIC_NUMBERS: list_column([numbers[i] for i in ok], pa.int64()),
        schema.POSITIONS: list_column([positions[i] for i in ok], pa.float64()),
        GEOMETRY_SOURCE: pa.array([sources[i] for i in ok], type=pa.string()),
        schema.TOTAL_CHARGE: pa.array([net_charge(smiles[i]) for i in ok], type=pa.int64()),
    })
    path, rejects_path = out_dir / STRUCTURES_FILE, out_dir / STRUCTURE_REJECTS_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    src, row, raw = (molecules[c].tolist() for c in (schema.SOURCE, schema.ROW, schema.RAW))
    with atomic_path(rejects_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(schema.REJECT_COLUMNS)
            for i in sorted(failures):
                stage, reason = failures[i]
                writer.writerow([src[i], row[i], raw[i], stage, " ".join(reason.split())])
    return StructuresResult(path, rejects_path, n_given, n_embedded, len(failures))
