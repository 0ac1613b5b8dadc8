"""Named sources: QM9 parsing and unit conversion on a known molecule, renames, shared data lookup."""
from __future__ import annotations

import numpy as np
import pytest

from molgnn.data.readers import InputFormatError
from molgnn.data.sources import (HARTREE_TO_EV, QM9_TARGETS, list_sources, open_source,
                                 parse_qm9_geometry, source_files, units_for)

NAMES = {"qm9-sample", "qm9", "moses", "moses:test", "moses:test_scaffolds", "esol", "freesolv",
         "lipophilicity", "bace", "bbbp"}


def test_listed_sources():
    assert set(list_sources()) == NAMES
    assert all(isinstance(d, str) and d for d in list_sources().values())


def test_qm9_methane_converted_to_stated_units():
    (methane,) = open_source("qm9", limit=1)       # dsgdb9nsd_000001: CH4
    assert methane.raw == "C" and methane.row == 0 and methane.source == "qm9"
    assert methane.atomic_numbers.tolist() == [6, 1, 1, 1, 1]
    np.testing.assert_allclose(methane.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    p = methane.props
    assert set(p) == set(QM9_TARGETS) == {"mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U",
                                          "H", "G", "Cv"}
    assert p["gap"] == pytest.approx(0.5048 * 27.211386, rel=1e-6)      # 13.736 eV
    assert p["homo"] == pytest.approx(-0.3877 * 27.211386, rel=1e-6)
    assert p["U0"] == pytest.approx(-40.47893 * 27.211386, rel=1e-6)
    assert p["zpve"] == pytest.approx(0.044749 * HARTREE_TO_EV)
    assert (p["mu"], p["alpha"], p["r2"], p["Cv"]) == (0.0, 13.21, 35.3641, 6.469)
    u = units_for("qm9")
    assert u["gap"] == u["U0"] == "eV" and u["mu"] == "D" and u["alpha"] == "bohr^3"
    assert u["r2"] == "bohr^2" and u["Cv"] == "cal/(mol K)"


def test_qm9_geometry_text_is_not_json():
    z, pos = parse_qm9_geometry("['C','C','H','H']",
                                "[[0.5995394918,0.,1.],[-0.5995394918,0.,1.],[-1.66,2.1997E-6,1.],[1.66,0.,-3E-1]]")
    assert z.tolist() == [6, 6, 1, 1]
    assert pos[2, 1] == pytest.approx(2.1997e-6) and pos[3, 2] == -0.3
    with pytest.raises(ValueError, match="coordinates"):
        parse_qm9_geometry("['C','H']", "[[0.,0.,0.]]")


def test_qm9_sample_is_complete_and_selectable():
    recs = list(open_source("qm9-sample", target_columns=["gap", "mu"]))
    assert len(recs) == 2000 and recs[-1].row == 1999
    assert all(r.error is None and r.positions.shape == (len(r.atomic_numbers), 3) for r in recs)
    assert all(set(r.props) == {"gap", "mu"} for r in recs)
    with pytest.raises(InputFormatError, match="unknown QM9 target"):
        open_source("qm9-sample", target_columns=["logp"])


def test_esol_target_renamed_to_log_solubility():
    (first,) = open_source("esol", limit=1)
    assert first.props == {"log_solubility": -0.77}
    assert units_for("esol") == {"log_solubility": "log(mol/L)"}
    with pytest.raises(InputFormatError, match="has no target"):
        open_source("esol", target_columns=["logp"])


def test_moses_has_smiles_only():
    recs = list(open_source("moses:test", limit=3))
    assert len(recs) == 3 and all(r.props == {} and r.raw for r in recs)
    assert units_for("moses") == {}


def test_shared_datasets_env_override(tmp_path, monkeypatch):
    (tmp_path / "moleculenet").mkdir()
    (tmp_path / "moleculenet" / "esol.csv").write_text("smiles,logp\nCCO,1.5\n")
    monkeypatch.setenv("MOLGNN_SHARED_DATASETS", str(tmp_path))
    assert [(r.raw, r.props) for r in open_source("esol")] == [("CCO", {"log_solubility": 1.5})]
    assert source_files("esol") == [tmp_path / "moleculenet" / "esol.csv"]


def test_source_files_for_paths_and_urls():
    assert source_files("qm9-sample")[0].name == "qm9_sample.csv.gz"
    assert [p.name for p in source_files("qm9")] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
    assert source_files("https://example.org/x.csv") == []
    assert units_for("some/file.csv") == {}
