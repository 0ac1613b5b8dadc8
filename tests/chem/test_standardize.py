"""Standardization: the parent molecule, and a stage + reason for every kind of bad input."""
from __future__ import annotations

import pytest
from rdkit import Chem

from molgnn.chem.standardize import (ORGANIC_ELEMENTS, MoleculeParseError, Rejection, Standardized,
                                     parse_smiles, standardize, standardize_mol_block)


def test_equivalent_spellings_give_one_parent():
    a, b = standardize("c1ccccc1O"), standardize("Oc1ccccc1")
    assert isinstance(a, Standardized) and isinstance(b, Standardized)
    assert a.smiles == b.smiles == "Oc1ccccc1"
    assert a.inchikey == b.inchikey == "ISWSIDIOOBJBQZ-UHFFFAOYSA-N"


@pytest.mark.parametrize("salt, parent", [
    ("CC(=O)[O-].[Na+]", "CC(=O)O"),           # counter-ion stripped, then neutralized
    ("C[NH3+].[Cl-]", "CN"),
    ("[NH3+]CC(=O)[O-]", "NCC(=O)O"),          # zwitterion neutralized
    ("CCO.O", "CCO"),                          # hydrate water dropped
])
def test_salts_and_charges_standardize_to_the_neutral_parent(salt, parent):
    out = standardize(salt)
    assert isinstance(out, Standardized)
    assert out.smiles == parent


def test_quaternary_ammonium_keeps_its_charge():
    out = standardize("C[N+](C)(C)C")
    assert isinstance(out, Standardized) and out.smiles == "C[N+](C)(C)C"


@pytest.mark.parametrize("raw, stage, fragment", [
    ("", "parse", "empty input"),
    ("   ", "parse", "empty input"),
    ("C1CC", "parse", "unclosed ring"),
    ("CCO junk", "parse", "whitespace"),
    ("CC\x00O", "parse", "control characters"),
    ("C\u00e9C", "parse", "non-ASCII"),
    ("not_a_smiles!", "parse", "SMILES Parse Error"),
    ("C(C)(C)(C)(C)C", "sanitize", "Explicit valence for atom # 0 C, 5"),
    ("c1cccc1", "sanitize", "kekulize"),
    ("[Na+].[Cl-]", "fragment", "no organic fragment"),
    ("[Pt](N)(N)(Cl)Cl", "elements", "Pt"),
    ("[Fe]", "elements", "Fe"),
    ("*C", "elements", "*"),
    ("C" * 51, "size", "51 heavy atoms > max_heavy_atoms=50"),
])
def test_rejections_carry_stage_and_reason(raw, stage, fragment):
    out = standardize(raw, max_heavy_atoms=50)
    assert isinstance(out, Rejection), out
    assert out.stage == stage
    assert fragment in out.reason


def test_size_limit_is_inclusive():
    assert isinstance(standardize("C" * 50, max_heavy_atoms=50), Standardized)


def test_allow_list_elements_pass():
    assert ORGANIC_ELEMENTS == {"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"}
    out = standardize("C[Si](C)(C)c1ccc(Br)c(I)c1[Se]C")
    assert isinstance(out, Standardized)


def test_rdkit_messages_do_not_reach_stderr(capfd):
    standardize("C1CC")
    standardize("C(C)(C)(C)(C)C")
    assert capfd.readouterr().err == ""


def test_mol_block_input_and_garbage_block():
    block = Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CC(=O)[O-].[Na+]")))
    out = standardize_mol_block(block)
    assert isinstance(out, Standardized) and out.smiles == "CC(=O)O"
    bad = standardize_mol_block("title\nnot a\nmol block\nM  END\n")
    assert isinstance(bad, Rejection) and bad.stage == "parse"


def test_parse_smiles_raises_a_specific_error():
    assert parse_smiles("CCO").GetNumAtoms() == 3
    with pytest.raises(MoleculeParseError, match="C1CC"):
        parse_smiles("C1CC")
