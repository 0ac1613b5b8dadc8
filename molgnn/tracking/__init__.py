"""Adapters to the outside record: MLflow runs, DVC data versions, provenance (git, params)."""
