"""Screening a library in chunks that any process, or any machine sharing the work folder, can take:
the library side of ``flows/distributed_screen.py``.

1. :func:`split_library` streams the inputs into chunk files of ``chunk_rows`` input rows
   (``chunks/chunk_NNNNN.parquet``: source, row, raw, mol block, read error), never holding the library
   in memory; the list is written last (``chunks/chunks.json``, keyed by the inputs' contents), so a rerun
   on the same inputs reuses it.
2. :func:`score_chunk` puts one chunk through the 2D tier (standardize, featurize, 2D ensemble,
   applicability domain) into ``scored/chunk_NNNNN.parquet``, published by rename: a rerun after a
   ``kill -9`` skips every chunk already scored.
3. :func:`merge_scored` streams the scored chunks in input order, keeps the first row of each molecule
   (across chunks, as the one-process screen does) and finishes with the same selection, 3D re-check
   and ranking as :func:`molgnn.screen.fast_tier.screen_two_tier`: the output is the same table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path, content_hash, file_sha256

CHUNKS, SCORED, LIST_FILE = "chunks", "scored", "chunks.json"
_INPUT_COLUMNS = [schema.SOURCE, schema.ROW, schema.RAW, "mol_block", "error"]


@dataclass
class ChunkList:
    paths: list[Path]
    n_rows: int
    inputs_digest: str


def _inputs_digest(inputs: Sequence[str]) -> str:
    """Of the files' contents (however their paths are spelled); of the name for a source or URL."""
    return content_hash(*(file_sha256(s) if Path(s).is_file() else s for s in inputs))


def split_library(inputs: Sequence[str], work_dir: str | Path, chunk_rows: int = 5_000,
                  smiles_column: str | None = None) -> ChunkList:
    """Stream ``inputs`` into chunk files under ``work_dir/chunks`` (reused when already split)."""
    from molgnn.data.sources import checked_inputs, open_source

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    inputs = checked_inputs(inputs, "screening")
    folder = Path(work_dir) / CHUNKS
    folder.mkdir(parents=True, exist_ok=True)
    digest = _inputs_digest(inputs)
    listing = folder / LIST_FILE
    if listing.is_file():
        done = json.loads(listing.read_text())
        if done["inputs_digest"] == digest and done["chunk_rows"] == chunk_rows:
            return ChunkList([folder / p for p in done["chunks"]], done["n_rows"], digest)
        raise ValueError(f"{folder} holds chunks of other inputs (or another chunk size): "
                         f"use a new work folder for this library")
    paths: list[Path] = []
    buf: list[tuple] = []
    n = 0

    def flush() -> None:
        path = folder / f"chunk_{len(paths):05d}.parquet"
        with atomic_path(path) as tmp:
            pd.DataFrame(buf, columns=_INPUT_COLUMNS).to_parquet(tmp, index=False)
        paths.append(path)
        buf.clear()

    for s in inputs:
        for rec in open_source(s, smiles_column=smiles_column, target_columns=[], limit=None):
            buf.append((rec.source, rec.row, rec.raw, rec.mol_block, rec.error))
            n += 1
            if len(buf) == chunk_rows:
                flush()
    if buf or not paths:
        flush()
    with atomic_path(listing) as tmp:
        tmp.write_text(json.dumps({"inputs": list(inputs), "inputs_digest": digest, "chunk_rows": chunk_rows,
                                   "n_rows": n, "chunks": [p.name for p in paths]}, indent=1))
    return ChunkList(paths, n, digest)


# One screening model per process: a worker scores many chunks with the models it loaded once.
_MODELS: dict[str, Any] = {}


def _process_model(folder: str):
    if folder not in _MODELS:
        from molgnn.models.graph2d_model import models_from_checkpoint
        from molgnn.screen.model_folder import load_screening_model

        model = load_screening_model(folder)
        if model.model_2d is None:
            raise FileNotFoundError(f"no 2D tier in {folder}: the chunked screen needs one (fast_tier.enabled)")
        _MODELS.clear()
        _MODELS[folder] = (model, models_from_checkpoint(model.model_2d))
    return _MODELS[folder]


def scored_path(chunk: Path) -> Path:
    return chunk.parent.parent / SCORED / chunk.name


def score_chunk(chunk: str | Path, model_folder: str | Path, max_heavy_atoms: int = 50) -> Path:
    """The 2D tier over one chunk, into ``scored/<chunk name>`` (skipped when already there)."""
    import torch

    from molgnn.screen import fast_tier as ft

    chunk = Path(chunk)
    out = scored_path(chunk)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model, models = _process_model(str(model_folder))
    rows = pd.read_parquet(chunk)
    work = [(r, m, e) for r, m, e in zip(rows[schema.RAW], rows["mol_block"], rows["error"])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # one chunk per core: workers, not threads, use the machine
    ft._STATE.clear()
    ft._STATE.update(work=work, models=models, domain=model.domain, max_heavy_atoms=max_heavy_atoms)
    try:
        res = ft._screen_chunk((0, len(work)))
    finally:
        ft._STATE.clear()
        torch.set_num_threads(threads)
    targets = list(models[0].cfg.targets)
    table = rows[[schema.SOURCE, schema.ROW, schema.RAW]].copy()
    smiles, stage, reason = [], [], []
    for o in res["outcomes"]:
        rejected = isinstance(o, tuple)
        smiles.append(None if rejected else o)
        stage.append(o[0] if rejected else None)
        reason.append(o[1] if rejected else None)
    table[schema.SMILES], table["reject_stage"], table["reject_reason"] = smiles, stage, reason
    kept = table[schema.SMILES].notna().to_numpy()
    mean = np.full((len(table), len(targets)), np.nan)
    std = np.full((len(table), len(targets)), np.nan)
    mean[kept], std[kept] = res["mean"].reshape(-1, len(targets)), res["std"].reshape(-1, len(targets))
    for k, t in enumerate(targets):
        table[f"{t}_mean_2d"], table[f"{t}_std_2d"] = mean[:, k], std[:, k]
    verdicts = iter(res["verdicts"] or [])
    in_domain, domain_reason = [], []
    for ok in kept:
        v = next(verdicts) if ok and res["verdicts"] is not None else (None, "")
        in_domain.append(v[0])
        domain_reason.append(v[1])
    table["in_domain"], table["domain_reason"] = pd.array(in_domain, dtype="boolean"), domain_reason
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    return out


def scored_rows(chunks: Sequence[Path]) -> Iterator[pd.DataFrame]:
    for c in chunks:
        path = scored_path(Path(c))
        if not path.is_file():
            raise FileNotFoundError(f"chunk {c.name} has not been scored ({path} is missing)")
        yield pd.read_parquet(path)


def assemble(scored: Iterator[pd.DataFrame], targets: Sequence[str], has_domain: bool
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The kept table and the rejects of the scored chunks, in input order: a row rejected by the 2D
    tier keeps its reason; a molecule seen before (same canonical SMILES) is rejected as a duplicate
    of its first row, as :func:`molgnn.screen.fast_tier.screen_2d` does."""
    from molgnn.screen.domain import pd_na

    first: dict[str, tuple] = {}
    kept_parts, rejects = [], []
    for part in scored:
        keep = np.zeros(len(part), dtype=bool)
        for i, (source, row, raw, smi, stage, reason) in enumerate(zip(
                part[schema.SOURCE], part[schema.ROW], part[schema.RAW], part[schema.SMILES],
                part["reject_stage"], part["reject_reason"])):
            if smi is None or (isinstance(smi, float) and smi != smi):
                rejects.append((source, row, raw, stage, reason))
            elif smi in first:
                s0, r0 = first[smi]
                rejects.append((source, row, raw, "deduplicate", f"same molecule as {s0} row {r0}"))
            else:
                first[smi] = (source, row)
                keep[i] = True
        cols = [schema.SOURCE, schema.ROW, schema.RAW, schema.SMILES]
        cols += [f"{t}_{s}_2d" for t in targets for s in ("mean", "std")] + ["in_domain", "domain_reason"]
        kept_parts.append(part.loc[keep, cols])
    table = pd.concat(kept_parts, ignore_index=True)
    if not has_domain:
        table["in_domain"] = pd_na(len(table))
        table["domain_reason"] = ""
    table[schema.ROW] = table[schema.ROW].astype(np.int64)
    return table, pd.DataFrame(rejects, columns=schema.REJECT_COLUMNS)


def merge_scored(chunks: ChunkList, model_folder: str | Path, out: str | Path, **two_tier: Any):
    """The ranked table and its rejects from the scored chunks: the same selection, 3D re-check and
    ranking as the one-process two-tier screen (``two_tier``: its keyword arguments)."""
    from molgnn.screen.fast_tier import finish_two_tier

    model, models = _process_model(str(model_folder))
    targets = list(models[0].cfg.targets)
    table, rejects = assemble(scored_rows(chunks.paths), targets, model.domain is not None)
    return finish_two_tier(table, rejects, chunks.n_rows, out, model, targets, domain=model.domain,
                           std_scale=model.std_scale, conformal=model.conformal,
                           std_scale_2d=model.std_scale_2d, conformal_2d=model.conformal_2d,
                           platt=model.platt, platt_2d=model.platt_2d, **two_tier)


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB), for the benchmark's memory bound."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

