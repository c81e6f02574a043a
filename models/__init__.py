"""The model registry that drives training, export, inference and tests.

Adding a model: one file in this folder that calls ``register(ModelSpec(...))``, plus its module
name in ``_MODEL_FILES``; then ``python3 scripts/model_catalog.py`` writes it into the torch-free
catalog (ptx/contract/catalog.py) that `ptx models` lists and "did you mean" reads (a test says when
it is due).
"""
import importlib

from .registry import get, list_models, register
from .spec import BATCH, ModelSpec, Recipe, tensor

_MODEL_FILES = (
    "linreg", "logreg", "mlp_sigmoid", "mlp_dropout", "cnn", "convnet", "lstm", "mlp",
    "lenet", "softmax_mlp", "cnn_basic", "inception", "resnet", "logistic", "diabetes", "rnn_hello",
    "gru_classifier",
)
for _file in _MODEL_FILES:
    importlib.import_module(f"{__name__}.{_file}")

__all__ = ["BATCH", "ModelSpec", "Recipe", "get", "list_models", "register", "tensor"]
