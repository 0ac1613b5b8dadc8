"""Stage 1: read every source, standardize, deduplicate; rejects recorded with reasons."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from molgnn.data import schema
from molgnn.stages.common import RunContext, StageResult, run_cached, stage_key


def resolve_sources(sources: list[str], root: Path) -> list[str]:
    """Named sources and URLs stay as they are; relative file paths resolve against the repo root."""
    from molgnn.data.sources import list_sources

    named = set(list_sources())
    out = []
    for src in map(str, sources):
        if src in named or "://" in src or Path(src).is_absolute():
            out.append(src)
        else:
            out.append(str(root / src))
    return out


def input_fingerprint(sources: list[str]) -> list[object]:
    """What the ingest key hashes: each source's name and its files' contents (URLs by address)."""
    from molgnn.data.sources import source_files

    parts: list[object] = []
    for src in sources:
        parts.append(src)
        parts.extend(Path(p) for p in source_files(src))
    return parts


def run_ingest(ctx: RunContext) -> StageResult:
    from molgnn.data.ingest import ingest

    cfg = ctx.params.data
    sources = resolve_sources(cfg.sources, ctx.root)
    decides = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out_dir"}   # out_dir: publish location
    key = stage_key("ingest", decides, *input_fingerprint(sources))

    def compute(run, out_dir: Path) -> StageResult:
        res = ingest(sources, out_dir, smiles_column=cfg.smiles_column,
                     target_columns=cfg.target_columns, max_heavy_atoms=cfg.max_heavy_atoms,
                     limit=cfg.limit)
        return StageResult(
            stage="ingest", key=key, out_dir=str(out_dir),
            outputs={"molecules": str(res.molecules_path), "rejects": str(res.rejects_path),
                     "units": str(out_dir / schema.UNITS_FILE)},
            metrics={"n_input_rows": res.n_input_rows, "n_kept": res.n_kept,
                     "n_rejected": res.n_rejected, "n_target_conflicts": res.n_target_conflicts,
                     "kept_rate": res.n_kept / max(res.n_input_rows, 1)},
            info={"rejects_by_reason": res.rejects_by_reason},
        )

    def log(run, result: StageResult) -> None:
        run.log_artifact(result.path("rejects"))
        run.log_artifact(result.path("units"))
        run.log_dict(result.info["rejects_by_reason"], "rejects_by_reason.json")

    return run_cached(ctx, "ingest", key, compute,
                      params={f"data.{k}": v for k, v in dataclasses.asdict(cfg).items()}, log=log)
