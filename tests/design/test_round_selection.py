"""A design round's selection: who is ranked, who is picked, and why every other molecule was not."""
from __future__ import annotations

import numpy as np
import pandas as pd

from molgnn.config import DesignConfig
from molgnn.design.objectives import column
from molgnn.stages.design import _selection


def _round_table():
    smiles = ["CCO", "CCCO", "CCCCO", "c1ccccc1", "c1ccncc1", "CC(=O)O", "CCN", "OCCO", "CCOC"]
    rng = np.random.default_rng(0)
    t = pd.DataFrame({"smiles": smiles, "in_domain": [True] * 7 + [False, True]})
    t[column("gap")] = rng.normal(7, 1, len(t))
    t[column("qed")] = rng.uniform(0.3, 0.6, len(t))
    t.loc[5, column("qed")] = np.nan
    return t


def test_every_molecule_is_picked_or_says_why():
    cfg = DesignConfig(objectives={"gap": "max", "qed": "max"}, select=3, max_similarity=0.95)
    out = _selection(_round_table(), cfg, selected_before=["CCN"])
    assert out["selected"].sum() == 3
    picked = out[out["selected"]]
    assert (picked["selection_note"] == "").all() and picked["pareto_rank"].notna().all()
    notes = dict(zip(out["smiles"], out["selection_note"]))
    assert notes["CC(=O)O"] == "an objective has no value"
    assert notes["CCN"] == "selected in an earlier round"
    assert notes["OCCO"] == "outside the property model's applicability domain"
    rest = out[~out["selected"]]
    assert (rest["selection_note"] != "").all()
    # the picks come front by front: none is on a later front than an eligible molecule left out for count
    left_for_count = rest[rest["selection_note"].str.startswith("not among")]
    if len(left_for_count):
        assert picked["pareto_rank"].max() <= left_for_count["pareto_rank"].min()


def test_out_of_domain_molecules_are_eligible_when_asked():
    cfg = DesignConfig(objectives={"gap": "max", "qed": "max"}, select=9, max_similarity=1.0, in_domain_only=False)
    out = _selection(_round_table(), cfg, selected_before=[])
    assert out["selected"].sum() == 8                        # all but the one without a QED
    assert bool(out.loc[out["smiles"] == "OCCO", "selected"].iloc[0])


def test_an_empty_round_selects_nothing():
    cfg = DesignConfig(objectives={"gap": "max"}, select=3)
    t = pd.DataFrame({"smiles": pd.Series(dtype=str), column("gap"): pd.Series(dtype=float)})
    out = _selection(t, cfg, selected_before=[])
    assert len(out) == 0 and "selected" in out.columns


def test_a_shard_folder_generator_is_keyed_by_its_manifest(tmp_path):
    import torch

    from molgnn.data.shards import write_shards
    from molgnn.data.shards import key_file

    folder = write_shards({"w": torch.zeros(3)}, tmp_path / "gen")
    assert key_file(folder) == folder / "manifest.json"
    (tmp_path / "g.pt").write_bytes(b"x")
    assert key_file(tmp_path / "g.pt") == tmp_path / "g.pt"
