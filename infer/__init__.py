"""Inference: a model name, run folder, model file or nn.Module -> a Model (a runner per runtime, a
head above it for a tutorial model). Importing this package never imports torch.

    from ptx.infer import load
    model = load("convnet", backend="ort-cpu")
    print(model.predict("digit.png")[0].label_name)
"""
from .model.target import load, open_artifact
from .runtime import backends
from .runtime.backends import list_backends
from .model.head import Prediction
from .model.model import Model

__all__ = ["Model", "Prediction", "backends", "list_backends", "load", "open_artifact"]
