"""Fréchet ChemNet Distance (Preuer et al. 2018) as MOSES computed it, offline.

The ChemNet weights come from the PyPI wheel of ``fcd_torch`` (pinned ``fcd_torch==1.0.7``, the
package MOSES's metrics call), which ships ``ChemNet_v0.13_pretrained.pt`` inside the wheel: nothing
is downloaded. The file's sha256 is checked on load. Only the package's network builder
(``fcd_torch.utils.load_imported_model``, plain torch) is used; its own ``FCD`` class no longer runs on
numpy 2.x (``np.row_stack``) and scipy >= 1.16 (``sqrtm(disp=...)``), so the SMILES encoding, the
activation loop and the Fréchet distance are re-implemented here with fcd_torch 1.0.7's semantics.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import warnings
from functools import lru_cache

import numpy as np
import torch

FCD_PACKAGE = "fcd_torch"
FCD_PACKAGE_VERSION = "1.0.7"
CHEMNET_FILE = "ChemNet_v0.13_pretrained.pt"
CHEMNET_SHA256 = "a36658cc7c94d3c728eacd7ed2d2f104753bb2fde742c2817daefe9533a28080"
#: fcd_torch pads (or truncates) every SMILES to 350 tokens, end token included.
CHEMNET_PAD_LEN = 350

_VOCAB = ("C", "N", "O", "H", "F", "Cl", "P", "B", "Br", "S", "I", "Si", "#", "(", ")", "+", "-",
          "1", "2", "3", "4", "5", "6", "7", "8", "=", "[", "]", "@", "c", "n", "o", "s", "X", ".")
_TOKEN_ID = {token: i for i, token in enumerate(_VOCAB)}
_UNKNOWN = _TOKEN_ID["X"]
_END = _TOKEN_ID["."]
_SECOND_LETTERS = frozenset("ril")  # Br, Cl, Si (any letter followed by r, i or l is one token)


def chemnet_tokens(smiles: str, pad_len: int = CHEMNET_PAD_LEN) -> list[int]:
    """Token ids ChemNet reads for a SMILES, as fcd_torch 1.0.7 encodes it.

    Characters are read left to right; a character followed by ``r``, ``i`` or ``l`` forms a
    two-character token with it (``Br``, ``Cl``, ``Si``); symbols outside the 35-token vocabulary map to
    ``X``; an end token ``.`` is appended. Reading stops at the first ``.`` of the SMILES itself and
    after ``pad_len - 1`` tokens (longer SMILES are truncated, end token kept).

    >>> [_VOCAB[i] for i in chemnet_tokens("ClC=O")]
    ['Cl', 'C', '=', 'O', '.']
    """
    text = smiles + "."
    ids: list[int] = []
    src = 0
    while True:
        step = 2 if text[src + 1] in _SECOND_LETTERS else 1
        ids.append(_TOKEN_ID.get(text[src:src + step], _UNKNOWN))
        src += step
        if text[src] == "." or len(ids) == pad_len - 1:
            ids.append(_END)
            return ids


def _weights_path():
    return importlib.resources.files(FCD_PACKAGE).joinpath(CHEMNET_FILE)


@lru_cache(maxsize=1)
def load_chemnet() -> torch.nn.Module:
    """ChemNet (2 conv + 2 LSTM layers, 512 outputs) with the weights shipped in the fcd_torch wheel.

    Raises ImportError when ``fcd_torch`` is not installed and RuntimeError when the weights file is
    not the pinned one. Loads with ``torch.load(weights_only=True)``; works offline.
    """
    try:
        from fcd_torch.utils import load_imported_model
    except ImportError as err:  # pragma: no cover - exercised only without the pin installed
        raise ImportError(f"FCD needs {FCD_PACKAGE}=={FCD_PACKAGE_VERSION} (its wheel ships the ChemNet "
                          "weights): pip install fcd_torch==1.0.7") from err
    version = importlib.metadata.version(FCD_PACKAGE)
    if version != FCD_PACKAGE_VERSION:
        warnings.warn(f"{FCD_PACKAGE} {version} installed, metrics were validated with {FCD_PACKAGE_VERSION}",
                      stacklevel=2)
    with importlib.resources.as_file(_weights_path()) as path:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != CHEMNET_SHA256:
            raise RuntimeError(f"{path} has sha256 {digest}, expected {CHEMNET_SHA256}")
        config = torch.load(path, map_location="cpu", weights_only=True)
    model = load_imported_model(config)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def chemnet_activations(smiles: list[str], *, device: str = "cpu", batch_size: int = 512) -> np.ndarray:
    """ChemNet's 512 last-layer activations (float32, one row per SMILES, in order).

    The SMILES are encoded as given (pass canonical SMILES: MOSES canonicalizes with RDKit first):
    one-hot over the 35 tokens of ``chemnet_tokens``, padded with zero rows to 350, divided by 35.
    """
    model = load_chemnet().to(device)
    scale = np.float32(1.0 / len(_VOCAB))
    out = np.empty((len(smiles), 512), dtype=np.float32)
    rows = np.arange(CHEMNET_PAD_LEN)
    with torch.inference_mode():
        for start in range(0, len(smiles), batch_size):
            chunk = smiles[start:start + batch_size]
            onehot = np.zeros((len(chunk), CHEMNET_PAD_LEN, len(_VOCAB)), dtype=np.float32)
            for i, smi in enumerate(chunk):
                ids = chemnet_tokens(smi)
                onehot[i, rows[:len(ids)], ids] = scale
            batch = torch.from_numpy(onehot).to(device).transpose(1, 2)
            out[start:start + len(chunk)] = model(batch).float().cpu().numpy()
    model.to("cpu")
    return out


def activation_statistics(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance matrix (``np.cov``, n-1 denominator) of activations, float64."""
    acts = np.asarray(activations, dtype=np.float64)
    if acts.shape[0] < 2:
        raise ValueError(f"FCD statistics need at least 2 molecules, got {acts.shape[0]}")
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    ``tr((sigma1 sigma2)^(1/2))`` is taken as the sum of singular values of ``sigma1^(1/2) sigma2^(1/2)``
    (PSD square roots by symmetric eigendecomposition): mathematically the same number as
    ``tr(scipy.linalg.sqrtm(sigma1 @ sigma2))`` in MOSES, without its complex round-off, and exact to
    round-off when the two covariances are equal, even singular ones.

    >>> s = np.eye(2)
    >>> round(frechet_distance(np.zeros(2), s, np.ones(2), 4 * s), 6)  # 2 + (2 + 8 - 2 * 4)
    4.0
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("FCD statistics of different dimensions")
    tr_covmean = float(np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
