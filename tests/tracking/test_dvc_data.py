"""Real DVC, offline, with the default local remote."""
import subprocess

import pytest

from molgnn.tracking.dvc_data import data_md5, ensure_repo, is_clean, version_data


@pytest.mark.slow   # about 25 s on 2 shared cores: dvc add, push and status each start DVC
def test_version_data_writes_dvc_file_pushes_and_is_clean(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("smiles\nCCO\n")
    md5 = version_data(tmp_path)
    assert md5 and md5.endswith(".dir")
    assert data_md5(tmp_path) == md5
    assert is_clean(tmp_path)
    assert any((tmp_path / ".dvc-storage").rglob("*")), "the default remote received the data"
    (tmp_path / "data" / "a.csv").write_text("smiles\nCCN\n")
    assert not is_clean(tmp_path)
    assert version_data(tmp_path) != md5


def test_ensure_repo_outside_git_and_idempotent(tmp_path):
    ensure_repo(tmp_path)
    ensure_repo(tmp_path)
    assert (tmp_path / ".dvc" / "config").read_text().count("remote") >= 1
    assert data_md5(tmp_path) is None
