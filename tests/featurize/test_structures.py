"""3D structures: given geometry passes through unchanged, others are embedded, failures recorded."""
from __future__ import annotations

import numpy as np
import pandas as pd

from molgnn.data import schema
from molgnn.featurize.structures import build_structures

METHANOL_Z = [6, 8, 1, 1, 1, 1]
METHANOL_POS = [-0.397, -0.011, -0.003, 0.885, -0.428, -0.396, -0.394, -0.120, 1.107,
                -1.118, -0.664, -0.510, -0.484, 1.052, -0.305, 1.507, 0.171, 0.108]


def _molecules() -> pd.DataFrame:
    return pd.DataFrame({
        schema.MOL_ID: ["OKKJLVBELUTLKV-UHFFFAOYSA-N", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "BROKEN"],
        schema.SMILES: ["CO", "CCO", "C1CC"],
        schema.SOURCE: ["a.sdf", "b.csv", "b.csv"],
        schema.ROW: [0, 3, 4],
        schema.RAW: ["methanol", "OCC", "C1CC"],
        schema.ATOMIC_NUMBERS: [METHANOL_Z, None, None],
        schema.POSITIONS: [METHANOL_POS, None, None],
    })


def test_given_embedded_and_failed(tmp_path):
    res = build_structures(_molecules(), tmp_path, seed=0, timeout_s=10, max_iterations=200, workers=1)
    assert (res.n_given, res.n_embedded, res.n_failed) == (1, 1, 1)
    s = pd.read_parquet(res.path)
    assert list(s.columns) == [schema.MOL_ID, schema.SMILES, schema.ATOMIC_NUMBERS, schema.POSITIONS,
                               "geometry_source", "total_charge"]
    assert s[schema.SMILES].tolist() == ["CO", "CCO"]
    assert s[schema.MOL_ID].tolist() == ["OKKJLVBELUTLKV-UHFFFAOYSA-N", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"]
    assert s["geometry_source"].tolist() == ["given", "etkdgv3-mmff"]
    assert s[schema.ATOMIC_NUMBERS][0].tolist() == METHANOL_Z
    np.testing.assert_array_equal(s[schema.POSITIONS][0], METHANOL_POS)       # used as is
    assert sorted(s[schema.ATOMIC_NUMBERS][1].tolist()) == [1] * 6 + [6, 6, 8]
    assert len(s[schema.POSITIONS][1]) == 27
    rejects = pd.read_csv(res.rejects_path)
    assert list(rejects.columns) == schema.REJECT_COLUMNS
    assert rejects.iloc[0][[schema.SOURCE, schema.ROW, schema.RAW, "stage"]].tolist() == \
        ["b.csv", 4, "C1CC", "conformer"]
    assert "unclosed ring" in rejects.iloc[0]["reason"]


def test_time_out_is_a_recorded_failure_and_runs_are_reproducible(tmp_path):
    mols = _molecules().iloc[:2]
    res = build_structures(mols, tmp_path / "a", seed=0, timeout_s=1e-6, max_iterations=200, workers=1)
    assert (res.n_given, res.n_embedded, res.n_failed) == (1, 0, 1)
    rejects = pd.read_csv(res.rejects_path)
    assert rejects["reason"].str.contains("time-out").all() and rejects[schema.ROW].tolist() == [3]

    a = build_structures(mols, tmp_path / "b", seed=4, timeout_s=10, max_iterations=200, workers=1)
    b = build_structures(mols, tmp_path / "c", seed=4, timeout_s=10, max_iterations=200, workers=2)
    pd.testing.assert_frame_equal(pd.read_parquet(a.path), pd.read_parquet(b.path))


def test_table_without_geometry_columns(tmp_path):
    mols = _molecules().drop(columns=[schema.ATOMIC_NUMBERS, schema.POSITIONS]).iloc[:2]
    res = build_structures(mols, tmp_path, seed=0, timeout_s=10, max_iterations=200, workers=1)
    assert (res.n_given, res.n_embedded, res.n_failed) == (0, 2, 0)


def test_a_given_geometry_is_put_in_the_smiles_atom_order(tmp_path):
    """A source listing methanol's atoms H, H, O, H, C, H gets them back in the SMILES order (C, O, then
    the hydrogens: C's three, then O's), each with its own coordinates: the structure is unchanged."""
    xyz = np.asarray(METHANOL_POS).reshape(-1, 3)
    shuffled = [5, 2, 1, 4, 0, 3]            # given atom k is methanol atom shuffled[k]
    mols = _molecules().iloc[:1].copy()
    mols[schema.ATOMIC_NUMBERS] = [[METHANOL_Z[i] for i in shuffled]]
    mols[schema.POSITIONS] = [xyz[shuffled].ravel().tolist()]
    s = pd.read_parquet(build_structures(mols, tmp_path, seed=0, timeout_s=10, max_iterations=200,
                                         workers=1).path)
    assert s[schema.ATOMIC_NUMBERS][0].tolist() == METHANOL_Z
    got = np.asarray(s[schema.POSITIONS][0]).reshape(-1, 3)
    np.testing.assert_allclose(got[:2], xyz[:2])                 # C and O where the SMILES puts them
    # the O-H hydrogen is the last atom (AddHs appends O's hydrogen after C's three)
    assert np.linalg.norm(got[5] - got[1]) < 1.1 and np.linalg.norm(got[5] - got[0]) > 1.6
    assert sorted(map(tuple, got.round(6))) == sorted(map(tuple, xyz.round(6)))
