"""Inference: artifact -> Predictor. Importing this package never imports torch.

    from ptx.infer import load
    predictor = load("convnet", backend="ort-cpu")
    print(predictor.predict("digit.png")[0].label_name)
"""
from .api import BACKENDS, load
from .predictor import Prediction, Predictor

__all__ = ["BACKENDS", "Prediction", "Predictor", "load"]
