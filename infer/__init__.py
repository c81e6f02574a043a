"""Inference: artifact -> Predictor. Importing this package never imports torch.

    from ptx.infer import load
    predictor = load("convnet", backend="ort-cpu")
    print(predictor.predict("digit.png")[0].label_name)
"""
from .api import load, open_artifact
from .backends import list_backends
from .predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "list_backends", "load", "open_artifact"]
