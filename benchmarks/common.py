"""What the benchmark scripts share: the repository, the machine, the code version and the record.

A record is one figure of one system in one benchmark, the unit ``make_table.py`` turns into tables:
``benchmark``, ``system``, ``metric``, ``value``, ``unit``, ``higher_is_better`` (None: a count,
neither better), then where it came from (``machine``, ``date``, ``commit``, ``command``) and
optional ``sample``, ``setup``, ``source``, ``note`` or script-specific fields.

Scripts run as ``python benchmarks/<script>.py``, so this folder is on ``sys.path`` and they import
this module as ``common``. Importing it also puts the repository on ``sys.path``: GPU hosts run the
scripts from a copy of the working tree without installing molgnn.
"""
from __future__ import annotations

import datetime as dt
import json
import numbers
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECORD_FIELDS = ("benchmark", "system", "metric", "value", "unit", "higher_is_better")
PROVENANCE_FIELDS = ("machine", "date", "commit", "command")


# ------------------------------------------------------------------------------------ provenance
def git(*args: str, cwd: Path = REPO) -> str:
    """Output of ``git ARGS`` in the repository; "" where git or the repository is missing."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_commit() -> str:
    """The code version a record names: ``MOLGNN_COMMIT`` when set (GPU hosts get a working tree
    without ``.git``, the launching side passes it), else HEAD, else "unknown"."""
    return os.environ.get("MOLGNN_COMMIT") or git("rev-parse", "HEAD") or "unknown"


def worktree_dirty(*paths: str) -> bool:
    """Whether tracked files under ``paths`` (default: all) differ from HEAD."""
    return bool(git("status", "--porcelain", "--untracked-files=no", "--", *paths))


def command_line(argv: Sequence[str] | None = None, script: str | None = None) -> str:
    """The command as a user would retype it: interpreter, ``benchmarks/<script>.py`` and arguments.

    ``argv`` defaults to this process's arguments, ``script`` to the running script's name.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = script or Path(sys.argv[0]).name
    venv = REPO / ".venv"
    python = ".venv/bin/python" if Path(os.path.normpath(os.path.abspath(sys.executable))).is_relative_to(venv) else "python"
    return " ".join(shlex.quote(a) for a in [python, f"benchmarks/{name}", *args])


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. "1.9/2.0/1.7" ("n/a" where the OS has none): a shared
    machine's figures depend on it."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# ------------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _torch_version() -> str | None:
    try:
        return metadata.version("torch")   # without importing torch (seconds)
    except metadata.PackageNotFoundError:
        return None


def machine(device: Any = None, *, torch_threads: bool = False) -> str:
    """One line naming the hardware a figure was measured on; its first comma-separated part is what
    ``make_table.py`` tells machines apart by.

    ``device`` (a string or ``torch.device``; None = the CPU): "1x NVIDIA H200 (140 GiB), 16 CPU cores,
    torch 2.11.0" or "2-core Intel(R) Xeon(R) Processor, 24 GB, Linux, torch 2.11.0"; ``torch_threads``
    adds torch's CPU thread count (it decides CPU speed on a shared machine).
    """
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        return (f"1x {props.name} ({props.total_memory / 2**30:.0f} GiB), {os.cpu_count()} CPU cores, "
                f"torch {torch.__version__}")
    memory = _memory_gb()
    parts = [f"{os.cpu_count()}-core {_cpu_model()}", *([f"{memory:.0f} GB"] if memory else []), platform.system()]
    if (version := _torch_version()) is not None:
        parts.append(f"torch {version}")
    if torch_threads:
        import torch

        parts.append(f"{torch.get_num_threads()} torch threads")
    return ", ".join(parts)


def provenance(*, device: Any = None, commit: str | None = None, command: str | None = None,
               torch_threads: bool = False) -> dict[str, str]:
    """``machine``, ``date``, ``commit`` and ``command`` of this run: the fields every record repeats."""
    return {"machine": machine(device, torch_threads=torch_threads), "date": dt.date.today().isoformat(),
            "commit": commit or git_commit(), "command": command or command_line()}


# ------------------------------------------------------------------------------------ records
def record(benchmark: str, system: str, metric: str, value: Any, unit: str, higher_is_better: bool | None,
           context: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """One record: the six fields, then ``context`` (e.g. :func:`provenance`), then ``extra``, in that
    key order (the JSON files keep it).

    Raises ValueError naming the field when a name is empty, the value is not a number, the unit not
    a string or ``higher_is_better`` not True, False or None.
    """
    for field, text in (("benchmark", benchmark), ("system", system), ("metric", metric)):
        if not isinstance(text, str) or not text:
            raise ValueError(f"record {field} must be a non-empty string, got {text!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"record value of {system!r} / {metric!r} must be a number, got {value!r}")
    if not isinstance(unit, str):
        raise ValueError(f"record unit of {system!r} / {metric!r} must be a string, got {unit!r}")
    if higher_is_better not in (True, False, None):
        raise ValueError(f"record higher_is_better of {system!r} / {metric!r} must be True, False or None, "
                         f"got {higher_is_better!r}")
    return {"benchmark": benchmark, "system": system, "metric": metric, "value": value, "unit": unit,
            "higher_is_better": higher_is_better, **(context or {}), **extra}


def write_records(path: Path, records: Sequence[Mapping[str, Any]], *, indent: int = 2) -> Path:
    """``records`` as a JSON list (one file of benchmarks/results), written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(list(records), indent=indent) + "\n")
    os.replace(tmp, path)
    return path



def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of one results file; [] when it does not exist yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else []


def merge_records(path: Path, new: Sequence[Mapping[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    """Write ``new`` into the results file ``path``, replacing the records that agree with one of them
    on every field of ``key`` (e.g. dataset, system, seed, metric) and keeping all others in place:
    partial runs accumulate, a rerun of one figure replaces it. Returns what was written."""
    def ident(r: Mapping[str, Any]) -> tuple:
        return tuple(json.dumps(r.get(k), sort_keys=True) for k in key)

    fresh = {ident(r): dict(r) for r in new}
    merged, placed = [], set()
    for r in read_records(path):
        k = ident(r)
        if k in fresh:
            if k not in placed:
                merged.append(fresh[k])
                placed.add(k)
        else:
            merged.append(r)
    merged += [r for k, r in fresh.items() if k not in placed]
    write_records(path, merged)
    return merged
