"""Public stage functions: typed config in, ``StageResult`` out, every dropped molecule recorded.

Each stage is callable without Prefect; ``flows/`` wires them into the pipeline.
"""
