"""RDKit-only chemistry: standardization, conformers, scaffolds and drug-likeness filters."""
