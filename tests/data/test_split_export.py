"""split_table: a fine-tune split joined back to SMILES and labels, in split.csv's order, never guessing."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from molgnn.data.split_export import SplitExportError, split_table


@pytest.fixture()
def files(tmp_path):
    molecules = pd.DataFrame({"mol_id": ["A", "B", "C", "D"], "smiles": ["C", "CC", "CCC", "CCCC"],
                              "source": "x", "logd": [1.0, 2.0, float("nan"), 4.0], "other": [0.0] * 4})
    mpath = tmp_path / "molecules.parquet"
    molecules.to_parquet(mpath)
    spath = tmp_path / "split.csv"
    # D has no structure: the stage left it out of split.csv
    pd.DataFrame({"mol_id": ["C", "A", "B"], "split": ["test", "train", "val"]}).to_csv(spath, index=False)
    return spath, mpath


def test_joins_smiles_and_targets_in_split_order(files):
    spath, mpath = files
    table = split_table(spath, mpath, ["logd"])
    assert list(table.columns) == ["mol_id", "smiles", "split", "logd"]
    assert table["mol_id"].tolist() == ["C", "A", "B"]
    assert table["smiles"].tolist() == ["CCC", "C", "CC"]
    assert table["split"].tolist() == ["test", "train", "val"]
    assert math.isnan(table["logd"].iloc[0]) and table["logd"].iloc[1:].tolist() == [1.0, 2.0]


def test_unknown_mol_id_is_an_error(files, tmp_path):
    _, mpath = files
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"mol_id": ["A", "Z"], "split": ["train", "test"]}).to_csv(bad, index=False)
    with pytest.raises(SplitExportError, match="not in"):
        split_table(bad, mpath)


@pytest.mark.parametrize("rows, match", [
    ({"mol_id": ["A", "B"], "split": ["train", "validation"]}, "split values"),
    ({"mol_id": ["A", "A"], "split": ["train", "test"]}, "repeated"),
    ({"mol_id": ["A"]}, "no 'split' column"),
])
def test_malformed_split_is_an_error(files, tmp_path, rows, match):
    _, mpath = files
    bad = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(bad, index=False)
    with pytest.raises(SplitExportError, match=match):
        split_table(bad, mpath)


def test_peer_inputs_select_exactly_the_split(files, tmp_path):
    import json

    from molgnn.data.split_export import split_indices, write_peer_inputs

    spath, mpath = files
    table = split_table(spath, mpath, ["logd"])
    data, splits = write_peer_inputs(table, ["logd"], tmp_path / "peer")
    rows = pd.read_csv(data)
    (entry,) = json.loads(splits.read_text())
    assert entry == split_indices(table) == {"train": [1], "val": [2], "test": [0]}
    assert rows.columns.tolist() == ["smiles", "logd"]
    assert [rows["smiles"][entry[s]].tolist() for s in ("train", "val", "test")] == [["C"], ["CC"], ["CCC"]]
    assert math.isnan(rows["logd"][0])   # a missing label stays missing (masked by the peer), not dropped
    with pytest.raises(SplitExportError, match="split values"):
        split_indices(table.assign(split=["test", "train", "holdout"]))
    with pytest.raises(SplitExportError, match="no column"):
        write_peer_inputs(table, ["absent"], tmp_path / "x")


def test_peer_inputs_can_leave_the_test_molecules_out(files, tmp_path):
    """chemprop 2.3.1's train crashes scoring a test task without labels: the benchmark gives it
    train and val only and predicts the test molecules apart."""
    import json

    from molgnn.data.split_export import write_peer_inputs

    spath, mpath = files
    table = split_table(spath, mpath, ["logd"])
    data, splits = write_peer_inputs(table, ["logd"], tmp_path / "peer", parts=("train", "val"))
    rows = pd.read_csv(data)
    (entry,) = json.loads(splits.read_text())
    assert entry == {"train": [0], "val": [1]}                # re-based on data.csv's rows; no "test" key
    assert rows["smiles"].tolist() == ["C", "CC"]              # the test molecule (CCC) is in neither file
    for parts in (("val", "test"), ("train", "holdout")):
        with pytest.raises(SplitExportError, match="parts must include train"):
            write_peer_inputs(table, ["logd"], tmp_path / "x", parts=parts)
    with pytest.raises(SplitExportError, match="split values"):   # a left-out row is still checked
        write_peer_inputs(table.assign(split=["holdout", "train", "val"]), ["logd"], tmp_path / "y",
                          parts=("train", "val"))
