"""The split a fine-tune stage used, joined back to its molecules: for training another model on it.

``runs/finetune/split.csv`` names molecules by ``mol_id`` only. A peer model (chemprop, a baseline)
compared on *identical* splits needs the SMILES and labels of exactly those molecules, in one table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from molgnn.data import schema

SPLIT_COLUMN = "split"
SPLIT_VALUES = ("train", "val", "test")


class SplitExportError(ValueError):
    """split.csv is malformed or names molecules that are not in the molecules table."""


def split_table(split_path: str | Path, molecules_path: str | Path,
                targets: Sequence[str] = ()) -> pd.DataFrame:
    """``mol_id, smiles, split, *targets`` for every molecule of ``split.csv``, in its order.

    ``molecules_path`` is the ingest stage's ``molecules.parquet``. Molecules that the fine-tune stage
    left out (no 3D structure, no label) are not in ``split.csv`` and so not in the table: the caller
    accounts for them from the stages' rejects.
    """
    split = pd.read_csv(split_path, dtype={schema.MOL_ID: str, SPLIT_COLUMN: str})
    for col in (schema.MOL_ID, SPLIT_COLUMN):
        if col not in split.columns:
            raise SplitExportError(f"{split_path}: no {col!r} column")
    bad = sorted(set(split[SPLIT_COLUMN].fillna("")) - set(SPLIT_VALUES))
    if bad:
        raise SplitExportError(f"{split_path}: split values must be {SPLIT_VALUES}, found {bad}")
    if split[schema.MOL_ID].duplicated().any():
        raise SplitExportError(f"{split_path}: repeated mol_ids, e.g. "
                               f"{split.loc[split[schema.MOL_ID].duplicated(), schema.MOL_ID].iloc[0]}")
    molecules = pd.read_parquet(molecules_path, columns=[schema.MOL_ID, schema.SMILES, *targets])
    missing = ~split[schema.MOL_ID].isin(molecules[schema.MOL_ID])
    if missing.any():
        raise SplitExportError(f"{int(missing.sum())} mol_id(s) of {split_path} are not in {molecules_path}, "
                               f"e.g. {split.loc[missing, schema.MOL_ID].iloc[0]}")
    table = split.merge(molecules, on=schema.MOL_ID, how="left", validate="one_to_one")
    return table[[schema.MOL_ID, schema.SMILES, SPLIT_COLUMN, *targets]]


def split_indices(table: pd.DataFrame) -> dict[str, list[int]]:
    """Row positions (0-based, in ``table``'s order) of each split: chemprop's ``--splits-file`` entry."""
    if SPLIT_COLUMN not in table.columns:
        raise SplitExportError(f"no {SPLIT_COLUMN!r} column")
    split = table[SPLIT_COLUMN].to_numpy()
    bad = sorted(set(map(str, split)) - set(SPLIT_VALUES))
    if bad:
        raise SplitExportError(f"split values must be {SPLIT_VALUES}, found {bad}")
    return {name: [int(i) for i in (split == name).nonzero()[0]] for name in SPLIT_VALUES}


def write_peer_inputs(table: pd.DataFrame, targets: Sequence[str], out_dir: str | Path,
                      parts: Sequence[str] = SPLIT_VALUES) -> tuple[Path, Path]:
    """``data.csv`` (smiles and targets, missing labels as empty cells) and ``splits.json`` (one
    ``{"train": [...], "val": [...], "test": [...]}`` of row positions in data.csv) for a peer
    trained on exactly this split, e.g. ``chemprop train -i data.csv --splits-file splits.json``.

    ``parts`` names the splits the peer gets; the rows of the others are left out of both files. With
    ``("train", "val")`` the peer never sees the test molecules and they are predicted apart (chemprop
    2.3.1's ``train`` scores its test split task by task and crashes on a task with no test label,
    e.g. on ToxCast's sparse tasks).
    """
    import json

    out_dir = Path(out_dir)
    missing = [c for c in (schema.SMILES, *targets) if c not in table.columns]
    if missing:
        raise SplitExportError(f"the split table has no column(s) {missing}")
    if "train" not in parts or set(parts) - set(SPLIT_VALUES):
        raise SplitExportError(f"parts must include train and be among {SPLIT_VALUES}, got {list(parts)}")
    split_indices(table)   # every row's split value checked, the rows left out too
    kept = table[table[SPLIT_COLUMN].isin(parts)].reset_index(drop=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, splits = out_dir / "data.csv", out_dir / "splits.json"
    kept[[schema.SMILES, *targets]].to_csv(data, index=False, lineterminator="\n")
    entry = {name: rows for name, rows in split_indices(kept).items() if name in parts}
    splits.write_text(json.dumps([entry]) + "\n")
    return data, splits
