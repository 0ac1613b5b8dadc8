"""Turn every benchmarks/results/*.json into benchmarks/results/README.md.

Each JSON file holds a list of records with at least ``benchmark``, ``system``, ``metric``,
``value``, ``unit``, ``higher_is_better``; optional ``sample`` (a variant of one system, shown in
its column title), ``machine``, ``date``, ``commit``, ``command``, ``setup``, ``source``, ``note``.
One table per benchmark: a row per metric, a column per system (and sample), in order of first
appearance, then where each column's figures come from and the notes. One column never mixes machines
or commits (each gets its own column).

Stale records are marked: a record whose ``command`` names a benchmark script (``benchmarks/*.py``, or
a ``.sh`` there) measures that script, the benchmark modules beside it that it imports (``common``)
and every ``molgnn`` module they import, transitively. If that
code changed in a commit the record's ``commit`` does not contain (``git merge-base --is-ancestor``),
its value carries a † and the column says which commit changed which files since: rerun it.

    .venv/bin/python benchmarks/make_table.py [--results DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import re
import subprocess
from functools import lru_cache
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
STALE = "†"
_SCRIPT = re.compile(r"benchmarks/[\w.-]+\.(?:py|sh)\b")


def fmt(value: object, unit: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, int):
        return f"{value:,}"
    if unit == "s" or abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4f}"


def load(results: Path) -> dict[str, list[dict]]:
    by_benchmark: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*.json")):
        records = json.loads(path.read_text())
        if isinstance(records, dict):
            records = [records]
        for record in records:
            record.setdefault("_file", path.name)
            by_benchmark.setdefault(record["benchmark"], []).append(record)
    return by_benchmark


@lru_cache(maxsize=None)
def measured_code(script: Path, repo: Path) -> tuple[str, ...]:
    """Repository paths of ``script``, of the modules beside it that it imports (``benchmarks/common.py``)
    and of every module of the ``molgnn`` package these import, followed transitively (imports inside
    functions too); a shell script is taken alone."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # "from molgnn.x import y": y may be a submodule or a name of molgnn.x
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                sibling = path.parent / f"{name.split('.')[0]}.py"
                if not path.is_relative_to(repo / "molgnn") and sibling.is_file():
                    todo.append(sibling)   # a benchmark helper module run from the script's folder
                if name.split(".")[0] != "molgnn":
                    continue
                base = repo.joinpath(*name.split("."))
                todo += [base.with_suffix(".py"), base / "__init__.py"]
                # a module's package __init__ runs too
                parts = name.split(".")
                todo += [repo.joinpath(*parts[:k], "__init__.py") for k in range(1, len(parts))]
    return tuple(sorted(p.relative_to(repo).as_posix() for p in seen))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


@lru_cache(maxsize=None)
def _last_change(repo: Path, paths: tuple[str, ...]) -> str | None:
    out = _git(repo, "log", "-1", "--format=%H", "--", *paths)
    return out.stdout.strip() or None if out.returncode == 0 else None


@lru_cache(maxsize=None)
def _contains(repo: Path, commit: str, ancestor: str) -> bool | None:
    """Whether ``commit`` has ``ancestor`` in its history; None if git does not know ``commit``."""
    rc = _git(repo, "merge-base", "--is-ancestor", ancestor, commit).returncode
    return {0: True, 1: False}.get(rc)


def staleness(record: dict, repo: Path = REPO) -> str | None:
    """Why ``record`` is stale (its commit predates the last change to the code it measures), or None
    when it is current or cannot be judged (no benchmark script in its command, no commit)."""
    scripts = sorted(set(_SCRIPT.findall(record.get("command") or "")))
    commit = record.get("commit") or ""
    if not scripts or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return None
    paths = tuple(sorted({p for s in scripts for p in measured_code(repo / s, repo)}))
    if not paths:
        return None
    last = _last_change(repo, paths)
    if last is None:
        return None
    contained = _contains(repo, commit, last)
    if contained:
        return None
    changed = _git(repo, "diff", "--name-only", commit, last, "--", *paths).stdout.split() if contained is False else []
    what = ", ".join(f"`{c}`" for c in changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    if contained is None:
        return f"measured at {commit[:7]}, a commit this repository does not have; the code it measures last changed in {last[:7]}"
    return f"measured at {commit[:7]}; the code it measures changed since, last in {last[:7]}" + (f" ({what})" if what else "")


def column(record: dict) -> str:
    return f"{record['system']} ({record['sample']})" if record.get("sample") else record["system"]


def split_by_machine(records: list[dict]) -> list[dict]:
    """Where one system's records of a benchmark come from several machines, give each machine its own
    column (e.g. "molgnn (1x NVIDIA H100 80GB HBM3)"): one column must not mix GPUs."""
    return _split(records, "machine", lambda machine: machine.split(",")[0])


def split_by_commit(records: list[dict]) -> list[dict]:
    """Likewise for commits (e.g. "molgnn (at 14e551f)"): a rerun at newer code sits beside the old record."""
    return _split(records, "commit", lambda commit: f"at {commit[:7]}")


def _split(records: list[dict], key: str, label) -> list[dict]:
    values: dict[str, set] = {}
    for r in records:
        values.setdefault(column(r), set()).add(r.get(key))
    out = []
    for r in records:
        if len(values[column(r)]) > 1 and r.get(key):
            r = {**r, "sample": f"{r['sample']}, {label(r[key])}" if r.get("sample") else label(r[key])}
        out.append(r)
    return out


def cell_text(records: list[dict], unit: str) -> str:
    """One value; over seeds (records with a ``seed`` field), mean ± sample sd and the seed count."""
    seeded = {r["seed"]: r["value"] for r in records if "seed" in r}
    if len(seeded) < 2:
        return fmt(records[-1]["value"], unit)
    values = [float(v) for v in seeded.values()]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{fmt(mean, unit)} ± {fmt(sd, unit)} ({len(values)} seeds)"


def by_dataset(benchmark: str, records: list[dict]) -> list[tuple[str, list[dict]]]:
    """One table per ``dataset`` field where records have one (in order of first appearance)."""
    datasets = list(dict.fromkeys(r.get("dataset") for r in records))
    if datasets == [None]:
        return [(benchmark, records)]
    return [(f"{benchmark}: {d}" if d is not None else benchmark, [r for r in records if r.get("dataset") == d])
            for d in datasets]


def table(benchmark: str, records: list[dict], repo: Path | None = REPO) -> list[str]:
    records = split_by_commit(split_by_machine(records))
    stale = {id(r): staleness(r, repo) for r in records} if repo is not None else {}
    systems = list(dict.fromkeys(column(r) for r in records))
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in records:   # records with a "seed" field: one cell holds every seed's record
        cells.setdefault((r["metric"], column(r)), []).append(r)
    cell = {k: v[-1] for k, v in cells.items()}
    files = ", ".join(f"`{f}`" for f in dict.fromkeys(r["_file"] for r in records))
    lines = [f"## {benchmark}", "", f"From {files}.", ""]
    lines.append("| metric | unit | | " + " | ".join(systems) + " |")
    lines.append("|---|---|---|" + "---:|" * len(systems))
    for metric in metrics:
        first = next(r for r in records if r["metric"] == metric)
        hib = first.get("higher_is_better")
        arrow = "" if hib is None else "↑" if hib else "↓"   # None: a count, neither better
        values = [cell_text(cells[(metric, s)], first.get("unit", ""))
                  + (f" {STALE}" if any(stale.get(id(r)) for r in cells[(metric, s)]) else "")
                  if (metric, s) in cells else "" for s in systems]
        lines.append(f"| {metric} | {first.get('unit', '')} | {arrow} | " + " | ".join(values) + " |")
    lines.append("")
    for system in systems:
        r = next(r for r in records if column(r) == system)
        where = [f"{k}: {r[k]}" for k in ("source", "machine", "date", "commit") if r.get(k)]
        if r.get("command"):
            where.append(f"command: `{r['command']}`")
        if r.get("setup"):
            where.append(f"setup: {r['setup']}")
        why = dict.fromkeys(stale.get(id(x)) for x in records if column(x) == system and stale.get(id(x)))
        if why:
            where.append(f"{STALE} **stale**: " + "; ".join(why))
        lines.append(f"- **{system}** — " + "; ".join(where))
    notes: dict[tuple[str, str], list[str]] = {}
    for r in records:
        if r.get("note"):
            notes.setdefault((r["metric"], r["note"]), []).append(column(r))
    if notes:
        lines += ["", "Notes:", ""]
        for (metric, note), cols in notes.items():
            where = "" if len(cols) == len(systems) or len(set(cols)) == len(systems) else \
                " (" + ", ".join(dict.fromkeys(cols)) + ")"
            lines.append(f"- {metric}{where}: {note}")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/README.md")
    parser.add_argument("--repo", type=Path, default=REPO, help="git repository the records' commits belong to")
    args = parser.parse_args(argv)
    out = args.out or args.results / "README.md"
    lines = ["# Benchmark results", "",
             "Generated by `benchmarks/make_table.py` from `benchmarks/results/*.json`; do not edit by hand. "
             f"{STALE} marks a value measured at a commit older than the last change to the code it measures "
             "(the benchmark script named in its command and the molgnn modules that script imports): stale "
             "until rerun.", ""]
    for benchmark, records in load(args.results).items():
        for title, part in by_dataset(benchmark, records):
            lines += table(title, part, args.repo.resolve())
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
