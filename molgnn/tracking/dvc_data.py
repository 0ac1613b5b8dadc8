"""The one module that talks to DVC: version ``data/`` and report its md5.

DVC is driven through its command line (``python -m dvc``) so its global state stays out of our
process; each call is short and offline (a local directory remote).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

DEFAULT_REMOTE_NAME = "localstore"
# Given relative to the repo root; DVC stores it relative to .dvc/ (as ../.dvc-storage).
DEFAULT_REMOTE_URL = ".dvc-storage"


class DVCError(RuntimeError):
    """A DVC command failed; the message carries DVC's own output."""


def _dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DVCError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def ensure_repo(root: Path) -> None:
    """Initialise DVC (inside git when there is one) with a default local remote, once."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        in_git = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root,
                                capture_output=True, text=True)
        is_git_root = in_git.returncode == 0 and Path(in_git.stdout.strip()).resolve() == root.resolve()
        _dvc(root, "init", *([] if is_git_root else ["--no-scm"]), "--quiet")
        _dvc(root, "config", "core.analytics", "false")
    remotes = _dvc(root, "remote", "list").strip()
    if not remotes:
        _dvc(root, "remote", "add", "-d", DEFAULT_REMOTE_NAME, DEFAULT_REMOTE_URL)


def version_data(root: Path, data_dir: str = "data") -> str:
    """``dvc add`` the data folder, push it to the default remote, return its md5."""
    root = Path(root)
    ensure_repo(root)
    _dvc(root, "add", data_dir, "--quiet")
    _dvc(root, "push", "--quiet")
    return data_md5(root, data_dir)


def data_md5(root: Path, data_dir: str = "data") -> str | None:
    """The md5 recorded in ``<data_dir>.dvc``, or None when the data is not tracked yet."""
    dvc_file = Path(root) / f"{data_dir}.dvc"
    if not dvc_file.exists():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    return outs[0].get("md5") if outs else None


def is_clean(root: Path) -> bool:
    """True when ``dvc status`` reports nothing changed."""
    out = _dvc(root, "status", "--json").strip()
    return out in ("", "{}")
