"""ort-cuda's IO binding and CUDA placement, and training on CUDA.

The binding and the placement report are checked on every machine (the binding through ORT's CPU
device, the placement through the CPU provider); the tests marked gpu need a CUDA GPU and skip
with the reason elsewhere. scripts/gpu_check.sh runs `pytest -m gpu` on a lent GPU machine.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_gpu, needs_ort_cuda
from ptx.contract.transforms import to_model_input
from ptx.errors import BackendUnavailableError, InputError
from ptx.infer import load
from ptx.infer import ort_session
from ptx.infer.ort_session import node_placement, run_with_binding
from ptx.models import get
from ptx.trainers.loop import TrainConfig, train

DEVICE_MODELS = ("convnet", "lstm", "gru-classifier", "rnn-hello")  # batch axis 0 and 1; float and int64 input


def model_batch(runs, name: str, n: int = 64) -> tuple[object, np.ndarray]:
    predictor = load(name, backend="ort-cpu", root=runs.ready(name))
    raw, _ = runs.test_samples(name, n)
    return predictor, to_model_input(raw, predictor.contract)


def test_io_binding_gives_the_numpy_paths_answer_for_every_model(runs, model_name):
    """The pointers, dtypes and the output shape bound (batch and seq read from the input) are
    right for every model: checked through ORT's CPU device, the same code ort-cuda runs."""
    predictor, x = model_batch(runs, model_name, 7)
    bound = run_with_binding(predictor, torch.from_numpy(np.ascontiguousarray(x)), "cpu")
    assert isinstance(bound, torch.Tensor) and bound.device.type == "cpu"
    np.testing.assert_array_equal(bound.numpy(), predictor.predict_array(x))


def test_io_binding_refuses_a_tensor_of_another_dtype_or_shape(runs):
    predictor, x = model_batch(runs, "convnet", 4)
    with pytest.raises(InputError, match=r"torch.float64 does not fit convnet's float32 input: convert it"):
        run_with_binding(predictor, torch.from_numpy(x).double(), "cpu")
    with pytest.raises(InputError, match="does not fit convnet's input"):
        run_with_binding(predictor, torch.from_numpy(x)[:, :, :5], "cpu")
    text, ids = model_batch(runs, "gru-classifier", 4)
    with pytest.raises(InputError, match="torch.int32 does not fit gru-classifier's int64 input"):
        run_with_binding(text, torch.from_numpy(ids).int(), "cpu")


def test_predict_on_device_is_ort_cudas_alone(runs):
    predictor, x = model_batch(runs, "convnet", 4)
    with pytest.raises(InputError, match="ort-cuda's; this predictor is ort-cpu"):
        predictor.predict_on_device(torch.from_numpy(x))
    # A torch tensor given to the CPU path is read as numpy would be.
    np.testing.assert_array_equal(predictor.predict_array(torch.from_numpy(x)), predictor.predict_array(x))


def test_node_placement_names_every_node_and_its_provider(runs):
    path = runs.trained("convnet") / "model.onnx"
    import onnxruntime

    placed = node_placement(onnxruntime, path, ["CPUExecutionProvider"])
    assert list(placed) == ["CPUExecutionProvider"]
    ops = {entry.rsplit("(", 1)[1].rstrip(")") for entry in placed["CPUExecutionProvider"]}
    assert {"Conv", "MaxPool", "Relu"} <= ops, ops


def test_cuda_placement_error_names_the_nodes_left_on_the_cpu(monkeypatch, tmp_path):
    import onnxruntime

    path = tmp_path / "model.onnx"
    monkeypatch.setattr(ort_session, "node_placement", lambda *a: {
        "CUDAExecutionProvider": ["node_conv (Conv)"],
        "CPUExecutionProvider": [f"node_{i} (Shape)" for i in range(8)]})
    message = ort_session.cuda_placement_error(onnxruntime, path, [], [])
    assert "\n" not in message
    assert message.startswith("ort-cuda: 8 node(s) of model.onnx have no CUDA kernel")
    assert "node_0 (Shape), node_1 (Shape)" in message and "and 2 more" in message and "--backend ort-cpu" in message
    monkeypatch.setattr(ort_session, "node_placement", lambda *a: {"CPUExecutionProvider": ["node_conv (Conv)"]})
    assert "CUDA is not active" in ort_session.cuda_placement_error(onnxruntime, path, [], [])


def test_ort_cuda_refuses_cpu_fallback_in_one_line(runs):
    """On a machine without CUDA this is the 'CUDA is not active' line; on a GPU it is a session
    whose every node runs on CUDAExecutionProvider, or the line naming those that do not."""
    from ptx.infer.ort_session import cuda_unavailable

    try:
        predictor = load("convnet", backend="ort-cuda", root=runs.ready("convnet"))
    except BackendUnavailableError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("ort-cuda: ") and "--backend ort-cpu" in str(exc)
        assert cuda_unavailable() is not None or "node(s)" in str(exc)
        return
    assert predictor.session.get_providers() == ["CUDAExecutionProvider"]


@needs_ort_cuda
@needs_gpu
@pytest.mark.parametrize("name", DEVICE_MODELS)
def test_ort_cuda_device_tensors_in_and_out_match_the_numpy_path_on_real_samples(runs, name):
    cuda = load(name, backend="ort-cuda", root=runs.ready(name), device="cuda")
    _, x = model_batch(runs, name, 64)
    want = cuda.predict_array(x)  # numpy in, numpy out
    # Written by a chain of kernels on torch's stream just before the call: ORT must wait for them.
    x_gpu = torch.from_numpy(np.ascontiguousarray(x)).cuda()
    if x_gpu.is_floating_point():
        big = torch.randn(4096, 4096, device="cuda")
        x_gpu = x_gpu + (big @ big).sum() * 0  # a long kernel ahead of the input's last write
    out = cuda.predict_on_device(x_gpu)
    assert out.is_cuda and out.device == x_gpu.device and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


@needs_gpu
def test_training_on_cuda_resumes_where_it_stopped(tmp_path):
    """Two epochs in one go, and one epoch then --resume for the second, on CUDA. cuDNN's
    convolution backward is not deterministic, so the weights agree closely, not bit for bit
    (docs/benchmarks.md records the measured difference)."""
    from ptx.trainers.data import load_dataset

    spec = get("convnet")
    data = load_dataset("mnist-sample")
    config = TrainConfig(epochs=2, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cuda", limit=1000)
    whole = train(spec, data, config, tmp_path / "whole", log=lambda _: None)
    train(spec, data, TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "split", log=lambda _: None)
    split = train(spec, data, config, tmp_path / "split", resume=True, log=lambda _: None)
    a = torch.load(Path(tmp_path / "whole" / "checkpoint.pt"), weights_only=False)["state_dict"]
    b = torch.load(Path(tmp_path / "split" / "checkpoint.pt"), weights_only=False)["state_dict"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"resume on CUDA: largest weight difference {worst:.3g}")
    assert worst < 1e-3
    assert abs(whole["final_test_accuracy"] - split["final_test_accuracy"]) <= 0.01
