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


def test_moving_the_checkout_moves_the_artifact_locations(tmp_path):
    """Store and artifacts travel together (a moved or copied checkout): the next connection points
    the experiment and its runs at the new folder, and registered models load from there."""
    import shutil

    from molgnn.tracking import registry
    from molgnn.tracking.mlflow_tracking import resolve_uri

    old = tmp_path / "old"
    old.mkdir()
    params = from_dict({"tracking": {"experiment": "molgnn"}})   # the default store, inside the checkout
    tracker = Tracker.connect(params.tracking, old)
    run = tracker.start("finetune")
    (old / "model").mkdir()
    (old / "model" / "member_0.pt").write_bytes(b"weights")
    registry.register_folder(tracker, "molgnn-screening", old / "model", run_id=run.run_id, stage_key="k")
    run.finish()
    new = tmp_path / "new"
    shutil.move(old, new)

    with pytest.warns(UserWarning, match="checkout moved"):
        moved = Tracker.connect(params.tracking, new)
    assert moved.client.get_experiment(moved.experiment_id).artifact_location == (new / "mlruns/artifacts").as_uri()
    assert moved.client.get_run(run.run_id).info.artifact_uri.startswith((new / "mlruns/artifacts").as_uri() + "/")
    folder = registry.download_model("models:/molgnn-screening@champion",
                                     resolve_uri(params.tracking.mlflow_uri, new), tmp_path / "cache")
    assert (folder / "member_0.pt").read_bytes() == b"weights"
    again = Tracker.connect(params.tracking, new)           # nothing left to move: no warning, same place
    assert again.experiment_id == moved.experiment_id
