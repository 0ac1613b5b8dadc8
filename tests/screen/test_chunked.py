"""The chunked screen (library side of `molgnn screen --dask`): the same table as the one-process
two-tier screen, every row accounted for across chunks, and a rerun that skips scored chunks."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import ModelConfig
from molgnn.models.property_model import PropertyModel
from molgnn.screen import chunked
from molgnn.screen.domain import DOMAIN_FILE, fit_domain
from molgnn.screen.fast_tier import MODEL_2D_FILE, distill_2d
from molgnn.screen.model_folder import load_screening_model, screen_library
from molgnn.train.checkpoints import checkpoint_from_model, save_checkpoint

TRAIN = ["CCO", "c1ccncc1", "NCC(=O)O", "CC#N", "OCC(F)F", "CCCC", "CC(C)O", "c1ccccc1", "CCN", "C=CC=O",
         "OC1CC1", "CC(=O)C"]
# duplicates across chunk borders (OCC = CCO, rows 0 and 5), rejects of every kind, a salt
LIBRARY = ["CCO", "CCCO", "c1ccccc1O", "not_a_smiles", "CCN", "OCC", "[Na+].[Cl-]", "CC(=O)Nc1ccccc1",
           "C1CC1N", "CCOC(=O)C", "FC(F)(F)c1ccccc1", "C" * 60, "CN", "ClCCl", "c1ccccc1O"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    labels = np.array([[len(s) / 3.0] for s in TRAIN])
    ckpt = distill_2d(TRAIN, labels, labels + 0.1, ["gap"], val_smiles=TRAIN[:4], val_labels=labels[:4],
                      members=2, epochs=5, hidden=16, layers=2)
    torch.save(ckpt, folder / MODEL_2D_FILE)
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = PropertyModel(ModelConfig(n_atom_basis=16, n_interactions=1, n_rbf=8, cutoff=4.0), ["gap"])
        m.set_target_stats(torch.tensor([6.0]), torch.tensor([1.0]))
        save_checkpoint(checkpoint_from_model(m, seed=seed), folder / f"member_{seed}.pt")
    fit_domain(TRAIN).save(folder / DOMAIN_FILE)
    return folder


def test_chunks_give_the_one_process_table_and_resume(tmp_path, model_folder):
    lib = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": LIBRARY}).to_csv(lib, index=False)
    kw = dict(top_k=2, uncertain_k=2, seed=0, timeout_s=20)
    one = screen_library(load_screening_model(model_folder), [str(lib)], tmp_path / "one.csv", workers=1, **kw)

    work = tmp_path / "work"
    chunks = chunked.split_library([str(lib)], work, chunk_rows=4)
    assert len(chunks.paths) == 4 and chunks.n_rows == len(LIBRARY)
    for c in chunks.paths:
        chunked.score_chunk(c, model_folder)
    res = chunked.merge_scored(chunks, model_folder, tmp_path / "chunked.csv", workers=1, **kw)
    assert (res.n_input_rows, res.n_ranked, res.n_rejected) == (one.n_input_rows, one.n_ranked, one.n_rejected)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "chunked.csv"), pd.read_csv(one.predictions_path))
    pd.testing.assert_frame_equal(pd.read_csv(res.rejects_path), pd.read_csv(one.rejects_path))
    rejects = pd.read_csv(res.rejects_path)
    assert rejects.loc[rejects["stage"] == "deduplicate", "row"].tolist() == [5, 14]   # across chunks

    # a rerun finds the split and every scored chunk: nothing is recomputed
    stamp = {c: chunked.scored_path(c).stat().st_mtime_ns for c in chunks.paths}
    again = chunked.split_library([str(lib)], work, chunk_rows=4)
    assert again.paths == chunks.paths
    for c in again.paths:
        chunked.score_chunk(c, model_folder)
    assert {c: chunked.scored_path(c).stat().st_mtime_ns for c in chunks.paths} == stamp
    # a chunk lost (a kill before its rename) is the only one scored again
    os.remove(chunked.scored_path(chunks.paths[2]))
    with pytest.raises(FileNotFoundError, match="chunk_00002"):
        chunked.merge_scored(chunks, model_folder, tmp_path / "x.csv", **kw)
    chunked.score_chunk(chunks.paths[2], model_folder)
    assert chunked.scored_path(chunks.paths[2]).is_file()


def test_a_work_folder_of_another_library_is_refused(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("smiles\nCCO\n")
    b.write_text("smiles\nCCN\n")
    chunked.split_library([str(a)], tmp_path / "work", chunk_rows=10)
    with pytest.raises(ValueError, match="new work folder"):
        chunked.split_library([str(b)], tmp_path / "work", chunk_rows=10)


@pytest.mark.slow
def test_cli_dask_screen_equals_the_one_process_screen(tmp_path, model_folder):
    """`molgnn screen --dask` end to end: a Prefect flow whose chunk tasks run on a Dask LocalCluster."""
    import subprocess
    import sys

    lib = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": LIBRARY}).to_csv(lib, index=False)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

    def screen(*extra):
        return subprocess.run([sys.executable, "-m", "molgnn.cli", "screen", str(lib), "--models", str(model_folder),
                               "--top-k", "2", "--uncertain-k", "2", "--workers", "2", "--no-progress", *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    one = screen("--out", str(tmp_path / "one.csv"))
    assert one.returncode == 0, one.stderr[-3000:]
    dask = screen("--out", str(tmp_path / "dask.csv"), "--dask", "--chunk-rows", "4")
    assert dask.returncode == 0, dask.stderr[-3000:]
    assert "in 4 chunks (4 scored now)" in dask.stdout
    # the workers report to the flow's temporary Prefect server instead of each starting its own
    assert (dask.stdout + dask.stderr).count("Starting temporary server") == 1, dask.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask.csv"), pd.read_csv(tmp_path / "one.csv"))
    rerun = screen("--out", str(tmp_path / "dask2.csv"), "--dask", "--chunk-rows", "4",
                   "--work-dir", str(tmp_path / "dask.csv.work"))
    assert rerun.returncode == 0 and "(0 scored now)" in rerun.stdout, rerun.stderr[-3000:]
