"""Inference: a model name, run folder, model file or nn.Module -> a Model (a runner per runtime, a
head above it for a tutorial model). Importing this package never imports torch.

    from ptx.infer import load
    model = load("convnet", backend="ort-cpu")
    print(model.predict("digit.png")[0].label_name)
"""
from .api import load, open_artifact
from .backends import list_backends
from .head import Prediction
from .model import Model

__all__ = ["Model", "Prediction", "list_backends", "load", "open_artifact"]
