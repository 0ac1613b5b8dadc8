"""benchmarks/make_table.py marks a record stale when the code its benchmark script measures (the
script and the molgnn modules it imports, transitively) changed after the record's commit."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_table.py"


@pytest.fixture(scope="module")
def make_table():
    spec = importlib.util.spec_from_file_location("make_table_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    return tmp_path


def test_record_turns_stale_when_a_transitively_imported_module_changes(make_table, repo):
    first = _commit(repo, {
        "molgnn/__init__.py": "",
        "molgnn/train/__init__.py": "",
        "molgnn/train/loop.py": "from molgnn.models import net\n",
        "molgnn/models/__init__.py": "",
        "molgnn/models/net.py": "WIDTH = 1\n",
        "molgnn/unrelated.py": "X = 1\n",
        "benchmarks/bench.py": "def main():\n    from molgnn.train.loop import net\n",
    }, "code")
    record = {"commit": first, "command": "python benchmarks/bench.py --out OUT"}
    assert make_table.measured_code(repo / "benchmarks/bench.py", repo) == (
        "benchmarks/bench.py", "molgnn/__init__.py", "molgnn/models/__init__.py", "molgnn/models/net.py",
        "molgnn/train/__init__.py", "molgnn/train/loop.py")
    assert make_table.staleness(record, repo) is None

    _commit(repo, {"molgnn/unrelated.py": "X = 2\n"}, "a module the benchmark does not import")
    make_table._last_change.cache_clear()
    assert make_table.staleness(record, repo) is None

    second = _commit(repo, {"molgnn/models/net.py": "WIDTH = 2\n"}, "the measured code changes")
    make_table._last_change.cache_clear()
    why = make_table.staleness(record, repo)
    assert why is not None and second[:7] in why and "molgnn/models/net.py" in why
    assert make_table.staleness({**record, "commit": second}, repo) is None  # a rerun at the new code

    # no benchmark script in the command, no commit, or a commit git does not know
    assert make_table.staleness({"commit": first, "command": "by hand"}, repo) is None
    assert make_table.staleness({"command": record["command"]}, repo) is None
    assert "does not have" in make_table.staleness({**record, "commit": "0" * 40}, repo)


def test_a_change_to_the_benchmarks_shared_helper_makes_its_scripts_records_stale(make_table, repo):
    first = _commit(repo, {
        "molgnn/__init__.py": "",
        "molgnn/data.py": "ROWS = 1\n",
        "benchmarks/common.py": "import json\nfrom molgnn import data\n",
        "benchmarks/bench.py": "from common import record\n",
        "benchmarks/other.py": "import json\n",
    }, "code")
    assert make_table.measured_code(repo / "benchmarks/bench.py", repo) == (
        "benchmarks/bench.py", "benchmarks/common.py", "molgnn/__init__.py", "molgnn/data.py")
    assert make_table.measured_code(repo / "benchmarks/other.py", repo) == ("benchmarks/other.py",)
    record = {"commit": first, "command": ".venv/bin/python benchmarks/bench.py"}
    second = _commit(repo, {"benchmarks/common.py": "import json\nfrom molgnn import data  # changed\n"}, "helper")
    make_table._last_change.cache_clear()
    assert second[:7] in make_table.staleness(record, repo)


def test_table_marks_stale_values_and_splits_columns_by_commit(make_table, repo):
    old = _commit(repo, {"molgnn/__init__.py": "", "benchmarks/bench.py": "import molgnn\n"}, "code")
    new = _commit(repo, {"molgnn/__init__.py": "# changed\n"}, "change")
    base = {"benchmark": "B", "system": "molgnn", "metric": "m", "unit": "meV", "higher_is_better": False,
            "machine": "gpu", "command": "benchmarks/bench.py", "_file": "b.json"}
    lines = make_table.table("B", [{**base, "value": 2.0, "commit": old}, {**base, "value": 1.0, "commit": new}], repo)
    text = "\n".join(lines)
    assert f"molgnn (at {old[:7]})" in text and f"molgnn (at {new[:7]})" in text
    assert f"| 2.0000 {make_table.STALE} | 1.0000 |" in text
    assert text.count("**stale**") == 1


def test_seeded_records_show_mean_and_sd_per_dataset_table(make_table):
    def rec(dataset, system, seed, value):
        return {"benchmark": "B", "dataset": dataset, "system": system, "seed": seed, "metric": "test RMSE",
                "value": value, "unit": "u", "higher_is_better": False, "_file": "b.json"}

    records = [rec("ESOL", "molgnn", 0, 1.0), rec("ESOL", "molgnn", 1, 2.0), rec("ESOL", "molgnn", 2, 3.0),
               rec("ESOL", "peer", 0, 0.5), rec("BACE", "molgnn", 0, 0.7)]
    parts = make_table.by_dataset("B", records)
    assert [title for title, _ in parts] == ["B: ESOL", "B: BACE"]
    text = "\n".join(make_table.table(*parts[0], repo=None))
    assert "| test RMSE | u | ↓ | 2.0000 ± 1.0000 (3 seeds) | 0.5000 |" in text
    assert make_table.by_dataset("B", [{**records[0], "dataset": None}])[0][0] == "B"
