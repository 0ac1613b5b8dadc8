"""Platt scaling of classification probabilities: fitted on validation labels, it brings an over- or
under-confident ensemble's ECE down without changing the ranking; too little data leaves it alone."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from molgnn.screen.probability_calibration import MIN_CAL, apply_platt, fit_platt, probability_report
from molgnn.train.tasks import classification_metrics


def _overconfident(n: int, seed: int, power: float = 3.0):
    """Labels drawn from true probabilities, and a model that states them ``power`` x too sharply."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < truth).astype(float)
    z = np.log(truth / (1 - truth))
    return y, 1 / (1 + np.exp(-power * z - 0.8))        # too sharp and shifted toward actives


def _ece(y, p) -> float:
    return classification_metrics(torch.tensor(y), torch.tensor(p))["ece"]


def test_platt_fitted_on_validation_lowers_test_ece_and_keeps_the_ranking():
    y_val, p_val = _overconfident(400, seed=0)
    y_test, p_test = _overconfident(2000, seed=1)
    platt = fit_platt(y_val, p_val)
    assert platt["fitted"] and platt["n_cal"] == 400 and platt["a"] < 0.6 and platt["b"] < 0
    calibrated = apply_platt(p_test, platt)
    assert _ece(y_test, p_test) > 0.1
    assert _ece(y_test, calibrated) < 0.05
    assert (np.argsort(calibrated, kind="stable") == np.argsort(p_test, kind="stable")).all()


def test_a_calibrated_model_is_left_nearly_alone():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, 3000)
    y = (rng.uniform(size=3000) < p).astype(float)
    platt = fit_platt(y, p)
    assert abs(platt["a"] - 1) < 0.15 and abs(platt["b"]) < 0.15


def test_cross_validation_picks_the_simplest_map_that_holds_out_of_sample():
    y, p = _overconfident(3000, seed=3)
    assert fit_platt(y, p)["method"] == "platt"                 # too sharp and shifted: both parameters
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.05, 0.95, 3000)
    y = (rng.uniform(size=3000) < truth).astype(float)
    sharp = 1 / (1 + np.exp(-3 * np.log(truth / (1 - truth))))
    temp = fit_platt(y, sharp)
    assert temp["method"] == "temperature" and temp["b"] == 0 and temp["a"] < 0.5
    ident = fit_platt(y, truth)
    assert ident["method"] == "identity" and (ident["a"], ident["b"]) == (1.0, 0.0) and ident["fitted"]
    assert ident["cv_nll"]["identity"] <= min(ident["cv_nll"].values())


def test_too_few_labels_or_one_class_give_the_identity_and_missing_labels_are_skipped():
    assert fit_platt(np.ones(50), np.linspace(0.1, 0.9, 50))["fitted"] is False          # one class
    few = fit_platt([0.0, 1.0] * (MIN_CAL // 2 - 1), [0.2, 0.8] * (MIN_CAL // 2 - 1))
    assert few == {"a": 1.0, "b": 0.0, "n_cal": MIN_CAL - 2, "fitted": False}
    np.testing.assert_allclose(apply_platt([0.1, 0.7], few), [0.1, 0.7])
    y, p = _overconfident(200, seed=3)
    y[::4] = np.nan                                                                     # missing labels
    assert fit_platt(y, p)["n_cal"] == 150
    assert np.isnan(apply_platt([np.nan, 0.5], few)[0])


def test_the_stage_report_states_ece_before_and_after():
    y_val, p_val = _overconfident(300, seed=4)
    y_test, p_test = _overconfident(500, seed=5)
    y_test[:40] = np.nan
    frame = lambda y, p: pd.DataFrame({"mol_id": [f"m{i}" for i in range(len(y))], "target": "toxic",  # noqa: E731
                                       "y_true": y, "y_pred": p, "y_std": 0.05})
    rep = probability_report(frame(y_val, p_val), frame(y_test, p_test))
    assert rep["task_type"] == "classification" and rep["n_val"] == 300 and rep["n_test"] == 460
    assert rep["platt"]["fitted"]
    assert rep["ece_calibrated_test"] < rep["ece_raw_test"] and rep["ece_calibrated_test"] < 0.06
    assert rep["brier_calibrated_test"] < rep["brier_raw_test"]
