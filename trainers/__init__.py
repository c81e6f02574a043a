"""Training: datasets, the model-agnostic loop and checkpoints."""
