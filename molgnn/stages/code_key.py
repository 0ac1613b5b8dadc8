"""The code a stage runs, as a hash: part of every stage key.

A stage's code is the transitive closure of the molgnn modules its module imports (read from the
source, so imports inside functions count too), plus the versions of the third-party distributions
those modules import. Editing any of them changes the key and the stage recomputes; editing a
module the stage never reaches (another stage's code) does not.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = "molgnn"


def package_dir() -> Path:
    """The molgnn package actually imported (a copy of the tree imports its own files)."""
    import molgnn

    return Path(molgnn.__file__).resolve().parent


def _module_file(module: str, pkg_dir: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = pkg_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports, anywhere in the file (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from molgnn.data import schema` imports the module molgnn.data.schema
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _closure(module: str, pkg_dir: Path) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(molgnn modules reached with their source hashes, third-party top-level imports), sorted."""
    seen: dict[str, str] = {}
    external: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, pkg_dir)
        if path is None:
            top = name.split(".")[0]
            if top and top != PACKAGE and top not in sys.stdlib_module_names:
                external.add(top)
            continue
        seen[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(parents)   # importing a.b.c runs a/__init__ and a/b/__init__ first
        todo.extend(_imports(path, name))
    return tuple(sorted(seen.items())), tuple(sorted(external))


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()   # scans every installed distribution: once a process


def _distribution_versions(top_levels: tuple[str, ...]) -> list[tuple[str, str]]:
    dists = _packages_distributions()
    out = set()
    for top in top_levels:
        for dist in dists.get(top, []):
            try:
                out.add((dist, metadata.version(dist)))
            except metadata.PackageNotFoundError:
                continue
    return sorted(out)


def stage_module(stage: str) -> str:
    """The module that implements a stage: ``generate-vae`` -> ``molgnn.stages.generate``."""
    return f"{PACKAGE}.stages.{stage.split('-')[0].replace('-', '_')}"


def code_fingerprint(module: str, pkg_dir: Path | None = None) -> dict[str, object]:
    """What the stage key hashes of the code: molgnn modules with their source hashes and the
    versions of the libraries they import. Empty for a module that does not exist."""
    pkg_dir = (pkg_dir or package_dir()).resolve()
    if _module_file(module, pkg_dir) is None:
        return {}
    modules, external = _closure(module, pkg_dir)
    return {"modules": dict(modules), "libraries": dict(_distribution_versions(external))}


def code_hash(module: str, pkg_dir: Path | None = None) -> str:
    blob = repr(sorted(code_fingerprint(module, pkg_dir).items())).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
