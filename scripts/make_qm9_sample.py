"""Write molgnn/resources/qm9_sample.csv.gz: a fixed, seeded sample of QM9 rows from qm9pack.

The rows keep qm9pack's columns unchanged, so the ``qm9`` parser reads the sample and the full set
alike. Run from the repository root: ``python scripts/make_qm9_sample.py``.
"""
from __future__ import annotations

import argparse
import csv
import io
import zlib
from pathlib import Path

import numpy as np

from molgnn.data.artifacts import atomic_path
from molgnn.data.readers import read_table_rows
from molgnn.data.sources import qm9pack_data_dir

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "molgnn" / "resources" / "qm9_sample.csv.gz"


def make_sample(out: Path, n: int = 2000, seed: int = 0) -> int:
    paths = [qm9pack_data_dir() / f"qm9_part{i}.csv" for i in (1, 2, 3)]
    header: list[str] | None = None
    rows: list[list[str]] = []
    for path in paths:
        h, it = read_table_rows(path, ",")
        if header is not None and h != header:
            raise ValueError(f"{path} has different columns from {paths[0]}")
        header = h
        rows.extend(it)
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows[i] for i in chosen)
    # A gzip stream (wbits=31) written by zlib: no file name or time stamp in the header, so the same
    # sample gives the same bytes; Z_FILTERED suits the many floating-point numbers (about 7% smaller).
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_FILTERED)
    payload = compressor.compress(text.getvalue().encode("utf-8")) + compressor.flush()
    with atomic_path(out) as tmp:
        tmp.write_bytes(payload)
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = make_sample(args.out, args.n, args.seed)
    print(f"wrote {n} molecules to {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
