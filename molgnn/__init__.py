"""molgnn: a traceable pipeline for molecular discovery.

Layers (each imports only those before it): chem -> data -> config -> featurize -> models -> train ->
generate / screen -> report -> stages -> tracking -> flows -> cli; docs/ARCHITECTURE.md, checked by
``lint-imports``. Heavy libraries (torch, RDKit, schnetpack) are imported by the modules that
use them, so ``import molgnn`` stays fast.
"""
__version__ = "0.1.0"
