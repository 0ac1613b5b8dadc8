"""benchmarks/common.py: the one record builder, machine description and provenance of the benchmark
scripts; and the scripts import only it (not each other, not molgnn's private names)."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("benchmarks_common_under_test", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_fields_order_and_errors(common):
    ctx = {"machine": "m", "date": "2026-01-01", "commit": "abc1234", "command": "python benchmarks/x.py"}
    rec = common.record("B", "molgnn", "MAE", 1.5, "meV", False, ctx, setup="s", per_seed=[1.5])
    assert list(rec) == [*common.RECORD_FIELDS, *common.PROVENANCE_FIELDS, "setup", "per_seed"]
    assert common.record("B", "peer", "rows", 3, "rows", None, source="paper")["higher_is_better"] is None
    with pytest.raises(ValueError, match="record metric must be a non-empty string"):
        common.record("B", "molgnn", "", 1.0, "s", False)
    with pytest.raises(ValueError, match="value of 'molgnn' / 'MAE' must be a number, got '1.5'"):
        common.record("B", "molgnn", "MAE", "1.5", "meV", False)
    with pytest.raises(ValueError, match="higher_is_better .* True, False or None, got 'yes'"):
        common.record("B", "molgnn", "MAE", 1.5, "meV", "yes")


def test_write_records_is_a_json_list_and_leaves_no_temporary(common, tmp_path):
    recs = [common.record("B", "s", "m", float("nan"), "", True)]
    path = common.write_records(tmp_path / "sub" / "r.json", recs, indent=1)
    assert path.read_text().startswith("[\n {\n") and json.loads(path.read_text())[0]["metric"] == "m"
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_machine_and_provenance(common, monkeypatch):
    cpu = common.machine()
    assert re.match(r"\d+-core .+, ", cpu), cpu   # first part: what make_table tells machines apart by
    monkeypatch.setenv("MOLGNN_COMMIT", "feedbeef")
    ctx = common.provenance(command="python benchmarks/x.py --n 1")
    assert list(ctx) == list(common.PROVENANCE_FIELDS)
    assert ctx["commit"] == "feedbeef" and ctx["machine"] == cpu and re.fullmatch(r"\d{4}-\d\d-\d\d", ctx["date"])
    monkeypatch.delenv("MOLGNN_COMMIT")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", common.git_commit())


def test_command_line_names_the_script_and_quotes_arguments(common, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/abs/path/benchmarks/bench.py", "--title", "two words"])
    line = common.command_line()
    assert line.endswith("benchmarks/bench.py --title 'two words'") and line.split()[0] in ("python", ".venv/bin/python")
    assert common.command_line(["--n", "5"], "other.py").endswith("benchmarks/other.py --n 5")


def test_scripts_share_common_instead_of_importing_each_other_or_private_names():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                assert top not in scripts - {"common"}, f"{path.name} imports the script {node.module}"
                if top == "molgnn":
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    assert not private, f"{path.name} imports molgnn internals {private} from {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in scripts - {"common"}, f"{path.name} imports {alias.name}"


def test_merge_records_replaces_same_figure_and_keeps_the_rest(common, tmp_path):
    path = tmp_path / "r.json"
    key = ("dataset", "system", "seed", "metric")

    def rec(dataset, seed, value):
        return common.record("B", "molgnn", "test RMSE", value, "u", False, dataset=dataset, seed=seed)

    assert common.read_records(path) == []
    common.merge_records(path, [rec("ESOL", 0, 1.0), rec("ESOL", 1, 2.0)], key)
    common.merge_records(path, [rec("FreeSolv", 0, 3.0)], key)           # another dataset accumulates
    merged = common.merge_records(path, [rec("ESOL", 1, 2.5)], key)     # a rerun replaces in place
    assert [(r["dataset"], r["seed"], r["value"]) for r in merged] == [("ESOL", 0, 1.0), ("ESOL", 1, 2.5),
                                                                          ("FreeSolv", 0, 3.0)]
    assert common.read_records(path) == merged
