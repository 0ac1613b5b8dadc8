"""Prefect orchestration of the molgnn library: the pipeline flow and its schedule."""
