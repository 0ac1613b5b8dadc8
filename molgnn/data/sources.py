"""Named data sources -> :class:`RawRecord` streams with targets renamed and converted to stated units.

=====================  ===========================================================================
``qm9-sample``         2,000 QM9 molecules embedded in the package (DFT geometries, 12 targets)
``qm9``                all 130,831 QM9 molecules from the installed ``qm9pack`` package
``moses``              MOSES training set (``moses:test``, ``moses:test_scaffolds``: its test sets)
``esol`` ...           MoleculeNet ESOL, FreeSolv, Lipophilicity, BACE, BBBP
=====================  ===========================================================================

MOSES and MoleculeNet files live in a shared datasets folder: ``$MOLGNN_SHARED_DATASETS`` if set,
else ``<repo>/../shared/datasets`` or ``./../shared/datasets``. Anything that is not a name is a
path or URL for :func:`molgnn.data.readers.read_records`.
"""
from __future__ import annotations

import importlib.util
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from rdkit import Chem

from molgnn.data.readers import (InputFormatError, RawRecord, _check_limit, is_url, read_records,
                                 read_table_rows, to_float)

HARTREE_TO_EV = 27.211386245988   # CODATA 2018
SHARED_DATASETS_ENV = "MOLGNN_SHARED_DATASETS"
_RESOURCES = Path(__file__).resolve().parents[1] / "resources"

# QM9 target -> (qm9pack column, factor to the stated unit, unit)
QM9_TARGETS: dict[str, tuple[str, float, str]] = {
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", HARTREE_TO_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_TO_EV, "eV"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", HARTREE_TO_EV, "eV"),
    "U0": ("InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    "U": ("InternalEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "H": ("Enthalphy_298K_au", HARTREE_TO_EV, "eV"),
    "G": ("GibbsFreeEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
}
QM9_SMILES, QM9_ELEMENTS, QM9_XYZ = "SMILES", "Elements", "XYZ_Ang"


class SourceNotFoundError(InputFormatError):
    """A named source whose data files are not on this machine."""


# ------------------------------------------------------------------------------------ locating

def qm9pack_data_dir() -> Path:
    """qm9pack's data folder, found without importing qm9pack (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("source 'qm9' needs the qm9pack package (pip install qm9pack)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def shared_datasets_dir() -> Path:
    """The shared datasets folder (holding ``moses/`` and ``moleculenet/``)."""
    tried: list[Path] = []
    env = os.environ.get(SHARED_DATASETS_ENV)
    if env:
        tried.append(Path(env))
    repo = Path(__file__).resolve().parents[2]
    tried += [repo.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets",
              Path("/work/shared/datasets")]
    for d in tried:
        if d.is_dir():
            return d
    raise SourceNotFoundError(f"shared datasets folder not found; tried {[str(d) for d in tried]}; "
                              f"set {SHARED_DATASETS_ENV}")


def _existing(paths: list[Path], name: str) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SourceNotFoundError(f"source {name!r}: data file(s) not found: {missing}")
    return paths


# ------------------------------------------------------------------------------------ QM9 rows

_SYMBOL_TO_Z: dict[str, int] = {}


def _atomic_number(symbol: str) -> int:
    z = _SYMBOL_TO_Z.get(symbol)
    if z is None:
        z = Chem.GetPeriodicTable().GetAtomicNumber(symbol)   # raises for unknown symbols
        _SYMBOL_TO_Z[symbol] = z
    return z


def parse_qm9_geometry(elements: str, xyz: str) -> tuple[np.ndarray, np.ndarray]:
    """``"['C','H']"`` and ``"[[0.,1.2,2.1997E-6],[...]]"`` (not JSON) -> Z (n,), positions (n, 3)."""
    symbols = [s.strip().strip("'\"") for s in elements.strip().strip("[]").split(",") if s.strip()]
    if not symbols:
        raise ValueError("no elements")
    z = np.array([_atomic_number(s) for s in symbols], dtype=np.int64)
    numbers = xyz.replace("[", " ").replace("]", " ").replace(",", " ").split()
    pos = np.array(numbers, dtype=np.float64)
    if pos.size != 3 * z.size:
        raise ValueError(f"{z.size} elements but {pos.size} coordinates")
    if not np.isfinite(pos).all():
        raise ValueError("non-finite coordinates")
    return z, pos.reshape(-1, 3)


def read_qm9_files(paths: list[Path], source: str, target_columns: list[str] | None = None,
                   limit: int | None = None, strict_targets: bool = True) -> Iterator[RawRecord]:
    """qm9pack-format CSV files as one source: rows numbered across files, targets converted."""
    _check_limit(limit)
    if target_columns is None:
        targets = list(QM9_TARGETS)
    else:
        unknown = [t for t in target_columns if t not in QM9_TARGETS]
        if unknown and strict_targets:
            raise InputFormatError(f"{source}: unknown QM9 target(s) {unknown}; available: {list(QM9_TARGETS)}")
        targets = [t for t in target_columns if t in QM9_TARGETS]
    headers = []
    for path in paths:   # check every file's columns before the first record is produced
        header, rows = read_table_rows(path, ",")
        rows.close()
        need = [QM9_SMILES, QM9_ELEMENTS, QM9_XYZ, *(QM9_TARGETS[t][0] for t in targets)]
        missing = [c for c in need if c not in header]
        if missing:
            raise InputFormatError(f"{path}: not a qm9pack QM9 file, missing columns {missing}")
        headers.append(header)

    def generate() -> Iterator[RawRecord]:
        row_index = 0
        for path, header in zip(paths, headers):
            idx = {c: i for i, c in enumerate(header)}
            si, ei, xi = idx[QM9_SMILES], idx[QM9_ELEMENTS], idx[QM9_XYZ]
            conv = [(t, idx[QM9_TARGETS[t][0]], QM9_TARGETS[t][1]) for t in targets]
            _, rows = read_table_rows(path, ",")
            for row in rows:
                if limit is not None and row_index >= limit:
                    rows.close()
                    return
                if len(row) != len(header):
                    yield RawRecord(source, row_index, row[si] if si < len(row) else ",".join(row),
                                    error=f"{path.name}: expected {len(header)} fields, found {len(row)}")
                    row_index += 1
                    continue
                props = {}
                for t, i, factor in conv:
                    value = to_float(row[i])
                    props[t] = None if value is None else value * factor
                rec = RawRecord(source, row_index, row[si], props)
                try:
                    rec.atomic_numbers, rec.positions = parse_qm9_geometry(row[ei], row[xi])
                except (ValueError, RuntimeError) as exc:
                    rec.error = f"malformed QM9 geometry: {exc}"
                yield rec
                row_index += 1

    return generate()


# ------------------------------------------------------------------------------- named sources

@dataclass(frozen=True)
class NamedSource:
    name: str
    description: str
    files: Callable[[], list[Path]]
    smiles_column: str | None = None
    renames: dict[str, str] | None = None      # file column -> target name (None: QM9 parser)
    units: dict[str, str] | None = None

    def open(self, target_columns: list[str] | None, limit: int | None,
             strict_targets: bool) -> Iterator[RawRecord]:
        paths = _existing(self.files(), self.name)
        if self.renames is None:
            return read_qm9_files(paths, self.name, target_columns, limit, strict_targets)
        back = {new: old for old, new in self.renames.items()}
        if target_columns is not None:
            unknown = [t for t in target_columns if t not in back]
            if unknown and strict_targets:
                raise InputFormatError(f"source {self.name!r} has no target(s) {unknown}; "
                                       f"available: {list(back)}")
            file_targets = [back[t] for t in target_columns if t in back]
        else:
            file_targets = list(self.renames)
        records = read_records(paths[0], self.smiles_column, file_targets, limit, source=self.name)
        renames = self.renames

        def renamed() -> Iterator[RawRecord]:
            for rec in records:
                rec.props = {renames[k]: v for k, v in rec.props.items()}
                yield rec

        return renamed()


def _moleculenet(file: str) -> Callable[[], list[Path]]:
    return lambda: [shared_datasets_dir() / "moleculenet" / file]


def _moses(file: str) -> Callable[[], list[Path]]:
    return lambda: [shared_datasets_dir() / "moses" / file]


_CLASS = "class (0/1)"
_SOURCES: dict[str, NamedSource] = {s.name: s for s in [
    NamedSource("qm9-sample", "2,000 QM9 molecules shipped with molgnn: DFT geometry + 12 targets "
                f"({', '.join(QM9_TARGETS)})", lambda: [_RESOURCES / "qm9_sample.csv.gz"],
                units={t: u for t, (_, _, u) in QM9_TARGETS.items()}),
    NamedSource("qm9", "all 130,831 QM9 molecules (qm9pack): DFT geometry + 12 targets",
                lambda: [qm9pack_data_dir() / f"qm9_part{i}.csv" for i in (1, 2, 3)],
                units={t: u for t, (_, _, u) in QM9_TARGETS.items()}),
    NamedSource("moses", "MOSES training set, 1.58M drug-like SMILES, no targets",
                _moses("train.csv.gz"), "SMILES", {}, {}),
    NamedSource("moses:test", "MOSES test set, 176k SMILES", _moses("test.csv.gz"), "SMILES", {}, {}),
    NamedSource("moses:test_scaffolds", "MOSES scaffold test set, 176k SMILES with unseen scaffolds",
                _moses("test_scaffolds.csv.gz"), "SMILES", {}, {}),
    NamedSource("esol", "MoleculeNet ESOL: log_solubility (log(mol/L))", _moleculenet("esol.csv"),
                "smiles", {"logp": "log_solubility"}, {"log_solubility": "log(mol/L)"}),
    NamedSource("freesolv", "MoleculeNet FreeSolv: hydration_free_energy (kcal/mol)",
                _moleculenet("freesolv.csv"), "smiles", {"freesolv": "hydration_free_energy"},
                {"hydration_free_energy": "kcal/mol"}),
    NamedSource("lipophilicity", "MoleculeNet Lipophilicity: logd (octanol/water logD at pH 7.4)",
                _moleculenet("lipophilicity.csv"), "smiles", {"lipo": "logd"}, {"logd": "log units"}),
    NamedSource("bace", "MoleculeNet BACE: bace_active (1: BACE-1 inhibitor)", _moleculenet("bace.csv"),
                "mol", {"Class": "bace_active"}, {"bace_active": _CLASS}),
    NamedSource("bbbp", "MoleculeNet BBBP: bbb_permeable (1: crosses the blood-brain barrier)",
                _moleculenet("bbbp.csv"), "smiles", {"p_np": "bbb_permeable"}, {"bbb_permeable": _CLASS}),
]}
_ALIASES = {"moses:train": "moses"}


def list_sources() -> dict[str, str]:
    """Named sources and what they hold (iterating gives the names)."""
    return {name: s.description for name, s in _SOURCES.items()}


def named_source(source: str) -> NamedSource | None:
    return _SOURCES.get(_ALIASES.get(source, source))


def units_for(source: str) -> dict[str, str]:
    """Target column -> unit for a named source; ``{}`` for files and URLs (units unknown)."""
    named = named_source(source)
    return dict(named.units or {}) if named else {}


def source_files(source: str) -> list[Path]:
    """The local files a source reads (for content hashing): ``[]`` for URLs."""
    named = named_source(source)
    if named is not None:
        return _existing(named.files(), named.name)
    if is_url(source):
        return []
    return [Path(source)]


def checked_inputs(inputs, purpose: str) -> list[str]:
    """``inputs`` as strings; a clear error if there are none or one is listed twice (its rows would
    otherwise all be rejected as duplicates of themselves). ``purpose`` names the caller in the error."""
    inputs = [str(s) for s in inputs]
    if not inputs:
        raise ValueError(f"{purpose} needs at least one input")
    repeated = sorted(s for s, n in Counter(inputs).items() if n > 1)
    if repeated:
        raise ValueError(f"input(s) listed more than once: {repeated}")
    return inputs


def open_source(source: str, *, smiles_column: str | None = None, target_columns: list[str] | None = None,
                limit: int | None = None, strict_targets: bool = True) -> Iterator[RawRecord]:
    """Records of a named source, file or URL; checked eagerly (see ``read_records``).

    For named sources ``smiles_column`` is ignored (each knows its own) and ``target_columns``
    use the renamed target names that :func:`units_for` lists.
    """
    named = named_source(source)
    if named is not None:
        return named.open(target_columns, limit, strict_targets)
    return read_records(source, smiles_column, target_columns, limit, strict_targets=strict_targets)
