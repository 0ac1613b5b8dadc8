"""Training loops (pretraining, fine-tuning, ensembles) and checkpoints of the 3D property model."""
