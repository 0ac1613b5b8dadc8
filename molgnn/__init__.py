"""molgnn: a traceable pipeline for molecular discovery.

Layers (each imports only those before it): chem -> featurize -> data -> models -> train / generate /
screen -> stages -> cli. Heavy libraries (torch, RDKit, schnetpack) are imported by the modules that
use them, so ``import molgnn`` stays fast.
"""
__version__ = "0.1.0"
