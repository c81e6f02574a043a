"""The registered models as plain data: `ptx models` lists them, and a mistyped model name gets
"did you mean" from predict, verify, bench, serve and ``ptx.infer.load()`` without importing torch
(ptx.models does, to define the modules).

Generated from the registry by scripts/model_catalog.py; do not edit by hand. tests/test_catalog.py
checks it against ptx.models (names, shapes, parameter counts of the built modules, formats, the
data each model takes).
"""
from __future__ import annotations

FIELDS = ['name', 'input_shape', 'batch_axis', 'params', 'dataset', 'takes', 'tutorial', 'formats', 'description']
# What many models share: a row of MODELS below says only what differs from it.
COMMON = {'input_shape': ['batch', 1, 28, 28], 'batch_axis': 0, 'dataset': 'mnist',
          'takes': {'input': 'pictures', 'label': 'classes', 'size': [28, 28], 'classes': 10, 'alphabet': ''},
          'formats': ['onnx', 'torchscript', 'onnx-int8', 'openvino-int8', 'pt2', 'triton', 'kserve']}
MODELS = [{key: {**COMMON, **row}[key] for key in FIELDS} for row in [
    {'name': 'linreg', 'input_shape': ['batch', 1], 'params': 1, 'dataset': 'line',
     'takes': {'input': 'number', 'label': 'value', 'size': [], 'classes': 0, 'alphabet': ''}, 'tutorial': '000 §2',
     'formats': ['onnx', 'torchscript', 'pt2', 'triton', 'kserve'],
     'description': 'Linear(1,1,bias=False) fitted to y = 2x + N(0, 0.33)'},
    {'name': 'logreg', 'input_shape': ['batch', 784], 'params': 7840, 'tutorial': '000 §3',
     'description': 'softmax regression Linear(784,10,bias=False)'},
    {'name': 'mlp-sigmoid', 'input_shape': ['batch', 784], 'params': 406528, 'tutorial': '000 §4',
     'description': '784-512 Sigmoid 512-10 MLP, no bias'},
    {'name': 'mlp-dropout', 'input_shape': ['batch', 784], 'params': 668672, 'tutorial': '000 §5',
     'description': '784-512-512-10 ReLU MLP with Dropout(0.2), no bias, Adam'},
    {'name': 'cnn', 'params': 1630090, 'tutorial': '000 §5',
     'description': 'conv 32/64 3x3 + max-pools, FC 3136-512-10 with Dropout(0.2), Adam'},
    {'name': 'convnet', 'params': 21840, 'tutorial': '000 §6',
     'description': 'ConvNet: conv 10/20 k5 + dropout, FC 320-50-10 + dropout'},
    {'name': 'lstm', 'input_shape': [28, 'batch', 28], 'batch_axis': 1, 'params': 82176, 'tutorial': '000 §7',
     'description': 'LSTM(28,128) over image rows, seq-first (28, batch, 28), Linear(128,10,bias=False)'},
    {'name': 'mlp', 'params': 669706, 'dataset': 'fashion-mnist', 'tutorial': '002 §4, 004',
     'description': 'quickstart NeuralNetwork: Flatten, 784-512-512-10 ReLU'},
    {'name': 'lenet', 'input_shape': ['batch', 1, 32, 32], 'params': 61706, 'tutorial': '002 §4 Net',
     'description': 'tutorial LeNet: conv 6/16 k5, FC 400-120-84-10, MNIST padded to 32x32'},
    {'name': 'softmax-mlp', 'input_shape': ['batch', 784], 'params': 575050, 'tutorial': '003 lecture 9',
     'description': 'softmax classifier 784-512-256-128-64-10 ReLU'},
    {'name': 'cnn-basic', 'params': 8490, 'tutorial': '003 lecture 10',
     'description': 'basic CNN: conv 1->10 k5, conv 10->20 k5, max-pool 2, ReLU, FC 320->10'},
    {'name': 'inception', 'params': 97298, 'tutorial': '003 lecture 11',
     'description': 'InceptionA net: conv 10, InceptionA, conv 20, InceptionA (88 ch), FC 1408->10'},
    {'name': 'resnet', 'params': 41514, 'tutorial': '003 lecture 11',
     'description': 'ResidualBlock net: conv 16, block, conv 32, block, FC 512->10'},
    {'name': 'logistic', 'input_shape': ['batch', 1], 'params': 2, 'dataset': 'hours',
     'takes': {'input': 'number', 'label': 'binary', 'size': [], 'classes': 0, 'alphabet': ''},
     'tutorial': '003 lecture 6',
     'description': 'logistic regression Linear(1,1) + sigmoid, BCE: hours studied -> pass'},
    {'name': 'diabetes', 'input_shape': ['batch', 8], 'params': 87, 'dataset': 'pima',
     'takes': {'input': 'vector', 'label': 'binary', 'size': [8], 'classes': 0, 'alphabet': ''},
     'tutorial': '003 lectures 7-8',
     'description': 'diabetes MLP 8-6-4-1 with sigmoids, BCE, on Pima Indians diabetes'},
    {'name': 'rnn-hello', 'input_shape': ['seq', 'batch'], 'batch_axis': 1, 'params': 380, 'dataset': 'hello',
     'takes': {'input': 'characters', 'label': 'class per character', 'size': [], 'classes': 4, 'alphabet': 'ehlo'},
     'tutorial': '003 lecture 12',
     'formats': ['onnx', 'torchscript', 'onnx-int8', 'openvino-int8', 'triton', 'kserve'],
     'description': 'char RNN (embedding 10, RNN 8 x 2 layers) learning "hello" -> "ohlol"'},
    {'name': 'gru-classifier', 'input_shape': ['seq', 'batch'], 'batch_axis': 1, 'params': 329206, 'dataset': 'words',
     'takes': {'input': 'words', 'label': 'classes', 'size': [], 'classes': 6, 'alphabet': 'latin-1'},
     'tutorial': '003 lecture 13',
     'formats': ['onnx', 'torchscript', 'onnx-int8', 'openvino-int8', 'triton', 'kserve'],
     'description': 'embedding + bidirectional GRU (100 x 2 layers) + linear: word -> language'},
]]

# The named datasets each model trains on (a user's folder:PATH is judged when it is read).
FITS_COMMON = ['mnist', 'fashion-mnist', 'mnist-sample']
FITS = {**{m['name']: FITS_COMMON for m in MODELS},
        **{'linreg': ['line'], 'logistic': ['hours'], 'diabetes': ['pima'], 'rnn-hello': ['hello'],
           'gru-classifier': ['words']}}


def names() -> list[str]:
    """The registered model names, in registry order."""
    return [m["name"] for m in MODELS]


def unknown_model(name: str) -> str | None:
    """The registry's answer to a name no registered model has ("unknown model 'convnett'; did you
    mean convnet? (see `ptx models`)"), else None."""
    from .registry import unknown_name

    return None if name in names() else unknown_name("model", name, names()) + " (see `ptx models`)"


def known_to_fit(name: str, dataset: object) -> bool:
    """Whether ``name`` trains on the named ``dataset`` (FITS): opening an artifact asks this first and
    loads the dataset table (datasets.recorded_mismatch) only to explain any other pair."""
    return dataset in FITS.get(name, ())


def takes(name: str):
    """The data model ``name`` takes (a datasets.DataKind), or None for a model the catalog does not
    know (a user's own registered one)."""
    from .datasets import DataKind

    row = next((m for m in MODELS if m["name"] == name), None)
    return DataKind.from_dict(row["takes"]) if row else None
