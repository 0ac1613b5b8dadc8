"""Neural networks: the PaiNN encoder, property heads, pretraining objectives and the generative models."""
