"""A screening model folder, and screening a library with it: what ``molgnn screen`` and the
pipeline's screen stage share.

A folder holds the 3D ensemble (``member_*.pt``) and, where the fine-tuning stage saved them, its
``calibration.json`` (std scales, conformal intervals) and applicability domain; the fast-tier
stage's folder adds the 2D tier (``model_2d.pt``) and its ``calibration_2d.json``. With a 2D tier
the default screen is two-tier (:func:`molgnn.screen.fast_tier.screen_two_tier`), else the full 3D
screen (:func:`molgnn.screen.screening.screen_file`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from molgnn.screen.fast_tier import CALIBRATION_2D_FILE, MODEL_2D_FILE

CALIBRATION_FILE = "calibration.json"      # as molgnn.stages.finetune writes it (a test keeps them equal)
FINETUNE_DIR, FAST_TIER_DIR = "finetune", "fast_tier"   # stage folders inside a run folder
TIERS = ("auto", "3d", "2d")


@dataclass
class ScreeningModel:
    folder: Path
    member_paths: list[Path]
    model_2d: dict[str, Any] | None = None
    std_scale: dict[str, float] = field(default_factory=dict)
    conformal: dict[str, dict] = field(default_factory=dict)
    std_scale_2d: dict[str, float] = field(default_factory=dict)
    conformal_2d: dict[str, dict] = field(default_factory=dict)
    platt: dict[str, dict] = field(default_factory=dict)       # classification: Platt maps per target
    platt_2d: dict[str, dict] = field(default_factory=dict)
    domain: Any = None                      # molgnn.screen.domain.Domain, or None (older folders)

    _checkpoints: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def checkpoints_3d(self) -> list[dict[str, Any]]:
        """The 3D members, read on first use: their code (schnetpack) loads only when the 3D tier runs."""
        if self._checkpoints is None:
            from molgnn.train.checkpoints import load_checkpoint

            self._checkpoints = [load_checkpoint(m) for m in self.member_paths]
        return self._checkpoints

    def load_3d_code(self) -> None:
        """Import the 3D tier's code and read its members now (to overlap it with other work)."""
        if self.member_paths:
            self.checkpoints_3d
            import molgnn.screen.predict  # noqa: F401

    @property
    def targets(self) -> list[str]:
        if self.model_2d:
            return list(self.model_2d["config"]["targets"])
        return list(self.checkpoints_3d[0]["config"]["targets"]) if self.member_paths else []


def resolve_folder(path: str | Path) -> Path:
    """The model folder ``path`` names: a run folder (``runs/latest``) gives its fast-tier folder when
    that has a 2D tier, else its fine-tuning folder; any other folder or checkpoint file is itself."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("member_*.pt")):
        fast, fine = path / FAST_TIER_DIR, path / FINETUNE_DIR
        if (fast / MODEL_2D_FILE).is_file():
            return fast
        if fine.is_dir():
            return fine
    return path


def load_screening_model(path: str | Path, *, calibration: str = "auto",
                         model_2d: str | Path | None = None) -> ScreeningModel:
    """Everything a screen needs from a model folder (or one checkpoint file).

    ``calibration``: ``auto`` (the folder's calibration files when present), ``none`` (raw spread
    only), or the path of a calibration.json for the 3D ensemble. ``model_2d``: a 2D tier checkpoint
    to use instead of the folder's (then the folder may hold no model at all: a 2D-only screen)."""
    import torch

    from molgnn.screen.calibration import load_conformal, load_std_scales
    from molgnn.screen.probability_calibration import load_platt
    from molgnn.screen.domain import DOMAIN_FILE, load_domain

    path = resolve_folder(path)
    folder = path if path.is_dir() else path.parent
    members = sorted(path.glob("member_*.pt")) if path.is_dir() else [path]
    members = [m for m in members if m.is_file()]
    own_2d = model_2d is None
    m2d = folder / MODEL_2D_FILE if own_2d else Path(model_2d)
    if not m2d.is_file() and not own_2d:
        raise FileNotFoundError(f"no 2D model at {m2d}")
    if not members and not m2d.is_file():
        raise FileNotFoundError(f"no fine-tuned models at {path}: run `molgnn run` first or pass --models")
    model = ScreeningModel(folder, members, torch.load(m2d, weights_only=True) if m2d.is_file() else None)
    if calibration != "none":
        calib = folder / CALIBRATION_FILE if calibration == "auto" else Path(calibration)
        if calibration != "auto" or calib.is_file():
            model.std_scale, model.conformal = load_std_scales(calib), load_conformal(calib)
            model.platt = load_platt(calib)
        calib_2d = folder / CALIBRATION_2D_FILE
        if own_2d and calib_2d.is_file():      # another 2D model's calibration is not the folder's
            model.std_scale_2d, model.conformal_2d = load_std_scales(calib_2d), load_conformal(calib_2d)
            model.platt_2d = load_platt(calib_2d)
    if (folder / DOMAIN_FILE).is_file():
        model.domain = load_domain(folder / DOMAIN_FILE)
    return model


@dataclass
class LibraryScreen:
    tier: str                      # what ran: "two-tier", "3d" or "2d"
    predictions_path: Path
    rejects_path: Path
    n_input_rows: int
    n_ranked: int
    n_rejected: int
    n_3d: int                      # molecules with a 3D prediction
    n_3d_failed: int = 0           # two-tier: selected for 3D without a 3D result
    note: str = ""                 # why a requested tier was not used
    seconds: dict[str, float] = field(default_factory=dict)


def screen_library(model: ScreeningModel, inputs: list[str], out: str | Path, *, tier: str = "auto",
                   rank_by: str | None = None, descending: bool = True, top_k: int = 50, uncertain_k: int = 50,
                   rank_out_of_domain_last: bool = True, smiles_column: str | None = None, seed: int = 0,
                   timeout_s: float = 10.0, max_iterations: int = 200, workers: int | None = None,
                   max_heavy_atoms: int = 50, device: str = "cpu", extra_columns: pd.DataFrame | None = None,
                   progress: bool = False) -> LibraryScreen:
    """Screen ``inputs`` with ``model``: ``auto`` two-tier when the folder has a 2D tier (else the full
    3D screen, with a note saying so), ``3d`` the full 3D screen, ``2d`` the 2D tier alone."""
    from molgnn.screen.fast_tier import screen_two_tier
    from molgnn.screen.screening import screen_file

    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    note = ""
    if tier in ("auto", "2d") and model.model_2d is None:
        if tier == "2d":
            raise FileNotFoundError(f"no 2D tier ({MODEL_2D_FILE}) in {model.folder}: fine-tune with "
                                    "fast_tier.enabled (the default) or use --tier 3d")
        note = (f"no 2D tier ({MODEL_2D_FILE}) in {model.folder}: screening every molecule with the 3D "
                "ensemble (slow on large libraries)")
        tier = "3d"
    rank_by = rank_by or (model.targets[0] if model.targets else None)
    if tier == "3d":
        if not model.member_paths:
            raise FileNotFoundError(f"no fine-tuned 3D models (member_*.pt) in {model.folder}")
        res = screen_file(inputs, out, model.checkpoints_3d, rank_by=rank_by, descending=descending,
                          smiles_column=smiles_column, seed=seed, timeout_s=timeout_s,
                          max_iterations=max_iterations, workers=workers, max_heavy_atoms=max_heavy_atoms,
                          device=device, extra_columns=extra_columns, std_scale=model.std_scale,
                          conformal=model.conformal, platt=model.platt, domain=model.domain,
                          rank_out_of_domain_last=rank_out_of_domain_last, progress=progress)
        return LibraryScreen("3d", res.predictions_path, res.rejects_path, res.n_input_rows, res.n_ranked,
                             res.n_rejected, res.n_ranked, note=note)
    if tier == "2d":
        top_k = uncertain_k = 0
    elif (top_k or uncertain_k) and not model.member_paths:
        raise FileNotFoundError(f"no fine-tuned 3D models (member_*.pt) in {model.folder} for the 3D re-check: "
                                "pass --tier 2d (or --top-k 0 --uncertain-k 0) for the 2D tier alone")
    res = screen_two_tier(inputs, out, model, model.model_2d, top_k=top_k, uncertain_k=uncertain_k,
                          rank_by=rank_by, descending=descending, smiles_column=smiles_column,
                          max_heavy_atoms=max_heavy_atoms, workers=workers, seed=seed, timeout_s=timeout_s,
                          max_iterations=max_iterations, device=device, domain=model.domain,
                          rank_out_of_domain_last=rank_out_of_domain_last, std_scale=model.std_scale,
                          conformal=model.conformal, std_scale_2d=model.std_scale_2d,
                          conformal_2d=model.conformal_2d, platt=model.platt, platt_2d=model.platt_2d,
                          extra_columns=extra_columns, progress=progress)
    return LibraryScreen("2d" if tier == "2d" else "two-tier", res.predictions_path, res.rejects_path,
                         res.n_input_rows, res.n_ranked, res.n_rejected, res.n_3d, res.n_3d_failed, note,
                         res.seconds)
