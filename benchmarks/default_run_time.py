"""Wall-clock of the README's quick start on this machine: a fresh clone, the install
(`scripts/bootstrap.sh`), then the default pipeline run (`molgnn run --params params.yaml`, what
`make run` does after installing), each timed separately.

    .venv/bin/python benchmarks/default_run_time.py [--clone-dir /tmp/molgnn-fresh]

Writes benchmarks/results/default_run_time.json. Run it on an idle machine: the figures are the
wall-clock a user waits, and other jobs on the 2 cores slow torch several-fold.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from common import REPO, RESULTS, git_commit, load_average, provenance, record, write_records


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clone-dir", type=Path, default=Path("/tmp/molgnn-fresh"))
    ap.add_argument("--out", type=Path, default=RESULTS / "default_run_time.json")
    args = ap.parse_args(argv)
    if args.clone_dir.exists():
        shutil.rmtree(args.clone_dir)
    subprocess.run(["git", "clone", "-q", str(REPO), str(args.clone_dir)], check=True)
    context = provenance(commit=git_commit(), command="benchmarks/default_run_time.py")
    load_start = load_average()
    install = timed(["./scripts/bootstrap.sh"], args.clone_dir, args.clone_dir / "install.log")
    run = timed([".venv/bin/molgnn", "run", "--params", "params.yaml"], args.clone_dir, args.clone_dir / "run.log")
    bench = "README quick start in a fresh clone (embedded qm9-sample, default params.yaml)"
    note = f"load average (1/5/15 min) {load_start} at start, {load_average()} at end; install uses the machine's pip cache"
    records = [record(bench, "molgnn", metric, value, "s", False, context, note=note)
               for metric, value in (("install (scripts/bootstrap.sh)", install),
                                     ("default pipeline run (molgnn run)", run))]
    write_records(args.out, records)
    print(f"install {install:.0f} s, run {run:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
