"""Matplotlib figures (Agg backend: runs headless on schedules and in CI)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from molgnn.chem.properties import HEAVY_ATOMS, PROPERTIES  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd


def learning_curve(history: Sequence[dict], keys: Sequence[str], title: str):
    """One line per key of ``keys`` (``molgnn.train.history_keys``) over the epochs of ``history``.

    A key that no epoch records raises KeyError: a curve must not vanish from the plot silently.
    """
    from molgnn.train.history_keys import EPOCH

    recorded = {k for h in history for k in h}
    missing = [k for k in keys if k not in recorded]
    if history and missing:
        raise KeyError(f"learning curve {title!r}: no epoch records {missing}; recorded keys: {sorted(recorded)}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h.get(EPOCH, i) for i, h in enumerate(history)]
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


def molecule_grid(smiles: Sequence[str], path: str | Path, per_row: int = 6, max_mols: int = 36,
                  legends: Sequence[str] | None = None) -> Path | None:
    """PNG grid of the first ``max_mols`` parsable molecules, each under its legend if given.

    Returns None when nothing drawable was given. Written atomically: a report never links half a PNG.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Draw

    from molgnn.data.artifacts import atomic_path

    mols, labels = [], []
    RDLogger.DisableLog("rdApp.*")  # invalid samples are expected here, not worth a log line each
    try:
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if isinstance(smi, str) and smi else None
            if mol is not None:
                mols.append(mol)
                labels.append(legends[i] if legends is not None else "")
            if len(mols) >= max_mols:
                break
    finally:
        RDLogger.EnableLog("rdApp.*")
    if not mols:
        return None
    img = Draw.MolsToGridImage(mols, molsPerRow=min(per_row, len(mols)), subImgSize=(200, 200), legends=labels)
    with atomic_path(path) as tmp:
        img.save(str(tmp), format="PNG")
    return Path(path)


# Properties compared between generated and training molecules: column -> axis label (the registry's).
PROPERTY_LABELS = {name: prop.label for name, prop in PROPERTIES.items()}


def property_distributions(series: dict[str, "pd.DataFrame"], title: str = "", reference: str = "training"):
    """One panel per property of ``PROPERTY_LABELS``: normalised step histograms of each table.

    ``series`` maps a name (``training``, a generator) to a :func:`molgnn.report.properties.molecule_properties`
    table. All series share bins per property so the shapes compare; the ``reference`` series is drawn
    filled grey underneath.
    """
    import numpy as np

    names = list(series)
    fig, axes = plt.subplots(1, len(PROPERTY_LABELS), figsize=(3.2 * len(PROPERTY_LABELS), 3.0))
    for ax, (col, label) in zip(axes, PROPERTY_LABELS.items()):
        values = {n: np.asarray(series[n][col], dtype=float) if col in series[n] else np.array([]) for n in names}
        values = {n: v[np.isfinite(v)] for n, v in values.items()}
        pooled = np.concatenate([v for v in values.values()] or [np.array([])])
        if not len(pooled):
            ax.set_xlabel(label)
            continue
        lo, hi = float(pooled.min()), float(pooled.max())
        if col == HEAVY_ATOMS:  # integer counts: one bin per count
            bins = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5)
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 26)
        for n, v in values.items():
            if not len(v):
                continue
            legend = f"{n} (n={len(v)}, mean {v.mean():.2f})"
            if n == reference:
                ax.hist(v, bins=bins, density=True, color="0.75", label=legend)
            else:
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.8, label=legend)
        ax.set_xlabel(label)
        ax.set_yticks([])
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and release it (pyplot keeps every open figure otherwise)."""
    from molgnn.data.artifacts import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return Path(path)
