"""Ingest: every input row kept or rejected exactly once, with the right stage and reason."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from molgnn.data import schema
from molgnn.data.ingest import IngestError, ingest
from molgnn.data.readers import InputFormatError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HOSTILE = str(FIXTURES / "hostile.csv")


def _load(res):
    return pd.read_parquet(res.molecules_path), pd.read_csv(res.rejects_path, keep_default_na=False)


def _assert_every_row_once(mols, rejects, expected_rows):
    kept = set(zip(mols[schema.SOURCE], mols[schema.ROW]))
    rejected = list(zip(rejects[schema.SOURCE], rejects[schema.ROW]))
    assert len(rejected) == len(set(rejected)) and not kept & set(rejected)
    assert kept | set(rejected) == expected_rows


def test_hostile_csv(tmp_path):
    res = ingest([HOSTILE], tmp_path, target_columns=["logS"], max_heavy_atoms=50)
    mols, rejects = _load(res)
    assert (res.n_input_rows, res.n_kept, res.n_rejected) == (15, 4, 11)
    _assert_every_row_once(mols, rejects, {(HOSTILE, r) for r in range(15)})
    stage = dict(zip(rejects[schema.ROW], rejects["stage"]))
    assert stage == {1: "parse", 2: "parse", 3: "parse", 4: "parse", 5: "sanitize", 6: "fragment",
                     8: "deduplicate", 10: "deduplicate", 11: "elements", 12: "size", 13: "read"}
    reason = dict(zip(rejects[schema.ROW], rejects["reason"]))
    assert reason[1] == "empty input" and "Explicit valence" in reason[5] and "Pt" in reason[11]
    assert reason[8].startswith(f"duplicate of {HOSTILE}:7")
    assert res.rejects_by_reason == {"parse": 4, "sanitize": 1, "fragment": 1, "deduplicate": 2,
                                     "elements": 1, "size": 1, "read": 1}

    assert mols[schema.SMILES].tolist() == ["CCO", "CC(=O)O", "Oc1ccccc1", "CCCl"]
    assert mols[schema.RAW].tolist() == ["CCO", "CC(=O)[O-].[Na+]", "c1ccccc1O", "CCCl"]
    assert mols[schema.N_DUPLICATES].tolist() == [0, 1, 1, 0]
    assert (mols[schema.MOL_ID] == mols[schema.INCHIKEY]).all()
    assert mols[schema.MOL_ID][0] == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert mols["logS"].tolist()[:2] == [-0.77, 6.0] and mols["logS"][2:].isna().all()
    assert mols[schema.ATOMIC_NUMBERS].isna().all()
    assert json.loads(res.units_path.read_text()) == {"logS": "unknown"}
    assert list(rejects.columns) == schema.REJECT_COLUMNS


def test_all_fixtures_together_deduplicate_across_inputs(tmp_path):
    inputs = [HOSTILE, *(str(FIXTURES / f) for f in ("latin1.smi", "bom_crlf.csv", "broken.sdf"))]
    res = ingest(inputs, tmp_path)
    mols, rejects = _load(res)
    expected = ({(HOSTILE, r) for r in range(15)} | {(inputs[1], r) for r in range(3)}
                | {(inputs[2], r) for r in range(2)} | {(inputs[3], r) for r in range(5)})
    assert res.n_input_rows == 25 == res.n_kept + res.n_rejected
    _assert_every_row_once(mols, rejects, expected)
    by_key = {(s, r): (st, why) for s, r, _, st, why in rejects.itertuples(index=False)}
    assert by_key[(inputs[1], 0)] == ("deduplicate", f"duplicate of {HOSTILE}:0 (same InChIKey, LFQSCWFLJHTTHZ-UHFFFAOYSA-N)")
    assert by_key[(inputs[1], 2)][0] == "parse"                 # latin-1 garbage "CéC"
    assert by_key[(inputs[3], 1)][0] == "parse"                 # garbage SDF record
    assert by_key[(inputs[3], 4)][0] == "read"                  # truncated SDF record
    ethanol = mols[mols[schema.SMILES] == "CCO"].iloc[0]
    assert ethanol[schema.N_DUPLICATES] == 2                    # latin1.smi:0 and bom_crlf.csv:0
    assert res.target_columns == ["y"]                          # the only numeric column anywhere


def test_given_geometry_kept_only_when_it_matches(tmp_path):
    sdf = str(FIXTURES / "broken.sdf")
    res = ingest([sdf], tmp_path)
    mols, _ = _load(res)
    assert mols[schema.SMILES].tolist() == ["CO", "CC(=O)O", "c1ccccc1"]
    z = mols[schema.ATOMIC_NUMBERS].tolist()
    assert sorted(z[0].tolist()) == [1, 1, 1, 1, 6, 8] and len(mols[schema.POSITIONS][0]) == 18
    assert z[1] is None          # sodium acetate's geometry holds Na and one H too few: dropped
    assert z[2] is None          # 2D depiction: never a geometry
    assert (res.n_geometry_given, res.n_geometry_dropped) == (1, 1)


def test_qm9_sample_keeps_geometry_and_units(tmp_path):
    res = ingest(["qm9-sample"], tmp_path, limit=40, target_columns=["gap", "U0"])
    mols, rejects = _load(res)
    assert res.n_input_rows == 40 and res.n_kept + res.n_rejected == 40
    assert mols[schema.ATOMIC_NUMBERS].notna().all()
    for z, pos in zip(mols[schema.ATOMIC_NUMBERS], mols[schema.POSITIONS]):
        assert len(pos) == 3 * len(z)
    assert json.loads(res.units_path.read_text()) == {"gap": "eV", "U0": "eV"}
    assert mols["gap"].between(1.0, 20.0).all()                 # eV, not Hartree


def test_no_targets_and_missing_targets(tmp_path):
    res = ingest([str(FIXTURES / "bom_crlf.csv")], tmp_path / "a", target_columns=[])
    assert res.target_columns == [] and "y" not in pd.read_parquet(res.molecules_path).columns
    with pytest.raises(InputFormatError, match="target column"):
        ingest([str(FIXTURES / "bom_crlf.csv")], tmp_path / "b", target_columns=["logS"])
    with pytest.raises(IngestError, match="not found in any input"):
        ingest([str(FIXTURES / "bom_crlf.csv"), "esol"], tmp_path / "c", target_columns=["nope"], limit=2)
    # across inputs a requested target only needs to be somewhere
    res = ingest([str(FIXTURES / "bom_crlf.csv"), "esol"], tmp_path / "d", target_columns=["y"], limit=3)
    assert pd.read_parquet(res.molecules_path)["y"].notna().sum() == 2


def test_unreadable_input_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputFormatError, match="not found"):
        ingest([HOSTILE, str(tmp_path / "missing.csv")], out)
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ValueError, match="more than once"):
        ingest([HOSTILE, HOSTILE], out)


def test_conflicting_units_are_refused(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("smiles,gap\nCCCCO,0.3\n")
    with pytest.raises(IngestError, match="'gap' is in 'eV'"):
        ingest(["qm9-sample", str(p)], tmp_path / "out", limit=3)


def test_deterministic_output(tmp_path):
    a = ingest([HOSTILE, "qm9-sample"], tmp_path / "a", limit=30)
    b = ingest([HOSTILE, "qm9-sample"], tmp_path / "b", limit=30)
    pd.testing.assert_frame_equal(pd.read_parquet(a.molecules_path), pd.read_parquet(b.molecules_path))
    assert a.rejects_path.read_text() == b.rejects_path.read_text()


def test_distinct_given_structures_of_one_inchikey_are_all_kept(tmp_path):
    """QM9-style: same InChIKey, different DFT geometry -> distinct structures; same geometry -> duplicate."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    first = Chem.MolToMolBlock(mol)
    conf = mol.GetConformer()
    p = conf.GetAtomPosition(0)
    conf.SetAtomPosition(0, (p.x + 0.1, p.y, p.z))
    second = Chem.MolToMolBlock(mol)
    sdf = tmp_path / "structures.sdf"
    sdf.write_text("$$$$\n".join([first, second, first]) + "$$$$\n")
    res = ingest([str(sdf)], tmp_path / "out")
    mols, rejects = _load(res)
    key = "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert mols[schema.MOL_ID].tolist() == [key, f"{key}-2"]
    assert mols[schema.INCHIKEY].tolist() == [key, key]
    assert rejects["stage"].tolist() == ["deduplicate"] and rejects["row"].tolist() == [2]
    assert "geometry" in rejects["reason"].iloc[0]


def test_duplicates_whose_targets_disagree_are_reported(tmp_path):
    src = tmp_path / "dups.csv"
    # ethanol three times (two spellings): one agrees, one disagrees; phenol once without a value
    src.write_text("smiles,logS,pIC50\nCCO,1.0,5.0\nOCC,1.0,\nC(O)C,2.5,5.0\nOc1ccccc1,,7.0\n")
    res = ingest([str(src)], tmp_path / "out")
    mols, rejects = _load(res)
    assert res.n_kept == 2 and res.n_target_conflicts == 1
    kept = mols.set_index("smiles").loc["CCO"]
    assert kept["logS"] == 1.0 and kept[schema.N_DUPLICATES] == 2, "the first row's values are kept"
    reasons = rejects.set_index("row")["reason"]
    assert "targets differ" not in reasons[1], "a missing value is no conflict"
    assert "targets differ, kept row's values used: logS: 2.5 vs kept 1" in reasons[2]
