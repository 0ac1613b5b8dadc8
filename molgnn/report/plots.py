"""Matplotlib figures (Agg backend: runs headless on schedules and in CI)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(history: Sequence[dict], keys: Sequence[str], title: str):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    for key in keys:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, label=key)
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def parity(y_true, y_pred, label: str, unit: str):
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(y_true, y_pred, s=6, alpha=0.6)
    lo, hi = min(min(y_true), min(y_pred)), max(max(y_true), max(y_pred))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"true {label} ({unit})")
    ax.set_ylabel(f"predicted {label} ({unit})")
    fig.tight_layout()
    return fig


def distributions(series: dict[str, Sequence[float]], label: str):
    """Overlaid normalised histograms, e.g. QED of training vs generated molecules."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in series.items():
        values = [v for v in values if v == v]
        if values:
            ax.hist(values, bins=30, density=True, alpha=0.5, label=f"{name} (n={len(values)})")
    ax.set_xlabel(label)
    ax.legend()
    fig.tight_layout()
    return fig


def molecule_grid(smiles: Sequence[str], path: str | Path, per_row: int = 6, max_mols: int = 36) -> Path | None:
    """PNG grid of molecules; returns None when nothing drawable was given."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols = [m for m in (Chem.MolFromSmiles(s) for s in smiles[:max_mols] if s) if m is not None]
    if not mols:
        return None
    img = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(200, 200))
    img.save(str(path))
    return Path(path)
