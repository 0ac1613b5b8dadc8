"""Calibrated probabilities for classification targets: Platt scaling fitted on the validation split.

An ensemble's mean probability ranks molecules well (ROC-AUC) but is often over- or under-confident:
a 0.9 need not mean 9 in 10 actives. Platt scaling (Platt 1999; Guo et al. 2017 for the
one-parameter "temperature" special case) refits ``p' = sigmoid(a * logit(p) + b)`` on held-out
labels by minimising the binary cross-entropy. With ``a > 0`` the map is increasing, so a ranking
by probability is unchanged; only the stated probabilities move. A weak ridge pull toward the
identity (``a = 1, b = 0``) keeps the fit sane on the small validation sets of assay tables, and
cross-validation on those labels picks the identity, temperature (``b = 0``) or the full map.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> truth = rng.uniform(0.05, 0.95, 2000); y = (rng.uniform(size=2000) < truth).astype(float)
>>> overconfident = 1 / (1 + np.exp(-3 * np.log(truth / (1 - truth))))
>>> cal = fit_platt(y, overconfident)
>>> round(cal["a"], 1)      # undoes the factor 3
0.3
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import optimize

from molgnn.screen.calibration import read_calibration_report

_EPS = 1e-6
RIDGE = 1e-3         # per validation molecule-equivalent pull of (a, b) toward (1, 0)
MIN_CAL = 20         # fewer labelled validation molecules (or one class only): no calibration
METHODS = ("identity", "temperature", "platt")   # simplest first: ties in cross-validation go to it
CV_FOLDS = 5


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _fit_map(z: np.ndarray, y: np.ndarray, shift: bool) -> tuple[float, float, bool]:
    """(a, b, converged) minimising the ridge-pulled BCE of ``sigmoid(a z + b)``; b stays 0 without ``shift``."""

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        # BCE with logits, stable: log(1 + e^s) - y s
        nll = np.logaddexp(0.0, s) - y * s
        g = 1 / (1 + np.exp(-s)) - y
        pull = ab - np.array([1.0, 0.0])
        return (float(nll.mean() + RIDGE * pull @ pull),
                np.array([np.mean(g * z), np.mean(g)]) + 2 * RIDGE * pull)

    res = optimize.minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                            bounds=[(1e-3, 100.0), (-20.0, 20.0) if shift else (0.0, 0.0)])
    return float(res.x[0]), float(res.x[1]), bool(res.success)


def _nll_sum(z: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    s = a * z + b
    return float((np.logaddexp(0.0, s) - y * s).sum())


def fit_platt(y_true, prob) -> dict[str, Any]:
    """``{"a", "b", "n_cal", "fitted", "method", "cv_nll"}`` from labels (NaN = missing) and ensemble
    probabilities.

    The map is chosen among ``METHODS`` by ``CV_FOLDS``-fold cross-validated BCE on these labels
    (ties go to the simpler): Platt's shift ``b`` moves every probability toward the validation
    split's base rate, which hurts where a scaffold split's test set has another; and an ensemble
    that is already calibrated is best left alone. ``fitted`` is false (identity map) with fewer than
    ``MIN_CAL`` labelled molecules or one class only: too little to choose, and saying so beats a fit
    to noise."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    ok = ~(np.isnan(y) | np.isnan(p))
    y, z = y[ok], _logit(p[ok])
    n = int(len(y))
    if n < MIN_CAL or y.min() == y.max():
        return {"a": 1.0, "b": 0.0, "n_cal": n, "fitted": False}
    fold = np.random.default_rng(0).permutation(n) % CV_FOLDS
    cv = dict.fromkeys(METHODS, 0.0)
    for k in range(CV_FOLDS):
        tr, te = fold != k, fold == k
        cv["identity"] += _nll_sum(z[te], y[te], 1.0, 0.0)
        for method, shift in (("temperature", False), ("platt", True)):
            a, b, _ = _fit_map(z[tr], y[tr], shift)
            cv[method] += _nll_sum(z[te], y[te], a, b)
    method = min(METHODS, key=lambda m: (round(cv[m], 9), METHODS.index(m)))
    a, b, converged = (1.0, 0.0, True) if method == "identity" else _fit_map(z, y, method == "platt")
    return {"a": a, "b": b, "n_cal": n, "fitted": converged, "method": method,
            "cv_nll": {m: v / n for m, v in cv.items()}}


def apply_platt(prob, platt: Mapping[str, Any]) -> np.ndarray:
    """Calibrated probabilities (NaN stays NaN)."""
    p = np.asarray(prob, dtype=float)
    out = 1 / (1 + np.exp(-(float(platt["a"]) * _logit(p) + float(platt["b"]))))
    return np.where(np.isnan(p), math.nan, out)


def load_platt(path) -> dict[str, dict[str, Any]]:
    """``{target: platt}`` for the classification targets of a ``calibration.json`` whose Platt map
    was fitted (regression entries, and reports from before Platt scaling, give nothing)."""
    out = {}
    for target, rep in read_calibration_report(path).items():
        platt = rep.get("platt")
        if isinstance(platt, dict) and platt.get("fitted"):
            out[target] = platt
    return out


def add_calibrated_probabilities(table, platt: Mapping[str, Mapping[str, Any]]):
    """Add ``<t>_calibrated`` (the Platt-scaled ``<t>_mean``) for each target of ``platt`` in ``table``."""
    for target, p in platt.items():
        if f"{target}_mean" in table.columns:
            table[f"{target}_calibrated"] = apply_platt(table[f"{target}_mean"].astype(float), p)
    return table


def probability_report(val, test) -> dict[str, Any]:
    """One classification target's calibration report from long tables (``y_true``, ``y_pred`` =
    probability): the Platt map fitted on ``val`` and the ECE and Brier score on ``test`` before and
    after it."""
    import torch

    from molgnn.train.tasks import classification_metrics

    platt = fit_platt(val["y_true"], val["y_pred"])
    y = torch.tensor(test["y_true"].to_numpy(dtype=float))
    raw = classification_metrics(y, torch.tensor(test["y_pred"].to_numpy(dtype=float)))
    cal = classification_metrics(y, torch.tensor(apply_platt(test["y_pred"], platt)))
    return {"task_type": "classification", "platt": platt, "n_val": int(val["y_true"].notna().sum()),
            "n_test": raw["n"], "ece_raw_test": raw["ece"], "ece_calibrated_test": cal["ece"],
            "brier_raw_test": raw["brier"], "brier_calibrated_test": cal["brier"]}
