"""A big library through `molgnn screen --dask`: wall-clock, molecules/s, peak memory, every row accounted.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/screen_distributed.py --n 1000000 --workers 2
    .venv/bin/python benchmarks/screen_distributed.py --n 200000 --workers 1 2 --kill-after 120   # + resume
    benchmarks/run_screen_scaling.sh OUT     # worker scaling 1..16 on the GPU machine's 16 cores

The first N rows of MOSES train (`../shared/datasets/moses/train.csv.gz`) are written as a CSV and
screened by the real command (`molgnn screen LIB --out OUT --dask --workers W`, default model folder
`runs/latest`, i.e. `make run`'s fast tier: the 2D tier over every row, the 3D ensemble on the 50
best and 50 most uncertain). Peak memory is the largest sum over the command's whole process tree (the flow, Prefect's
temporary server, the Dask nanny and worker processes), sampled every 0.5 s, of resident memory
(RSS: shared library pages counted once per process) and of proportional memory (PSS: shared pages
split between the processes sharing them, so the sum is what the tree uses).
`--kill-after S` first kills the command's process group with SIGKILL after S seconds, then reruns
it on the same work folder and records how many chunks the rerun had left to score.
Records: `benchmarks/results/screen_distributed.json`.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from common import REPO, RESULTS, load_average, merge_records, provenance, record

SUMMARY = re.compile(r"^(\d+) input rows in (\d+) chunks \((\d+) scored now\)")   # the CLI's last line
PHASE = re.compile(r"(split|score|merge_and_3d) ([\d.]+) s")                          # its phase times
MOSES_TRAIN = REPO.parent / "shared" / "datasets" / "moses" / "train.csv.gz"


def library(n: int, folder: Path, source: Path = MOSES_TRAIN) -> Path:
    path = folder / f"moses_train_{n}.csv"
    if not path.is_file():
        df = pd.read_csv(source, nrows=n)
        df[["SMILES"]].rename(columns={"SMILES": "smiles"}).to_csv(path, index=False)
    return path


class TreeMemory(threading.Thread):
    """Peaks of the summed RSS and the summed PSS of a process and all its descendants. RSS counts the
    pages the processes share (torch, RDKit) once per process; PSS splits them between the processes
    sharing them, so its sum is the memory the tree uses."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.peak_pss, self.stop = psutil.Process(pid), 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = pss = 0
                for p in procs:
                    try:
                        m = p.memory_full_info()
                        rss, pss = rss + m.rss, pss + m.pss
                    except psutil.Error:
                        pass
                self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            except psutil.Error:
                pass
            time.sleep(0.5)


def run(argv: list[str], kill_after: float | None = None) -> tuple[int, float, tuple[float, float], str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    mem = TreeMemory(proc.pid)
    mem.start()
    if kill_after is not None:
        try:
            out, _ = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    else:
        out, _ = proc.communicate()
    mem.stop.set()
    mem.join()
    return proc.returncode, time.perf_counter() - start, (mem.peak / 2**30, mem.peak_pss / 2**30), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--chunk-rows", type=int, default=5_000)
    ap.add_argument("--models", default="runs/latest")
    ap.add_argument("--source", type=Path, default=MOSES_TRAIN, help="CSV(.gz) with a SMILES column (MOSES train)")
    ap.add_argument("--device", default="cpu", help="the screen's torch device (cpu: scaling over CPU workers)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds for the whole script: a worker count is skipped when the last run's time is not left")
    ap.add_argument("--kill-after", type=float, help="kill -9 the first attempt after this many seconds, then resume")
    ap.add_argument("--work", default=str(REPO / ".bench" / "screen_distributed"))
    ap.add_argument("--out", default=str(RESULTS / "screen_distributed.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lib = library(args.n, work, args.source)
    prov = provenance()
    records = []
    started, last_seconds, base = time.perf_counter(), 0.0, None
    for w in args.workers:
        if args.deadline and time.perf_counter() - started + 1.2 * last_seconds > args.deadline:
            print(f"{w} workers: skipped, {args.deadline - (time.perf_counter() - started):.0f} s left")
            continue
        out = work / f"ranked_{args.n}_w{w}.csv"
        wd = work / f"work_{args.n}_w{w}"
        for p in (out, wd):
            subprocess.run(["rm", "-rf", str(p)], check=True)
        argv = [sys.executable, "-m", "molgnn.cli", "screen", str(lib), "--out", str(out), "--models", args.models,
                "--dask", "--workers", str(w), "--chunk-rows", str(args.chunk_rows), "--no-progress",
                "--work-dir", str(wd), "--device", args.device]
        note = ""
        killed_s = 0.0
        if args.kill_after:
            rc, killed_s, peak_k, _ = run(argv, kill_after=args.kill_after)
            scored = len(list((wd / "scored").glob("chunk_*.parquet")))
            note = (f"first attempt killed with SIGKILL after {killed_s:.0f} s with {scored} chunks scored; "
                    f"the rerun below resumed from the work folder. ")
        rc, seconds, peak, text = run(argv)
        last_seconds = seconds
        if rc:
            print(text[-4000:])
            raise SystemExit(f"molgnn screen --dask exited {rc}")
        summary = [m for m in map(SUMMARY.match, text.splitlines()) if m]
        if not summary:
            print(text[-4000:])
            raise SystemExit("no summary line in the command's output")
        print(summary[-1].group(0))
        phases = {k: float(v) for k, v in PHASE.findall(summary[-1].string)}
        n_in = int(summary[-1].group(1))
        ranked = pd.read_csv(out, usecols=["rank"]).shape[0]
        rejected = pd.read_csv(Path(str(out).removesuffix(".csv") + ".rejects.csv"), usecols=["row"]).shape[0]
        assert n_in == args.n == ranked + rejected, (n_in, ranked, rejected)
        setup = (f"load average at the end {load_average()}; first {args.n:,} MOSES train SMILES, `molgnn screen --dask --workers {w}` (LocalCluster of {w} "
                 f"single-thread processes), chunks of {args.chunk_rows:,} rows, model {args.models} (2D tier over "
                 f"all, 3D on 50 + 50, device {args.device}; the 2D chunk scoring is the Dask phase); {ranked:,} ranked + {rejected:,} rejected = {n_in:,} input rows. {note}")
        for metric, value, unit, hib in (("wall-clock", seconds, "s", False),
                                         ("molecules/s", args.n / seconds, "molecules/s", True),
                                         ("peak memory (process tree, RSS sum)", peak[0], "GiB", False),
                                         ("peak memory (process tree, PSS sum)", peak[1], "GiB", False),
                                         *((("2D chunk scoring (Dask phase)", phases["score"], "s", False),
                                            ("2D chunk scoring molecules/s", args.n / phases["score"], "molecules/s",
                                             True)) if "score" in phases else ())):
            records.append(record("screen-distributed", f"molgnn {w} workers", metric, round(value, 3), unit, hib,
                                  context=prov, dataset=f"MOSES train {args.n:,}", setup=setup))
        if base is None:
            base = (w, seconds, phases.get("score"))
        else:   # relative to the first (smallest) worker count of this run, on the same machine
            speedups = [("", base[1] / seconds)]
            if base[2] and phases.get("score"):
                speedups.append(("2D chunk scoring ", base[2] / phases["score"]))
            for metric, value, unit in [m for label, sp in speedups
                                        for m in ((f"{label}speedup over {base[0]} worker(s)", sp, "x"),
                                                  (f"{label}parallel efficiency", sp * base[0] / w, "fraction"))]:
                records.append(record("screen-distributed", f"molgnn {w} workers", metric, round(value, 3), unit,
                                      True, context=prov, dataset=f"MOSES train {args.n:,}", setup=setup))
        print(f"{w} workers: {seconds:.0f} s, {args.n / seconds:.0f} molecules/s, peak {peak[0]:.2f} GiB RSS sum, "
              f"{peak[1]:.2f} GiB PSS sum (tree)")
    merge_records(Path(args.out), records, key=("dataset", "system", "metric"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
