"""The design objectives of screened molecules: predicted properties, QED, SA, novelty, uncertainty.

Each objective becomes a column ``objective.<name>`` of the round's table, so the values the Pareto
ranking saw are the values a reader sees. A predicted target is its ensemble mean (the screen's
``<t>_mean``; a classification target's mean is the predicted probability); ``uncertainty`` is the
ensemble spread of the predicted targets (the calibrated std where the model has a calibration;
with several targets, each std divided by its median over the table, then averaged, so no target's
units dominate); ``novelty`` is 1 minus the highest Tanimoto similarity to the training molecules.

An objective is maximized ("max"), minimized ("min") or brought into a target range (an object with
``low`` and/or ``high``, e.g. ``molgnn.config.TargetRange``): the ranking then maximizes minus the
distance to the range, so every molecule inside it ties at the best value, and ``in_target`` says
whether a molecule meets every range at once (the design loop's hit rate).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

PREFIX = "objective."
BUILTIN = ("qed", "sa", "novelty", "uncertainty")


class ObjectiveError(ValueError):
    """An objective cannot be computed from the screened table (a missing column, an unknown name)."""


def column(name: str) -> str:
    return PREFIX + name


def _std_column(table: pd.DataFrame, target: str) -> str:
    for col in (f"{target}_std_calibrated", f"{target}_std"):
        if col in table.columns:
            return col
    raise ObjectiveError(f"the screened table has no spread for {target!r} (no {target}_std column)")


def objective_values(table: pd.DataFrame, objectives: Mapping[str, str], training_fps: np.ndarray,
                     predicted: Sequence[str]) -> pd.DataFrame:
    """``table`` with an ``objective.<name>`` column per objective, and ``nearest_training_similarity``.

    ``predicted``: the targets the screening model predicts; an objective named after one of them
    reads ``<name>_mean``. ``training_fps``: Morgan bits of the training molecules (novelty)."""
    from molgnn.chem.similarity import nearest_similarity, smiles_bits

    out = table.copy()
    predicted = list(predicted)
    for name in objectives:
        if name in predicted:
            col = f"{name}_mean"
            if col not in out.columns:
                raise ObjectiveError(f"objective {name!r}: the screened table has no {col} column")
            out[column(name)] = pd.to_numeric(out[col], errors="coerce")
        elif name in ("qed", "sa"):
            if name not in out.columns:
                raise ObjectiveError(f"objective {name!r}: the candidates carry no {name} column (the filter adds it)")
            out[column(name)] = pd.to_numeric(out[name], errors="coerce")
        elif name == "novelty":
            sim = nearest_similarity(smiles_bits(out["smiles"].tolist()), training_fps) if len(out) else np.zeros(0)
            out["nearest_training_similarity"] = sim
            out[column(name)] = 1.0 - sim
        elif name == "uncertainty":
            if not predicted:
                raise ObjectiveError("objective 'uncertainty' needs a screening model that predicts a target")
            stds = [pd.to_numeric(out[_std_column(out, t)], errors="coerce") for t in predicted]
            if len(stds) == 1:
                out[column(name)] = stds[0]
            else:
                scaled = [s / (s.median() if s.median() > 0 else 1.0) for s in stds]
                out[column(name)] = sum(scaled) / len(scaled)
        else:
            raise ObjectiveError(f"unknown objective {name!r}: use one of the predicted targets {predicted} "
                                 f"or {list(BUILTIN)}")
    return out


def is_range(direction: Any) -> bool:
    return not isinstance(direction, str) and hasattr(direction, "low") and hasattr(direction, "high")


def describe(direction: Any) -> str:
    """"max", "min", or the range as text ("in [0.55, ∞)")."""
    if not is_range(direction):
        return str(direction)
    low = "-∞" if direction.low is None else f"{direction.low:g}"
    high = "∞" if direction.high is None else f"{direction.high:g}"
    return f"in [{low}, {high}]"


def distance_to_range(values: np.ndarray, direction: Any) -> np.ndarray:
    """How far each value lies outside ``[low, high]`` (0 inside; NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float64)
    below = np.maximum(direction.low - values, 0.0) if direction.low is not None else np.zeros_like(values)
    above = np.maximum(values - direction.high, 0.0) if direction.high is not None else np.zeros_like(values)
    return np.where(np.isnan(values), np.nan, below + above)


def objective_matrix(table: pd.DataFrame, objectives: Mapping[str, Any]) -> tuple[np.ndarray, list[bool]]:
    """(values [n, m], maximize flags) in the order of ``objectives``; a target range enters as
    minus its distance (maximized)."""
    names = list(objectives)
    if not len(table):
        return np.zeros((0, len(names))), [objectives[n] != "min" for n in names]
    cols = []
    for n in names:
        v = pd.to_numeric(table[column(n)], errors="coerce").to_numpy(dtype=np.float64)
        cols.append(-distance_to_range(v, objectives[n]) if is_range(objectives[n]) else v)
    return np.stack(cols, axis=1), [objectives[n] != "min" for n in names]


def in_target(table: pd.DataFrame, objectives: Mapping[str, Any]) -> pd.Series | None:
    """Whether each molecule meets every target-range objective (None when there is none)."""
    ranges = [n for n, d in objectives.items() if is_range(d)]
    if not ranges:
        return None
    ok = pd.Series(True, index=table.index)
    for n in ranges:
        ok &= pd.Series(distance_to_range(pd.to_numeric(table[column(n)], errors="coerce"), objectives[n]) == 0,
                        index=table.index)
    return ok
