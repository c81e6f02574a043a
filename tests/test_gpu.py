"""ort-cuda's IO binding and CUDA placement, and training on CUDA.

The binding and the placement report are checked on every machine (the binding through ORT's CPU
device, the placement through the CPU provider); the tests marked gpu need a CUDA GPU and skip
with the reason elsewhere. scripts/gpu_check.sh runs `pytest -m gpu` on a lent GPU machine.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_gpu, needs_ort_cuda, outputs
from ptx.contract.transforms import to_model_input
from ptx.errors import BackendUnavailableError, InputError
from ptx.infer import load
from ptx.infer.runtime import cuda_placement
from ptx.infer.runtime import ort_session
from ptx.infer.runtime.cuda_placement import node_placement
from ptx.infer.runtime.ort_runner import run_with_binding
from ptx.models import get
from ptx.trainers.loop import TrainConfig, train

DEVICE_MODELS = ("convnet", "lstm", "gru-classifier", "rnn-hello")  # batch axis 0 and 1; float and int64 input


def model_batch(runs, name: str, n: int = 64) -> tuple[object, np.ndarray]:
    predictor = load(name, backend="ort-cpu", root=runs.ready(name))
    raw, _ = runs.test_samples(name, n)
    return predictor, to_model_input(raw, predictor.contract)


def bind(predictor, x):
    """A tutorial model's one input bound by pointer on ORT's CPU device, the code ort-cuda runs."""
    out = run_with_binding(predictor.runner, {predictor.graph_input.name: x}, "cpu")
    return out[predictor.contract.output.name]


def test_io_binding_gives_the_numpy_paths_answer_for_every_model(runs, model_name):
    """The pointers, dtypes and the output shape bound (batch and seq read from the input) are
    right for every model: checked through ORT's CPU device, the same code ort-cuda runs."""
    predictor, x = model_batch(runs, model_name, 7)
    bound = bind(predictor, torch.from_numpy(np.ascontiguousarray(x)))
    assert isinstance(bound, torch.Tensor) and bound.device.type == "cpu"
    np.testing.assert_array_equal(bound.numpy(), outputs(predictor, x))


def test_io_binding_refuses_a_tensor_of_another_dtype_or_shape(runs):
    predictor, x = model_batch(runs, "convnet", 4)
    with pytest.raises(InputError, match=r"torch.float64 does not fit convnet's float32 input: convert it"):
        bind(predictor, torch.from_numpy(x).double())
    with pytest.raises(InputError, match="does not fit convnet's input"):
        bind(predictor, torch.from_numpy(x)[:, :, :5])
    text, ids = model_batch(runs, "gru-classifier", 4)
    with pytest.raises(InputError, match="torch.int32 does not fit gru-classifier's int64 input"):
        bind(text, torch.from_numpy(ids).int())


def test_predict_on_device_is_ort_cudas_alone(runs):
    predictor, x = model_batch(runs, "convnet", 4)
    with pytest.raises(InputError, match="ort-cuda's; this runner is ort-cpu"):
        predictor.predict_on_device(torch.from_numpy(x))
    # A torch tensor given to the CPU path is read as numpy would be.
    np.testing.assert_array_equal(outputs(predictor, torch.from_numpy(x)), outputs(predictor, x))


def test_node_placement_names_every_node_and_its_provider(runs):
    path = runs.trained("convnet") / "model.onnx"
    import onnxruntime

    placed = node_placement(onnxruntime, path, ["CPUExecutionProvider"])
    assert list(placed) == ["CPUExecutionProvider"]
    ops = {entry.rsplit("(", 1)[1].rstrip(")") for entry in placed["CPUExecutionProvider"]}
    assert {"Conv", "MaxPool", "Relu"} <= ops, ops


def test_cuda_placement_error_tells_a_missing_kernel_from_the_shape_heuristic(monkeypatch, tmp_path):
    """ORT reports which nodes it put on the CPU (its graph assignment info); ptx's static check
    says why: no CUDA kernel for the node's types, or ORT's shape heuristic."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Concat", ["one", "s"], ["s3"], name="concat", axis=0),
             helper.make_node("Expand", ["zero", "s3"], ["h"], name="expand"),
             helper.make_node("ReduceProd", ["s"], ["n"], name="prod", keepdims=1),
             helper.make_node("Cast", ["n"], ["nf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["h", "nf"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1], np.int64), "one"),
                               numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    path = tmp_path / "model.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    monkeypatch.setattr(cuda_placement, "node_placement", lambda *a: {
        "CUDAExecutionProvider": ["shape (Shape)", "expand (Expand)", "add (Add)"],
        "CPUExecutionProvider": ["concat (Concat)", "prod (ReduceProd)", "cast (Cast)"]})
    message = cuda_placement.cuda_placement_error(onnxruntime, path, [], [])
    assert "\n" not in message and message.endswith("; use --backend ort-cpu")
    assert message.startswith("ort-cuda: 3 node(s) of model.onnx would run on the CPU in onnxruntime ")
    assert "concat (Concat): placed on the CPU by ONNX Runtime's shape heuristic" in message
    assert "prod (ReduceProd): no CUDA kernel for ReduceProd(int64)" in message
    monkeypatch.setattr(cuda_placement, "node_placement", lambda *a: {"CPUExecutionProvider": ["add (Add)"]})
    assert "CUDA is not active" in cuda_placement.cuda_placement_error(onnxruntime, path, [], [])


def test_cuda_unavailable_tries_a_cuda_session_and_names_the_missing_libraries(monkeypatch):
    """On a host with the NVIDIA driver but without the CUDA 13 / cuDNN 9 libraries, the GPU tests
    skip with this reason instead of failing. Here (no GPU) the driver is pretended."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    if ort_session.cuda_unavailable() is None:
        pytest.skip("CUDA runs here")
    monkeypatch.setattr(ort_session, "has_nvidia_driver", lambda: True)
    ort_session.cuda_unavailable.cache_clear()
    try:
        why = ort_session.cuda_unavailable("cuda:1")
    finally:
        ort_session.cuda_unavailable.cache_clear()
    assert why and ("libraries were not found" in why or "did not start on GPU 1" in why), why


def test_device_id_follows_the_device_string():
    assert ort_session.cuda_device_id("cuda") == 0 and ort_session.cuda_device_id("cuda:1") == 1
    assert ort_session.cuda_provider(1) == ("CUDAExecutionProvider", {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                                                                      "use_tf32": "0"})
    from ptx.errors import PtxError

    with pytest.raises(PtxError, match="give cuda or cuda:N"):
        ort_session.cuda_device_id("cuda:first")


def test_ort_cuda_refuses_cpu_fallback_in_one_line(runs):
    """On a machine without CUDA this is the 'CUDA is not active' line; on a GPU it is a session
    whose every node runs on CUDAExecutionProvider (ORT lists its CPU provider after it all the
    same), or the line naming those that do not."""
    import onnxruntime

    from ptx.infer.runtime.ort_session import cuda_unavailable

    try:
        predictor = load("convnet", backend="ort-cuda", root=runs.ready("convnet"))
    except BackendUnavailableError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("ort-cuda") and "--backend ort-cpu" in str(exc)
        assert cuda_unavailable() is not None or "node(s)" in str(exc)
        return
    session = predictor.runner.session
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    placed = node_placement(onnxruntime, predictor.path, session.get_providers())
    assert not placed.get("CPUExecutionProvider"), placed


@needs_ort_cuda
@needs_gpu
def test_ort_cuda_runs_on_the_gpu_its_device_names(runs):
    """cuda:N: the session's CUDA provider and the IO binding both use GPU N (the last one visible);
    a tensor on another GPU is refused rather than read through a pointer of the wrong device."""
    last = torch.cuda.device_count() - 1
    device = f"cuda:{last}"
    predictor = load("convnet", backend="ort-cuda", root=runs.ready("convnet"), device=device)
    assert predictor.runner.device_id == last
    assert predictor.runner.session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == str(last)
    _, x = model_batch(runs, "convnet", 8)
    out = predictor.predict_on_device(torch.from_numpy(x).to(device))
    assert out.device == torch.device(device)
    np.testing.assert_allclose(out.cpu().numpy(), outputs(predictor, x), rtol=1e-5, atol=1e-5)
    if last > 0:
        with pytest.raises(InputError, match=f"runs on cuda:{last}"):
            predictor.predict_on_device(torch.from_numpy(x).to("cuda:0"))


@needs_ort_cuda
@needs_gpu
@pytest.mark.parametrize("name", DEVICE_MODELS)
def test_ort_cuda_device_tensors_in_and_out_match_the_numpy_path_on_real_samples(runs, name):
    cuda = load(name, backend="ort-cuda", root=runs.ready(name), device="cuda")
    _, x = model_batch(runs, name, 64)
    want = outputs(cuda, x)  # numpy in, numpy out
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
    (docs/benchmarks/gpu.md records the measured difference)."""
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
