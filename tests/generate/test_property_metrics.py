"""MOSES property distances (Wasserstein-1 of logP, SA, QED, weight)."""
import numpy as np
import pytest
from rdkit.Chem import QED, Crippen, Descriptors, MolFromSmiles

from molgnn.generate.metrics import property_distances, property_values, wasserstein_1d

SET_A = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "O=C(O)c1ccccc1O"]


def test_wasserstein_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=50), rng.normal(0.5, 2.0, size=80)
    assert wasserstein_1d(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)
    assert wasserstein_1d([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert np.isnan(wasserstein_1d([], [1.0]))


def test_property_values_are_the_rdkit_descriptors(tmp_path):
    vals = property_values(SET_A + [None, "not-a-smiles"], cache_dir=tmp_path)
    assert {k: len(v) for k, v in vals.items()} == {"logP": 5, "SA": 5, "QED": 5, "weight": 5}
    mol = MolFromSmiles("CC(=O)Nc1ccc(O)cc1")   # paracetamol
    assert vals["weight"][2] == pytest.approx(Descriptors.MolWt(mol))
    assert vals["logP"][2] == pytest.approx(Crippen.MolLogP(mol))
    assert vals["QED"][2] == pytest.approx(QED.qed(mol))
    assert 1.0 <= vals["SA"].min() and vals["SA"].max() <= 10.0
    assert vals["SA"][1] < 2.0            # benzene: trivially accessible
    cached = property_values(SET_A + [None, "not-a-smiles"], cache_dir=tmp_path)
    assert all(np.array_equal(vals[k], cached[k]) for k in vals) and len(list(tmp_path.iterdir())) == 1


def test_property_distances():
    same = property_distances(SET_A + [None], SET_A)
    assert same == {"logP": 0.0, "SA": 0.0, "QED": 0.0, "weight": 0.0}
    heavier = property_distances(["CCCCCCCCCCCCCCCC", "c1ccc2ccccc2c1"], SET_A)
    assert all(v > 0 for v in heavier.values())
    ref = property_values(SET_A)
    assert property_distances(["CCCCCCCCCCCCCCCC"], ref) == property_distances(["CCCCCCCCCCCCCCCC"], SET_A)
