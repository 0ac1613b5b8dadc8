"""Figures logged to MLflow runs: learning curves, parity plots, distributions, molecule grids."""
