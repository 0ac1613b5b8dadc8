"""Two folders sharing one MLflow store keep their artifacts where their own params say."""
from pathlib import Path

import pytest

from molgnn.config import from_dict
from molgnn.tracking.mlflow_tracking import ArtifactLocationError, Tracker


def connect(root: Path, db: Path, experiment: str) -> Tracker:
    params = from_dict({"tracking": {"mlflow_uri": f"sqlite:///{db}", "artifact_root": "mlruns/artifacts",
                                     "experiment": experiment}})
    return Tracker.connect(params.tracking, root)


def test_second_folder_gets_its_own_artifacts_or_a_clear_refusal(tmp_path):
    db = tmp_path / "shared" / "mlflow.db"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ta = connect(a, db, "molgnn")
    with pytest.raises(ArtifactLocationError, match="tracking.experiment"):
        connect(b, db, "molgnn")   # would write into a's artifact root
    tb = connect(b, db, "molgnn-b")
    for tracker, root in ((ta, a), (tb, b)):
        run = tracker.start("pipeline")
        (root / "note.txt").write_text(root.name)
        run.log_artifact(root / "note.txt")
        run.finish()
        uri = tracker.client.get_run(run.run_id).info.artifact_uri
        assert uri.startswith((root / "mlruns" / "artifacts").resolve().as_uri())
        assert (root / "mlruns/artifacts" / run.run_id / "artifacts/note.txt").read_text() == root.name


def test_dangling_runs_of_dead_processes_are_closed(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    tracker = connect(tmp_path, db, "molgnn")
    mine = tracker.start("pipeline")              # this process: alive, left alone
    # a run started by a process that has since exited without finishing it
    code = ("from pathlib import Path; from molgnn.config import from_dict; "
            "from molgnn.tracking.mlflow_tracking import Tracker; "
            f"p = from_dict({{'tracking': {{'mlflow_uri': 'sqlite:///{db}'}}}}); "
            f"print(Tracker.connect(p.tracking, Path('{tmp_path}')).start('finetune').run_id)")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert tracker.client.get_run(dead).info.status == "RUNNING"
    assert tracker.close_dangling() == [dead]
    assert tracker.client.get_run(dead).info.status == "KILLED"
    assert tracker.client.get_run(mine.run_id).info.status == "RUNNING"
