"""The data DVC versions is byte-deterministic: equal inputs and parameters give equal files, whatever
the run, the machine's core count (``featurize.workers``) or the order workers finish in; and the
default parameters give exactly the md5 committed in ``data.dvc`` (else `make run` in a fresh
clone leaves ``git status`` dirty)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from molgnn.config import from_dict, load_params
from molgnn.featurize.graph_store import featurize_graphs, save_graphs
from molgnn.stages.common import RunContext
from molgnn.stages.featurize import run_featurize
from molgnn.stages.ingest import run_ingest
from molgnn.stages.publish_data import publish_data

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "stage.json"   # holds timings; .dvcignore keeps it out of the md5

# SMILES-only rows (no given geometry: each gets an ETKDGv3 conformer), one unparseable row and a
# duplicate, so every file ingest and featurize write has content.
SMILES_CSV = """smiles,y
CCO,1.0
c1ccccc1O,2.0
CC(=O)Nc1ccc(O)cc1,3.0
not_a_smiles,4.0
OCC,5.0
C[N+](C)(C)C,6.0
[O-]C(=O)CC,7.0
FC(F)(F)c1ccccc1,8.0
C1CC2CCC1C2,9.0
"""


def _build(root: Path, params) -> tuple:
    ctx = RunContext(params=params, root=root, tracker=None)
    ingest = run_ingest(ctx)
    return ingest, run_featurize(ctx, ingest.path("molecules"))


def _stage_files(result) -> dict[str, bytes]:
    """Every file a stage wrote (what publishing to data/ copies), by name, without the manifest."""
    out = Path(result.out_dir)
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != MANIFEST}


def test_ingest_and_featurize_bytes_do_not_depend_on_the_run_or_the_worker_count(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "smiles.csv").write_text(SMILES_CSV)
    builds = {}
    for workers in (1, 2):
        params = from_dict({"seed": 0, "data": {"sources": ["qm9-sample", str(inputs / "smiles.csv")],
                                                "limit": 25},
                            "featurize": {"workers": workers, "conformers": {"timeout_s": 30}}})
        builds[workers] = _build(tmp_path / f"run-{workers}-workers", params)

    ingest, featurize = builds[1]
    # Both kinds of structure and both kinds of reject are present, so the comparison covers them.
    structures = pd.read_parquet(featurize.path("structures"))
    assert set(structures["geometry_source"]) >= {"given", "etkdgv3-mmff"}
    assert featurize.metrics["n_conformers_embedded"] >= 7
    rejects = pd.read_csv(ingest.path("rejects"))
    assert set(rejects["stage"]) >= {"deduplicate"} and len(rejects) >= 2

    for one, two in zip(builds[1], builds[2]):
        files_one, files_two = _stage_files(one), _stage_files(two)
        assert sorted(files_one) == sorted(files_two)
        assert len(files_one) >= 3
        differing = [name for name in files_one if files_one[name] != files_two[name]]
        assert not differing, f"{one.stage}: {differing} differ between 1 and 2 workers"


def test_graph_store_bytes_do_not_depend_on_the_worker_count(tmp_path):
    """Several chunks in a process pool give the file a single process gives."""
    smiles = ["CCO", "c1ccccc1", "C", "CC(=O)O", "not_a_smiles", "N#N", "C1CC1", "OC=O", "CCN"]
    ids = [f"m{i}" for i in range(len(smiles))]
    for workers in (1, 2):
        store, failures = featurize_graphs(smiles, ids, "atom-bond-v1", workers=workers, chunk=2)
        assert [i for i, _ in failures] == [4]
        save_graphs(store, tmp_path / f"{workers}.pt")
    assert (tmp_path / "1.pt").read_bytes() == (tmp_path / "2.pt").read_bytes()


def _dvc_md5(data_dir: Path) -> str:
    """The md5 `dvc add` records for ``data_dir`` (in a scratch DVC repo with the project's .dvcignore)."""
    repo = data_dir.parent
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    for args in (["init", "--no-scm", "--quiet"], ["add", data_dir.name, "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
        assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return yaml.safe_load((repo / f"{data_dir.name}.dvc").read_text())["outs"][0]["md5"]


def test_default_parameters_reproduce_the_committed_data_md5(tmp_path):
    """What `make run` versions: params.yaml's ingest and featurize outputs, published into data/."""
    committed = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    params = load_params(REPO / "params.yaml")
    ingest, featurize = _build(tmp_path / "run", params)

    published = tmp_path / "published"
    publish_data(RunContext(params=params, root=published), ingest, featurize)   # as the pipeline does
    data_dir = published / committed["path"]
    assert data_dir.is_dir(), f"params.yaml's out_dirs are not under {committed['path']}/ as data.dvc expects"

    md5 = _dvc_md5(data_dir)
    assert md5 == committed["md5"], (
        f"data.dvc records {committed['md5']} but params.yaml's data hashes to {md5}: a change altered "
        f"the ingested or featurized data; run `make run` and commit the new data.dvc")
