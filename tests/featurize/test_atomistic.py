"""Packing structures tables into flat tensors, batching, and rejecting malformed input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.featurize.atomistic import AtomisticDataset, StructureTableError, iterate_batches, make_batch


def _table() -> pd.DataFrame:
    # water, methane, H2 with hand-written coordinates (Angstrom)
    return pd.DataFrame({
        "mol_id": ["w", "m", "h"],
        "atomic_numbers": [[8, 1, 1], [6, 1, 1, 1, 1], [1, 1]],
        "positions": [
            [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0],
            [0, 0, 0, 0.63, 0.63, 0.63, -0.63, -0.63, 0.63, -0.63, 0.63, -0.63, 0.63, -0.63, -0.63],
            [0, 0, 0, 0.74, 0, 0],
        ],
    })


def test_pack_and_gather_batch():
    targets = pd.DataFrame({"mol_id": ["h", "w"], "gap": [1.0, 2.0]})
    ds = AtomisticDataset.from_frames(_table(), targets)
    assert len(ds) == 3 and ds.ptr.tolist() == [0, 3, 8, 10]
    b = make_batch(ds, [2, 0], cutoff=5.0)
    assert b["_atomic_numbers"].tolist() == [1, 1, 8, 1, 1]
    assert b["_idx_m"].tolist() == [0, 0, 1, 1, 1]
    assert b["_n_atoms"].tolist() == [2, 3]
    assert torch.allclose(b["_positions"][3], torch.tensor([0.96, 0.0, 0.0]))
    assert b["gap"].tolist() == [1.0, 2.0]
    assert torch.isnan(make_batch(ds, [1], cutoff=5.0)["gap"]).all()  # methane has no label
    assert len(b["_idx_i"]) == 2 * 1 + 3 * 2  # all intra-molecular ordered pairs within 5 A


def test_batches_are_seeded_and_cover_the_subset():
    ds = AtomisticDataset.from_frames(pd.concat([_table().assign(mol_id=lambda d, k=k: d.mol_id + str(k))
                                                 for k in range(4)], ignore_index=True))
    subset = np.array([0, 2, 3, 5, 7, 8, 11])

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return [b["_idx"].tolist() for b in iterate_batches(ds, subset, batch_size=3, cutoff=5.0,
                                                            shuffle=True, generator=gen)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(sum(order(1), [])) == subset.tolist()
    assert [len(b) for b in order(1)] == [3, 3, 1]


@pytest.mark.parametrize("column,value,match", [
    ("positions", [0, 0, 0, 1, 0], "3 numbers per atom; mismatch at row 2"),
    ("atomic_numbers", [1, 120], "integers in 1..99; bad at row 2"),
    ("atomic_numbers", [0, 1], "integers in 1..99"),
    ("positions", None, "null at row 2"),
    ("positions", [0, 0, 0, float("nan"), 0, 0], "non-finite positions at row 2"),
])
def test_malformed_rows_are_named(column, value, match):
    df = _table()
    df.at[2, column] = value
    with pytest.raises(StructureTableError, match=match):
        AtomisticDataset.from_frames(df)


def test_table_level_errors():
    with pytest.raises(StructureTableError, match="lacks column"):
        AtomisticDataset.from_frames(_table().drop(columns="positions"))
    with pytest.raises(StructureTableError, match="duplicate mol_id"):
        AtomisticDataset.from_frames(_table().assign(mol_id=["a", "a", "b"]))
    with pytest.raises(StructureTableError, match="lacks target column"):
        AtomisticDataset.from_frames(_table(), pd.DataFrame({"mol_id": ["w"], "gap": [1.0]}), ["homo"])
    with pytest.raises(StructureTableError, match="not numeric"):
        AtomisticDataset.from_frames(_table(), pd.DataFrame({"mol_id": ["w"], "gap": ["x"]}))
    assert len(AtomisticDataset.from_frames(_table().iloc[:0])) == 0
