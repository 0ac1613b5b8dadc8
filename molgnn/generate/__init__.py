"""Generative models around the networks in molgnn.models: training, sampling and checkpoints."""
