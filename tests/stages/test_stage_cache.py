"""The content-hash stage cache, with a real MLflow sqlite store."""
from pathlib import Path

import pytest

from molgnn.config import from_dict
from molgnn.stages.common import MANIFEST, RunContext, StageResult, run_cached, stage_key
from molgnn.tracking.mlflow_tracking import TAG_PARENT, TAG_STAGE, Tracker


@pytest.fixture
def ctx(tmp_path):
    params = from_dict({"tracking": {"mlflow_uri": "sqlite:///mlruns/mlflow.db"}})
    tracker = Tracker.connect(params.tracking, tmp_path, tags={"molgnn.params_hash": params.digest()})
    parent = tracker.start("pipeline")
    return RunContext(params=params, root=tmp_path, tracker=tracker, parent_run_id=parent.run_id)


def make_compute(out_dir: Path, key: str, calls: list):
    def compute(run):
        calls.append(1)
        (out_dir / "out.txt").write_text("result")
        return StageResult(stage="demo", key=key, out_dir=str(out_dir),
                           outputs={"out": str(out_dir / "out.txt")}, metrics={"score": 1.5})
    return compute


def test_second_run_with_same_key_is_cached_and_tracked(ctx, tmp_path):
    out = tmp_path / "stage"
    key = stage_key("demo", {"a": 1})
    calls = []
    first = run_cached(ctx, "demo", out, key, make_compute(out, key, calls), params={"a": 1})
    second = run_cached(ctx, "demo", out, key, make_compute(out, key, calls), params={"a": 1})
    assert len(calls) == 1 and not first.cached and second.cached
    assert second.metrics == {"score": 1.5}
    run = ctx.tracker.client.get_run(second.info["mlflow_run_id"])
    assert run.data.tags[TAG_PARENT] == ctx.parent_run_id
    assert run.data.tags[TAG_STAGE] == "demo" and run.data.tags["molgnn.cached"] == "true"
    assert run.data.metrics["score"] == 1.5 and run.data.params["a"] == "1"


def test_changed_key_or_missing_output_recomputes(ctx, tmp_path):
    out = tmp_path / "stage"
    calls = []
    k1, k2 = stage_key("demo", 1), stage_key("demo", 2)
    assert k1 != k2
    run_cached(ctx, "demo", out, k1, make_compute(out, k1, calls))
    run_cached(ctx, "demo", out, k2, make_compute(out, k2, calls))
    (out / "out.txt").unlink()
    run_cached(ctx, "demo", out, k2, make_compute(out, k2, calls))
    assert len(calls) == 3


def test_failed_stage_leaves_no_manifest_and_marks_run_failed(ctx, tmp_path):
    out = tmp_path / "stage"

    def boom(run):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        run_cached(ctx, "demo", out, "k", boom)
    assert not (out / MANIFEST).exists()
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`molgnn.stage` = 'demo'")
    assert runs[0].info.status == "FAILED"


def test_stage_key_hashes_file_content_not_path(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    k1 = stage_key("s", f)
    f.write_text("a\n2\n")
    assert stage_key("s", f) != k1
