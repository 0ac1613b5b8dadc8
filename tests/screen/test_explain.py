"""Atom attributions on a case with a known answer: a target that counts carbonyl groups (C=O) must
light up the carbonyl atoms of molecules the model never saw. About 5 s on one core."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

CARBONYL = Chem.MolFromSmarts("[#6X3]=[OX1]")   # aromatic ring carbonyls too


def _n_carbonyl(smiles: str) -> int:
    return len(Chem.MolFromSmiles(smiles).GetSubstructMatches(CARBONYL))


@pytest.fixture(scope="module")
def carbonyl_model():
    """A tiny PaiNN (sum readout) trained on 200 QM9-sample molecules to count C=O groups; the
    SMILES of its held-out 10 % are returned with it."""
    from importlib.resources import files

    from molgnn.chem.conformers import embed_3d
    from molgnn.config import FinetuneConfig, ModelConfig
    from molgnn.train.finetune import finetune

    qm9 = pd.read_csv(files("molgnn.resources") / "qm9_sample.csv.gz", usecols=["SMILES"])
    rows = []
    for smi in qm9["SMILES"]:
        if Chem.MolFromSmiles(smi).GetNumHeavyAtoms() <= 9:
            c = embed_3d(smi, seed=0, timeout_s=5)
            rows.append({"mol_id": smi, "atomic_numbers": c.atomic_numbers.tolist(),
                         "positions": c.positions.ravel().tolist(), "n_carbonyl": float(_n_carbonyl(smi))})
        if len(rows) == 200:
            break
    table = pd.DataFrame(rows)
    order = np.random.default_rng(0).permutation(len(table))
    split = (order[:160], order[160:180], order[180:])
    res = finetune(table[["mol_id", "atomic_numbers", "positions"]], table[["mol_id", "n_carbonyl"]], split,
                   ModelConfig(n_atom_basis=32, n_interactions=2, n_rbf=16, cutoff=4.0),
                   FinetuneConfig(targets=["n_carbonyl"], epochs=30, batch_size=16, lr=3e-3, patience=50),
                   seed=0, aggregation={"n_carbonyl": "sum"})
    return res.checkpoint, table["mol_id"].to_numpy()[order[180:]].tolist()


def test_attributions_add_up_to_the_prediction_and_light_up_the_carbonyls(carbonyl_model):
    from molgnn.screen.explain import ensemble_models, explain_smiles
    from molgnn.screen.predict import predict_ensemble
    from molgnn.screen.explain import structure_for

    ckpt, held_out = carbonyl_model
    models = ensemble_models([ckpt, ckpt])
    # held-out molecules, plus carbonyl cases the sample may lack (amide, acid, ester, two carbonyls)
    molecules = held_out + ["CC(=O)CC=O", "NC(=O)CO", "CC(=O)O", "CC(=O)OC", "O=CC1CC1O"]
    hits, total, on, off = 0, 0, [], []
    for smi in molecules:
        e = explain_smiles(smi, models)
        # exact decomposition: the heavy-atom attributions sum to the prediction
        assert e.attribution[:, 0].sum() == pytest.approx(e.prediction[0], abs=1e-4)
        assert np.allclose(e.attribution_std, 0) and np.allclose(e.prediction_std, 0)   # identical members
        expected = {a for m in e.mol.GetSubstructMatches(CARBONYL) for a in m}
        on += [e.attribution[a, 0] for a in expected]
        off += [v for a, v in enumerate(e.attribution[:, 0]) if a not in expected]
        if expected:   # the 2k largest attributions should be the k carbonyl groups' 2k atoms
            top = set(np.argsort(-e.attribution[:, 0])[:len(expected)].tolist())
            hits += len(top & expected)
            total += len(expected)
    print(f"carbonyl top-k overlap {hits}/{total}; mean attribution of carbonyl atoms {np.mean(on):.3f}, "
          f"of the other {len(off)} atoms {np.mean(off):.3f} (max {np.max(off):.3f})")
    assert total >= 8, f"too few carbonyl atoms to judge ({total})"
    assert hits / total >= 0.75, f"top-k overlap with the carbonyl atoms {hits}/{total}"
    # one carbonyl counts 1, shared by its two atoms; every other atom is worth about nothing
    assert np.mean(on) > 0.35 and abs(np.mean(off)) < 0.05

    # explain builds the structure the screen builds: same prediction as the ensemble path
    smiles, _, z, pos = structure_for("CC(=O)CC=O")
    frame = pd.DataFrame({"mol_id": ["m"], "atomic_numbers": [z.tolist()], "positions": [pos.ravel().tolist()]})
    screened = predict_ensemble([ckpt], frame)["n_carbonyl_mean"].iloc[0]
    assert explain_smiles("CC(=O)CC=O", models).prediction[0] == pytest.approx(screened, abs=1e-5)


def test_cli_explain_writes_images_and_csv_and_rejects_bad_input(carbonyl_model, tmp_path, capsys):
    from molgnn.cli import main
    from molgnn.train.checkpoints import save_checkpoint

    ckpt, _ = carbonyl_model
    models = tmp_path / "finetune"
    save_checkpoint(ckpt, models / "member_0.pt")
    out = tmp_path / "explain"
    assert main(["explain", "CC(=O)CC=O", "OCCN", "--models", str(models), "--out", str(out)]) == 0
    for k in (1, 2):
        png, svg = out / f"mol_{k}_n_carbonyl.png", out / f"mol_{k}_n_carbonyl.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        assert "<svg" in svg.read_text()
    table = pd.read_csv(out / "attributions.csv")
    assert list(table.groupby("input", sort=False).size()) == [6, 4]          # one row per heavy atom
    first = table[table["input"] == "CC(=O)CC=O"]
    assert first["n_carbonyl_attribution"].sum() == pytest.approx(first["n_carbonyl_prediction"].iloc[0], abs=1e-4)

    capsys.readouterr()
    assert main(["explain", "C1CC", "--models", str(models), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "molgnn explain: error:" in err and "C1CC" in err
    assert not (tmp_path / "bad").exists()                                   # nothing written
    assert main(["explain", "CCO", "--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no fine-tuned models at" in capsys.readouterr().err
    assert main(["explain", "CCO", "--models", str(models), "--out", str(tmp_path / "x"), "--target", "gap"]) == 2
    assert "not predicted by the model" in capsys.readouterr().err


def test_run_report_draws_the_top_candidates_and_skips_what_it_cannot(carbonyl_model, tmp_path):
    from molgnn.data.stage_store import StageResult
    from molgnn.report.run_report import write_report
    from molgnn.train.checkpoints import save_checkpoint

    ckpt, _ = carbonyl_model
    member = save_checkpoint(ckpt, tmp_path / "finetune" / "member_0.pt")
    preds = tmp_path / "screen" / "candidates.csv"
    preds.parent.mkdir()
    # rank 2 is not a molecule (an unclosed ring): skipped with its reason, the others still drawn
    pd.DataFrame({"rank": [1, 2, 3, 4], "smiles": ["CC(=O)CC=O", "C1CC", "OCCN", "CCO"],
                  "n_carbonyl_mean": [2.0, 1.0, 0.1, 0.0], "n_carbonyl_std": [0.1] * 4}).to_csv(preds, index=False)
    results = {"finetune": StageResult("finetune", "k1", str(member.parent), {"member_0": str(member)},
                                       info={"units": {"n_carbonyl": ""}}),
               "screen": StageResult("screen", "k2", str(preds.parent), {"predictions": str(preds)})}
    report = write_report(results, tmp_path / "report", {"rank_by": "n_carbonyl"}).read_text()
    assert "images/attribution_1.png" in report and "images/attribution_3.png" in report
    assert (tmp_path / "report" / "images" / "attribution_1.svg").is_file()
    assert "_#2 `C1CC`: not drawn (cannot explain 'C1CC'" in report
    assert "attribution_4" not in report                                       # top 3 only
    # without fine-tuned members on disk the section is simply absent
    member.unlink()
    assert "attribution_1" not in write_report(results, tmp_path / "report2", {}).read_text()
