"""Applicability domain (molgnn.screen.domain) and split-conformal intervals (molgnn.screen.calibration):
a model trained on tiny H/C/N/O molecules flags S/Cl, larger and radical molecules with their reasons
and ranks them last; the similarity threshold comes from the training set; conformal intervals cover
about 90 % of exchangeable data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from molgnn.config import ModelConfig
from molgnn.models.property_model import PropertyModel
from molgnn.screen.calibration import (add_conformal_intervals, conformal_coverage, fit_conformal,
                                       load_conformal)
from molgnn.screen.domain import DOMAIN_FILE, domain_summary, fit_domain, load_domain
from molgnn.screen.screening import screen_file
from molgnn.train.checkpoints import checkpoint_from_model

TRAIN = ["C", "CC", "CCO", "CCN", "CCC", "CCCO", "CC(C)O", "OCCO", "CC=O", "CC#N", "CCOC", "NCCO",
         "CC(=O)O", "C1CC1", "C1CCC1", "CC(C)C", "OC=O", "COC", "CCCN", "CC(N)C=O", "OCC=O", "CNC",
         "CC(C)(C)O", "C1CCOC1", "NC(=O)CO", "CCOC(C)=O"]   # H/C/N/O only, at most 6 heavy atoms


@pytest.fixture(scope="module")
def domain():
    return fit_domain(TRAIN, percentile=5.0)


def test_training_set_facts(domain):
    assert domain.elements == ["C", "N", "O"]
    assert (domain.heavy_atoms_min, domain.heavy_atoms_max) == (1, 6)
    assert not domain.radicals_seen and not domain.charged_seen
    assert domain.n_train == domain.n_reference == len(TRAIN)


def test_threshold_is_a_percentile_of_leave_one_out_similarities_computed_by_rdkit(domain):
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in TRAIN]
    loo = [max(DataStructs.BulkTanimotoSimilarity(fp, fps[:i] + fps[i + 1:])) for i, fp in enumerate(fps)]
    assert domain.similarity_threshold == pytest.approx(np.percentile(loo, 5.0), abs=1e-6)
    assert fit_domain(TRAIN, percentile=50.0).similarity_threshold == pytest.approx(np.median(loo), abs=1e-6)
    # a training molecule is by construction at similarity 1 to itself, so always inside
    assert all(ok for ok, _ in domain.check(TRAIN))


def test_reasons(domain):
    verdicts = dict(zip(["CCO", "CCS", "ClCCCCCCCCCCCCCl", "[CH3]", "C[NH3+]"],
                        domain.check(["CCO", "CCS", "ClCCCCCCCCCCCCCl", "[CH3]", "C[NH3+]"])))
    assert verdicts["CCO"] == (True, "")
    ok, why = verdicts["CCS"]
    assert not ok and "elements not seen in training: S" in why
    ok, why = verdicts["ClCCCCCCCCCCCCCl"]
    assert not ok and "elements not seen in training: Cl" in why and "14 heavy atoms > training max 6" in why
    assert "nearest training similarity" in why and f"< {domain.similarity_threshold:.2f}" in why
    ok, why = verdicts["[CH3]"]
    assert not ok and "radical" in why and "elements" not in why
    ok, why = verdicts["C[NH3+]"]
    assert not ok and "charged" in why


def test_save_load_round_trip(domain, tmp_path):
    json_path, fps_path = domain.save(tmp_path / DOMAIN_FILE)
    assert fps_path.stat().st_size < 2048 // 8 * len(TRAIN) + 200   # packed bits
    back = load_domain(json_path)
    assert back.similarity_threshold == domain.similarity_threshold
    assert (back.reference_fps == domain.reference_fps).all()
    probe = ["CCS", "CCCCCCCCCC", "CCO"]
    assert back.check(probe) == domain.check(probe)


def _member(seed: int) -> dict:
    torch.manual_seed(seed)
    model = PropertyModel(ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0), ["y"])
    model.set_target_stats(torch.tensor([0.0]), torch.tensor([1.0]))
    return checkpoint_from_model(model, seed=seed)


LIBRARY = ["CCO", "CCCN", "OCC=O", "CCS", "ClCC(C)O", "CCCCCCCCCCCCO", "[CH2]CO", "CC(C)N"]


@pytest.mark.parametrize("last", [True, False])
def test_screen_ranks_out_of_domain_last(domain, tmp_path, last):
    src = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": LIBRARY}).to_csv(src, index=False)
    out = tmp_path / "ranked.csv"
    res = screen_file([str(src)], out, [_member(0), _member(1)], rank_by="y", workers=1, domain=domain,
                      rank_out_of_domain_last=last)
    table = pd.read_csv(out)
    assert res.n_ranked == len(table) >= 7
    outside = table[~table["in_domain"]]
    reasons = " | ".join(outside["domain_reason"])
    for needle in ("elements not seen in training: S", "elements not seen in training: Cl",
                   "heavy atoms > training max 6", "radical"):
        assert needle in reasons
    assert table.loc[table["in_domain"], "domain_reason"].isna().all()   # empty reason when inside
    if last:
        assert table["in_domain"].is_monotonic_decreasing        # all True rows, then all False
        for part in (table[table["in_domain"]], outside):
            assert part["y_mean"].is_monotonic_decreasing
    else:
        assert table["y_mean"].is_monotonic_decreasing
    counts = domain_summary(table)
    assert counts["n_in_domain"] + counts["n_out_of_domain"] == len(table)
    assert counts["n_out_of_domain_elements"] == 2 and counts["n_out_of_domain_radical"] >= 1


def test_screen_without_domain_leaves_columns_empty(tmp_path):
    src = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": ["CCO", "CCS"]}).to_csv(src, index=False)
    out = tmp_path / "ranked.csv"
    screen_file([str(src)], out, [_member(0)], rank_by="y", workers=1)
    table = pd.read_csv(out)
    assert table["in_domain"].isna().all() and table["domain_reason"].isna().all()
    assert domain_summary(table) == {}


def test_conformal_coverage_on_exchangeable_data():
    rng = np.random.default_rng(0)
    covs = []
    for rep in range(20):
        n = 2000
        sd = rng.uniform(0.2, 2.0, n)
        mu = rng.normal(0, 1, n)
        y = mu + rng.normal(0, 1.7 * sd)   # ensemble over-confident by 1.7x: conformal must widen
        conf = fit_conformal(y[:1000], mu[:1000], sd[:1000], level=0.9)
        assert conf["normalized"] and conf["q"] == pytest.approx(1.7 * 1.645, rel=0.1)
        cov, width = conformal_coverage(y[1000:], mu[1000:], sd[1000:], conf)
        covs.append(cov)
        assert 0.86 <= cov <= 0.94 and width > 0
    assert np.mean(covs) == pytest.approx(0.9, abs=0.01)


def test_conformal_without_spread_uses_absolute_residuals():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 2000)
    conf = fit_conformal(y[:1000], np.zeros(1000), np.zeros(1000))
    assert not conf["normalized"] and conf["q"] == pytest.approx(1.645, rel=0.1)
    cov, width = conformal_coverage(y[1000:], np.zeros(1000), np.zeros(1000), conf)
    assert abs(cov - 0.9) < 0.03 and width == pytest.approx(2 * conf["q"])
    tiny = fit_conformal([1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    assert tiny["q"] == np.inf and conformal_coverage([5.0], [0.0], [1.0], tiny) == (1.0, np.inf)   # too few points


def test_conformal_columns_from_calibration_json(tmp_path):
    import json

    conf = fit_conformal([1.0, -2.0, 3.0, 0.5] * 5, [0.0] * 20, [1.0] * 20)
    (tmp_path / "calibration.json").write_text(json.dumps({"y": {"scale": 1.2, "conformal90": conf},
                                                          "old": {"scale": 1.0}}))
    loaded = load_conformal(tmp_path / "calibration.json")
    assert list(loaded) == ["y"]
    table = add_conformal_intervals(pd.DataFrame({"y_mean": [0.0, 1.0], "y_std": [1.0, 2.0]}), loaded)
    np.testing.assert_allclose(table["y_high90"] - table["y_low90"], [2 * conf["q"], 4 * conf["q"]])
