"""How far an ensemble's spread can be trusted: ranking, coverage and recalibrated intervals.

Given the true values ``y``, the ensemble mean ``mu`` and the ensemble spread ``sigma`` of a held-out
set, this module measures

- **ranking**: the Spearman rank correlation between ``sigma`` and ``|y - mu|`` (does a larger spread
  mean a larger error?), and the MAE of the 10 % most against the 10 % least uncertain molecules;
- **coverage**: the fraction of true values inside the central Gaussian interval
  ``mu ± z_p * s * sigma`` at nominal levels ``p`` = 50, 68, 90, 95 %;
- **miscalibration area**: the mean absolute gap between observed and nominal coverage over a grid of
  levels in (0, 1) (0 is perfect; Tran et al. 2020, Kuleshov et al. 2018);

both raw (``s = 1``) and after *std scaling* (Levi et al. 2020): one factor ``s`` fitted on the
validation set by minimising the Gaussian negative log-likelihood, whose closed form is
``s**2 = mean((y - mu)**2 / sigma**2)``. A deep ensemble of a few members is typically
over-confident (``s > 1``).

>>> import numpy as np
>>> y, mu, sd = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 1.0]), np.array([0.5, 0.5, 0.5])
>>> round(fit_std_scale(y, mu, sd), 4)
1.291
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

LEVELS = (0.5, 0.68, 0.9, 0.95)
_MIN_STD = 1e-12


def _clean(y_true, y_pred, y_std) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays with the entries where any of the three is NaN removed."""
    y, mu, sd = (np.asarray(a, dtype=float).reshape(-1) for a in (y_true, y_pred, y_std))
    if not (len(y) == len(mu) == len(sd)):
        raise ValueError(f"y_true, y_pred, y_std differ in length: {len(y)}, {len(mu)}, {len(sd)}")
    if (sd[~np.isnan(sd)] < 0).any():
        raise ValueError("y_std must be non-negative")
    keep = ~(np.isnan(y) | np.isnan(mu) | np.isnan(sd))
    return y[keep], mu[keep], sd[keep]


def fit_std_scale(y_true, y_pred, y_std) -> float:
    """The factor ``s`` minimising the Gaussian NLL of ``y ~ N(mu, (s*sigma)^2)``: ``sqrt(mean(z^2))``.

    Zero spreads are floored at 1e-12 so that a single-member "ensemble" gives a huge, finite ``s``.
    NaN when nothing is left after dropping NaN entries.

    >>> fit_std_scale([1.0, -1.0], [0.0, 0.0], [0.5, 0.5])
    2.0
    """
    y, mu, sd = _clean(y_true, y_pred, y_std)
    if len(y) == 0:
        return math.nan
    z = (y - mu) / np.maximum(sd, _MIN_STD)
    return float(np.sqrt(np.mean(z ** 2)))


def coverage(y_true, y_pred, y_std, levels: Sequence[float] = LEVELS, scale: float = 1.0) -> dict[float, float]:
    """Observed fraction of ``y`` inside the central interval ``mu ± z_{(1+p)/2} * scale * sigma``.

    >>> coverage([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], levels=[0.95])
    {0.95: 0.6666666666666666}
    """
    y, mu, sd = _clean(y_true, y_pred, y_std)
    out = {}
    for p in levels:
        if not 0 < p < 1:
            raise ValueError(f"coverage levels must lie in (0, 1), got {p}")
        half = stats.norm.ppf(0.5 + p / 2) * scale * sd
        out[p] = float(np.mean(np.abs(y - mu) <= half)) if len(y) else math.nan
    return out


def miscalibration_area(y_true, y_pred, y_std, scale: float = 1.0, n_levels: int = 99) -> float:
    """Mean |observed - nominal| central-interval coverage over ``n_levels`` levels in (0, 1).

    0 for perfect calibration; close to 0.5 for intervals that never (or always) cover.

    >>> round(miscalibration_area([5.0, -5.0], [0.0, 0.0], [0.01, 0.01]), 2)
    0.5
    """
    levels = np.linspace(0, 1, n_levels + 2)[1:-1]
    cov = coverage(y_true, y_pred, y_std, levels=levels, scale=scale)
    return float(np.mean([abs(cov[p] - p) for p in levels])) if len(cov) else math.nan


def spearman_error_std(y_true, y_pred, y_std) -> float:
    """Spearman rank correlation of ``sigma`` with ``|y - mu|``; NaN if either is constant.

    >>> spearman_error_std([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], [0.1, 0.2, 0.3])
    1.0
    """
    y, mu, sd = _clean(y_true, y_pred, y_std)
    err = np.abs(y - mu)
    if len(y) < 2 or np.ptp(sd) == 0 or np.ptp(err) == 0:
        return math.nan
    return float(stats.spearmanr(sd, err).statistic)


def mae_by_uncertainty(y_true, y_pred, y_std, fraction: float = 0.1) -> tuple[float, float]:
    """(MAE of the ``fraction`` most uncertain, MAE of the ``fraction`` least uncertain) entries.

    At least one entry each. A useful spread gives the first clearly above the second.

    >>> mae_by_uncertainty([1.0, 0.0, 3.0, 0.0], [0.0] * 4, [0.1, 0.2, 0.9, 0.3], fraction=0.25)
    (3.0, 1.0)
    """
    y, mu, sd = _clean(y_true, y_pred, y_std)
    if len(y) == 0:
        return math.nan, math.nan
    k = max(1, int(round(fraction * len(y))))
    order = np.argsort(sd, kind="stable")
    err = np.abs(y - mu)
    return float(err[order[-k:]].mean()), float(err[order[:k]].mean())


def gaussian_nll(y_true, y_pred, y_std, scale: float = 1.0) -> float:
    """Mean Gaussian negative log-likelihood of ``y`` under ``N(mu, (scale*sigma)^2)``."""
    y, mu, sd = _clean(y_true, y_pred, y_std)
    if len(y) == 0:
        return math.nan
    s = np.maximum(scale * sd, _MIN_STD)
    return float(np.mean(0.5 * np.log(2 * np.pi * s ** 2) + 0.5 * ((y - mu) / s) ** 2))


def calibration_report(test: tuple, val: tuple | None = None, levels: Sequence[float] = LEVELS) -> dict[str, Any]:
    """Every figure of this module for one target, as a JSON-able dict.

    ``test`` and ``val`` are ``(y_true, y_pred, y_std)``. With ``val`` the scale is fitted there and
    the test figures are given raw and recalibrated (keys ``*_raw`` / ``*_recal``); without it only raw.

    >>> rng = np.random.default_rng(0)
    >>> sd = rng.uniform(0.5, 2, 4000); mu = np.zeros(4000); y = rng.normal(0, 2 * sd)
    >>> r = calibration_report((y[:2000], mu[:2000], sd[:2000]), val=(y[2000:], mu[2000:], sd[2000:]))
    >>> round(r["scale"], 1), round(r["coverage_raw"]["0.95"], 2), round(r["coverage_recal"]["0.95"], 2)
    (2.0, 0.67, 0.95)
    """
    y, mu, sd = _clean(*test)
    if not (sd > 0).any() or (val is not None and not (_clean(*val)[2] > 0).any()):
        return _no_spread_report(y, mu, sd, val, levels)
    top, bottom = mae_by_uncertainty(y, mu, sd)
    scale = fit_std_scale(*val) if val is not None else 1.0
    out: dict[str, Any] = {
        "n_test": int(len(y)), "n_val": int(len(_clean(*val)[0])) if val is not None else 0,
        "mae": float(np.mean(np.abs(y - mu))) if len(y) else math.nan,
        "mean_std": float(np.mean(sd)) if len(y) else math.nan,
        "spearman_std_abs_error": spearman_error_std(y, mu, sd),
        "mae_top10_uncertain": top, "mae_bottom10_uncertain": bottom,
        "scale": scale,
        "coverage_raw": {str(p): v for p, v in coverage(y, mu, sd, levels).items()},
        "miscalibration_area_raw": miscalibration_area(y, mu, sd),
        "nll_raw": gaussian_nll(y, mu, sd),
    }
    if val is not None:
        out["coverage_recal"] = {str(p): v for p, v in coverage(y, mu, sd, levels, scale=scale).items()}
        out["miscalibration_area_recal"] = miscalibration_area(y, mu, sd, scale=scale)
        out["nll_recal"] = gaussian_nll(y, mu, sd, scale=scale)
    return out


def _no_spread_report(y, mu, sd, val, levels) -> dict[str, Any]:
    """A spread that is zero everywhere (one member, or identical members) states no uncertainty:
    every calibration figure is NaN and ``status`` says why, instead of a meaningless huge scale."""
    nan_levels = {str(p): math.nan for p in levels}
    out: dict[str, Any] = {
        "status": "no ensemble spread (one member or identical members): uncertainty not available",
        "n_test": int(len(y)), "n_val": int(len(_clean(*val)[0])) if val is not None else 0,
        "mae": float(np.mean(np.abs(y - mu))) if len(y) else math.nan,
        "mean_std": float(np.mean(sd)) if len(y) else math.nan,
        "spearman_std_abs_error": math.nan, "mae_top10_uncertain": math.nan,
        "mae_bottom10_uncertain": math.nan, "scale": math.nan,
        "coverage_raw": dict(nan_levels), "miscalibration_area_raw": math.nan, "nll_raw": math.nan,
    }
    if val is not None:
        out.update(coverage_recal=dict(nan_levels), miscalibration_area_recal=math.nan, nll_recal=math.nan)
    return out


def report_from_tables(test_df, val_df=None, targets: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """One :func:`calibration_report` per target from long tables (``target, y_true, y_pred, y_std``),
    e.g. ``EnsembleResult.test_predictions``."""
    targets = list(targets) if targets is not None else list(dict.fromkeys(test_df["target"]))
    out = {}
    for t in targets:
        te = test_df[test_df["target"] == t]
        va = None if val_df is None else val_df[val_df["target"] == t]
        out[t] = calibration_report(
            (te["y_true"], te["y_pred"], te["y_std"]),
            val=None if va is None else (va["y_true"], va["y_pred"], va["y_std"]))
    return out


def read_calibration_report(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{target: entry}`` of a stage's ``calibration.json`` (entries that are not objects are left out);
    an unreadable file or one that is not a JSON object is a ValueError naming it."""
    import json

    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the calibration report {path}: {exc}") from exc
    if not isinstance(report, dict):
        raise ValueError(f"{path} is not a calibration report (a JSON object per target)")
    return {str(t): rep for t, rep in report.items() if isinstance(rep, dict)}


def load_std_scales(path: str | Path) -> dict[str, float]:
    """``{target: scale}`` from a fine-tune stage's ``calibration.json`` (targets without a finite,
    positive scale are left out: their intervals cannot be stated)."""
    out = {}
    for target, rep in read_calibration_report(path).items():
        scale = rep.get("scale")
        if isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0:
            out[target] = float(scale)
    return out


def add_calibrated_intervals(table, std_scale: Mapping[str, float], level: float = 0.95):
    """Add ``<t>_std_calibrated`` (ensemble std times the validation-fitted scale) and the central
    ``level`` interval ``<t>_low``/``<t>_high`` for each target of ``std_scale`` found in ``table``
    (columns ``<t>_mean``/``<t>_std``). Returns the table; other columns are untouched."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    pct = f"{level * 100:g}"
    for target, scale in std_scale.items():
        mean_col, std_col = f"{target}_mean", f"{target}_std"
        if mean_col not in table.columns or std_col not in table.columns:
            continue
        calibrated = table[std_col].astype(float) * float(scale)
        table[f"{target}_std_calibrated"] = calibrated
        table[f"{target}_low{pct}"] = table[mean_col] - z * calibrated
        table[f"{target}_high{pct}"] = table[mean_col] + z * calibrated
    return table


# --- split-conformal intervals ------------------------------------------------------------------
CONFORMAL_LEVEL = 0.9


def _conformal_sd(sd: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(sd, floor)


def fit_conformal(y_true, y_pred, y_std, level: float = CONFORMAL_LEVEL) -> dict[str, Any]:
    """Split-conformal half-width from a calibration (validation) set, marginal coverage >= ``level``
    for exchangeable data (Vovk et al. 2005; Lei et al. 2018).

    Scores are ``|y - mu| / sigma`` (normalised: wider intervals where the ensemble disagrees) when
    the ensemble has a spread, else ``|y - mu|``; ``q`` is their ``ceil((n+1) * level) / n``
    empirical quantile and the interval is ``mu ± q * sigma`` (or ``mu ± q``). Spreads are floored at
    1e-3 of their median so one near-zero spread cannot make the score infinite.

    >>> c = fit_conformal([1.0, -2.0, 3.0, 0.5], [0.0] * 4, [1.0] * 4, level=0.5)
    >>> c["q"], c["normalized"], c["n_cal"]
    (2.0, True, 4)
    """
    if not 0 < level < 1:
        raise ValueError(f"conformal level must lie in (0, 1), got {level}")
    y, mu, sd = _clean(y_true, y_pred, y_std)
    n = len(y)
    normalized = bool(n and (sd > 0).any())
    floor = float(max(np.median(sd) * 1e-3, _MIN_STD)) if normalized else 0.0
    if n == 0:
        return {"level": level, "q": math.nan, "normalized": normalized, "sd_floor": floor, "n_cal": 0}
    scores = np.abs(y - mu) / (_conformal_sd(sd, floor) if normalized else 1.0)
    rank = math.ceil((n + 1) * level)
    # Too few calibration points for this level: the interval is unbounded.
    q = float(np.sort(scores)[rank - 1]) if rank <= n else math.inf
    return {"level": level, "q": q, "normalized": normalized, "sd_floor": floor, "n_cal": int(n)}


def conformal_bounds(y_pred, y_std, conformal: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays of the conformal interval for predictions ``y_pred`` with spreads ``y_std``."""
    mu = np.asarray(y_pred, dtype=float)
    half = float(conformal["q"]) * (_conformal_sd(np.asarray(y_std, dtype=float), float(conformal["sd_floor"]))
                                    if conformal["normalized"] else 1.0)
    return mu - half, mu + half


def conformal_coverage(y_true, y_pred, y_std, conformal: Mapping[str, Any]) -> tuple[float, float]:
    """(observed coverage, mean interval width) of ``conformal`` on a held-out set (an unbounded
    interval, from too small a calibration set, covers everything with infinite width)."""
    y, mu, sd = _clean(y_true, y_pred, y_std)
    if len(y) == 0 or math.isnan(conformal["q"]):
        return math.nan, math.nan
    low, high = conformal_bounds(mu, sd, conformal)
    return float(np.mean((y >= low) & (y <= high))), float(np.mean(high - low))


def add_conformal(report: dict[str, dict[str, Any]], test_df, val_df,
                  level: float = CONFORMAL_LEVEL) -> dict[str, dict[str, Any]]:
    """Add ``conformal90`` (fitted on ``val_df``) and its test coverage/width to each target's report."""
    pct = f"{level * 100:g}"
    for t, rep in report.items():
        va, te = val_df[val_df["target"] == t], test_df[test_df["target"] == t]
        conf = fit_conformal(va["y_true"], va["y_pred"], va["y_std"], level)
        rep[f"conformal{pct}"] = conf
        cov, width = conformal_coverage(te["y_true"], te["y_pred"], te["y_std"], conf)
        rep[f"conformal_coverage{pct}_test"] = cov
        rep[f"conformal_width{pct}_test"] = width
    return report


def load_conformal(path: str | Path, level: float = CONFORMAL_LEVEL) -> dict[str, dict[str, Any]]:
    """``{target: conformal}`` from a ``calibration.json``; targets without a ``q`` (or a report from
    before conformal intervals) are left out. An infinite ``q`` (fewer than 9 validation molecules at
    90 %) is kept: its unbounded interval is the honest answer."""
    key = f"conformal{level * 100:g}"
    out = {}
    for target, rep in read_calibration_report(path).items():
        conf = rep.get(key)
        if isinstance(conf, dict) and isinstance(conf.get("q"), (int, float)) and not math.isnan(conf["q"]):
            out[target] = conf
    return out


def add_conformal_intervals(table, conformal: Mapping[str, Mapping[str, Any]]):
    """Add ``<t>_low90``/``<t>_high90`` (the level each conformal entry states) for targets in ``table``."""
    for target, conf in conformal.items():
        mean_col, std_col = f"{target}_mean", f"{target}_std"
        if mean_col not in table.columns:
            continue
        sd = table[std_col].astype(float) if std_col in table.columns else np.zeros(len(table))
        low, high = conformal_bounds(table[mean_col].astype(float), sd, conf)
        pct = f"{float(conf['level']) * 100:g}"
        table[f"{target}_low{pct}"] = low
        table[f"{target}_high{pct}"] = high
    return table
