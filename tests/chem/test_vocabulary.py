"""One chemistry vocabulary: one property registry, one SA-score loader, one canonicaliser and one
definition of validity / uniqueness / novelty, shared by filtering, guidance, metrics and the report."""
from __future__ import annotations

import doctest
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import QED, Crippen, Descriptors

import molgnn
from molgnn.chem import canonical, properties, sample_rates
from molgnn.chem.filters import drug_likeness, generation_rates
from molgnn.chem.properties import MOSES_PROPERTIES, PROPERTIES, compute_properties, get_property, sa_scorer
from molgnn.chem.sample_rates import MetricWarning

BATCH = ["CCO", "OCC", "C1CC", None, "", "c1ccccc1", "CCN", "CC(=O)Nc1ccc(O)cc1"]
TRAINING = ["C(C)O", "not a smiles", "NCC"]


def test_registry_values_are_the_rdkit_functions():
    mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
    values = compute_properties(mol)
    assert list(values) == ["qed", "sa", "logp", "mol_weight", "heavy_atoms"]
    assert values["qed"] == QED.qed(mol) and values["logp"] == Crippen.MolLogP(mol)
    assert values["mol_weight"] == Descriptors.MolWt(mol) and values["heavy_atoms"] == 11
    assert values["sa"] == sa_scorer().calculateScore(mol) and 1 <= values["sa"] <= 10
    assert sa_scorer() is sa_scorer(), "the SA_Score contribution is loaded once"
    with pytest.raises(KeyError, match="unknown molecular property 'homo'; known: .*'qed'"):
        get_property("homo")


def test_every_consumer_uses_the_registry_names():
    from molgnn.generate.guidance import property_values
    from molgnn.generate.metrics_chem import PROPERTY_NAMES, molecular_properties
    from molgnn.report.plots import PROPERTY_LABELS
    from molgnn.report.properties import PROPERTY_COLUMNS, molecule_properties

    assert PROPERTY_COLUMNS == list(PROPERTY_LABELS) == list(PROPERTIES)
    assert PROPERTY_NAMES == ("logP", "SA", "QED", "weight")   # MOSES's published keys, in its order
    smi = "c1ccccc1O"
    mol = Chem.MolFromSmiles(smi)
    report_row = molecule_properties([smi]).iloc[0]
    moses = dict(zip(MOSES_PROPERTIES, molecular_properties(smi)))
    liking = drug_likeness(smi)
    for name in PROPERTIES:
        expected = get_property(name).compute(mol)
        assert report_row[name] == pytest.approx(expected), name
        assert property_values([smi], name)[0] == pytest.approx(expected), name
        if name in moses:
            assert moses[name] == pytest.approx(expected), name
        if name in liking:
            assert liking[name] == pytest.approx(expected), name


def test_one_sa_loader_and_one_canonicaliser_in_the_source():
    """A second SA_Score loader or a private canonicaliser would fork the vocabulary again."""
    root = Path(molgnn.__file__).parent
    sources = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.py")}
    assert [p for p, s in sources.items() if "RDContribDir" in s] == ["chem/properties.py"]
    for stale in ('"sa_score"', '"mol_wt"', "'sa_score'", "'mol_wt'"):   # the old column names
        assert [p for p, s in sources.items() if stale in s] == [], stale
    # canonical SMILES for comparing molecules come from chem/canonical.py; others write SMILES of
    # fragments, scaffolds or standardized parents, which is a different job
    canonicalisers = [p for p, s in sources.items()
                      if re.search(r"def \w*canonical\w*\(", s) and p != "chem/canonical.py"]
    assert canonicalisers == []


def test_filter_rates_and_metrics_share_validity_uniqueness_novelty():
    from molgnn.generate.metrics import fraction_unique, fraction_valid, moses_metrics, novelty
    from molgnn.stages.filter import apply_filters

    rates = generation_rates(BATCH, TRAINING)
    assert (rates["n_valid"], rates["n_unique"], rates["n_novel"]) == (5, 4, 2)
    assert rates["validity"] == fraction_valid(BATCH) == 5 / 8
    valid = [canonical.canonical_smiles(s) for s in BATCH if canonical.canonical_smiles(s)]
    assert rates["uniqueness"] == fraction_unique(valid) == 4 / 5
    assert rates["novelty"] == novelty(BATCH, TRAINING) == 2 / 4
    m = moses_metrics(BATCH, test=None, train=TRAINING, metrics=["Novelty"], ks=())
    assert (m["valid"], m["Novelty"]) == (5 / 8, 2 / 4)

    cfg = SimpleNamespace(min_qed=0.0, max_sa=10.0, max_lipinski_violations=5, require_unique=True,
                          require_novel=True, reject_pains=False)
    samples = pd.DataFrame({"generator": "vae", "sample": range(len(BATCH)), "smiles": BATCH})
    training = {canonical.canonical_smiles(s) for s in TRAINING}
    kept, rejected, _ = apply_filters(samples, training, cfg)
    assert kept["smiles"].tolist() == ["c1ccccc1", "CC(=O)Nc1ccc(O)cc1"]   # valid, unique and novel
    assert list(kept.columns[4:6]) == ["qed", "sa"]                         # registry names as columns
    assert rejected["stage"].value_counts().to_dict() == {"validity": 3, "uniqueness": 1, "novelty": 2}


def test_rates_over_an_empty_set_are_undefined_everywhere():
    from molgnn.generate.metrics import fraction_unique, moses_metrics, novelty

    nothing_valid = [None, "C1CC"]
    with pytest.warns(MetricWarning):
        rates = generation_rates(nothing_valid, TRAINING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        m = moses_metrics(nothing_valid, test=None, train=TRAINING, metrics=["Novelty"], ks=())
        assert math.isnan(novelty(nothing_valid, TRAINING)) and math.isnan(fraction_unique([]))
    assert rates["validity"] == m["valid"] == 0.0
    assert math.isnan(rates["novelty"]) and math.isnan(m["Novelty"]) and math.isnan(rates["uniqueness"])
    with pytest.raises(ValueError, match="at least one"):
        sample_rates.validity([])


@pytest.mark.parametrize("module", [canonical, properties, sample_rates])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0


def test_generator_samples_are_rated_by_the_same_definitions():
    from molgnn.generate.sampling import SampleResult

    res = SampleResult(smiles=["CCO", "CCO", None, "c1ccccc1"], reasons=["ok", "ok", "radical", "ok"],
                       corrected_smiles=["CCO", "CCO", "CC", "c1ccccc1"], seconds=1.0, molecules_per_second=4.0)
    assert (res.validity, res.validity_corrected, res.uniqueness) == (0.75, 1.0, 2 / 3)
    nothing = SampleResult(smiles=[None], reasons=["radical"], corrected_smiles=[None], seconds=1.0,
                           molecules_per_second=1.0)
    with pytest.warns(MetricWarning):
        assert nothing.validity == 0.0 and math.isnan(nothing.uniqueness)
