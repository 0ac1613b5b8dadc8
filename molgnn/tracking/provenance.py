"""Where a result came from: the git commit and the repository root."""
from __future__ import annotations

import subprocess
from pathlib import Path


def repo_root(start: str | Path | None = None) -> Path:
    """The directory holding params.yaml: the current directory unless told otherwise."""
    return Path(start or Path.cwd()).resolve()


def git_commit(root: str | Path) -> str:
    """HEAD's commit, suffixed '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
