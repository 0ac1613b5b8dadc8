from __future__ import annotations

import pytest

from molgnn.chem.scaffolds import murcko_scaffold, murcko_scaffolds
from molgnn.chem.standardize import MoleculeParseError


def test_scaffolds_of_known_molecules():
    assert murcko_scaffold("CC(=O)Nc1ccc(O)cc1") == "c1ccccc1"          # paracetamol
    assert murcko_scaffold("c1ccc(CCC2CCCCC2)nc1") == "c1ccc(CCC2CCCCC2)nc1"
    assert murcko_scaffold("CCO") == ""                                 # acyclic
    assert murcko_scaffolds(["Cc1ccccc1", "CCc1ccccc1", "CCCC"]) == ["c1ccccc1", "c1ccccc1", ""]


def test_unparsable_smiles_raise():
    with pytest.raises(MoleculeParseError):
        murcko_scaffold("C1CC")
