"""tract and the symbolic batch (issue 26, point 7): the recurrent exports have no initial-state input
(so ORT's CUDA provider gets no shape arithmetic to hand to the CPU), and tract cannot size a state
from a symbol. docs/gpu.md says what tract needs: the graph's intermediate shape notes (value_info)
dropped and a concrete input shape (`set_input_fact`) before it types the model. These tests check that statement both ways, in a child process each, since tract's
failure is a Rust panic that aborts the process."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ptx.contract.transforms import to_model_input
from ptx.models import get, list_models

pytest.importorskip("tract", reason="tract is not installed (the test extra brings it)")

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
RUN = """
import sys, numpy as np, onnx, tract
x = np.load(sys.argv[1])
path = sys.argv[2]
if sys.argv[3] == "concrete":  # what docs/gpu.md says tract needs
    proto = onnx.load(path)
    del proto.graph.value_info[:]  # the exporter's shape notes name the symbol "batch", which tract would keep
    path = sys.argv[4] + ".onnx"
    onnx.save(proto, path)
model = tract.onnx().load(path)
if sys.argv[3] == "concrete":
    model.set_input_fact(0, ",".join(map(str, x.shape)) + "," + ("i64" if x.dtype == np.int64 else "f32"))
np.save(sys.argv[4], model.into_model().into_runnable().run([x])[0].to_numpy())
"""


# The registry's models whose ONNX graph holds a recurrent op (the first test keeps this list true).
RECURRENT_MODELS = ("lstm", "rnn-hello", "gru-classifier")


def test_the_recurrent_models_are_those_listed(runs):
    found = {name for name in list_models()
             if RECURRENT_OPS & {n.op_type for n in onnx.load(str(runs.trained(name) / "model.onnx")).graph.node}}
    assert found == set(RECURRENT_MODELS)


@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_tract_needs_a_concrete_shape_for_recurrent_graphs_and_then_agrees(name, runs, tmp_path):
    path = runs.trained(name) / "model.onnx"
    raw, _ = runs.test_samples(name, 8)
    x = to_model_input(raw, get(name).contract(runs.dataset(name).name))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npy"
    symbolic = subprocess.run([sys.executable, "-c", RUN, tmp_path / "x.npy", path, "symbolic", out],
                              capture_output=True, text=True, timeout=120)
    assert symbolic.returncode != 0 and "UndeterminedSymbol" in symbolic.stderr, \
        f"tract now loads {name} with its symbolic batch: docs/gpu.md's condition can go ({symbolic.returncode})"
    concrete = subprocess.run([sys.executable, "-c", RUN, tmp_path / "x.npy", path, "concrete", out],
                              capture_output=True, text=True, timeout=120)
    assert concrete.returncode == 0, concrete.stderr[:1500]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    got = np.load(out)
    assert (got.argmax(-1) == want.argmax(-1)).all()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
