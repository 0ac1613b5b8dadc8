import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest

from molgnn.screen import calibration as cal


def _gaussian(n, seed, true_scale=1.0):
    rng = np.random.default_rng(seed)
    sd = rng.uniform(0.2, 2.0, n)
    mu = rng.normal(0, 3, n)
    y = mu + rng.normal(0, true_scale * sd)
    return y, mu, sd


def test_doctests():
    assert doctest.testmod(cal).failed == 0


def test_calibrated_gaussian_noise_has_nominal_coverage_and_unit_scale():
    y, mu, sd = _gaussian(20000, 0)
    assert cal.fit_std_scale(y, mu, sd) == pytest.approx(1.0, abs=0.02)
    for p, c in cal.coverage(y, mu, sd).items():
        assert c == pytest.approx(p, abs=0.015)
    assert cal.miscalibration_area(y, mu, sd) < 0.01
    # informative spread: errors grow with sigma
    assert cal.spearman_error_std(y, mu, sd) > 0.2
    top, bottom = cal.mae_by_uncertainty(y, mu, sd)
    assert top > 3 * bottom


def test_overconfident_spread_is_recalibrated_on_validation():
    y, mu, sd = _gaussian(20000, 1, true_scale=3.0)
    r = cal.calibration_report((y[:10000], mu[:10000], sd[:10000]), val=(y[10000:], mu[10000:], sd[10000:]))
    assert r["scale"] == pytest.approx(3.0, rel=0.03)
    assert r["coverage_raw"]["0.95"] < 0.6
    assert r["coverage_recal"]["0.95"] == pytest.approx(0.95, abs=0.015)
    assert r["miscalibration_area_recal"] < 0.01 < r["miscalibration_area_raw"]
    assert r["nll_recal"] < r["nll_raw"]


def test_uncorrelated_spread_has_zero_spearman():
    rng = np.random.default_rng(2)
    n = 20000
    mu = np.zeros(n)
    y = rng.normal(0, 1, n)
    sd = rng.uniform(0.5, 1.5, n)  # independent of the error
    assert abs(cal.spearman_error_std(y, mu, sd)) < 0.03
    top, bottom = cal.mae_by_uncertainty(y, mu, sd)
    assert top == pytest.approx(bottom, rel=0.15)


def test_nan_entries_dropped_and_degenerate_cases():
    assert math.isnan(cal.spearman_error_std([1, 2], [0, 0], [1, 1]))  # constant spread
    assert math.isnan(cal.fit_std_scale([np.nan], [0.0], [1.0]))
    assert cal.coverage([0.0, np.nan], [0.0, 0.0], [1.0, 1.0], levels=[0.5]) == {0.5: 1.0}
    assert math.isfinite(cal.fit_std_scale([1.0], [0.0], [0.0]))  # zero spread: huge but finite
    with pytest.raises(ValueError):
        cal.coverage([0.0], [0.0], [1.0], levels=[1.0])
    with pytest.raises(ValueError):
        cal.fit_std_scale([0.0, 1.0], [0.0], [1.0])


def test_report_from_long_tables_per_target():
    y, mu, sd = _gaussian(400, 3)
    df = pd.DataFrame({"mol_id": range(400), "target": ["gap", "homo"] * 200, "y_true": y, "y_pred": mu, "y_std": sd})
    r = cal.report_from_tables(df.iloc[:200], df.iloc[200:])
    assert set(r) == {"gap", "homo"}
    assert r["gap"]["n_test"] == 100 and r["gap"]["n_val"] == 100
    assert set(r["gap"]["coverage_recal"]) == {"0.5", "0.68", "0.9", "0.95"}


def test_calibrated_intervals_scale_the_spread_and_skip_unknown_targets(tmp_path):
    table = pd.DataFrame({"gap_mean": [1.0, 2.0], "gap_std": [0.1, 0.0], "mu_mean": [0.5, 0.5],
                          "mu_std": [0.2, 0.2]})
    report = {"gap": {"scale": 3.0}, "mu": {"scale": float("nan")}, "homo": {"scale": 2.0}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(report))
    scales = cal.load_std_scales(path)
    assert scales == {"gap": 3.0, "homo": 2.0}, "a NaN scale states no interval"
    out = cal.add_calibrated_intervals(table.copy(), scales)
    assert out["gap_std_calibrated"].tolist() == pytest.approx([0.3, 0.0])
    assert out["gap_low95"].tolist() == pytest.approx([1.0 - 1.959964 * 0.3, 2.0], abs=1e-5)
    assert out["gap_high95"].tolist() == pytest.approx([1.0 + 1.959964 * 0.3, 2.0], abs=1e-5)
    assert "mu_std_calibrated" not in out.columns and "homo_low95" not in out.columns
    # the scaled interval covers what the validation fit promised: N(0, (s sd)^2) noise
    y, mu, sd = _gaussian(20000, 3, true_scale=2.5)
    s = cal.fit_std_scale(y, mu, sd)
    t = cal.add_calibrated_intervals(pd.DataFrame({"y_mean": mu, "y_std": sd}), {"y": s})
    inside = ((t["y_low95"] <= y) & (y <= t["y_high95"])).mean()
    assert inside == pytest.approx(0.95, abs=0.01)


def test_unreadable_calibration_report_is_a_clear_error(tmp_path):
    bad = tmp_path / "calibration.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the calibration report"):
        cal.load_std_scales(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a calibration report"):
        cal.load_std_scales(bad)
    with pytest.raises(ValueError, match="level"):
        cal.add_calibrated_intervals(pd.DataFrame(), {}, level=1.5)


def test_a_single_member_ensemble_has_no_uncertainty_to_calibrate(tmp_path):
    y, mu, _ = _gaussian(200, 4)
    zero = np.zeros_like(y)
    r = cal.calibration_report((y, mu, zero), val=(y, mu, zero))
    assert "no ensemble spread" in r["status"]
    assert math.isnan(r["scale"]) and math.isnan(r["coverage_recal"]["0.95"])
    assert r["mae"] == pytest.approx(np.mean(np.abs(y - mu)))
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"gap": r}))   # NaN is written as NaN, which json reads back
    assert cal.load_std_scales(path) == {}, "no intervals are stated from a zero spread"
