"""Tests generated from the registry: every model gets them without new test code."""
import json

import pytest
import torch

from ptx.contract import Contract
from ptx.errors import UnknownModelError
from ptx.models import ModelSpec, get, list_models, register


def test_the_eight_seed_models_are_registered():
    assert {"linreg", "logreg", "mlp-sigmoid", "mlp-dropout", "cnn", "convnet", "lstm", "mlp"} <= set(list_models())


def test_forward_shape(model_name):
    spec = get(model_name)
    model = spec.build().eval()
    for batch in (1, 3):
        for seq in (4, 9):
            x = spec.example(batch, seq)
            expected = tuple(batch if d == "batch" else seq if d == "seq" else d for d in spec.outputs)
            assert model(x).shape == expected


def test_backward_reaches_every_parameter(model_name):
    spec = get(model_name)
    torch.manual_seed(0)
    model = spec.build().train()
    model(spec.example(4)).square().sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{model_name}.{pname} got no gradient"
        assert param.grad.abs().sum() > 0, f"{model_name}.{pname} got an all-zero gradient"


def test_parameter_count_matches_the_seed_layers(model_name):
    spec = get(model_name)
    assert sum(p.numel() for p in spec.build().parameters()) == spec.params


def test_contract_round_trips_through_json_and_names_the_batch_axis(model_name):
    contract = get(model_name).contract()
    doc = contract.to_dict()
    assert Contract.from_dict(json.loads(json.dumps(doc))) == contract
    assert contract.input.shape[contract.input.batch_axis] == "batch"
    assert len(contract.input.axes) == len(contract.input.shape)


@pytest.mark.parametrize("name", [n for n in list_models() if get(n).kind == "image"])
def test_image_models_take_labels_and_picture_pipeline_from_the_data(name):
    spec = get(name)
    digits, fashion = spec.contract("mnist-sample"), spec.contract("fashion-mnist")
    assert digits.labels[0] == "0" and digits.picture.pipeline == "mnist-digit"
    assert fashion.labels[-1] == "Ankle boot" and fashion.picture.pipeline == "fashion-product"


def test_lstm_is_seq_first_with_batch_on_axis_1():
    spec = get("lstm")
    assert spec.input.shape == (28, "batch", 28) and spec.input.batch_axis == 1


def test_seed_details_bias_and_dropout():
    assert get("linreg").build().linear.bias is None
    assert get("logreg").build().linear.bias is None
    assert all(m.bias is None for m in get("mlp-dropout").build().modules() if isinstance(m, torch.nn.Linear))
    assert sum(isinstance(m, torch.nn.Dropout) for m in get("mlp-dropout").build().modules()) == 2
    assert all(m.bias is not None for m in get("mlp").build().modules() if isinstance(m, torch.nn.Linear))


def test_unknown_and_duplicate_names():
    with pytest.raises(UnknownModelError, match="ptx models"):
        get("no-such-model")
    with pytest.raises(ValueError, match="twice"):
        register(get("convnet"))
    assert isinstance(get("convnet"), ModelSpec)
