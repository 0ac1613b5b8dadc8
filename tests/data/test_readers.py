"""Readers: every format, odd encodings and line endings, and clear errors for unreadable inputs."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molgnn.data.readers import DownloadError, InputFormatError, read_records, to_float

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_hostile_csv_yields_one_record_per_row():
    recs = list(read_records(FIXTURES / "hostile.csv"))
    assert [r.row for r in recs] == list(range(15))
    assert recs[0].raw == "CCO" and recs[0].source == str(FIXTURES / "hostile.csv")
    assert recs[1].raw == "" and recs[2].raw == ""          # empty field, blank line
    assert recs[13].error == "expected 3 fields, found 4"
    # logS holds "not-a-number" in row 14, so auto-detection does not take it as a target
    assert all(r.props == {} for r in recs)


def test_explicit_target_keeps_molecules_with_non_numeric_values_as_none():
    recs = list(read_records(FIXTURES / "hostile.csv", target_columns=["logS"]))
    assert recs[0].props == {"logS": -0.77}
    assert recs[9].props == {"logS": None}                   # "n/a"
    assert recs[14].props == {"logS": None}                  # "not-a-number"


def test_smiles_column_detection_and_errors(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("id,Canonical_SMILES,value\n1,CCO,2.5\n")
    (rec,) = read_records(p)
    assert rec.raw == "CCO" and rec.props == {"id": 1.0, "value": 2.5}
    with pytest.raises(InputFormatError, match="'structure' not found"):
        read_records(p, smiles_column="structure")
    q = tmp_path / "y.csv"
    q.write_text("id,value\n1,2\n")
    with pytest.raises(InputFormatError, match="no SMILES column"):
        read_records(q)
    with pytest.raises(InputFormatError, match="target column"):
        read_records(p, target_columns=["missing"])


def test_latin1_bytes_are_decoded_not_fatal():
    recs = list(read_records(FIXTURES / "latin1.smi"))
    assert [r.raw for r in recs] == ["CCO", "c1ccccc1", "C\u00e9C"]    # header skipped
    assert [r.row for r in recs] == [0, 1, 2]


def test_bom_and_crlf_are_stripped():
    recs = list(read_records(FIXTURES / "bom_crlf.csv"))
    assert [(r.raw, r.props) for r in recs] == [("CCO", {"y": 1.5}), ("CCN", {"y": 2.0})]


def test_unbalanced_quote_is_a_read_error_not_a_crash(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('smiles\nCCO\n"CCN\nCCC\n')
    recs = list(read_records(p))
    assert recs[0].raw == "CCO" and recs[1].error is not None and "several lines" in recs[1].error


def test_old_mac_line_endings_and_utf16(tmp_path):
    p = tmp_path / "mac.csv"
    p.write_bytes(b"smiles,y\rCCO,1\rCCN,2\r")
    assert [r.raw for r in read_records(p)] == ["CCO", "CCN"]
    q = tmp_path / "excel.tsv"
    q.write_bytes("smiles\tname\nCCO\tcaf\u00e9\n".encode("utf-16"))
    assert [r.raw for r in read_records(q)] == ["CCO"]


def test_gzipped_tsv_and_limit(tmp_path):
    p = tmp_path / "x.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("SMILES\ty\n" + "".join(f"{'C' * (i + 1)}\t{i}\n" for i in range(10)))
    recs = list(read_records(p, limit=3))
    assert [r.raw for r in recs] == ["C", "CC", "CCC"] and recs[2].props == {"y": 2.0}
    with pytest.raises(ValueError):
        read_records(p, limit=-1)


def test_sdf_records_geometry_and_broken_records(tmp_path):
    recs = list(read_records(FIXTURES / "broken.sdf"))
    assert [r.raw for r in recs] == ["methanol 3D", "garbage record", "sodium acetate 3D", "benzene 2D",
                                     "truncated record"]
    methanol = recs[0]
    assert sorted(methanol.atomic_numbers.tolist()) == [1, 1, 1, 1, 6, 8]
    assert methanol.positions.shape == (6, 3)
    assert recs[1].mol_block is not None and recs[1].error is None    # ingest rejects it on parsing
    assert recs[3].atomic_numbers is None                               # 2D depiction: no geometry
    assert recs[4].error is not None and "M  END" in recs[4].error
    # y is "abc" in one record: not a numeric field; asked for explicitly it becomes None there
    assert recs[0].props == {}
    explicit = list(read_records(FIXTURES / "broken.sdf", target_columns=["y"]))
    assert [r.props["y"] for r in explicit] == [1.25, 2.0, None, 3.0, None]
    gz = tmp_path / "broken.sdf.gz"
    with open(FIXTURES / "broken.sdf", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert [r.raw for r in read_records(gz)] == [r.raw for r in recs]


def test_parquet_with_and_without_geometry(tmp_path):
    p = tmp_path / "x.parquet"
    pd.DataFrame({"smiles": ["CCO", "CO"], "value": [1.0, None], "label": ["a", "b"],
                  "atomic_numbers": [None, [6, 8, 1, 1, 1, 1]],
                  "positions": [None, list(np.arange(18, dtype=float))]}).to_parquet(p)
    recs = list(read_records(p))
    assert [r.raw for r in recs] == ["CCO", "CO"]
    assert recs[0].props == {"value": 1.0} and recs[1].props == {"value": None}
    assert recs[0].atomic_numbers is None
    assert recs[1].positions.shape == (6, 3) and recs[1].positions[1, 0] == 3.0


@pytest.mark.parametrize("name, content, match", [
    ("missing.csv", None, "not found"),
    ("x.xlsx", b"whatever", "unknown file format"),
    ("empty.csv", b"", "empty"),
    ("bad.csv.gz", b"\x1f\x8bnot really gzip", "cannot read"),
    ("bad.parquet", b"not parquet", "Parquet"),
])
def test_unreadable_inputs_fail_clearly(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputFormatError, match=match):
        list(read_records(p))


def test_unreachable_url_is_a_download_error():
    with pytest.raises(DownloadError, match="could not download"):
        read_records("http://127.0.0.1:9/molecules.csv")


def test_to_float():
    assert to_float(" 2.5 ") == 2.5 and to_float("1e-3") == 0.001 and to_float(3) == 3.0
    assert to_float("NA") is None and to_float("inf") is None and to_float("abc") is None
