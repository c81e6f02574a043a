"""Inference: artifact -> Predictor. Importing this package never imports torch."""
