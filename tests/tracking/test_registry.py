"""The Model Registry adapter on a real MLflow store: one version per training, champion alias,
download of a version's folder, the input data as an MLflow Dataset."""
from pathlib import Path

import pandas as pd
import pytest

from molgnn.config import from_dict
from molgnn.tracking import registry
from molgnn.tracking.mlflow_tracking import Tracker, resolve_uri


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    params = from_dict({"tracking": {"mlflow_uri": "sqlite:///mlruns/mlflow.db", "experiment": "exp"}})
    return Tracker.connect(params.tracking, tmp_path)


def model_folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "member_0.pt").write_bytes(weights)
    (path / "calibration.json").write_text("{}")
    (path / "stage.json").write_text("{}")          # a record of the training, not the model
    (path / "history.json").write_text("[]")
    return path


def test_one_version_per_training_and_champion_follows_the_newest(tracker, tmp_path):
    run = tracker.start("finetune")
    first = registry.register_folder(tracker, "exp-screening", model_folder(tmp_path / "a", b"A"),
                                     run_id=run.run_id, stage_key="k1")
    assert first == registry.RegisteredVersion("exp-screening", "1", new=True)
    again = registry.register_folder(tracker, "exp-screening", tmp_path / "a", run_id=run.run_id, stage_key="k1")
    assert again == registry.RegisteredVersion("exp-screening", "1", new=False)
    run2 = tracker.start("finetune")
    second = registry.register_folder(tracker, "exp-screening", model_folder(tmp_path / "b", b"B"),
                                      run_id=run2.run_id, stage_key="k2")
    assert second.version == "2" and second.new
    client = tracker.client
    assert str(client.get_model_version_by_alias("exp-screening", registry.CHAMPION).version) == "2"

    uri = resolve_uri("sqlite:///mlruns/mlflow.db", tmp_path)
    cache = tmp_path / "cache"
    champion = registry.download_model("models:/exp-screening@champion", uri, cache)
    assert champion == cache / "exp-screening" / "2"
    assert sorted(p.name for p in champion.iterdir()) == ["calibration.json", "member_0.pt"]
    assert (champion / "member_0.pt").read_bytes() == b"B"
    v1 = registry.download_model("models:/exp-screening/1", uri, cache)
    assert (v1 / "member_0.pt").read_bytes() == b"A"
    assert registry.download_model("models:/exp-screening/latest", uri, cache) == champion
    assert not list(cache.glob("exp-screening/.*")), "no staging folder left behind"
    with pytest.raises(ValueError, match="registered models: exp-screening"):
        registry.download_model("models:/other@champion", uri, cache)
    with pytest.raises(ValueError, match="no versions|not in the registry"):
        registry.download_model("models:/other/latest", uri, cache)


def test_an_empty_folder_is_refused(tracker, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "stage.json").write_text("{}")
    run = tracker.start("finetune")
    with pytest.raises(FileNotFoundError, match="no model files"):
        registry.register_folder(tracker, "exp-x", tmp_path / "empty", run_id=run.run_id, stage_key="k")


def test_input_data_is_a_dataset_with_the_dvc_md5_as_digest(tracker, tmp_path):
    table = tmp_path / "molecules.parquet"
    pd.DataFrame({"mol_id": ["a", "b"], "smiles": ["C", "CC"], "gap": [1.0, None],
                  "atomic_numbers": [[6], [6, 6]]}).to_parquet(table)
    run = tracker.start("pipeline")
    registry.log_input_data(tracker, [run.run_id], table, "0123abcd.dir", name="exp-molecules", targets=["gap"])
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert (ds.name, ds.digest) == ("exp-molecules", "0123abcd.dir")
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
