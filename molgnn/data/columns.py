"""Per-atom data as Arrow list columns (atomic numbers, flattened positions) for the parquet files."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def list_column(arrays: list[np.ndarray | None], dtype: pa.DataType) -> pa.Array:
    """list<dtype> Arrow column from flat numpy buffers (no per-element Python objects); None -> null."""
    lengths = np.array([0 if a is None else np.asarray(a).size for a in arrays], dtype=np.int64)
    large = lengths.sum() >= 2**31
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if large else np.int32)
    present = [np.asarray(a).ravel() for a in arrays if a is not None]
    values = np.concatenate(present) if present else np.array([])
    mask = pa.array([a is None for a in arrays], type=pa.bool_())
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(pa.array(offsets), pa.array(values).cast(dtype), mask=mask)
