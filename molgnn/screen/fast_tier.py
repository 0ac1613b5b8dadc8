"""Two-tier screening: a fast 2D model ranks the whole library from SMILES alone; its top-k and its
most uncertain molecules go on to the 3D ensemble (conformers + PaiNN).

Every input row ends either in the ranked table (column ``tier``: ``3d`` or ``2d``) or in the rejects
file beside it, as in :mod:`molgnn.screen.screening`.

The 2D tier standardizes like ingest (sanitize, largest organic fragment, uncharge, element and size
checks) but skips the InChIKey (most of ingest's cost): its molecules are keyed and deduplicated on
the canonical SMILES of the parent, and ``mol_id`` (the InChIKey) is filled in only for the
molecules the 3D tier sees. Molecules ingest would merge on InChIKey but whose canonical SMILES
differ (some tautomers) are two rows here.

Training the 2D tier (:func:`distill_2d`): an ensemble of small GINE models on the training split,
each target a blend ``w * teacher + (1 - w) * label`` of the 3D ensemble's prediction and the true
label (``w = teacher_weight``; the teacher alone where there is no label).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path

TIER_3D, TIER_2D = "3d", "2d"


@dataclass
class TwoTierResult:
    predictions_path: Path
    rejects_path: Path
    n_input_rows: int
    n_ranked: int
    n_rejected: int
    n_3d: int
    n_3d_failed: int            # sent to the 3D tier but no conformer / prediction: kept with 2D values
    seconds: dict[str, float]   # wall-clock per phase


# ------------------------------------------------------------------------------------- reading

def _standardize_light(raw: str | None, mol_block: str | None, max_heavy_atoms: int):
    """(canonical SMILES, parent mol) or (stage, reason): ingest's rules without the InChIKey."""
    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    from molgnn.chem import standardize as st

    if mol_block is not None:
        parsed = st._parse_unsanitized(mol_block, is_mol_block=True)
    else:
        if not isinstance(raw, str) or not raw.strip():
            return "parse", "empty input"
        if (bad := st._bad_characters(raw)) is not None:
            return "parse", f"unparsable SMILES: {bad}"
        parsed = st._parse_unsanitized(raw.strip(), is_mol_block=False)
    if isinstance(parsed, st.Rejection):
        return parsed.stage, parsed.reason
    if parsed.GetNumAtoms() == 0:
        return "parse", "molecule has no atoms"
    mol = st._sanitize(parsed)
    if isinstance(mol, st.Rejection):
        return mol.stage, mol.reason
    try:
        with st.rdkit_messages():
            parent = st._largest_organic_fragment(mol)
            if isinstance(parent, st.Rejection):
                return parent.stage, parent.reason
            parent = rdMolStandardize.Uncharger().uncharge(parent)
    except Exception as exc:
        return "standardize", f"fragment/charge standardization failed: {exc}"
    bad = sorted({a.GetSymbol() if a.GetAtomicNum() else "*" for a in parent.GetAtoms()
                  if a.GetAtomicNum() not in st._ORGANIC_Z})
    if bad:
        return "elements", f"element(s) outside the organic allow-list: {', '.join(bad)}"
    n_heavy = parent.GetNumHeavyAtoms()
    if n_heavy > max_heavy_atoms:
        return "size", f"{n_heavy} heavy atoms > max_heavy_atoms={max_heavy_atoms}"
    return Chem.MolToSmiles(parent), parent


def _prepare_chunk(args: tuple[list[tuple[str | None, str | None, str | None]], int]):
    """Standardize and featurize one chunk: (per row: smiles or (stage, reason)), graph store of the kept."""
    from molgnn.models.graph2d_model import featurize_many

    rows, max_heavy_atoms = args
    outcome: list[Any] = []
    mols = []
    for raw, mol_block, error in rows:
        if error is not None:
            outcome.append(("read", error))
            continue
        r = _standardize_light(raw, mol_block, max_heavy_atoms)
        if isinstance(r[1], str):
            outcome.append(r)
        else:
            outcome.append(r[0])
            mols.append(r[1])
    store, failed = featurize_many(mols)
    assert not failed
    return outcome, store


def prepare_library(inputs: Sequence[str], *, smiles_column: str | None = None, max_heavy_atoms: int = 50,
                    workers: int | None = None, chunk: int = 2500):
    """Read every row, standardize, deduplicate (canonical SMILES) and featurize (atom-bond-v1).

    Returns (kept DataFrame with source,row,raw,smiles and ``graph`` = position in the store,
    rejects DataFrame with schema.REJECT_COLUMNS, graph store, number of input rows).
    """
    from molgnn.data.sources import checked_inputs, open_source
    from molgnn.models.graph2d_model import concat_stores

    inputs = checked_inputs(inputs, "screening")
    streams = [open_source(s, smiles_column=smiles_column, target_columns=[], limit=None) for s in inputs]
    meta, work = [], []
    for records in streams:
        for rec in records:
            meta.append((rec.source, rec.row, rec.raw))
            work.append((rec.raw, rec.mol_block, rec.error))
    parts = [(work[i:i + chunk], max_heavy_atoms) for i in range(0, len(work), chunk)]
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(parts) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # one torch thread per worker process (no oversubscription); the caller's setting is left alone
        with ProcessPoolExecutor(min(workers, len(parts)), mp_context=mp.get_context("fork"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            results = list(pool.map(_prepare_chunk, parts))
    else:
        results = [_prepare_chunk(p) for p in parts]
    outcomes = [o for out, _ in results for o in out]
    if results:
        store, _ = concat_stores([(st, []) for _, st in results],
                                 [st["node_ptr"].numel() - 1 for _, st in results])
    else:
        from molgnn.models.graph2d_model import featurize_many
        store, _ = featurize_many([])
    kept, rejects, first = [], [], {}
    g = 0
    for (source, row, raw), o in zip(meta, outcomes):
        if isinstance(o, tuple):
            rejects.append((source, row, raw, o[0], o[1]))
            continue
        if o in first:
            s0, r0 = first[o]
            rejects.append((source, row, raw, "deduplicate", f"same molecule as {s0} row {r0}"))
        else:
            first[o] = (source, row)
            kept.append((source, row, raw, o, g))
        g += 1
    kept_df = pd.DataFrame(kept, columns=[schema.SOURCE, schema.ROW, schema.RAW, schema.SMILES, "graph"])
    rejects_df = pd.DataFrame(rejects, columns=schema.REJECT_COLUMNS)
    return kept_df, rejects_df, store, len(meta)


# ------------------------------------------------------------------------------------- screening

def _select(mean: np.ndarray, std: np.ndarray, top_k: int, uncertain_k: int, descending: bool) -> np.ndarray:
    """'top_k', 'uncertain' or '' per molecule: the k best by mean, then the most uncertain others."""
    out = np.full(len(mean), "", dtype=object)
    order = np.argsort(-mean if descending else mean, kind="stable")
    out[order[:top_k]] = "top_k"
    rest = np.flatnonzero(out == "")
    if uncertain_k > 0 and len(rest):
        pick = rest[np.argsort(-std[rest], kind="stable")[:uncertain_k]]
        out[pick] = "uncertain"
    return out


def screen_two_tier(inputs: Sequence[str], out: str | Path, checkpoints_3d: Sequence[dict] | None,
                    model_2d: dict, *, top_k: int = 100, uncertain_k: int = 100, rank_by: str | None = None,
                    descending: bool = True, smiles_column: str | None = None, max_heavy_atoms: int = 50,
                    workers: int | None = None, seed: int = 0, timeout_s: float = 10.0,
                    max_iterations: int = 200, device: str = "cpu") -> TwoTierResult:
    """Rank every molecule of ``inputs`` with the 2D model; re-predict the ``top_k`` best and the
    ``uncertain_k`` most uncertain (2D ensemble spread) others with the 3D ensemble.

    Output: one table, 3D-tier rows first (ranked by the 3D mean), then 2D-only rows (by the 2D
    mean); ``<t>_mean``/``<t>_std`` are the best available estimate (3D where there is one), with
    ``<t>_mean_2d``, ``<t>_std_2d``, ``<t>_mean_3d``, ``<t>_std_3d`` beside them, ``tier``,
    ``selected_by`` (``top_k``, ``uncertain`` or empty) and ``note`` (why a selected molecule has
    no 3D value). ``checkpoints_3d`` empty or None, or ``top_k = uncertain_k = 0``: 2D only.
    """
    import time

    from molgnn.models.graph2d_model import models_from_checkpoint, predict_ensemble_2d, select_graphs
    from molgnn.screen.screening import rejects_path_for, screen_file

    t0 = time.perf_counter()
    out = Path(out)
    models = models_from_checkpoint(model_2d)
    targets = list(models[0].cfg.targets)
    rank_by = rank_by or targets[0]
    if rank_by not in targets:
        raise ValueError(f"cannot rank by {rank_by!r}: the 2D model predicts {targets}")
    if top_k < 0 or uncertain_k < 0:
        raise ValueError("top_k and uncertain_k must be >= 0")
    kept, rejects, store, n_rows = prepare_library(inputs, smiles_column=smiles_column,
                                                   max_heavy_atoms=max_heavy_atoms, workers=workers)
    t1 = time.perf_counter()
    if len(kept) < store["node_ptr"].numel() - 1:      # drop the duplicates' graphs
        store = select_graphs(store, torch.tensor(kept["graph"].to_numpy(dtype=np.int64)))
    mean, std = predict_ensemble_2d(models, store)
    t2 = time.perf_counter()
    table = kept.drop(columns="graph").reset_index(drop=True)
    table.insert(0, schema.MOL_ID, "")
    for k, t in enumerate(targets):
        table[f"{t}_mean_2d"] = mean[:, k].numpy()
        table[f"{t}_std_2d"] = std[:, k].numpy()
    k_rank = targets.index(rank_by)
    use_3d = bool(checkpoints_3d) and (top_k > 0 or uncertain_k > 0) and len(table) > 0
    table["selected_by"] = (_select(mean[:, k_rank].numpy(), std[:, k_rank].numpy(), top_k, uncertain_k, descending)
                            if use_3d else "")
    table["tier"] = TIER_2D
    table["note"] = ""
    n_3d = n_failed = 0
    if use_3d:
        sel = np.flatnonzero(table["selected_by"].to_numpy() != "")
        with tempfile.TemporaryDirectory(prefix="molgnn-two-tier-") as tmp:
            lib = Path(tmp) / "tier3d.csv"
            pd.DataFrame({"smiles": table[schema.SMILES].to_numpy()[sel]}).to_csv(lib, index=False)
            res = screen_file([str(lib)], Path(tmp) / "tier3d_preds.csv", list(checkpoints_3d), rank_by=rank_by,
                              descending=descending, smiles_column="smiles", seed=seed, timeout_s=timeout_s,
                              max_iterations=max_iterations, workers=workers, max_heavy_atoms=max_heavy_atoms,
                              device=device)
            p3 = pd.read_csv(res.predictions_path)
            r3 = pd.read_csv(res.rejects_path)
        pos = sel[p3[schema.ROW].to_numpy()]
        table.loc[pos, schema.MOL_ID] = p3[schema.MOL_ID].to_numpy()
        for c in ("stereocenters", "unassigned_stereocenters"):
            table[c] = pd.NA
            table.loc[pos, c] = p3[c].to_numpy()
        targets_3d = [c[:-5] for c in p3.columns if c.endswith("_mean")]
        for t in targets_3d:
            table[f"{t}_mean_3d"] = np.nan
            table[f"{t}_std_3d"] = np.nan
            table.loc[pos, f"{t}_mean_3d"] = p3[f"{t}_mean"].to_numpy()
            table.loc[pos, f"{t}_std_3d"] = p3[f"{t}_std"].to_numpy()
        table.loc[pos, "tier"] = TIER_3D
        if len(r3):
            fpos = sel[r3[schema.ROW].to_numpy()]
            table.loc[fpos, "note"] = ("3D tier failed at " + r3["stage"].astype(str) + ": "
                                       + r3["reason"].astype(str)).to_numpy()
        n_3d, n_failed = len(p3), len(r3)
    for t in targets:
        m2, s2 = table[f"{t}_mean_2d"], table[f"{t}_std_2d"]
        if f"{t}_mean_3d" in table:
            table[f"{t}_mean"] = table[f"{t}_mean_3d"].where(table["tier"] == TIER_3D, m2)
            table[f"{t}_std"] = table[f"{t}_std_3d"].where(table["tier"] == TIER_3D, s2)
        else:
            table[f"{t}_mean"], table[f"{t}_std"] = m2, s2
    score = table[f"{rank_by}_mean"] * (-1 if descending else 1)
    table = (table.assign(_tier=(table["tier"] != TIER_3D).astype(int), _score=score)
             .sort_values(["_tier", "_score"], kind="stable").drop(columns=["_tier", "_score"])
             .reset_index(drop=True))
    table.insert(0, "rank", range(1, len(table) + 1))
    front = ["rank", "tier", "selected_by", schema.MOL_ID, schema.SMILES, schema.SOURCE, schema.ROW, schema.RAW]
    first_cols = front + [f"{t}_{s}" for t in targets for s in ("mean", "std")]
    table = table[first_cols + [c for c in table.columns if c not in first_cols]]
    if len(table) + len(rejects) != n_rows:
        raise AssertionError(f"two-tier screen lost rows: {n_rows} in, {len(table)} ranked, {len(rejects)} rejected")
    with atomic_path(out) as tmp_out:
        table.to_csv(tmp_out, index=False)
    rp = rejects_path_for(out)
    with atomic_path(rp) as tmp_rej:
        rejects.to_csv(tmp_rej, index=False)
    t3 = time.perf_counter()
    return TwoTierResult(out, rp, n_rows, len(table), len(rejects), n_3d, n_failed,
                         {"prepare_2d": t1 - t0, "predict_2d": t2 - t1, "tier_3d_and_write": t3 - t2})


# ------------------------------------------------------------------------------------- training

def distill_2d(smiles: Sequence[str], labels: np.ndarray, teacher: np.ndarray | None, targets: Sequence[str], *,
               val_smiles: Sequence[str], val_labels: np.ndarray, teacher_weight: float = 0.5,
               members: int = 3, seed: int = 0, epochs: int = 60, batch_size: int = 64, lr: float = 2e-3,
               hidden: int = 64, layers: int = 3) -> dict[str, Any]:
    """Train the 2D tier; returns its checkpoint (``models_from_checkpoint`` reads it).

    ``labels`` / ``teacher`` are [N, T] (NaN where missing); validation (model selection) is on the
    true labels. ``teacher=None`` or ``teacher_weight=0``: labels only.
    """
    from molgnn.models.graph2d_model import checkpoint_from_models, featurize_many, train_graph2d

    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must lie in [0, 1], got {teacher_weight}")
    labels = np.asarray(labels, dtype=float).reshape(len(smiles), -1)
    if teacher is None:
        y = labels
    else:
        teacher = np.asarray(teacher, dtype=float).reshape(labels.shape)
        y = np.where(np.isnan(labels), teacher, teacher_weight * teacher + (1 - teacher_weight) * labels)
    store, failed = featurize_many(list(smiles))
    if failed:
        raise ValueError(f"{len(failed)} training SMILES cannot be featurized, e.g. {smiles[failed[0]]!r}")
    vstore, vfailed = featurize_many(list(val_smiles))
    if vfailed:
        raise ValueError(f"{len(vfailed)} validation SMILES cannot be featurized")
    yt = torch.tensor(y, dtype=torch.float32)
    vy = torch.tensor(np.asarray(val_labels, dtype=float).reshape(len(val_smiles), -1), dtype=torch.float32)
    models, histories = [], []
    for m in range(members):
        model, hist = train_graph2d(store, yt, targets, val_store=vstore, val_y=vy, seed=seed + m, epochs=epochs,
                                    batch_size=batch_size, lr=lr, hidden=hidden, layers=layers)
        models.append(model)
        histories.append(hist)
    return checkpoint_from_models(models, teacher_weight=float(teacher_weight) if teacher is not None else 0.0,
                                  n_train=len(smiles), history=histories)
