"""Drug-likeness on molecules with known alerts, and the generation rates on a hand-counted batch."""
from __future__ import annotations

import math

import pytest

from molgnn.chem.filters import drug_likeness, generation_rates, lipinski_violations
from molgnn.chem.sample_rates import MetricWarning
from molgnn.chem.standardize import MoleculeParseError, parse_smiles

RHODANINE = "O=C1NC(=S)SC1=Cc1ccccc1"     # benzylidene rhodanine: a textbook PAINS hit
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


def test_pains_hit_and_clean_molecule():
    hit = drug_likeness(RHODANINE)
    assert any(name.startswith("ene_rhod") for name in hit["pains_alerts"])
    assert "Thiocarbonyl_group" in hit["brenk_alerts"]
    clean = drug_likeness(ASPIRIN)
    assert clean["pains_alerts"] == []
    assert clean["lipinski_violations"] == 0
    assert 0.5 < clean["qed"] < 0.6          # RDKit QED of aspirin: 0.55
    assert 1.0 <= clean["sa"] < 2.5          # simple, easily made


def test_lipinski_counts_violations():
    # C32 fatty acid: logP > 5 only; a large lipophilic peptide-like chain breaks several rules.
    assert lipinski_violations(parse_smiles("C" * 31 + "C(=O)O")) == 1
    big = "CC(C)C" + "C(=O)NC(Cc1ccccc1)" * 6 + "C(=O)O"
    assert lipinski_violations(parse_smiles(big)) >= 2


def test_sa_score_orders_simple_below_complex():
    simple = drug_likeness("CCO")["sa"]
    complex_ = drug_likeness("C[C@H]1C[C@@]2(O)[C@@H](C)C[C@H]3[C@@]4(C)CC[C@@H](O)C[C@H]4CC[C@@]32C1")["sa"]
    assert simple < complex_


def test_invalid_smiles_raises():
    with pytest.raises(MoleculeParseError):
        drug_likeness("C1CC")


def test_generation_rates_hand_counted():
    samples = ["CCO", "OCC", "C1CC", None, "", "c1ccccc1", RHODANINE, "CCN"]
    r = generation_rates(samples, training_smiles=["C(C)O", "not a smiles"])
    # valid: CCO, OCC, c1ccccc1, rhodanine, CCN = 5 of 8; unique: 4; novel: 3 (ethanol is in training)
    assert (r["n_samples"], r["n_valid"], r["n_unique"], r["n_novel"]) == (8, 5, 4, 3)
    assert r["validity"] == pytest.approx(5 / 8)
    assert r["uniqueness"] == pytest.approx(4 / 5)
    assert r["novelty"] == pytest.approx(3 / 4)
    assert r["pains_free"] == pytest.approx(3 / 4)
    assert r["lipinski_pass"] == 1.0
    qeds = [drug_likeness(s)["qed"] for s in ["CCO", "c1ccccc1", RHODANINE, "CCN"]]
    assert r["mean_qed"] == pytest.approx(sum(qeds) / 4)


def test_generation_rates_all_invalid_and_empty():
    # nothing valid: validity is 0, every rate over the valid or distinct molecules is undefined (NaN)
    with pytest.warns(MetricWarning, match="of an empty set is undefined"):
        r = generation_rates([None, "C1CC"], ["CCO"])
    assert r["validity"] == 0.0
    assert all(math.isnan(r[k]) for k in ("uniqueness", "novelty", "pains_free", "lipinski_pass", "mean_qed", "mean_sa"))
    with pytest.raises(ValueError):
        generation_rates([], ["CCO"])
