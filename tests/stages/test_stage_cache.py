"""The content-addressed stage store and its cache, with a real MLflow sqlite store."""
import shutil
from pathlib import Path

import pytest

from molgnn.config import from_dict
from molgnn.stages.code_key import code_fingerprint, code_hash
from molgnn.stages.common import MANIFEST, RunContext, StageResult, run_cached, stage_key
from molgnn.tracking.mlflow_tracking import TAG_PARENT, TAG_STAGE, Tracker


@pytest.fixture
def ctx(tmp_path):
    params = from_dict({"tracking": {"mlflow_uri": "sqlite:///mlruns/mlflow.db"}})
    tracker = Tracker.connect(params.tracking, tmp_path, tags={"molgnn.params_hash": params.digest()})
    parent = tracker.start("pipeline")
    return RunContext(params=params, root=tmp_path, tracker=tracker, parent_run_id=parent.run_id,
                      run_dir=tmp_path / "runs" / "r1")


def make_compute(key: str, calls: list, text: str = "result"):
    def compute(run, out_dir: Path):
        calls.append(out_dir)
        (out_dir / "out.txt").write_text(text)
        return StageResult(stage="demo", key=key, out_dir=str(out_dir),
                           outputs={"out": str(out_dir / "out.txt")}, metrics={"score": 1.5})
    return compute


def test_second_run_with_same_key_is_cached_and_tracked(ctx):
    key = stage_key("demo", {"a": 1})
    calls = []
    first = run_cached(ctx, "demo", key, make_compute(key, calls), params={"a": 1})
    second = run_cached(ctx, "demo", key, make_compute(key, calls), params={"a": 1})
    assert len(calls) == 1 and not first.cached and second.cached
    assert second.metrics == {"score": 1.5}
    # published under its key in the store, linked into the run folder
    assert Path(first.out_dir) == ctx.store.final_dir("demo", key)
    assert (ctx.run_dir / "demo" / "out.txt").read_text() == "result"
    assert second.path("out") == Path(first.out_dir) / "out.txt"
    run = ctx.tracker.client.get_run(second.info["mlflow_run_id"])
    assert run.data.tags[TAG_PARENT] == ctx.parent_run_id
    assert run.data.tags[TAG_STAGE] == "demo" and run.data.tags["molgnn.cached"] == "true"
    assert run.data.metrics["score"] == 1.5 and run.data.params["a"] == "1"


def test_changed_key_or_missing_output_recomputes(ctx):
    calls = []
    k1, k2 = stage_key("demo", 1), stage_key("demo", 2)
    assert k1 != k2
    run_cached(ctx, "demo", k1, make_compute(k1, calls))
    second = run_cached(ctx, "demo", k2, make_compute(k2, calls))
    second.path("out").unlink()          # a finished folder tampered with is not taken as finished
    third = run_cached(ctx, "demo", k2, make_compute(k2, calls))
    assert len(calls) == 3 and not third.cached and third.path("out").read_text() == "result"


def test_failed_stage_publishes_nothing_and_marks_run_failed(ctx):
    key = stage_key("demo", "boom")

    def boom(run, out_dir):
        (out_dir / "half.txt").write_text("half-written")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        run_cached(ctx, "demo", key, boom)
    assert not ctx.store.final_dir("demo", key).exists()
    assert ctx.store.load("demo", key) is None
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`molgnn.stage` = 'demo'")
    assert runs[0].info.status == "FAILED"
    # the next attempt starts from an empty staging folder: the half-written file is gone
    calls = []
    result = run_cached(ctx, "demo", key, make_compute(key, calls))
    assert not (Path(result.out_dir) / "half.txt").exists() and (Path(result.out_dir) / MANIFEST).exists()


def test_stage_key_hashes_file_content_not_path(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    k1 = stage_key("s", f)
    f.write_text("a\n2\n")
    assert stage_key("s", f) != k1


def test_code_fingerprint_follows_imports_inside_functions_and_library_versions():
    fp = code_fingerprint("molgnn.stages.filter")
    # imported at module level, and inside functions (molgnn.chem.filters is imported lazily)
    assert {"molgnn.stages.filter", "molgnn.stages.common", "molgnn.chem.filters"} <= set(fp["modules"])
    assert "molgnn.models.painn_encoder" not in fp["modules"]       # not code the filter runs
    assert "rdkit" in fp["libraries"] and "pandas" in fp["libraries"]
    assert code_fingerprint("molgnn.stages.nonexistent") == {}


def test_editing_a_stage_module_changes_only_the_keys_that_reach_it(tmp_path):
    import molgnn

    pkg = tmp_path / "molgnn"
    shutil.copytree(Path(molgnn.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    before = {s: code_hash(f"molgnn.stages.{s}", pkg) for s in ("filter", "finetune", "ingest")}
    with open(pkg / "stages" / "filter.py", "a") as fh:
        fh.write("\nBEHAVIOUR_CHANGED = True\n")
    after = {s: code_hash(f"molgnn.stages.{s}", pkg) for s in ("filter", "finetune", "ingest")}
    assert after["filter"] != before["filter"]
    assert after["finetune"] == before["finetune"] and after["ingest"] == before["ingest"]
    with open(pkg / "chem" / "filters.py", "a") as fh:     # a module the filter stage imports lazily
        fh.write("\n# changed\n")
    assert code_hash("molgnn.stages.filter", pkg) != after["filter"]
