"""Screen any molecule file with a fine-tuned ensemble: standardize, embed in 3D, predict, rank.

Every input row ends either in the ranked predictions or in the rejects file beside them, with the
stage and reason it failed (parse, standardize, duplicate, conformer).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from molgnn.chem.stereo import stereo_counts
from molgnn.data import schema
from molgnn.data.artifacts import atomic_path


@dataclass
class ScreenResult:
    predictions_path: Path
    rejects_path: Path
    n_input_rows: int
    n_ranked: int
    n_rejected: int


def rejects_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".rejects.csv")


def screen_file(inputs: list[str], out: str | Path, checkpoints: list[dict], *, rank_by: str,
                descending: bool = True, smiles_column: str | None = None, seed: int = 0,
                timeout_s: float = 10.0, max_iterations: int = 200, workers: int | None = None,
                max_heavy_atoms: int = 50, device: str = "cpu",
                extra_columns: pd.DataFrame | None = None,
                std_scale: dict[str, float] | None = None, conformal: dict[str, dict] | None = None,
                platt: dict[str, dict] | None = None, domain=None, rank_out_of_domain_last: bool = True, progress: bool = False,
                label: str = "") -> ScreenResult:
    """Predict every kept molecule of ``inputs`` and write them ranked to ``out``.

    ``extra_columns`` (indexed like the input rows by (source,row)) are carried through, so callers
    can attach provenance such as the generator that proposed each molecule. ``std_scale`` (per
    target, from the fine-tune stage's calibration report) adds calibrated std and 95 % intervals:
    a raw ensemble spread is typically over-confident. ``conformal`` (per target, from the same
    report) adds split-conformal 90 % intervals ``<t>_low90``/``<t>_high90``; ``platt`` (classification
    targets, same report) the calibrated probability ``<t>_calibrated``. ``domain``
    (:class:`molgnn.screen.domain.Domain`, or None for a model folder without one) gives every row
    ``in_domain`` and ``domain_reason``; with ``rank_out_of_domain_last`` no out-of-domain molecule
    is ranked above an in-domain one. ``progress``: bars (or periodic lines) on stderr for the
    reading + standardization and the conformers, their names prefixed with ``label``.
    """
    from molgnn.screen.calibration import add_conformal_intervals
    from molgnn.screen.domain import domain_columns
    from molgnn.screen.calibration import add_calibrated_intervals
    from molgnn.data.ingest import ingest
    from molgnn.featurize.structures import build_structures
    from molgnn.screen.predict import predict_ensemble
    from molgnn.screen.progress import Progress

    if not checkpoints:
        raise ValueError("screening needs at least one fine-tuned model checkpoint")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="molgnn-screen-") as tmp:
        tmp = Path(tmp)
        with Progress(f"{label}read + standardize", None, enabled=progress, unit="rows") as bar:
            ing = ingest(list(inputs), tmp / "molecules", smiles_column=smiles_column, target_columns=[],
                         max_heavy_atoms=max_heavy_atoms, progress=bar.update)
        molecules = pd.read_parquet(ing.molecules_path)
        rejects = [pd.read_csv(ing.rejects_path)]
        if len(molecules):
            with Progress(f"{label}3D conformers", len(molecules), enabled=progress) as bar:
                s = build_structures(molecules, tmp / "features", seed=seed, timeout_s=timeout_s,
                                     max_iterations=max_iterations, workers=workers, progress=bar.update)
            structures = pd.read_parquet(s.path)
            rejects.append(pd.read_csv(s.rejects_path))
        else:
            structures = pd.DataFrame(columns=[schema.MOL_ID, schema.ATOMIC_NUMBERS, schema.POSITIONS])

    preds = (predict_ensemble(checkpoints, structures, device=device) if len(structures)
             else pd.DataFrame(columns=[schema.MOL_ID]))
    table = molecules[[schema.MOL_ID, schema.SMILES, schema.INCHIKEY, schema.SOURCE, schema.ROW,
                       schema.RAW]].merge(preds, on=schema.MOL_ID, how="inner")
    if extra_columns is not None and len(table):
        table = table.merge(extra_columns, on=[schema.SOURCE, schema.ROW], how="left")
    if std_scale:
        table = add_calibrated_intervals(table, std_scale)
    if conformal:
        table = add_conformal_intervals(table, conformal)
    if platt:
        from molgnn.screen.probability_calibration import add_calibrated_probabilities

        table = add_calibrated_probabilities(table, platt)
    domain_columns(table, domain, schema.SMILES)
    # E(3)-invariant models give enantiomers identical predictions: say where that applies.
    counts = [stereo_counts(smi) for smi in table[schema.SMILES]]
    table["stereocenters"] = [c for c, _ in counts]
    table["unassigned_stereocenters"] = [u for _, u in counts]
    score = f"{rank_by}_mean"
    if len(table) and score not in table.columns:
        raise ValueError(f"cannot rank by {rank_by!r}: the model predicts "
                         f"{sorted(c[:-5] for c in table.columns if c.endswith('_mean'))}")
    if len(table):
        table = table.sort_values(score, ascending=not descending, kind="stable").reset_index(drop=True)
        if domain is not None and rank_out_of_domain_last:
            # stable: in-domain molecules first, each group still ordered by the score
            table = table.sort_values("in_domain", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))

    all_rejects = pd.concat([r for r in rejects if len(r)], ignore_index=True) if any(len(r) for r in rejects) \
        else pd.DataFrame(columns=schema.REJECT_COLUMNS)
    if len(table) + len(all_rejects) != ing.n_input_rows:
        raise AssertionError(f"screen lost rows: {ing.n_input_rows} in, {len(table)} ranked, "
                             f"{len(all_rejects)} rejected")
    with atomic_path(out) as tmp_out:
        table.to_csv(tmp_out, index=False)
    rp = rejects_path_for(out)
    with atomic_path(rp) as tmp_rej:
        all_rejects.to_csv(tmp_rej, index=False)
    return ScreenResult(out, rp, ing.n_input_rows, len(table), len(all_rejects))
