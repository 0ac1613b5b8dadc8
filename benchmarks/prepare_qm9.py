"""Prepare all of QM9 once: ingest the named source ``qm9`` and pack it as a compact npz.

    .venv/bin/python benchmarks/prepare_qm9.py [--out .bench/qm9] [--seed 0]

Runs the whole source through ``molgnn.data.ingest`` (standardization, row accounting, distinct
given structures that share an InChIKey kept as ``<key>-2``, ...), then writes into ``--out``:

- ``ingest/``: molecules.parquet, rejects.csv, units.json (the ingest outputs, as the pipeline has them)
- ``qm9.npz``: ``Z`` uint8 [N_atoms], ``R`` float32 [N_atoms, 3] (Angstrom), ``ptr`` int64 [M+1]
  (molecule m's atoms are ``ptr[m]:ptr[m+1]``), ``y`` float64 [M, 12] in the units of units.json,
  ``target_names``, ``units``, ``mol_ids``, ``row`` (qm9pack row) and the split
  ``train_idx``, ``val_idx``, ``test_idx`` (positions into the molecule axis)
- ``split.csv``: ``mol_id,split`` for every molecule
- ``meta.json``: counts, seed, split sizes, file hashes

The split is a seeded random permutation: the first 110,000 molecules train, the next 10,000
validation, the rest test (the usual QM9 protocol). The outputs are git-ignored (``.bench/``); only
this script is versioned. Needs RDKit (local machine), not a GPU; the npz is what travels to a GPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common import REPO
from molgnn.data import schema
from molgnn.data.ingest import ingest
from molgnn.data.sources import QM9_TARGETS

N_TRAIN, N_VAL = 110_000, 10_000
EXPECTED_ROWS = 130_831


def pack(molecules: Path, units: dict[str, str]) -> dict[str, np.ndarray]:
    """The npz arrays (without the split) from an ingest ``molecules.parquet``."""
    table = pq.read_table(molecules)
    targets = list(QM9_TARGETS)
    missing = [t for t in targets if t not in table.column_names]
    if missing:
        raise SystemExit(f"{molecules} lacks target column(s) {missing}")
    z_col = table.column(schema.ATOMIC_NUMBERS).combine_chunks()
    r_col = table.column(schema.POSITIONS).combine_chunks()
    if z_col.null_count or r_col.null_count:
        raise SystemExit(f"{z_col.null_count} molecules have no given geometry; the npz needs DFT geometries")
    n_atoms = z_col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    z = z_col.flatten().to_numpy(zero_copy_only=False)
    r = r_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, 3)
    if len(r) != len(z) or z.min() < 1 or z.max() > 255:
        raise SystemExit("malformed geometry columns")
    ptr = np.zeros(len(n_atoms) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=ptr[1:])
    y = np.stack([table.column(t).to_numpy(zero_copy_only=False).astype(np.float64) for t in targets], axis=1)
    return {
        "Z": z.astype(np.uint8), "R": r.astype(np.float32), "ptr": ptr, "y": y,
        "target_names": np.array(targets), "units": np.array([units.get(t, "unknown") for t in targets]),
        "mol_ids": table.column(schema.MOL_ID).to_numpy(zero_copy_only=False).astype("S"),  # ASCII InChIKeys
        "row": table.column(schema.ROW).to_numpy(zero_copy_only=False).astype(np.int64),
    }


def split_indices(n: int, seed: int, n_train: int = N_TRAIN, n_val: int = N_VAL
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded permutation: first n_train train, next n_val validation, the rest test (each sorted)."""
    if n <= n_train + n_val:
        raise SystemExit(f"only {n} molecules: cannot split {n_train} / {n_val} / rest")
    perm = np.random.default_rng(seed).permutation(n)
    return (np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:]))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / ".bench" / "qm9"))
    ap.add_argument("--source", default="qm9", help="named source (qm9-sample for a quick check)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="rows to read (testing only)")
    ap.add_argument("--n-train", type=int, default=N_TRAIN)
    ap.add_argument("--n-val", type=int, default=N_VAL)
    ap.add_argument("--reuse-ingest", action="store_true",
                    help="pack an existing <out>/ingest/molecules.parquet instead of ingesting again")
    args = ap.parse_args(argv)
    out = Path(args.out)
    ingest_dir = out / "ingest"
    t0 = time.perf_counter()
    if args.reuse_ingest and (ingest_dir / schema.MOLECULES_FILE).is_file():
        print(f"reusing {ingest_dir / schema.MOLECULES_FILE}")
        n_input = n_rejected = None
        rejects = pd.read_csv(ingest_dir / schema.REJECTS_FILE)
        n_rejected = len(rejects)
        by_reason = rejects["stage"].value_counts().to_dict()
    else:
        res = ingest([args.source], ingest_dir, limit=args.limit)
        n_input, n_rejected, by_reason = res.n_input_rows, res.n_rejected, res.rejects_by_reason
        print(f"ingest: {res.n_input_rows} rows -> {res.n_kept} kept, {res.n_rejected} rejected {by_reason}; "
              f"given geometry kept {res.n_geometry_given}, dropped {res.n_geometry_dropped} "
              f"({time.perf_counter() - t0:.0f} s)")
    units = json.loads((ingest_dir / schema.UNITS_FILE).read_text())
    arrays = pack(ingest_dir / schema.MOLECULES_FILE, units)
    m = len(arrays["mol_ids"])
    extra = np.array([k.count(b"-") > 2 for k in arrays["mol_ids"]])  # <InChIKey>-2, -3, ...
    n_distinct_keys = int(m - extra.sum())
    if args.source == "qm9" and args.limit is None and n_input is not None and n_input != EXPECTED_ROWS:
        print(f"WARNING: qm9 source has {n_input} rows, expected {EXPECTED_ROWS}")
    train, val, test = split_indices(m, args.seed, args.n_train, args.n_val)
    npz = out / "qm9.npz"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz, **arrays, train_idx=train, val_idx=val, test_idx=test, seed=np.int64(args.seed))
    label = np.full(m, "test", dtype=object)
    label[train], label[val] = "train", "validation"
    pd.DataFrame({schema.MOL_ID: arrays["mol_ids"].astype(str), "split": label}).to_csv(out / "split.csv", index=False)
    meta = {"source": args.source, "n_input_rows": n_input, "n_molecules": m, "n_rejected": n_rejected,
            "rejects_by_stage": by_reason, "n_atoms": int(arrays["ptr"][-1]),
            "n_distinct_inchikeys": n_distinct_keys,
            "n_further_structures_of_an_inchikey": int(extra.sum()),
            "targets": dict(zip(arrays["target_names"].tolist(), arrays["units"].tolist())),
            "seed": args.seed, "split": {"train": len(train), "validation": len(val), "test": len(test)},
            "npz_md5": _md5(npz), "npz_bytes": npz.stat().st_size}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    print(f"wrote {npz} ({npz.stat().st_size / 2**20:.1f} MiB), {out / 'split.csv'} in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
