"""One model, one runner: every backend of the registry runs a tutorial model's export and a user's
own file through the same runner class, and ``load()`` returns one type whatever it is given."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, save

from ptx.infer import Model, backends, load
from ptx.infer.model.head import Head
from ptx.infer.runtime.runner import Runner
from ptx.errors import PtxError


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2


def user_onnx(path):
    """An ONNX file ptx did not write: no metadata, its own tensor names."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "doubler", [x], [y], [two])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def user_torchscript(path):
    torch.jit.trace(Doubler().eval(), torch.zeros(2, 4)).save(str(path))
    return path


def runnable(backend, device="cpu") -> bool:
    return device in backend.devices and backend.unavailable(device) is None


@pytest.fixture(scope="module")
def files(runs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    return {"onnx": user_onnx(tmp / "doubler.onnx"), "torchscript": user_torchscript(tmp / "doubler.pt")}


def test_every_backend_runs_a_tutorial_export_and_a_users_file_on_one_runner_class(runs, files):
    root = runs.ready("convnet")
    seen = {}
    for backend in (backends.get(name) for name in backends.list_backends()):
        if not runnable(backend) or backend.artifact not in files:
            continue
        tutorial = load("convnet", backend=backend.name, root=root, device="cpu")
        own = load(files[backend.artifact], backend=backend.name, device="cpu",
                   **({"inputs": ["x=batch,4:float32"]} if backend.artifact != "onnx" else {}))
        assert isinstance(tutorial, Model) and isinstance(own, Model)
        assert isinstance(tutorial.head, Head) and own.head is None
        assert type(tutorial.runner) is type(own.runner), backend.name  # one runner class per runtime
        assert isinstance(own.runner, Runner)
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        name_in, name_out = own.signature.input_names[0], own.signature.output_names[0]
        assert np.allclose(own.run({name_in: x})[name_out], 2 * x)
        seen[backend.name] = type(own.runner).__name__
    assert {"ort-cpu", "torchscript"} <= set(seen)  # openvino too where it is installed


def test_load_returns_one_model_type_for_a_name_a_run_folder_a_file_and_a_module(runs, files):
    root = runs.ready("convnet")
    given = [load("convnet", root=root), load(root / "convnet" / "model.onnx"), load(files["onnx"]),
             load(files["torchscript"], inputs=["x=batch,4:float32"]),
             load(Doubler(), inputs=["x=batch,4:float32"])]
    assert all(type(m) is Model for m in given)
    eager_checkpoint = load(root / "convnet" / "checkpoint.pt")
    assert type(eager_checkpoint) is Model and type(eager_checkpoint.runner) is type(given[-1].runner)


def test_a_model_without_a_head_says_predict_is_a_tutorial_models_in_one_line(files):
    own = load(files["onnx"])
    with pytest.raises(PtxError, match=r"your own model .*predict\(\) is a tutorial model's; call run\(\{'x': array\}\)"):
        own.predict([1.0])


def test_the_cuda_graph_runner_takes_a_users_file_and_pads_its_batch(files):
    """ort-cuda-graph now opens a user's ONNX file (on a GPU); its buffers, padding and bindings run
    here on the CPU provider without capture, as the tutorial models' tests run them."""
    from ptx.infer.runtime.ort_graph import OrtGraphRunner

    graph = OrtGraphRunner.open(files["onnx"], "cpu")
    for rows in (1, 3, 5):
        x = np.random.default_rng(rows).normal(size=(rows, 4)).astype(np.float32)
        assert np.allclose(graph.run({"x": x})["y"], 2 * x)
    padded = sorted(dict(key)["x"][0] for key in graph._slots.slots)
    assert padded == [1, 4, 8]  # 3 and 5 rode in padded graphs
    assert "onnx" in backends.get("ort-cuda-graph").kinds


def test_the_torch_cuda_graph_runner_takes_a_users_torchscript_file(files):
    """Issue 43 item 6: eager-cuda-graph opens a user's TorchScript (and pt2) file on the runner that
    replays a tutorial checkpoint: here with the CPU stand-in for CUDA graphs, one capture per
    padded batch shape, answers cut back to the rows given. On a GPU it is a verify/bench/serve row
    of the file (`not run: no GPU` here)."""
    from ptx.infer.formats.signature import Opening
    from ptx.infer.runtime.torch_graph import TorchGraphRunner
    from ptx.trainers.step import EagerGraphs

    stand_ins = []

    def graphs():
        stand_ins.append(EagerGraphs())
        return stand_ins[-1]

    from ptx.contract.tensors import parse_declaration

    opening = Opening("torchscript", inputs=(parse_declaration("x=batch,4:float32"),))
    graph = TorchGraphRunner.open(files["torchscript"], "cpu", opening=opening, graphs=graphs)
    assert type(graph) is TorchGraphRunner and graph.backend == "eager-cuda-graph"
    for rows in (1, 3, 5):
        x = np.random.default_rng(rows).normal(size=(rows, 4)).astype(np.float32)
        assert np.allclose(graph.run({"x": x})[graph.signature.output_names[0]], 2 * x)
    assert sorted(dict(key)["x"][0] for key in graph._slots.slots) == [1, 4, 8]
    assert all(g.captures == 1 for g in stand_ins) and len(stand_ins) == 3
    offered = {b.label(d) for b, d in backends.file_pairs("torchscript")}
    assert {"eager-cuda-graph", "torchscript-cuda", "torchscript-cpu"} <= offered
    assert "eager-cuda-graph" in {b.label(d) for b, d in backends.file_pairs("pt2")}
    assert "eager-cuda-graph" not in {b.label(d) for b, d in backends.file_pairs("onnx")}


def test_a_users_file_on_a_cuda_row_without_a_gpu_is_one_line_naming_the_row_and_what_runs(files):
    """Issue 45, proven on the CPU: every CUDA row a user's file is offered (ort-cuda, ort-cuda-graph,
    torchscript-cuda, eager-cuda-graph) says, before any loader runs, that it cannot run here and
    which backend can; verify lists them as not run (tests/test_gpu_check.py)."""
    from ptx.errors import BackendUnavailableError

    rows = {"onnx": ["ort-cuda", "ort-cuda-graph"], "torchscript": ["torchscript-cuda", "eager-cuda-graph"]}
    for kind, labels in rows.items():
        for label in labels:
            backend = next(b for b in map(backends.get, backends.list_backends()) if label.startswith(b.name))
            if backend.unavailable("cuda") is None:
                pytest.skip("a CUDA GPU is here: the rows run (tests/test_gpu.py)")
            with pytest.raises(BackendUnavailableError) as refused:
                load(files[kind], backend=label, **({"inputs": ["x=batch,4:float32"]} if kind != "onnx" else {}))
            said = str(refused.value)
            assert said.startswith(f"{label} cannot run here: ") and "\n" not in said
            assert said.endswith("use --backend " + ("ort-cpu" if kind == "onnx" else "torchscript"))


class Doubling(torch.nn.Module):
    def forward(self, x):
        x.mul_(2)  # writes into the array the runner shares with its caller
        return x + 1


def test_the_eager_runs_that_learn_outputs_key_their_answers_by_the_inputs_they_were_given():
    """Issue 67's kept answers (TorchRunner._learned) are keyed by each input's dtype, own shape and bytes as
    given: a forward that writes into its input does not key its answer by what it wrote, and a 0-d flag is
    not a [1] array (np.ascontiguousarray makes a 0-d array 1-d)."""
    from ptx.contract.tensor_inputs import make_feeds, plan_inputs
    from ptx.contract.tensors import Signature, TensorSig
    from ptx.infer.runtime.torch_runner import TorchRunner, feeds_key

    assert feeds_key({"f": np.array(1, np.int64)}, ["f"]) != feeds_key({"f": np.array([1], np.int64)}, ["f"])
    c = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert feeds_key({"x": c}, ["x"]) == feeds_key({"x": np.asfortranarray(c)}, ["x"])
    inputs = (TensorSig("x", "float32", ("batch", 4), 0),)
    signature = Signature(inputs, ())
    given = make_feeds(signature, plan_inputs(signature), 3, 0)["x"]  # the first learning run's input
    runner = TorchRunner(Doubling(), inputs, None, device="cpu", backend="eager")
    twice = given * 2  # what that run left in its input
    np.testing.assert_allclose(runner.run({"x": twice.copy()})["output"], 2 * twice + 1)
