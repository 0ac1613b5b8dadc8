"""Molecule -> model inputs: 2D graphs, 3D structures, dense graphs for generators, atomistic batches."""
