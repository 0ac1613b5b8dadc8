"""Generation metrics (MOSES set) on small hand-checkable sets."""
from __future__ import annotations

import doctest
import gzip
import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from molgnn.generate import metrics, metrics_chem, metrics_fcd
from molgnn.generate.metrics import (
    MetricWarning,
    ReferenceStats,
    cosine_similarity,
    fcd,
    fraction_passes_filters,
    fraction_unique,
    fraction_valid,
    fragment_similarity,
    internal_diversity,
    mlflow_safe,
    moses_metrics,
    novelty,
    reference_stats,
    scaffold_similarity,
    snn,
)
from molgnn.generate.metrics_chem import element_signature, get_mol, murcko_scaffold, passes_filters
from molgnn.generate.metrics_filters import FILTER_SMARTS_SHA256, MCF_SMARTS, PAINS_SMARTS

# Drug-like molecules (MOSES style), most with >= 2 rings so that Scaf is defined.
DRUGS = [
    "CC(=O)Nc1ccc(O)cc1", "COc1ccc2[nH]cc(CCN)c2c1", "O=C(Nc1ccccc1)c1ccncc1", "Cc1ccc(S(N)(=O)=O)cc1",
    "CN1CCN(c2ccc(F)cc2)CC1", "O=C1CCc2ccccc2N1", "c1ccc(-c2ccncc2)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "COc1cc2c(cc1OC)CCN(C)C2", "Clc1ccc2c(c1)C(c1ccccc1)=NCC(=O)N2", "O=C(O)c1ccccc1O", "CCOC(=O)c1ccc(N)cc1",
    "Cc1nc2ccccc2n1Cc1ccccc1", "O=S(=O)(Nc1ccccn1)c1ccc(N)cc1", "CN(C)CCCN1c2ccccc2CCc2ccccc21",
    "O=C(c1ccccc1)N1CCCC1", "Fc1ccc(C2CCNCC2)cc1", "c1ccc2c(c1)ccc1ccccc12", "CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O",
    "COc1ccc(CCN2CCC(O)CC2)cc1", "Oc1ccc(-c2nc3ccccc3o2)cc1", "CC(=O)N1CCN(c2ccc(O)cc2)CC1",
    "NC(=O)c1cccnc1", "O=C1NC(=O)C(c2ccccc2)(c2ccccc2)N1", "Cc1ccccc1NC(=O)C1CC1", "Brc1ccc2nc(N)sc2c1",
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """One BLAS thread too (torch has one already, tests/conftest.py): the tiny matrices here gain
    nothing from two, and on a CPU shared with other jobs spinning threads make these tests ten times
    slower."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1)
    except ImportError:  # optional
        limits = contextlib.nullcontext()
    with limits:
        yield


def tanimoto(a: str, b: str) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return DataStructs.TanimotoSimilarity(gen.GetFingerprint(Chem.MolFromSmiles(a)),
                                          gen.GetFingerprint(Chem.MolFromSmiles(b)))


def moses_sample(split: str, n: int) -> list[str]:
    path = Path("/work/shared/datasets/moses") / f"{split}.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with gzip.open(path, "rt") as fh:
        next(fh)
        return [next(fh).strip() for _ in range(n)]


# --- validity, uniqueness, novelty -------------------------------------------------------------

def test_validity_counts_none_empty_and_unparsable_as_invalid():
    gen = ["CCO", None, "", "C1CC", "c1cccc1", "CC.O", "c1ccccc1"]
    assert fraction_valid(gen) == pytest.approx(3 / 7)
    assert fraction_valid(gen, single_fragment=True) == pytest.approx(2 / 7)
    with pytest.raises(ValueError):
        fraction_valid([])


def test_unique_at_k_warns_when_fewer_than_k_and_rejects_invalid():
    smiles = ["CCO", "OCC", "C(C)O", "CCN", "c1ccccc1"]
    assert fraction_unique(smiles, k=3) == pytest.approx(1 / 3)  # three spellings of ethanol
    assert fraction_unique(smiles) == pytest.approx(3 / 5)
    with pytest.warns(MetricWarning, match="unique@1000"):
        assert fraction_unique(smiles, k=1000) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        fraction_unique(["CCO", "C1CC"])


def test_novelty_matches_canonical_forms_and_ignores_invalid():
    # "C(O)C" is ethanol written non-canonically: found only through the signature path.
    assert novelty(["CCO", "OCC", "CCN", None, "xx"], train=["C(O)C", None, "c1ccccc1"]) == pytest.approx(0.5)
    assert novelty(["CCO"], train=["CCO"]) == 0.0
    assert novelty(["CCCl"], train=["CCBr", "CCO"]) == 1.0
    with pytest.warns(MetricWarning):
        assert math.isnan(novelty([None, "C1CC"], train=["CCO"]))


def test_element_signature_is_invariant_under_rewriting():
    rng = np.random.default_rng(0)
    for smi in DRUGS + ["[13CH3][nH+]1cccc1", "C[Se]c1ccccc1", "[2H]C([2H])Cl", "[H]OC([H])=O"]:
        mol = Chem.MolFromSmiles(smi)
        canon = Chem.MolToSmiles(mol)
        assert element_signature(smi) == element_signature(canon), smi
        for _ in range(3):
            Chem.rdBase.SeedRandomNumberGenerator(int(rng.integers(1 << 30)))
            assert element_signature(Chem.MolToSmiles(mol, doRandom=True)) == element_signature(canon), smi


# --- fingerprint similarities ------------------------------------------------------------------

def test_snn_identical_sets_is_one_and_matches_rdkit_nearest_neighbour():
    assert snn(DRUGS, DRUGS) == pytest.approx(1.0)
    gen, ref = DRUGS[:8], DRUGS[8:]
    expected = np.mean([max(tanimoto(g, r) for r in ref) for g in gen])
    assert snn(gen, ref) == pytest.approx(expected, abs=1e-6)


def test_tanimoto_reduction_matches_brute_force_with_chunks():
    fps = metrics.fingerprints(DRUGS)
    brute = np.array([[tanimoto(a, b) for b in DRUGS[5:]] for a in DRUGS])
    got_max = metrics._tanimoto_reduce(fps, fps[5:], agg="max", gen_chunk=4, ref_chunk=3)
    got = metrics._tanimoto_reduce(fps, fps[5:], agg="mean", powers=(1, 2), gen_chunk=7, ref_chunk=5)
    np.testing.assert_allclose(got_max, brute.max(1), atol=1e-6)
    np.testing.assert_allclose(got[1], brute.mean(1), atol=1e-6)
    np.testing.assert_allclose(got[2], (brute ** 2).mean(1), atol=1e-6)


def test_two_empty_fingerprints_have_similarity_one():
    empty = np.zeros((2, 1024), dtype=np.uint8)
    assert snn(empty, empty) == 1.0


def test_internal_diversity_hand_checked():
    assert internal_diversity(["CC(=O)Nc1ccc(O)cc1"] * 4) == pytest.approx(0.0, abs=1e-7)
    assert internal_diversity(["CC(=O)Nc1ccc(O)cc1"] * 4, p=2) == pytest.approx(0.0, abs=1e-7)
    a, b = DRUGS[0], DRUGS[1]
    t = tanimoto(a, b)
    # all 4 ordered pairs: T(a,a) = T(b,b) = 1, T(a,b) = T(b,a) = t
    assert internal_diversity([a, b]) == pytest.approx(1 - (1 + t) / 2, abs=1e-6)
    assert internal_diversity([a, b], p=2) == pytest.approx(1 - math.sqrt((1 + t * t) / 2), abs=1e-6)


# --- Frag, Scaf, filters -----------------------------------------------------------------------

def test_fragment_and_scaffold_similarity_hand_checked():
    assert fragment_similarity(DRUGS, DRUGS) == pytest.approx(1.0)
    assert scaffold_similarity(DRUGS, DRUGS) == pytest.approx(1.0)
    assert fragment_similarity(DRUGS[:3], DRUGS[:3] * 2) == pytest.approx(1.0)  # proportional counts
    assert cosine_similarity({"a": 1, "b": 1}, {"a": 1}) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(cosine_similarity({}, {"a": 1}))
    # One-ring molecules have no scaffold under MOSES's min_rings=2: Scaf undefined.
    assert murcko_scaffold(get_mol("Cc1ccccc1")) is None
    assert math.isnan(scaffold_similarity(["Cc1ccccc1"], DRUGS))
    # scaffold of both is c1ccc(-c2ccncc2)cc1 (substituents dropped)
    assert scaffold_similarity(["Cc1ccc(-c2ccncc2)cc1"], ["c1ccc(-c2ccncc2)cc1O"]) == pytest.approx(1.0)


def test_filter_smarts_are_moses_tables():
    assert len(MCF_SMARTS) == 22 and len(PAINS_SMARTS) == 480
    joined = "\n".join(s for _, s in MCF_SMARTS + PAINS_SMARTS)
    assert hashlib.sha256(joined.encode()).hexdigest() == FILTER_SMARTS_SHA256
    assert all(Chem.MolFromSmarts(s) is not None for _, s in MCF_SMARTS + PAINS_SMARTS)


def test_filter_smarts_resource_is_unchanged_and_checked_on_load():
    from importlib import resources

    from molgnn.generate.metrics_filters import RESOURCE, load_filter_smarts

    data = resources.files("molgnn").joinpath("resources", RESOURCE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == "1c138756629983cdbe6226e10610a71f395919206c3b374dd140cf713f8e00d2"
    text = data.decode()
    assert len(text.splitlines()) == 1 + 22 + 480 and text.startswith("set\tname\tsmarts\n")
    edited = text.replace("MCF\tMCF1\t[#6]=&!@[#6]-[#6]#[#7]", "MCF\tMCF1\t[#6]=&!@[#6]-[#6]#[#8]")
    with pytest.raises(ValueError, match="SMARTS sha256 .* expected MOSES's"):
        load_filter_smarts(edited)
    with pytest.raises(ValueError, match="line 2: expected set in"):
        load_filter_smarts(text.replace("MCF\tMCF1\t", "XYZ\tMCF1\t", 1))


@pytest.mark.parametrize("smiles, ok", [
    ("CC(=O)Nc1ccc(O)cc1", True),
    ("C[N+](C)(C)C", False),           # charge
    ("CP(C)(C)=O", False),             # P not allowed
    ("C1CCCCCCC1", False),             # 8-membered ring
    ("C1CCCCCC1", True),               # 7-membered ring is fine
    ("CCC=O", False),                  # MCF: aldehyde
    ("CN=NC", False),                  # MCF: azo
    ("O=C1NC(=S)SC1=Cc1ccccc1", False),  # PAINS: ene_rhod_A
    ("Ic1ccccc1", False),              # I not allowed
])
def test_passes_filters_rules(smiles, ok):
    assert passes_filters(get_mol(smiles)) is ok


def test_moses_training_molecules_pass_filters():
    assert fraction_passes_filters(moses_sample("train", 300)) == 1.0


# --- FCD ---------------------------------------------------------------------------------------

def test_chemnet_weights_are_the_pinned_ones_and_load_offline():
    model = metrics_fcd.load_chemnet()
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    with metrics_fcd._weights_path().open("rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == metrics_fcd.CHEMNET_SHA256


def test_chemnet_encoding_matches_fcd_torch():
    from fcd_torch.utils import get_one_hot

    for smi in DRUGS + ["C" * 400, "Cl[Si](C)(C)Br", "CC.O", "C[Li]"]:
        ids = metrics_fcd.chemnet_tokens(smi)
        mine = np.zeros((350, 35))
        mine[np.arange(len(ids)), ids] = 1
        np.testing.assert_array_equal(mine, get_one_hot(smi, 350))


def test_fcd_identical_sets_is_zero_and_different_sets_positive():
    assert abs(fcd(DRUGS, DRUGS)) < 1e-6
    assert abs(fcd(DRUGS, DRUGS[::-1])) < 1e-6
    assert fcd(DRUGS[:13], DRUGS[13:]) > 1.0
    with pytest.warns(MetricWarning):
        assert math.isnan(fcd(["CCO"], DRUGS))


def test_frechet_distance_matches_sqrtm_formula():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) * 2
    s1, s2 = a.T @ a / 40, b.T @ b / 40
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real)
    assert metrics_fcd.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


# --- everything at once, caching, parallel path ------------------------------------------------

def test_moses_metrics_identical_sets_and_invalid_entries():
    gen = DRUGS + [None, "C1CC", ""]
    with pytest.warns(MetricWarning, match="unique@1000"):
        m = moses_metrics(gen, test=DRUGS, test_scaffolds=DRUGS[::-1], train=DRUGS[:13],
                          corrected=DRUGS + ["CC", None, "CCO"], ks=(10, 1000))
    assert m["n_generated"] == len(gen) and m["n_valid"] == len(DRUGS)
    assert m["valid"] == pytest.approx(len(DRUGS) / len(gen))
    assert m["valid_corrected"] == pytest.approx((len(DRUGS) + 2) / len(gen))
    assert m["unique@10"] == 1.0 and m["unique@1000"] == 1.0
    assert m["Novelty"] == pytest.approx(13 / 26)
    for ref in ("Test", "TestSF"):
        assert m[f"SNN/{ref}"] == pytest.approx(1.0)
        assert m[f"Frag/{ref}"] == pytest.approx(1.0)
        assert m[f"Scaf/{ref}"] == pytest.approx(1.0)
        assert abs(m[f"FCD/{ref}"]) < 1e-6
    assert 0.8 < m["IntDiv"] < 1.0 and m["IntDiv2"] < m["IntDiv"]
    assert m["IntDiv"] == pytest.approx(internal_diversity(DRUGS), abs=1e-9)
    assert m["Filters"] == pytest.approx(fraction_passes_filters(DRUGS))


def test_moses_metrics_without_valid_molecules_is_nan_not_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        m = moses_metrics([None, "C1CC"], test=DRUGS, metrics=["SNN", "Frag", "IntDiv", "Filters"], ks=(10,))
    assert m["valid"] == 0.0
    assert all(math.isnan(m[k]) for k in ("unique@10", "SNN/Test", "Frag/Test", "IntDiv", "Filters"))


def test_reference_stats_cache_roundtrip(tmp_path, monkeypatch):
    first = reference_stats(DRUGS, cache_dir=tmp_path)
    files = list(tmp_path.glob("moses-ref-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(metrics, "describe_reference", lambda s: pytest.fail("cache not used"))
    again = reference_stats(DRUGS, cache_dir=tmp_path)
    assert isinstance(again, ReferenceStats) and again.n == first.n == len(DRUGS)
    np.testing.assert_array_equal(again.fingerprints, first.fingerprints)
    np.testing.assert_allclose(again.fcd_sigma, first.fcd_sigma)
    assert again.fragments == first.fragments and again.scaffolds == first.scaffolds
    m = moses_metrics(DRUGS, test=again, ks=())
    assert m["SNN/Test"] == pytest.approx(1.0) and abs(m["FCD/Test"]) < 1e-6


def test_parallel_path_gives_the_same_numbers(monkeypatch):
    groups = [g for g in metrics.METRIC_GROUPS if g != "FCD"]
    serial = moses_metrics(DRUGS, test=DRUGS[:10], train=DRUGS[:5], metrics=groups, ks=(5,))
    monkeypatch.setattr(metrics, "MIN_PARALLEL_ITEMS", 1)
    parallel = moses_metrics(DRUGS, test=DRUGS[:10], train=DRUGS[:5], metrics=groups, ks=(5,), n_jobs=2)
    assert parallel == serial and "FCD/Test" not in serial and serial["Novelty"] == pytest.approx(21 / 26)


def test_metric_selection():
    m = moses_metrics(DRUGS + [None], test=DRUGS, test_scaffolds=DRUGS, metrics=["Scaf"], ks=())
    assert set(m) == {"n_generated", "n_valid", "valid", "Scaf/Test", "Scaf/TestSF"}
    with pytest.raises(ValueError, match="unknown metric groups"):
        moses_metrics(DRUGS, test=DRUGS, metrics=["FCD/Test"])


def test_mlflow_safe_keys():
    assert mlflow_safe({"unique@10000": 1.0, "FCD/Test": 0.5, "x": float("nan")}) == {
        "unique_at_10000": 1.0, "FCD/Test": 0.5}


@pytest.mark.parametrize("module", [metrics, metrics_chem, metrics_fcd])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
