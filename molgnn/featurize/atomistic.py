"""Atomistic (3D) datasets and schnetpack-style batches.

The dataset keeps every molecule in a handful of flat tensors (atomic numbers, positions, per-molecule
offsets ``ptr`` and an optional target matrix) rather than one Python dict per molecule, so all of QM9
fits in a few tens of MB and a batch is gathered with tensor indexing only. Batches are dicts keyed by
``schnetpack.properties`` names; the neighbor list is built on the target device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import schnetpack.properties as props
import torch

from molgnn.data import schema
from molgnn.featurize.neighbors import add_neighbors, pair_table

MAX_ATOMIC_NUMBER = 99  # PaiNN's default embedding has 100 rows; row 0 is the MASK token
ATOM_FEATURES = "atom_features"  # batch key of the per-atom 2D features, where a dataset has them


class StructureTableError(ValueError):
    """A structures or targets table cannot be turned into an atomistic dataset."""


def _describe(mol_ids: np.ndarray, rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"row {int(r)} (mol_id={mol_ids[r]!r})" for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return shown + more


def _list_column(df: pd.DataFrame, column: str, mol_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column, vectorised through pyarrow."""
    try:
        arr = pa.array(df[column].to_numpy(dtype=object), from_pandas=False)  # keep NaN as NaN
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StructureTableError(f"structures column {column!r} is not a list of numbers: {exc}") from exc
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        raise StructureTableError(f"structures column {column!r} must hold lists, got {arr.type}")
    nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        raise StructureTableError(f"structures column {column!r} is null at {_describe(mol_ids, nulls)}")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.flatten()
    if values.null_count:
        raise StructureTableError(f"structures column {column!r} contains null entries inside lists")
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise StructureTableError(f"structures column {column!r} must hold numbers, got {values.type}")
    return values.to_numpy(zero_copy_only=False), lengths


@dataclass
class AtomisticDataset:
    """All molecules of a structures table as flat tensors.

    ``z[ptr[m]:ptr[m+1]]`` and ``positions[ptr[m]:ptr[m+1]]`` are molecule ``m``'s atoms; ``targets``
    is ``[n_molecules, n_targets]`` with NaN for a missing label.
    """

    mol_ids: np.ndarray                 # [M] str
    z: torch.Tensor                     # [N] uint8 (atomic numbers 1..99)
    positions: torch.Tensor             # [N, 3] Angstrom
    ptr: torch.Tensor                   # [M + 1] int64
    targets: torch.Tensor | None = None  # [M, T] float64
    target_names: list[str] = field(default_factory=list)
    atom_features: torch.Tensor | None = None  # [N, d] float32 (molgnn.featurize.atom_features), batch key ATOM_FEATURES
    atom_features_missing: int = 0      # structures whose atoms could not be paired with their SMILES (zero rows)

    def __len__(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def n_atoms(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def to(self, device: str | torch.device) -> "AtomisticDataset":
        """The same dataset on ``device`` (holding all of QM9 on a GPU avoids per-batch copies)."""
        move = (lambda t: None if t is None else t.to(device))
        return AtomisticDataset(self.mol_ids, move(self.z), move(self.positions), move(self.ptr),
                                move(self.targets), list(self.target_names), move(self.atom_features),
                                self.atom_features_missing)

    @classmethod
    def from_npz(cls, path: str, *, dtype: torch.dtype = torch.float32) -> "AtomisticDataset":
        """A dataset packed as npz (``benchmarks/prepare_qm9.py``): ``Z`` [N] uint8, ``R`` [N, 3],
        ``ptr`` [M + 1], optional ``y`` [M, T] with ``target_names`` [T], optional ``mol_ids`` [M]."""
        with np.load(path, allow_pickle=False) as d:
            ptr = torch.from_numpy(d["ptr"].astype(np.int64))
            m = ptr.numel() - 1
            mol_ids = d["mol_ids"].astype(str) if "mol_ids" in d else np.array([str(i) for i in range(m)])
            y, names = None, []
            if "y" in d:
                y = torch.from_numpy(d["y"].astype(np.float64))
                names = [str(t) for t in d["target_names"]]  # plain str: numpy str keys upset torch.compile
            return cls(mol_ids, torch.from_numpy(d["Z"].astype(np.uint8)),
                       torch.from_numpy(d["R"]).to(dtype).reshape(-1, 3), ptr, y, names)

    @classmethod
    def from_frames(cls, structures: pd.DataFrame, targets: pd.DataFrame | None = None,
                    target_columns: Sequence[str] | None = None, *,
                    dtype: torch.dtype = torch.float32, atom_features: str | None = None) -> "AtomisticDataset":
        """Validate and pack a structures table (and optionally targets joined on ``mol_id``).

        Molecules absent from ``targets`` get NaN labels (masked by training). ``atom_features`` (a
        featurizer name) also packs per-atom 2D features computed from the table's ``smiles``. Raises
        ``StructureTableError`` naming the offending rows for anything malformed.
        """
        if atom_features is not None and schema.SMILES not in structures.columns:
            raise StructureTableError(f"atom features ({atom_features}) need the structures' SMILES; this "
                                      "structures table has no 'smiles' column (made before molgnn paired "
                                      "atoms with SMILES: rerun the featurize stage)")
        missing = {schema.MOL_ID, schema.ATOMIC_NUMBERS, schema.POSITIONS} - set(structures.columns)
        if missing:
            raise StructureTableError(f"structures table lacks column(s) {sorted(missing)}")
        mol_ids = structures[schema.MOL_ID].astype(str).to_numpy()
        if len(mol_ids) == 0:
            y, names = _target_matrix(targets, mol_ids, target_columns) if targets is not None else (None, [])
            feats = None
            if atom_features is not None:
                from molgnn.featurize.atom_features import atom_feature_dim

                feats = torch.zeros(0, atom_feature_dim(atom_features))
            return cls(mol_ids, torch.zeros(0, dtype=torch.uint8), torch.zeros(0, 3, dtype=dtype),
                       torch.zeros(1, dtype=torch.long), y, names, feats)
        dup = pd.Index(mol_ids).duplicated()
        if dup.any():
            raise StructureTableError(f"duplicate mol_id in structures at {_describe(mol_ids, np.flatnonzero(dup))}")

        z_flat, n_z = _list_column(structures, schema.ATOMIC_NUMBERS, mol_ids)
        r_flat, n_r = _list_column(structures, schema.POSITIONS, mol_ids)
        empty = np.flatnonzero(n_z == 0)
        if len(empty):
            raise StructureTableError(f"molecule without atoms at {_describe(mol_ids, empty)}")
        bad_len = np.flatnonzero(n_r != 3 * n_z)
        if len(bad_len):
            raise StructureTableError(
                f"positions must hold 3 numbers per atom; mismatch at {_describe(mol_ids, bad_len)}")
        ptr = np.zeros(len(mol_ids) + 1, dtype=np.int64)
        np.cumsum(n_z, out=ptr[1:])
        atom_row = np.repeat(np.arange(len(mol_ids)), n_z)

        bad_z = (z_flat != np.round(z_flat)) | (z_flat < 1) | (z_flat > MAX_ATOMIC_NUMBER)
        if bad_z.any():
            rows = np.unique(atom_row[bad_z])
            raise StructureTableError(
                f"atomic numbers must be integers in 1..{MAX_ATOMIC_NUMBER}; bad at {_describe(mol_ids, rows)}")
        r_flat = r_flat.astype(np.float64).reshape(-1, 3)
        bad_r = ~np.isfinite(r_flat).all(axis=1)
        if bad_r.any():
            rows = np.unique(atom_row[bad_r])
            raise StructureTableError(f"non-finite positions at {_describe(mol_ids, rows)}")

        y, names = None, []
        if targets is not None:
            y, names = _target_matrix(targets, mol_ids, target_columns)
        feats, missing = None, 0
        if atom_features is not None:
            from molgnn.featurize.atom_features import structure_atom_features

            z_int = z_flat.astype(np.int64)
            per_mol = [z_int[ptr[k]:ptr[k + 1]] for k in range(len(mol_ids))]
            rows, found = structure_atom_features(structures[schema.SMILES].astype(str).tolist(), per_mol,
                                                  atom_features)
            feats, missing = torch.from_numpy(rows), int((~found).sum())
        return cls(mol_ids=mol_ids, z=torch.from_numpy(z_flat.astype(np.uint8)),
                   positions=torch.from_numpy(r_flat).to(dtype), ptr=torch.from_numpy(ptr),
                   targets=y, target_names=names, atom_features=feats, atom_features_missing=missing)


def _target_matrix(targets: pd.DataFrame, mol_ids: np.ndarray,
                   columns: Sequence[str] | None) -> tuple[torch.Tensor, list[str]]:
    if schema.MOL_ID not in targets.columns:
        raise StructureTableError("targets table lacks the mol_id column")
    names = list(columns) if columns is not None else [c for c in targets.columns if c != schema.MOL_ID]
    missing = [c for c in names if c not in targets.columns]
    if missing:
        raise StructureTableError(f"targets table lacks target column(s) {missing}")
    if not names:
        raise StructureTableError("no target columns given")
    t_ids = targets[schema.MOL_ID].astype(str)
    if t_ids.duplicated().any():
        raise StructureTableError(f"duplicate mol_id in targets: {sorted(set(t_ids[t_ids.duplicated()]))[:5]}")
    table = targets.assign(**{schema.MOL_ID: t_ids}).set_index(schema.MOL_ID)[names]
    for c in names:
        if not pd.api.types.is_numeric_dtype(table[c]):
            raise StructureTableError(f"target column {c!r} is not numeric (dtype {table[c].dtype})")
    values = table.reindex(mol_ids).to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise StructureTableError(f"infinite target {names[c]!r} for mol_id={mol_ids[r]!r}")
    return torch.from_numpy(np.array(values, dtype=np.float64, copy=True)), names


def gather_atoms(ptr: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dataset atom positions, batch molecule of each atom, atoms per molecule) for molecules ``idx``."""
    starts = ptr[idx]
    n = ptr[idx + 1] - starts
    idx_m = torch.repeat_interleave(torch.arange(idx.numel(), device=idx.device), n)
    first = torch.cumsum(n, 0) - n
    atom = starts[idx_m] + torch.arange(idx_m.numel(), device=idx.device) - first[idx_m]
    return atom, idx_m, n


def make_batch(dataset: AtomisticDataset, indices: Sequence[int] | torch.Tensor, *, cutoff: float,
               device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Gather molecules ``indices`` into one schnetpack-style input dict on ``device``.

    Keys: Z, R, idx_m, n_atoms, idx (dataset positions of the molecules), idx_i, idx_j, Rij, offsets,
    ATOM_FEATURES where the dataset has them, and one ``[B]`` tensor per target name (NaN = missing label).
    """
    idx = torch.as_tensor(indices, dtype=torch.long, device=dataset.device)
    if idx.numel() == 0:
        raise ValueError("cannot build a batch from zero molecules")
    atom, idx_m, n = gather_atoms(dataset.ptr, idx)
    batch = {
        props.idx: idx,
        props.Z: dataset.z[atom].long(),
        props.R: dataset.positions[atom],
        props.idx_m: idx_m,
        props.n_atoms: n,
    }
    if dataset.atom_features is not None:
        batch[ATOM_FEATURES] = dataset.atom_features[atom]
    if dataset.targets is not None:
        y = dataset.targets[idx]
        for k, name in enumerate(dataset.target_names):
            batch[name] = y[:, k]
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return add_neighbors(batch, cutoff)


def iterate_batches(dataset: AtomisticDataset, indices: Sequence[int] | np.ndarray | torch.Tensor, *,
                    batch_size: int, cutoff: float, shuffle: bool = False,
                    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                    drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Batches over a subset of molecules; shuffled with a CPU ``generator`` so the order is the same
    on every device for a given seed."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    if idx.numel() and (idx.min() < 0 or idx.max() >= len(dataset)):
        raise IndexError(f"molecule indices must be in [0, {len(dataset)}), got {int(idx.min())}..{int(idx.max())}")
    if shuffle:
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
    stop = idx.numel() - (idx.numel() % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        yield make_batch(dataset, idx[start:start + batch_size], cutoff=cutoff, device=device)


class DeviceBatcher:
    """Training batches gathered on the dataset's device without a host synchronisation per batch.

    The neighbor lists of all molecules are computed once (:func:`pair_table`; valid while positions
    do not change, i.e. for fine-tuning) and the atom and pair counts are kept on the host, so each
    batch is a fixed sequence of gathers with output sizes known in advance: the host never waits
    for the device and can queue the next steps while the current one runs. A batch has the same
    keys, molecules, atom order and pairs (same order) as :func:`make_batch` would give.
    """

    def __init__(self, dataset: AtomisticDataset, cutoff: float):
        self.dataset = dataset
        self.cutoff = float(cutoff)
        self.device = dataset.device
        self.pair_ptr, self.pair_local = pair_table(dataset.positions, dataset.ptr, self.cutoff)
        self.n_atoms_dev = dataset.n_atoms
        self.n_pairs_dev = self.pair_ptr[1:] - self.pair_ptr[:-1]
        self.n_atoms_cpu = self.n_atoms_dev.cpu()
        self.n_pairs_cpu = self.n_pairs_dev.cpu()

    @property
    def n_pairs(self) -> int:
        return int(self.pair_local.shape[0])

    def batches(self, indices: Sequence[int] | np.ndarray | torch.Tensor, batch_size: int, *,
                drop_last: bool = False, pad: tuple[int, int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``indices`` in the given order (shuffle them before calling).

        ``pad=(atom_multiple, pair_multiple)``: every batch padded by :func:`pad_batch` to
        ``batch_size + 1`` molecule slots and atom/pair counts rounded up to those multiples (with at
        least two dummy atoms), so that an epoch has only a handful of distinct batch shapes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        idx_cpu = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx_cpu.numel() and (idx_cpu.min() < 0 or idx_cpu.max() >= len(self.dataset)):
            raise IndexError(f"molecule indices must be in [0, {len(self.dataset)})")
        if self.device.type == "cuda":
            idx_dev = idx_cpu.pin_memory().to(self.device, non_blocking=True)
        else:
            idx_dev = idx_cpu.to(self.device)
        cum_atoms = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.n_atoms_cpu[idx_cpu], 0)]).tolist()
        cum_pairs = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.n_pairs_cpu[idx_cpu], 0)]).tolist()
        n = idx_cpu.numel()
        stop = n - (n % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            e = min(s + batch_size, n)
            n_at, n_pr = cum_atoms[e] - cum_atoms[s], cum_pairs[e] - cum_pairs[s]
            b = self.batch(idx_dev[s:e], n_at, n_pr)
            if pad is not None:
                atoms, pairs = padded_capacity(n_at, n_pr, pad)
                b = pad_batch(b, atoms=atoms, pairs=pairs, molecules=batch_size + 1, cutoff=self.cutoff,
                              target_names=self.dataset.target_names)
            yield b

    def batch(self, idx: torch.Tensor, n_atoms_total: int, n_pairs_total: int) -> dict[str, torch.Tensor]:
        """One batch of dataset molecules ``idx`` (on the device) holding the given totals of atoms and pairs."""
        ds = self.dataset
        b = idx.numel()
        ar = torch.arange(b, device=self.device)
        n = self.n_atoms_dev[idx]
        idx_m = torch.repeat_interleave(ar, n, output_size=n_atoms_total)
        first = torch.cumsum(n, 0) - n
        atom = ds.ptr[idx][idx_m] + torch.arange(n_atoms_total, device=self.device) - first[idx_m]
        npair = self.n_pairs_dev[idx]
        pm = torch.repeat_interleave(ar, npair, output_size=n_pairs_total)
        pair = (self.pair_ptr[idx] - (torch.cumsum(npair, 0) - npair))[pm] + torch.arange(n_pairs_total, device=self.device)
        local = self.pair_local[pair].long()
        base = first[pm]
        idx_i, idx_j = base + local[:, 0], base + local[:, 1]
        R = ds.positions[atom]
        batch = {
            props.idx: idx, props.Z: ds.z[atom].long(), props.R: R, props.idx_m: idx_m, props.n_atoms: n,
            props.idx_i: idx_i, props.idx_j: idx_j, props.Rij: R[idx_j] - R[idx_i],
            props.offsets: torch.zeros(n_pairs_total, 3, dtype=R.dtype, device=self.device),
        }
        if ds.atom_features is not None:
            batch[ATOM_FEATURES] = ds.atom_features[atom]
        if ds.targets is not None:
            y = ds.targets[idx]
            for k, name in enumerate(ds.target_names):
                batch[name] = y[:, k]
        return batch


def padded_capacity(n_atoms: int, n_pairs: int, multiples: tuple[int, int]) -> tuple[int, int]:
    """(atoms, pairs) a batch of ``n_atoms`` atoms and ``n_pairs`` pairs is padded to: rounded up to
    the given multiples, keeping at least two dummy atoms (the dummy pairs join two of them)."""
    am, pm = (int(m) for m in multiples)
    if am < 2 or pm < 1:
        raise ValueError(f"pad multiples must be >= 2 atoms and >= 1 pair, got {multiples}")
    return -(-(n_atoms + 2) // am) * am, -(-max(n_pairs, 1) // pm) * pm


def pad_batch(batch: dict[str, torch.Tensor], *, atoms: int, pairs: int, molecules: int, cutoff: float,
              target_names: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The batch padded to fixed sizes (``atoms`` atoms, ``pairs`` pairs, ``molecules`` slots) that
    give the same predictions for its real molecules and the same masked loss and gradients.

    - Dummy atoms (Z 0, the spare embedding row) all belong to the last slot, sit on a line
      ``2 * cutoff`` apart, and the dummy pairs join dummy atoms only (d_k -> d_k+1): every dummy
      distance is >= 2 cutoff, so the cosine cutoff makes their filters exactly 0, directions stay
      finite (no 0/0), and no real atom receives anything from them.
    - Slots after the real molecules (the empty ones of a short batch and the dummy slot) have NaN
      targets, so the masked loss skips them, and an atom count >= 1 so mean aggregation stays finite.
    - ``idx`` still lists only the real molecules.
    """
    Z, R = batch[props.Z], batch[props.R]
    n, p, b = Z.shape[0], batch[props.idx_i].shape[0], batch[props.n_atoms].shape[0]
    n_dummy, n_extra = atoms - n, pairs - p
    if n_dummy < 2 or n_extra < 0 or molecules < b + 1:
        raise ValueError(f"cannot pad {n} atoms, {p} pairs, {b} molecules to {atoms}, {pairs}, {molecules} "
                         "(needs >= 2 dummy atoms and one spare molecule slot)")
    dev = Z.device
    k = torch.arange(n_dummy, device=dev)
    line = (k + 1).to(R.dtype) * (2.0 * float(cutoff))
    R_d = torch.stack([torch.zeros_like(line), torch.zeros_like(line), line], dim=1)
    q = torch.arange(n_extra, device=dev)
    idx_i = torch.cat([batch[props.idx_i], n + q % n_dummy])
    idx_j = torch.cat([batch[props.idx_j], n + (q + 1) % n_dummy])
    R_all = torch.cat([R, R_d])
    n_mol = batch[props.n_atoms]
    out = dict(batch)
    out.update({
        props.Z: torch.cat([Z, torch.zeros(n_dummy, dtype=Z.dtype, device=dev)]),
        props.R: R_all,
        props.idx_m: torch.cat([batch[props.idx_m], torch.full((n_dummy,), molecules - 1, dtype=torch.long, device=dev)]),
        props.n_atoms: torch.cat([n_mol, torch.ones(molecules - 1 - b, dtype=n_mol.dtype, device=dev),
                                  torch.full((1,), n_dummy, dtype=n_mol.dtype, device=dev)]),
        props.idx_i: idx_i, props.idx_j: idx_j, props.Rij: R_all[idx_j] - R_all[idx_i],
        props.offsets: torch.zeros(pairs, 3, dtype=R.dtype, device=dev),
    })
    if ATOM_FEATURES in batch:  # dummy atoms: zero features (they receive nothing and send nothing)
        x = batch[ATOM_FEATURES]
        out[ATOM_FEATURES] = torch.cat([x, torch.zeros(n_dummy, x.shape[1], dtype=x.dtype, device=dev)])
    for name in target_names:
        y = batch[name]
        out[name] = torch.cat([y, torch.full((molecules - b,), float("nan"), dtype=y.dtype, device=dev)])
    return out
