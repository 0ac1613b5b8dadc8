"""Ingest: every input row becomes a kept molecule or a recorded rejection, never both, never neither.

Writes ``molecules.parquet`` (schema columns + one float column per target), ``rejects.csv``
(``source,row,raw,stage,reason``) and ``units.json`` into ``out_dir``. Rules:

- Molecules are keyed by the standardized InChIKey. A later row with a key already kept, in any
  input, is rejected at stage ``deduplicate`` naming the kept row; the kept row counts it in
  ``n_duplicates``. One pass, one dict: linear in the number of rows. The kept row's targets
  win; where a duplicate's value differs (beyond 1e-6 relative), the reject reason lists both
  values and ``IngestResult.n_target_conflicts`` counts such rows, so no disagreement goes unseen.
- Rows with a kept given geometry are *structures*: they are duplicates only when InChIKey and
  geometry (to 1e-4 Angstrom) both agree. QM9 holds stereoisomers and tautomers that share an
  InChIKey (its SMILES carry no stereo) with distinct DFT geometries and properties; all are kept,
  the second and later with ``mol_id`` = ``<InChIKey>-2``, ``-3``, ... (``inchikey`` stays plain).
- Given geometry (QM9, 3D SDF, Parquet with geometry columns) is kept only if its atoms are exactly
  those of the standardized molecule with its hydrogens; otherwise (a stripped counter-ion, a
  protonation change, a heavy-atom-only SDF) it is dropped and the molecule gets a conformer later.
  Geometries dropped this way are counted in ``IngestResult.n_geometry_dropped``.
- ``limit`` applies to each input separately; targets missing from an input are NaN for its rows.
- Rejection stages: ``read`` (the reader could not split the row), ``parse``, ``sanitize``,
  ``fragment``, ``elements``, ``size``, ``inchi``, ``standardize``, ``deduplicate``.
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from molgnn.chem.conformers import geometry_matches
from molgnn.chem.standardize import Rejection, standardize, standardize_mol_block
from molgnn.data import schema
from molgnn.data.artifacts import atomic_path
from molgnn.data.readers import RESERVED_COLUMNS, RawRecord
from molgnn.data.sources import checked_inputs, open_source, units_for
from molgnn.data.columns import list_column

UNKNOWN_UNIT = "unknown"


class IngestError(RuntimeError):
    """Inputs that cannot be combined (unit conflicts, missing targets) or a broken row invariant."""


@dataclass
class IngestResult:
    molecules_path: Path
    rejects_path: Path
    n_input_rows: int
    n_kept: int
    n_rejected: int
    rejects_by_reason: dict[str, int]          # rejection stage -> count
    units_path: Path | None = None
    target_columns: list[str] = field(default_factory=list)
    n_geometry_given: int = 0                  # kept molecules whose given geometry was kept
    n_geometry_dropped: int = 0                # kept molecules whose given geometry did not match
    n_target_conflicts: int = 0                # duplicate rows whose target values differ from the kept row's


@dataclass
class _Kept:
    """Column buffers of the kept molecules."""
    mol_id: list[str] = field(default_factory=list)
    inchikey: list[str] = field(default_factory=list)
    smiles: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    n_duplicates: list[int] = field(default_factory=list)
    numbers: list[np.ndarray | None] = field(default_factory=list)
    positions: list[np.ndarray | None] = field(default_factory=list)
    props: list[dict[str, float | None]] = field(default_factory=list)


def _geometry_key(numbers, positions) -> bytes:
    """Identity of a given structure: atoms and coordinates to 1e-4 Angstrom."""
    return (np.asarray(numbers, dtype=np.int64).tobytes()
            + np.round(np.asarray(positions, dtype=np.float64), 4).tobytes())


def _conflicts(kept: dict[str, float | None], dup: dict[str, float | None]) -> list[str]:
    """``"col: dup vs kept"`` for each target both rows state with different values."""
    out = []
    for col, v in dup.items():
        k = kept.get(col)
        if v is None or k is None or (isinstance(v, float) and math.isnan(v)) or \
                (isinstance(k, float) and math.isnan(k)):
            continue
        if not math.isclose(float(v), float(k), rel_tol=1e-6, abs_tol=1e-12):
            out.append(f"{col}: {v:g} vs kept {k:g}")
    return out


def _one_line(text: str) -> str:
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _records(inputs: list[str], smiles_column: str | None, target_columns: list[str] | None,
             limit: int | None) -> list[tuple[str, Iterator[RawRecord]]]:
    """Open every input first, so an unreadable one fails before any work or any write."""
    strict = target_columns is None or len(inputs) == 1
    return [(src, open_source(src, smiles_column=smiles_column, target_columns=target_columns,
                              limit=limit, strict_targets=strict)) for src in inputs]


def ingest(inputs: list[str], out_dir: str | Path, *, smiles_column: str | None = None,
           target_columns: list[str] | None = None, max_heavy_atoms: int = 50,
           limit: int | None = None, progress: Callable[[int], None] | None = None) -> IngestResult:
    """Read, standardize and deduplicate ``inputs`` (named sources, files or URLs) into ``out_dir``.

    ``progress(n)`` is called as input rows are done (a progress bar's update).

    ``target_columns``: ``None`` keeps every numeric column, ``[]`` none, a list those (each must be
    in at least one input).
    """
    inputs = checked_inputs(inputs, "ingest")
    if target_columns is not None:
        clash = sorted(set(target_columns) & RESERVED_COLUMNS)
        if clash:
            raise IngestError(f"target column(s) {clash} clash with molecules.parquet's own columns")
    out_dir = Path(out_dir)
    streams = _records(inputs, smiles_column, target_columns, limit)

    kept = _Kept()
    first_seen: dict[object, int] = {}
    variants: Counter[str] = Counter()   # kept structures per InChIKey
    rejects: list[tuple[str, int, str, str, str]] = []
    seen_rows: set[tuple[str, int]] = set()
    units: dict[str, str] = {}
    unit_origin: dict[str, str] = {}
    n_input = n_geometry_given = n_geometry_dropped = n_target_conflicts = 0

    for src, records in streams:
        src_units = units_for(src)
        src_columns: set[str] = set()
        for rec in records:
            n_input += 1
            if progress is not None:
                progress(1)
            seen_rows.add((rec.source, rec.row))
            for col in rec.props:
                if col in src_columns:
                    continue
                src_columns.add(col)
                unit = src_units.get(col, UNKNOWN_UNIT)
                if col in units and units[col] != unit:
                    raise IngestError(f"target {col!r} is in {units[col]!r} in {unit_origin[col]} but "
                                      f"in {unit!r} in {src}; rename one of them")
                units[col], unit_origin[col] = unit, src
            if rec.error is not None:
                rejects.append((rec.source, rec.row, rec.raw, "read", rec.error))
                continue
            if rec.mol_block is not None:
                std = standardize_mol_block(rec.mol_block, max_heavy_atoms)
            else:
                std = standardize(rec.raw, max_heavy_atoms)
            if isinstance(std, Rejection):
                rejects.append((rec.source, rec.row, rec.raw, std.stage, std.reason))
                continue
            numbers = positions = None
            if rec.atomic_numbers is not None and rec.positions is not None:
                if geometry_matches(std.mol, rec.atomic_numbers):
                    numbers, positions = rec.atomic_numbers, rec.positions
                else:
                    n_geometry_dropped += 1
            key = std.inchikey if numbers is None else (std.inchikey, _geometry_key(numbers, positions))
            k = first_seen.get(key)
            if k is not None:
                kept.n_duplicates[k] += 1
                what = "InChIKey" if numbers is None else "InChIKey and geometry"
                reason = f"duplicate of {kept.source[k]}:{kept.row[k]} (same {what}, {std.inchikey})"
                conflicts = _conflicts(kept.props[k], rec.props)
                if conflicts:
                    n_target_conflicts += 1
                    reason += "; targets differ, kept row's values used: " + ", ".join(conflicts)
                rejects.append((rec.source, rec.row, rec.raw, "deduplicate", reason))
                continue
            first_seen[key] = len(kept.mol_id)
            n_geometry_given += numbers is not None
            variants[std.inchikey] += 1
            mol_id = std.inchikey if variants[std.inchikey] == 1 else f"{std.inchikey}-{variants[std.inchikey]}"
            kept.mol_id.append(mol_id)
            kept.inchikey.append(std.inchikey)
            kept.smiles.append(std.smiles)
            kept.source.append(rec.source)
            kept.row.append(rec.row)
            kept.raw.append(rec.raw)
            kept.n_duplicates.append(0)
            kept.numbers.append(numbers)
            kept.positions.append(positions)
            kept.props.append(rec.props)

    if target_columns is not None:
        missing = [t for t in target_columns if t not in units]
        if missing:
            raise IngestError(f"target column(s) {missing} not found in any input ({inputs})")
    targets = list(target_columns) if target_columns is not None else list(units)

    n_kept, n_rejected = len(kept.mol_id), len(rejects)
    if n_input != n_kept + n_rejected or len(seen_rows) != n_input:
        raise IngestError(f"row accounting broken: {n_input} input rows ({len(seen_rows)} distinct "
                          f"source:row), {n_kept} kept + {n_rejected} rejected")

    columns = {
        schema.MOL_ID: pa.array(kept.mol_id, type=pa.string()),
        schema.SMILES: pa.array(kept.smiles, type=pa.string()),
        schema.INCHIKEY: pa.array(kept.inchikey, type=pa.string()),
        schema.SOURCE: pa.array(kept.source, type=pa.string()),
        schema.ROW: pa.array(kept.row, type=pa.int64()),
        schema.RAW: pa.array(kept.raw, type=pa.string()),
        schema.N_DUPLICATES: pa.array(kept.n_duplicates, type=pa.int64()),
        schema.ATOMIC_NUMBERS: list_column(kept.numbers, pa.int64()),
        schema.POSITIONS: list_column(kept.positions, pa.float64()),
    }
    for t in targets:
        values = [p.get(t) for p in kept.props]
        columns[t] = pa.array([math.nan if v is None else v for v in values], type=pa.float64())
    table = pa.table(columns)

    molecules_path = out_dir / schema.MOLECULES_FILE
    rejects_path = out_dir / schema.REJECTS_FILE
    units_path = out_dir / schema.UNITS_FILE
    with atomic_path(molecules_path) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(rejects_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(schema.REJECT_COLUMNS)
            writer.writerows((s, r, raw, stage, _one_line(reason)) for s, r, raw, stage, reason in rejects)
    with atomic_path(units_path) as tmp:
        tmp.write_text(json.dumps({t: units.get(t, UNKNOWN_UNIT) for t in targets}, indent=2) + "\n")

    by_stage = Counter(stage for *_, stage, _ in rejects)
    return IngestResult(molecules_path, rejects_path, n_input, n_kept, n_rejected,
                        dict(sorted(by_stage.items())), units_path, targets,
                        n_geometry_given, n_geometry_dropped, n_target_conflicts)
