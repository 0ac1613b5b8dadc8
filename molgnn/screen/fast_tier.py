"""Two-tier screening: a fast 2D model ranks the whole library from SMILES alone; its top-k and its
most uncertain molecules go on to the 3D ensemble (conformers + PaiNN).

Every input row ends either in the ranked table (column ``tier``: ``3d`` or ``2d``) or in the rejects
file beside it, as in :mod:`molgnn.screen.screening`. Each ranked molecule gets the applicability
domain verdict (``in_domain``, ``domain_reason``) and, where the model folder has them, calibrated
95 % and split-conformal 90 % intervals fitted for its own tier (the 2D tier's on its own
validation residuals). Out-of-domain molecules rank after every in-domain one (unless asked not to);
within each group the 3D-tier rows come first (ranked by the 3D mean), then the 2D-only rows.

The 2D tier standardizes like ingest (sanitize, largest organic fragment, uncharge, element and size
checks: :func:`standardize_fast` gives ingest's canonical SMILES or its rejection, reason included)
but skips the InChIKey (most of ingest's cost): its molecules are keyed and deduplicated on the
canonical SMILES of the parent, and ``mol_id`` (the InChIKey) is filled in only for the molecules
the 3D tier sees. Molecules ingest would merge on InChIKey but whose canonical SMILES differ (some
tautomers) are two rows here.

Speed: rows are processed in chunks by worker processes (forked, one torch thread each), each chunk
standardized, featurized, predicted by the 2D ensemble and checked against the domain in one go, so
only SMILES, predictions and verdicts travel back. The 3D stack (schnetpack) is imported only when
the 3D tier runs.

Training the 2D tier (:func:`train_fast_tier`): an ensemble of small GINE models on the fine-tuning
training split, once on the labels alone and once distilled (each target a blend ``w * teacher +
(1 - w) * label`` of the 3D ensemble's prediction and the true label); the one with the better
validation score is kept, and both are scored on the test split.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from molgnn.data import schema
from molgnn.data.artifacts import atomic_path

TIER_3D, TIER_2D = "3d", "2d"
MODEL_2D_FILE = "model_2d.pt"
CALIBRATION_2D_FILE = "calibration_2d.json"
DISTILLED, LABELS = "distilled", "labels"
REGRESSION, CLASSIFICATION = "regression", "classification"
PREDICT_BATCH = 128          # graphs per 2D forward pass: small batches stay in cache (measured fastest)


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


def tier_metric(tier: str, metric: str, target: str) -> str:
    """Stage metric of one tier on the test split, e.g. ``tier_metric("2d", "mae", "gap") == "tier2d_test_mae_gap"``;
    tiers: ``2d`` (the one kept), ``2d_distilled``, ``2d_labels``, ``3d``."""
    return f"tier{tier}_test_{metric}_{target}"


# ------------------------------------------------------------------------------------- standardization

def _standardize_light(raw: str | None, mol_block: str | None, max_heavy_atoms: int):
    """(canonical SMILES, parent mol) or (stage, reason): ingest's rules without the InChIKey,
    step by step with RDKit's messages captured (the reference :func:`standardize_fast` falls back to)."""
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


class _Queries:
    """SMARTS queries and the uncharger, built once per process."""
    _made: "_Queries | None" = None

    def __init__(self) -> None:
        from rdkit import Chem
        from rdkit.Chem.MolStandardize import rdMolStandardize

        from molgnn.chem.standardize import _ORGANIC_Z

        self.charged = Chem.MolFromSmarts("[!+0]")
        self.not_organic = Chem.MolFromSmarts("[" + ";".join(f"!#{z}" for z in sorted(_ORGANIC_Z)) + "]")
        self.uncharger = rdMolStandardize.Uncharger()

    @classmethod
    def get(cls) -> "_Queries":
        if cls._made is None:
            cls._made = cls()
        return cls._made


def standardize_fast(raw: str | None, mol_block: str | None, max_heavy_atoms: int):
    """:func:`_standardize_light`'s result at a fraction of its cost: the same RDKit steps, but each
    skipped where it provably changes nothing (no ``.``: one fragment; no charged atom: nothing to
    uncharge; no hydrogen atom: nothing to remove) and the per-atom Python checks replaced by one
    substructure query. Anything that fails is redone by :func:`_standardize_light` for its reason.
    Call inside ``rdBase.BlockLogs()`` to keep RDKit quiet."""
    from rdkit import Chem

    from molgnn.chem import standardize as st

    if mol_block is not None or not isinstance(raw, str):
        return _standardize_light(raw, mol_block, max_heavy_atoms)
    text = raw.strip()
    if not text or st._bad_characters(text) is not None:
        return _standardize_light(raw, mol_block, max_heavy_atoms)
    mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        return _standardize_light(raw, mol_block, max_heavy_atoms)
    q = _Queries.get()
    try:
        Chem.SanitizeMol(mol)
        if mol.GetNumHeavyAtoms() != mol.GetNumAtoms() and any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()):
            mol = Chem.RemoveHs(mol)
        if "." in text:               # a SMILES without a dot is one connected molecule
            mol = st._largest_organic_fragment(mol)
            if isinstance(mol, st.Rejection):
                return mol.stage, mol.reason
        if mol.HasSubstructMatch(q.charged):
            mol = q.uncharger.uncharge(mol)
    except Exception:
        return _standardize_light(raw, mol_block, max_heavy_atoms)
    if mol.HasSubstructMatch(q.not_organic):
        return _standardize_light(raw, mol_block, max_heavy_atoms)   # the elements rejection, worded
    n_heavy = mol.GetNumHeavyAtoms()
    if n_heavy > max_heavy_atoms:
        return "size", f"{n_heavy} heavy atoms > max_heavy_atoms={max_heavy_atoms}"
    return Chem.MolToSmiles(mol), mol


# ------------------------------------------------------------------------------------- the 2D pass

# What forked workers inherit from the parent (set just before the pool starts, cleared after).
_STATE: dict[str, Any] = {}


def _screen_chunk(bounds: tuple[int, int]) -> dict[str, Any]:
    """Standardize, featurize, predict (2D ensemble) and domain-check rows ``bounds`` of ``_STATE["work"]``."""
    from rdkit import rdBase

    from molgnn.models.graph2d_model import FastAtomBond, featurize_indexed, predict_store

    st = _STATE
    fa = st.get("featurizer")
    if fa is None:
        fa = st["featurizer"] = FastAtomBond()     # per process: its cache grows over the chunks
    a, b = bounds
    outcomes: list[Any] = []
    mols, smiles = [], []
    with rdBase.BlockLogs():
        for raw, mol_block, error in st["work"][a:b]:
            if error is not None:
                outcomes.append(("read", error))
                continue
            r = standardize_fast(raw, mol_block, st["max_heavy_atoms"])
            if isinstance(r[1], str):
                outcomes.append(r)
            else:
                outcomes.append(r[0])
                smiles.append(r[0])
                mols.append(r[1])
        store, failed = featurize_indexed(mols, fa)
        if failed:
            raise RuntimeError(f"the 2D featurizer refused standardized molecules: {[smiles[i] for i in failed]}")
        with torch.inference_mode():
            preds = torch.stack([predict_store(m, store, PREDICT_BATCH) for m in st["models"]]).double()
        domain = st["domain"]
        verdicts = domain.check_mols(mols, smiles) if domain is not None else None
    return {"outcomes": outcomes, "mean": preds.mean(0).numpy(), "std": preds.std(0, unbiased=False).numpy(),
            "verdicts": verdicts}


def _chunks(n: int, workers: int, size: int | None = None) -> list[tuple[int, int]]:
    """About eight chunks per worker (load balance, progress steps), 1,000 to 2,500 rows each: fewer
    rows than two chunks are screened in this process (a pool costs more than it saves)."""
    size = size or max(1000, min(2500, math.ceil(n / max(1, 8 * workers))))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _run_chunks(bounds: list[tuple[int, int]], workers: int, tick: Callable[[int], None],
                meanwhile: Callable[[], None] | None = None):
    """Results of :func:`_screen_chunk` in order: in a pool of forked workers, or here for one chunk.
    ``meanwhile()`` runs here once the workers have started (never before a fork)."""
    if workers <= 1 or len(bounds) <= 1:
        for bd in bounds:
            res = _screen_chunk(bd)
            tick(bd[1] - bd[0])
            yield res
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers inherit the rows, models and domain without pickling; one torch thread each
    with ProcessPoolExecutor(min(workers, len(bounds)), mp_context=mp.get_context("fork"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        results = pool.map(_screen_chunk, bounds)
        if meanwhile is not None:
            meanwhile()
        for bd, res in zip(bounds, results):
            tick(bd[1] - bd[0])
            yield res


def _read_rows(inputs: Sequence[str], smiles_column: str | None) -> tuple[list[tuple], list[tuple]]:
    """(per row: source, row, raw), (per row: raw, mol block, read error)."""
    from molgnn.data.sources import checked_inputs, open_source

    inputs = checked_inputs(inputs, "screening")
    meta, work = [], []
    for s in inputs:
        for rec in open_source(s, smiles_column=smiles_column, target_columns=[], limit=None):
            meta.append((rec.source, rec.row, rec.raw))
            work.append((rec.raw, rec.mol_block, rec.error))
    return meta, work


def screen_2d(inputs: Sequence[str], models: Sequence, *, domain=None, smiles_column: str | None = None,
              max_heavy_atoms: int = 50, workers: int | None = None, progress: bool = False,
              meanwhile: Callable[[], None] | None = None, chunk: int | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Every row of ``inputs`` through the 2D tier: (kept table, rejects, number of input rows).
    ``meanwhile()``: work for this process while the worker processes run; ``chunk``: rows per chunk
    (default: :func:`_chunks`).

    Kept: ``source, row, raw, smiles``, ``<t>_mean_2d`` / ``<t>_std_2d`` per target, ``in_domain`` /
    ``domain_reason`` (empty without a domain), in input order, duplicates (same canonical SMILES)
    rejected after their first row."""
    from molgnn.screen.domain import pd_na
    from molgnn.screen.progress import Progress

    meta, work = _read_rows(inputs, smiles_column)
    workers = max(1, workers or os.cpu_count() or 1)
    targets = list(models[0].cfg.targets)
    _STATE.clear()
    _STATE.update(work=work, models=list(models), domain=domain, max_heavy_atoms=max_heavy_atoms)
    try:
        with Progress("2D tier: standardize + featurize + predict", len(work), enabled=progress) as bar:
            results = list(_run_chunks(_chunks(len(work), workers, chunk), workers, bar.update, meanwhile))
    finally:
        _STATE.clear()
    outcomes = [o for r in results for o in r["outcomes"]]
    t = len(targets)
    mean = np.concatenate([r["mean"].reshape(-1, t) for r in results]) if results else np.zeros((0, t))
    std = np.concatenate([r["std"].reshape(-1, t) for r in results]) if results else np.zeros((0, t))
    verdicts = [v for r in results for v in (r["verdicts"] or [])]
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
    table = pd.DataFrame([k[:4] for k in kept], columns=[schema.SOURCE, schema.ROW, schema.RAW, schema.SMILES])
    pos = np.asarray([k[4] for k in kept], dtype=np.int64)
    for k, tname in enumerate(targets):
        table[f"{tname}_mean_2d"] = mean[pos, k] if len(pos) else np.zeros(0)
        table[f"{tname}_std_2d"] = std[pos, k] if len(pos) else np.zeros(0)
    if domain is not None:
        table["in_domain"] = [verdicts[i][0] for i in pos]
        table["domain_reason"] = [verdicts[i][1] for i in pos]
    else:
        table["in_domain"] = pd_na(len(table))
        table["domain_reason"] = ""
    return table, pd.DataFrame(rejects, columns=schema.REJECT_COLUMNS), len(meta)


# ------------------------------------------------------------------------------------- screening

def _select(order: np.ndarray, std: np.ndarray, top_k: int, uncertain_k: int) -> np.ndarray:
    """'top_k', 'uncertain' or '' per molecule: the first ``top_k`` of ``order`` (the 2D ranking), then
    the ``uncertain_k`` others with the largest 2D spread."""
    out = np.full(len(std), "", dtype=object)
    out[order[:top_k]] = "top_k"
    rest = np.flatnonzero(out == "")
    if uncertain_k > 0 and len(rest):
        pick = rest[np.argsort(-std[rest], kind="stable")[:uncertain_k]]
        out[pick] = "uncertain"
    return out


def _ranking(table: pd.DataFrame, score: pd.Series, descending: bool, domain_first: bool,
             tier_first: bool) -> np.ndarray:
    """Row order: in-domain before out-of-domain (``domain_first``), 3D tier before 2D (``tier_first``),
    then by ``score`` (NaN last); stable."""
    keys = pd.DataFrame({"s": -score if descending else score})
    by = ["s"]
    if tier_first:
        keys["t"] = (table["tier"] != TIER_3D).astype(int).to_numpy()
        by.insert(0, "t")
    if domain_first:
        keys["d"] = (~table["in_domain"].astype(bool)).astype(int).to_numpy()
        by.insert(0, "d")
    return keys.sort_values(by, kind="stable", na_position="last").index.to_numpy()


def _interval_columns(table: pd.DataFrame, targets: Sequence[str], std_scale: dict | None, conformal: dict | None):
    """Calibrated 95 % and conformal 90 % columns of ``<t>_mean`` / ``<t>_std``, computed on ``table``."""
    from molgnn.screen.calibration import add_calibrated_intervals, add_conformal_intervals

    before = set(table.columns)
    if std_scale:
        add_calibrated_intervals(table, {t: s for t, s in std_scale.items() if t in targets})
    if conformal:
        add_conformal_intervals(table, {t: c for t, c in conformal.items() if t in targets})
    return [c for c in table.columns if c not in before]


def _checked_ranking(targets: Sequence[str], rank_by: str | None, top_k: int, uncertain_k: int) -> str:
    """The target to rank by (default: the first), after checking it and the 3D selection sizes."""
    rank_by = rank_by or targets[0]
    if rank_by not in targets:
        raise ValueError(f"cannot rank by {rank_by!r}: the 2D model predicts {list(targets)}")
    if top_k < 0 or uncertain_k < 0:
        raise ValueError("top_k and uncertain_k must be >= 0")
    return rank_by


def screen_two_tier(inputs: Sequence[str], out: str | Path, checkpoints_3d,
                    model_2d: dict, *, top_k: int = 50, uncertain_k: int = 50, rank_by: str | None = None,
                    descending: bool = True, smiles_column: str | None = None, max_heavy_atoms: int = 50,
                    workers: int | None = None, seed: int = 0, timeout_s: float = 10.0,
                    max_iterations: int = 200, device: str = "cpu", domain=None,
                    rank_out_of_domain_last: bool = True, std_scale: dict | None = None,
                    conformal: dict | None = None, std_scale_2d: dict | None = None,
                    conformal_2d: dict | None = None, platt: dict | None = None, platt_2d: dict | None = None,
                    extra_columns: pd.DataFrame | None = None, progress: bool = False) -> TwoTierResult:
    """Rank every molecule of ``inputs`` with the 2D model; re-predict the ``top_k`` best and the
    ``uncertain_k`` most uncertain (2D ensemble spread) others with the 3D ensemble.

    Output: one table, ranked as the module docstring says; ``<t>_mean`` / ``<t>_std`` are the best
    available estimate (3D where there is one), with ``<t>_mean_2d``, ``<t>_std_2d``, ``<t>_mean_3d``,
    ``<t>_std_3d`` beside them, ``tier``, ``selected_by`` (``top_k``, ``uncertain`` or empty) and
    ``note`` (why a selected molecule has no 3D value). ``std_scale`` / ``conformal`` are the 3D
    ensemble's calibration (applied to 3D rows), ``std_scale_2d`` / ``conformal_2d`` the 2D tier's
    (applied to 2D rows); a row gets no interval its tier has no calibration for. ``platt`` /
    ``platt_2d``: each tier's Platt maps of classification targets (``<t>_calibrated``). ``domain``: the
    applicability domain (None: ``in_domain`` empty, no domain ordering). ``extra_columns`` (keyed by
    source, row) are carried through. ``checkpoints_3d`` empty or None, or ``top_k = uncertain_k = 0``:
    2D only. ``checkpoints_3d`` may also be a :class:`molgnn.screen.model_folder.ScreeningModel`,
    whose 3D code then loads while the 2D tier's workers run.
    """
    from molgnn.models.graph2d_model import models_from_checkpoint

    t0 = time.perf_counter()
    models = models_from_checkpoint(model_2d)
    targets = list(models[0].cfg.targets)
    rank_by = _checked_ranking(targets, rank_by, top_k, uncertain_k)
    use_3d = bool(getattr(checkpoints_3d, "member_paths", checkpoints_3d)) and (top_k > 0 or uncertain_k > 0)
    meanwhile = getattr(checkpoints_3d, "load_3d_code", None) if use_3d else None
    table, rejects, n_rows = screen_2d(inputs, models, domain=domain, smiles_column=smiles_column,
                                       max_heavy_atoms=max_heavy_atoms, workers=workers, progress=progress,
                                       meanwhile=meanwhile)
    t1 = time.perf_counter()
    res = finish_two_tier(table, rejects, n_rows, out, checkpoints_3d, targets, top_k=top_k,
                          uncertain_k=uncertain_k, rank_by=rank_by, descending=descending,
                          max_heavy_atoms=max_heavy_atoms, workers=workers, seed=seed, timeout_s=timeout_s,
                          max_iterations=max_iterations, device=device, domain=domain,
                          rank_out_of_domain_last=rank_out_of_domain_last, std_scale=std_scale,
                          conformal=conformal, std_scale_2d=std_scale_2d, conformal_2d=conformal_2d,
                          platt=platt, platt_2d=platt_2d, extra_columns=extra_columns, progress=progress)
    res.seconds["tier_2d"] = t1 - t0
    return res


def finish_two_tier(table: pd.DataFrame, rejects: pd.DataFrame, n_rows: int, out: str | Path, checkpoints_3d,
                    targets: Sequence[str], *, top_k: int = 50, uncertain_k: int = 50, rank_by: str | None = None,
                    descending: bool = True, max_heavy_atoms: int = 50, workers: int | None = None, seed: int = 0,
                    timeout_s: float = 10.0, max_iterations: int = 200, device: str = "cpu", domain=None,
                    rank_out_of_domain_last: bool = True, std_scale: dict | None = None,
                    conformal: dict | None = None, std_scale_2d: dict | None = None,
                    conformal_2d: dict | None = None, platt: dict | None = None, platt_2d: dict | None = None,
                    extra_columns: pd.DataFrame | None = None, progress: bool = False) -> TwoTierResult:
    """What follows the 2D pass (the table and rejects of :func:`screen_2d`, from one process or from
    chunks): intervals, the 3D re-check of the selected molecules, ranking, writing. Arguments as
    :func:`screen_two_tier`'s."""
    from molgnn.screen.screening import rejects_path_for

    t1 = time.perf_counter()
    out = Path(out)
    targets = list(targets)
    rank_by = _checked_ranking(targets, rank_by, top_k, uncertain_k)
    use_3d = bool(getattr(checkpoints_3d, "member_paths", checkpoints_3d)) and (top_k > 0 or uncertain_k > 0)
    domain_first = domain is not None and rank_out_of_domain_last
    table.insert(0, schema.MOL_ID, "")
    table["tier"] = TIER_2D
    table["note"] = ""
    for t in targets:
        table[f"{t}_mean"], table[f"{t}_std"] = table[f"{t}_mean_2d"], table[f"{t}_std_2d"]
    interval_cols = _interval_columns(table, targets, std_scale_2d, conformal_2d)
    use_3d = use_3d and len(table) > 0
    if use_3d:
        order = _ranking(table, table[f"{rank_by}_mean_2d"], descending, domain_first, tier_first=False)
        table["selected_by"] = _select(order, table[f"{rank_by}_std_2d"].to_numpy(), top_k, uncertain_k)
    else:
        table["selected_by"] = ""
    n_3d = n_failed = 0
    if use_3d:
        members = getattr(checkpoints_3d, "checkpoints_3d", checkpoints_3d)
        n_3d, n_failed = _recheck_3d(table, targets, interval_cols, members, rank_by=rank_by,
                                     descending=descending, seed=seed, timeout_s=timeout_s,
                                     max_iterations=max_iterations, workers=workers,
                                     max_heavy_atoms=max_heavy_atoms, device=device, std_scale=std_scale,
                                     conformal=conformal, progress=progress)
    if platt or platt_2d:
        _calibrated_probabilities(table, targets, platt or {}, platt_2d or {})
    t2 = time.perf_counter()
    table = table.iloc[_ranking(table, table[f"{rank_by}_mean"], descending, domain_first, tier_first=True)]
    table = table.reset_index(drop=True)
    if extra_columns is not None and len(table):
        table = table.merge(extra_columns, on=[schema.SOURCE, schema.ROW], how="left")
    table.insert(0, "rank", range(1, len(table) + 1))
    front = ["rank", "tier", "selected_by", schema.MOL_ID, schema.SMILES, schema.SOURCE, schema.ROW, schema.RAW]
    first_cols = front + [f"{t}_{s}" for t in targets for s in ("mean", "std")] + ["in_domain", "domain_reason"]
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
                         {"tier_3d": t2 - t1, "rank_and_write": t3 - t2})


def _calibrated_probabilities(table: pd.DataFrame, targets: list[str], platt: dict, platt_2d: dict) -> None:
    """``<t>_calibrated`` from each row's own tier's Platt map (empty where that tier has none)."""
    from molgnn.screen.probability_calibration import apply_platt

    is_3d = (table["tier"] == TIER_3D).to_numpy()
    for t in (t for t in targets if t in platt or t in platt_2d):
        mean, col = table[f"{t}_mean"].to_numpy(dtype=float), np.full(len(table), np.nan)
        if t in platt:
            col[is_3d] = apply_platt(mean[is_3d], platt[t])
        if t in platt_2d:
            col[~is_3d] = apply_platt(mean[~is_3d], platt_2d[t])
        table[f"{t}_calibrated"] = col


def _recheck_3d(table: pd.DataFrame, targets: list[str], interval_cols: list[str], checkpoints_3d, *,
                rank_by: str, descending: bool, seed: int, timeout_s: float, max_iterations: int,
                workers: int | None, max_heavy_atoms: int, device: str, std_scale, conformal,
                progress: bool) -> tuple[int, int]:
    """Re-predict the selected rows of ``table`` (in place) with the 3D ensemble; (done, failed)."""
    from molgnn.screen.screening import screen_file

    sel = np.flatnonzero(table["selected_by"].to_numpy() != "")
    with tempfile.TemporaryDirectory(prefix="molgnn-two-tier-") as tmp:
        lib = Path(tmp) / "tier3d.csv"
        pd.DataFrame({"smiles": table[schema.SMILES].to_numpy()[sel]}).to_csv(lib, index=False)
        res = screen_file([str(lib)], Path(tmp) / "tier3d_preds.csv", list(checkpoints_3d), rank_by=rank_by,
                          descending=descending, smiles_column="smiles", seed=seed, timeout_s=timeout_s,
                          max_iterations=max_iterations, workers=workers, max_heavy_atoms=max_heavy_atoms,
                          device=device, std_scale=std_scale, conformal=conformal, progress=progress,
                          label="3D tier: ")
        p3 = pd.read_csv(res.predictions_path)
        r3 = pd.read_csv(res.rejects_path)
    pos = table.index.to_numpy()[sel[p3[schema.ROW].to_numpy()]]
    table.loc[pos, schema.MOL_ID] = p3[schema.MOL_ID].to_numpy()
    for c in ("stereocenters", "unassigned_stereocenters"):
        table[c] = pd.NA
        table.loc[pos, c] = p3[c].to_numpy()
    for t in [c[:-5] for c in p3.columns if c.endswith("_mean")]:
        table[f"{t}_mean_3d"] = np.nan
        table[f"{t}_std_3d"] = np.nan
        table.loc[pos, f"{t}_mean_3d"] = p3[f"{t}_mean"].to_numpy()
        table.loc[pos, f"{t}_std_3d"] = p3[f"{t}_std"].to_numpy()
        if t in targets:
            table.loc[pos, f"{t}_mean"] = p3[f"{t}_mean"].to_numpy()
            table.loc[pos, f"{t}_std"] = p3[f"{t}_std"].to_numpy()
    # each row's intervals are its own tier's: the 3D calibration's, or none where it has none
    for c in sorted(set(interval_cols) | {c for c in p3.columns if any(c.startswith(f"{t}_") and
                                           c[len(t) + 1:] in _INTERVAL_SUFFIXES for t in targets)}):
        if c not in table:
            table[c] = np.nan
        table.loc[pos, c] = p3[c].to_numpy() if c in p3 else np.nan
    table.loc[pos, "tier"] = TIER_3D
    if len(r3):
        fpos = table.index.to_numpy()[sel[r3[schema.ROW].to_numpy()]]
        table.loc[fpos, "note"] = ("3D tier failed at " + r3["stage"].astype(str) + ": "
                                   + r3["reason"].astype(str)).to_numpy()
    return len(p3), len(r3)


_INTERVAL_SUFFIXES = {"std_calibrated", "low95", "high95", "low90", "high90"}


# ------------------------------------------------------------------------------------- training

def distill_2d(smiles: Sequence[str], labels: np.ndarray, teacher: np.ndarray | None, targets: Sequence[str], *,
               val_smiles: Sequence[str], val_labels: np.ndarray, teacher_weight: float = 0.5,
               members: int = 3, seed: int = 0, epochs: int = 60, batch_size: int = 64, lr: float = 2e-3,
               hidden: int = 64, layers: int = 3, task_types: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the 2D tier; returns its checkpoint (``models_from_checkpoint`` reads it).

    ``labels`` / ``teacher`` are [N, T] (NaN where missing); validation (model selection) is on the
    true labels. ``teacher=None`` or ``teacher_weight=0``: labels only. ``task_types`` per target
    (regression | classification; None: all regression): a classification target's teacher is the
    3D ensemble's probability, and the 2D tier predicts probabilities too.
    """
    from molgnn.models.graph2d_model import checkpoint_from_models, featurize_many, train_graph2d

    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must lie in [0, 1], got {teacher_weight}")
    labels = np.asarray(labels, dtype=float).reshape(len(smiles), -1)
    if teacher is None or teacher_weight == 0:
        y, teacher_weight = labels, 0.0
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
                                    batch_size=batch_size, lr=lr, hidden=hidden, layers=layers,
                                    task_types=task_types)
        models.append(model)
        histories.append(hist)
    return checkpoint_from_models(models, teacher_weight=float(teacher_weight), n_train=len(smiles),
                                  history=histories)


def tier_scores(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str], types: Sequence[str]
                ) -> dict[str, dict[str, float]]:
    """Per target: MAE, RMSE, R² (regression) or ROC-AUC, PR-AUC, ECE, Brier, accuracy (classification,
    ``y_pred`` probabilities), as the fine-tuning stage scores the 3D ensemble."""
    from molgnn.train.finetune import regression_metrics
    from molgnn.train.tasks import classification_metrics

    yt, yp = torch.tensor(np.array(y_true, dtype=float)), torch.tensor(np.array(y_pred, dtype=float))
    return {t: (classification_metrics(yt[:, k], yp[:, k]) if types[k] == CLASSIFICATION
                else regression_metrics(yt[:, k], yp[:, k])) for k, t in enumerate(targets)}


def selection_score(scores: dict[str, dict[str, float]], y_train: np.ndarray, targets: Sequence[str],
                    types: Sequence[str]) -> float:
    """One number to compare tiers on validation (lower is better): the mean over targets of MAE /
    training-label std (regression) and 1 - ROC-AUC (classification; the Brier score where ROC-AUC
    is undefined), as fine-tuning selects its epochs."""
    parts = []
    for k, t in enumerate(targets):
        s = scores[t]
        if types[k] == CLASSIFICATION:
            auc = s["roc_auc"]
            parts.append(1.0 - auc if math.isfinite(auc) else s["brier"])
        else:
            col = np.asarray(y_train, float)[:, k]
            sd = float(np.nanstd(col)) if np.isfinite(col).sum() > 1 else 0.0
            parts.append(s["mae"] / (sd if sd > 0 else 1.0))
    parts = [p for p in parts if math.isfinite(p)]
    return float(np.mean(parts)) if parts else math.inf


@dataclass
class FastTierTraining:
    checkpoint: dict[str, Any]                   # the kept 2D tier
    chosen: str                                  # DISTILLED or LABELS
    val_score: dict[str, float]                  # per variant (lower is better)
    test_scores: dict[str, dict[str, dict[str, float]]]   # per variant: per target: metric: value
    val_predictions: pd.DataFrame                # kept tier: long table mol_id, target, y_true, y_pred, y_std
    test_predictions: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)


def _long(ids, targets, y, mean, std) -> pd.DataFrame:
    n, t = len(ids), len(targets)
    return pd.DataFrame({schema.MOL_ID: np.repeat(np.asarray(ids, dtype=object), t),
                         "target": np.tile(np.asarray(targets, dtype=object), n),
                         "y_true": np.asarray(y, float).reshape(-1), "y_pred": np.asarray(mean, float).reshape(-1),
                         "y_std": np.asarray(std, float).reshape(-1)})


def train_fast_tier(splits: dict[str, pd.DataFrame], targets: Sequence[str], types: Sequence[str],
                    teacher: np.ndarray | None, *, teacher_weight: float, members: int, epochs: int,
                    batch_size: int, lr: float, hidden: int, layers: int, seed: int) -> FastTierTraining:
    """Train the 2D tier on labels alone and distilled from ``teacher`` (the 3D ensemble's predictions
    on the train split, [N, T]; None or ``teacher_weight`` 0: labels only); keep the one with the
    better validation :func:`selection_score`; score both on the test split.

    ``splits``: ``train`` / ``val`` / ``test`` tables of ``mol_id``, ``smiles`` and the target columns.
    """
    from molgnn.models.graph2d_model import featurize_many, models_from_checkpoint, predict_ensemble_2d

    y = {s: splits[s][list(targets)].to_numpy(dtype=float) for s in splits}
    stores = {s: featurize_many(splits[s][schema.SMILES].tolist())[0] for s in ("val", "test")}
    variants = [LABELS] + ([DISTILLED] if teacher is not None and teacher_weight > 0 else [])
    kw = dict(val_smiles=splits["val"][schema.SMILES].tolist(), val_labels=y["val"], members=members, seed=seed,
              epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden, layers=layers, task_types=list(types))
    ckpts, val_score, test_scores, preds, seconds = {}, {}, {}, {}, {}
    for v in variants:
        t = time.perf_counter()
        ckpts[v] = distill_2d(splits["train"][schema.SMILES].tolist(), y["train"], teacher if v == DISTILLED else None,
                              targets, teacher_weight=teacher_weight if v == DISTILLED else 0.0, **kw)
        seconds[v] = time.perf_counter() - t
        models = models_from_checkpoint(ckpts[v])
        preds[v] = {s: tuple(x.numpy() for x in predict_ensemble_2d(models, stores[s])) for s in ("val", "test")}
        val_score[v] = selection_score(tier_scores(y["val"], preds[v]["val"][0], targets, types), y["train"],
                                       targets, types)
        test_scores[v] = tier_scores(y["test"], preds[v]["test"][0], targets, types)
    chosen = min(variants, key=lambda v: (val_score[v], v != LABELS))   # a tie keeps the simpler one
    ckpt = dict(ckpts[chosen], variant=chosen, val_score=val_score)
    return FastTierTraining(
        ckpt, chosen, val_score, test_scores,
        _long(splits["val"][schema.MOL_ID], targets, y["val"], *preds[chosen]["val"]),
        _long(splits["test"][schema.MOL_ID], targets, y["test"], *preds[chosen]["test"]), seconds)
