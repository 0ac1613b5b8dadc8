"""Import schnetpack's layers without its package ``__init__``.

``import schnetpack.nn`` first runs ``schnetpack/__init__.py``, which imports everything schnetpack
has (PyTorch Lightning, its datasets, molecular dynamics): about 4 s on the 2-core machine, more
than a two-tier ``molgnn screen`` of 20,000 molecules spends on anything else. PaiNN inference needs
only ``schnetpack.properties``, ``schnetpack.nn`` and ``schnetpack.representation`` (0.4 s).

:func:`install` registers the ``schnetpack`` package without running its ``__init__``, so that its
submodules import on their own. Nothing is lost: the first access to any other top-level name
(``schnetpack.train``, ``schnetpack.__version__``, ...) runs the real ``__init__`` then. Call it
before anything imports schnetpack (a no-op afterwards).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _LightPackage(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{self.__name__}.{name}")
        except ModuleNotFoundError:
            pass
        if not self.__dict__.get("_molgnn_full"):
            self.__dict__["_molgnn_full"] = True          # the real __init__ runs once
            with open(self.__spec__.origin, encoding="utf-8") as fh:
                code = compile(fh.read(), self.__spec__.origin, "exec")
            exec(code, self.__dict__)
            if name in self.__dict__:
                return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def install(package: str = "schnetpack") -> bool:
    """Register ``package`` light (see the module docstring); False when it was imported already
    or is not installed."""
    if package in sys.modules:
        return False
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return False
    module = _LightPackage(package)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = package
    module.__loader__ = spec.loader
    sys.modules[package] = module
    return True
