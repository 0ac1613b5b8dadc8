"""Objective columns of a screened table: predicted targets, QED/SA, novelty and uncertainty."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molgnn.chem.similarity import smiles_bits
from molgnn.design.objectives import ObjectiveError, column, objective_matrix, objective_values


def _table():
    return pd.DataFrame({"smiles": ["CCO", "CCCCN", "c1ccccc1O"], "gap_mean": [7.0, 8.0, 6.0],
                         "gap_std": [0.4, 0.2, 0.3], "gap_std_calibrated": [0.8, 0.4, 0.6],
                         "homo_mean": [-7.0, -6.5, -6.0], "homo_std": [0.1, 0.2, 0.4],
                         "qed": [0.4, 0.5, 0.6], "sa": [1.5, 2.0, 1.2]})


def test_values_follow_their_definitions():
    train = smiles_bits(["CCO", "CCCO"])
    obj = {"gap": "max", "qed": "max", "sa": "min", "novelty": "max", "uncertainty": "min"}
    out = objective_values(_table(), obj, train, predicted=["gap"])
    assert out[column("gap")].tolist() == [7.0, 8.0, 6.0]
    assert out[column("novelty")].iloc[0] == pytest.approx(0.0)          # CCO is a training molecule
    assert (out[column("novelty")].iloc[1:] > 0).all()
    assert out[column("uncertainty")].tolist() == [0.8, 0.4, 0.6]        # the calibrated spread wins
    values, maximize = objective_matrix(out, obj)
    assert values.shape == (3, 5) and maximize == [True, True, False, True, False]


def test_several_targets_spread_is_scale_free():
    out = objective_values(_table(), {"uncertainty": "min"}, smiles_bits(["CCO"]), predicted=["gap", "homo"])
    gap = np.array([0.8, 0.4, 0.6]) / 0.6
    homo = np.array([0.1, 0.2, 0.4]) / 0.2
    assert out[column("uncertainty")].to_numpy() == pytest.approx((gap + homo) / 2)


def test_unknown_or_unavailable_objectives_are_clear_errors():
    train = smiles_bits(["CCO"])
    with pytest.raises(ObjectiveError, match="unknown objective 'logd'"):
        objective_values(_table(), {"logd": "max"}, train, predicted=["gap"])
    with pytest.raises(ObjectiveError, match="no lumo_mean"):
        objective_values(_table(), {"lumo": "max"}, train, predicted=["lumo"])
    with pytest.raises(ObjectiveError, match="no spread"):
        objective_values(_table().drop(columns=["gap_std", "gap_std_calibrated"]), {"uncertainty": "min"}, train,
                         predicted=["gap"])


def test_a_target_range_ranks_by_distance_and_marks_hits():
    from molgnn.config import TargetRange
    from molgnn.design.objectives import describe, in_target

    obj = {"gap": TargetRange(low=6.5, high=7.5), "qed": "max"}
    out = objective_values(_table(), obj, smiles_bits(["CCO"]), predicted=["gap"])
    values, maximize = objective_matrix(out, obj)
    assert values[:, 0].tolist() == pytest.approx([0.0, -0.5, -0.5]) and maximize == [True, True]
    assert in_target(out, obj).tolist() == [True, False, False]
    assert in_target(out, {"qed": "max"}) is None
    assert describe(obj["gap"]) == "in [6.5, 7.5]" and describe(TargetRange(low=0.55)) == "in [0.55, ∞]"
