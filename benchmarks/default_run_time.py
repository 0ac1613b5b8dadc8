"""Wall-clock of the README's quick start on this machine: a fresh clone, the install
(`scripts/bootstrap.sh`), then the default pipeline run (`molgnn run --params params.yaml`, what
`make run` does after installing), each timed separately.

    .venv/bin/python benchmarks/default_run_time.py [--clone-dir /tmp/molgnn-fresh]

Writes benchmarks/results/default_run_time.json. Run it on an idle machine: the figures are the
wall-clock a user waits, and other jobs on the 2 cores slow torch several-fold.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from moses_reference import git, machine  # noqa: E402


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clone-dir", type=Path, default=Path("/tmp/molgnn-fresh"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "default_run_time.json")
    args = ap.parse_args(argv)
    if args.clone_dir.exists():
        shutil.rmtree(args.clone_dir)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(args.clone_dir)], check=True)
    commit = git("rev-parse", "HEAD")
    load_start = "/".join(f"{x:.1f}" for x in os.getloadavg())
    install = timed(["./scripts/bootstrap.sh"], args.clone_dir, args.clone_dir / "install.log")
    run = timed([".venv/bin/molgnn", "run", "--params", "params.yaml"], args.clone_dir, args.clone_dir / "run.log")
    load_end = "/".join(f"{x:.1f}" for x in os.getloadavg())
    base = {"benchmark": "README quick start in a fresh clone (embedded qm9-sample, default params.yaml)",
            "system": "molgnn", "unit": "s", "higher_is_better": False, "machine": machine(),
            "date": dt.date.today().isoformat(), "commit": commit,
            "command": "benchmarks/default_run_time.py",
            "note": f"load average (1/5/15 min) {load_start} at start, {load_end} at end; "
                    f"install uses the machine's pip cache"}
    records = [{**base, "metric": "install (scripts/bootstrap.sh)", "value": install},
               {**base, "metric": "default pipeline run (molgnn run)", "value": run}]
    args.out.write_text(json.dumps(records, indent=2) + "\n")
    print(f"install {install:.0f} s, run {run:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
