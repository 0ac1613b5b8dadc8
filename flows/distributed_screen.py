"""Screening a big library on Dask: ``molgnn screen LIBRARY --dask`` (or ``--dask-address``).

The library is streamed into chunk files (bounded memory), each chunk is a Prefect task scored by the
2D tier on a Dask worker (prefect-dask's ``DaskTaskRunner``: a ``LocalCluster`` of ``workers``
processes, or an existing cluster by address); once that flow and its cluster are done, a second
flow merges the chunks, ranks them, re-checks the best and the
most uncertain with the 3D ensemble, and writes the same table the one-process screen writes. The work
folder keeps the chunks and their scores: a rerun after ``kill -9`` redoes only unscored chunks.

On a cluster of many machines, start ``dask scheduler`` on one and ``dask worker tcp://SCHEDULER:8786``
(with this package installed) on the others, put the work folder on storage they all mount, and pass
``--dask-address tcp://SCHEDULER:8786``: chunks are scored wherever a worker is free.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE


@task(name="score-chunk", cache_policy=NO_CACHE, retries=1)
def score_chunk_task(chunk: str, model_folder: str, max_heavy_atoms: int) -> str:
    from molgnn.screen.chunked import score_chunk

    return str(score_chunk(chunk, model_folder, max_heavy_atoms))


def _runner(workers: int, address: str | None):
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # one single-threaded process per worker: RDKit and the GIL-bound featurizer scale by processes
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def distributed_screen(library: list[str], model_folder: str, out: str, work_dir: str, *, workers: int = 2,
                       address: str | None = None, chunk_rows: int = 5_000, smiles_column: str | None = None,
                       max_heavy_atoms: int = 50, progress: bool = True, **two_tier: Any) -> dict[str, Any]:
    """Score the chunks as a Prefect flow on Dask, then merge them in a second flow once the cluster
    is gone (its workers' memory is free by then); returns the summary."""
    flow_fn = _score_flow.with_options(task_runner=_runner(workers, address))
    with _workers_share_the_api(local=address is None):
        scored = flow_fn(library, model_folder, work_dir, chunk_rows, smiles_column, max_heavy_atoms, progress)
    return _merge_flow(model_folder, out, two_tier, scored)


@contextlib.contextmanager
def _workers_share_the_api(local: bool) -> Iterator[None]:
    """Point a LocalCluster's worker processes at this process's temporary Prefect server.

    Without a configured PREFECT_API_URL every new worker process would start a temporary server of
    its own (seconds and ~200 MB each, most of a 16-worker screen's fixed cost) and record its task
    runs there, out of the flow's sight. Workers inherit the environment when the cluster starts, so
    the variable is set around the flow that starts it and restored after.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if not local or PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield                                # a real server (workers find it the same way) or remote workers
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()          # the instance this process's Prefect client uses too
    server.start()
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@flow(name="molgnn-screen-distributed", log_prints=True)
def _score_flow(library: list[str], model_folder: str, work_dir: str, chunk_rows: int, smiles_column: str | None,
                max_heavy_atoms: int, progress: bool) -> dict[str, Any]:
    from prefect.futures import as_completed

    from molgnn.screen.chunked import scored_path, split_library
    from molgnn.screen.progress import Progress

    logger = get_run_logger()
    t0 = time.perf_counter()
    chunks = split_library(library, work_dir, chunk_rows, smiles_column)
    todo = [c for c in chunks.paths if not scored_path(c).is_file()]
    logger.info("%d input rows in %d chunks under %s; %d already scored, %d to score",
                chunks.n_rows, len(chunks.paths), work_dir, len(chunks.paths) - len(todo), len(todo))
    t1 = time.perf_counter()
    futures = [score_chunk_task.submit(str(c), model_folder, max_heavy_atoms) for c in todo]
    with Progress("2D tier over chunks (Dask)", len(todo), enabled=progress, unit="chunk") as bar:
        for k, fut in enumerate(as_completed(futures), start=1):
            fut.result()
            bar.update(1)
            if k % max(1, len(todo) // 20) == 0 or k == len(todo):
                logger.info("scored %d / %d chunks", k, len(todo))
    t2 = time.perf_counter()
    return {"chunks": [str(c) for c in chunks.paths], "n_rows": chunks.n_rows, "inputs_digest": chunks.inputs_digest,
            "n_chunks_scored_now": len(todo), "seconds": {"split": t1 - t0, "score": t2 - t1}}


@flow(name="molgnn-screen-merge", log_prints=True)
def _merge_flow(model_folder: str, out: str, two_tier: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
    from molgnn.screen.chunked import ChunkList, merge_scored

    t0 = time.perf_counter()
    chunks = ChunkList([Path(c) for c in scored["chunks"]], scored["n_rows"], scored["inputs_digest"])
    res = merge_scored(chunks, model_folder, out, **two_tier)
    get_run_logger().info("merged %d chunks: %d ranked, %d rejected, %d re-checked in 3D", len(chunks.paths),
                          res.n_ranked, res.n_rejected, res.n_3d)
    return {"n_input_rows": res.n_input_rows, "n_ranked": res.n_ranked, "n_rejected": res.n_rejected,
            "n_3d": res.n_3d, "n_chunks": len(chunks.paths), "n_chunks_scored_now": scored["n_chunks_scored_now"],
            "predictions": str(res.predictions_path), "rejects": str(res.rejects_path),
            "seconds": {**scored["seconds"], "merge_and_3d": time.perf_counter() - t0}}
