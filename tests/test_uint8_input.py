"""Pictures travel as uint8 (issue 28): `ptx export --input uint8` graphs take raw pictures and
normalise them as their first nodes; they answer as the float export does, on every backend that
reads them, and a stranger feeds them from docs/artifact-format.md alone."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from conftest import outputs
from ptx.contract.metadata import from_props
from ptx.contract.transforms import pictures_from_model_input, to_model_input
from ptx.errors import ArtifactError, InputError, PtxError
from ptx.export.api import export_model
from ptx.export.raw_input import RawPictureModel
from ptx.infer import open_artifact
from ptx.infer.model.target import Target
from ptx.models import get, list_models

from test_consumer import run_blocks, python_blocks, defines_only

QUIET = dict(log=lambda _: None)
PICTURE_MODELS = [n for n in list_models() if get(n).contract().picture is not None]


def pictures(n: int, canvas: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, canvas, canvas)).astype(np.uint8)


@pytest.mark.parametrize("name", PICTURE_MODELS)
def test_the_graphs_first_steps_are_the_contracts_and_invert_exactly(name):
    """What the graph computes before the model is to_model_input, bit for bit (scale, normalize,
    lenet's pad, lstm's layout); and float batches made from pictures map back to them."""
    contract = get(name).contract()
    raw = pictures(5, contract.picture.canvas)
    with torch.inference_mode():
        graph = RawPictureModel(torch.nn.Identity(), contract)(torch.from_numpy(raw)).numpy()
    want = to_model_input(raw, contract)
    assert graph.shape == want.shape and np.array_equal(graph, want)
    assert np.array_equal(pictures_from_model_input(want, contract), raw)
    with pytest.raises(InputError, match="takes uint8 pictures"):
        pictures_from_model_input(want + np.float32(1e-3), contract)


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """convnet's run with the float exports (as the suite makes them) and a copy with uint8 ones."""
    float_dir = runs.trained("convnet")
    raw_dir = tmp_path_factory.mktemp("uint8") / "convnet"
    raw_dir.mkdir()
    shutil.copy2(float_dir / "checkpoint.pt", raw_dir / "checkpoint.pt")
    export_model("convnet", ["onnx", "torchscript"], checkpoint=raw_dir / "checkpoint.pt", out=raw_dir,
                 input_dtype="uint8", **QUIET)
    return float_dir, raw_dir


def test_a_uint8_export_says_so_and_normalises_first(exported):
    _, raw_dir = exported
    proto = onnx.load(str(raw_dir / "model.onnx"))
    graph_input = proto.graph.input[0]
    assert graph_input.name == "picture" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["batch", 28, 28]
    assert [n.op_type for n in proto.graph.node][:4] == ["Cast", "Mul", "Sub", "Div"]
    props = from_props({p.key: p.value for p in proto.metadata_props})
    assert json.loads(props["raw_input"]) == {"name": "picture", "shape": ["batch", 28, 28], "dtype": "uint8",
                                              "axes": ["batch", "row", "column"]}
    extra = {"ptx.json": ""}
    torch.jit.load(str(raw_dir / "model.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["ptx.json"])["raw_input"] == props["raw_input"]


@pytest.mark.parametrize("backend, file", [("ort-cpu", "model.onnx"), ("torchscript", "model.torchscript.pt"),
                                           ("openvino", "model.onnx")])
def test_uint8_pictures_give_the_float_exports_answers(exported, runs, backend, file):
    float_dir, raw_dir = exported
    from ptx.infer.runtime.backends import get as get_backend

    why = get_backend(backend).unavailable("cpu")
    if why:
        pytest.skip(why)
    raw, _ = runs.test_samples("convnet", 64)
    as_float = open_artifact(float_dir / file, backend)
    as_uint8 = open_artifact(raw_dir / file, backend)
    assert as_uint8.graph_input.dtype == "uint8" and as_float.graph_input.dtype == "float32"
    want = as_float.predict_pictures(raw)
    got = as_uint8.predict_pictures(raw)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    # Float batches (verify's, export's validation) still run: mapped back to their pictures.
    np.testing.assert_allclose(outputs(as_uint8, to_model_input(raw[:7], as_float.contract)), want[:7],
                               atol=1e-5, rtol=1e-5)
    # predict() on pictures takes the uint8 path, with the float export's labels.
    assert [p.label for p in as_uint8.predict(raw[:5], raw=True)] == [p.label for p in as_float.predict(raw[:5], raw=True)]
    with pytest.raises(InputError, match=r"give \(N, 28, 28\) uint8"):
        as_uint8.predict_pictures(raw.astype(np.float32))


def test_lstm_uint8_graph_moves_the_batch_axis_itself(runs, tmp_path):
    run_dir = tmp_path / "lstm"
    run_dir.mkdir()
    shutil.copy2(runs.trained("lstm") / "checkpoint.pt", run_dir / "checkpoint.pt")
    export_model("lstm", ["onnx"], checkpoint=run_dir / "checkpoint.pt", out=run_dir, input_dtype="uint8",
                 **QUIET)
    raw, _ = runs.test_samples("lstm", 9)
    want = open_artifact(runs.trained("lstm") / "model.onnx", "ort-cpu").predict_pictures(raw)
    np.testing.assert_allclose(open_artifact(run_dir / "model.onnx", "ort-cpu").predict_pictures(raw), want,
                               atol=1e-5, rtol=1e-5)


def test_uint8_export_refusals(runs, tmp_path):
    with pytest.raises(PtxError, match="--input uint8 feeds raw pictures; linreg takes number input"):
        export_model("linreg", ["onnx"], checkpoint=tmp_path / "none.pt", input_dtype="uint8",
                     **QUIET)
    with pytest.raises(PtxError, match="onnx-int8 cannot take raw pictures; give --format onnx, torchscript"):
        export_model("convnet", ["onnx-int8"], checkpoint=tmp_path / "none.pt", input_dtype="uint8",
                     **QUIET)


def test_a_raw_input_that_does_not_fit_the_contract_is_refused(exported, tmp_path):
    _, raw_dir = exported
    proto = onnx.load(str(raw_dir / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "ptx.raw_input":
            prop.value = prop.value.replace("28,28", "27,27")
    onnx.save(proto, str(tmp_path / "model.onnx"))
    with pytest.raises(ArtifactError, match="ptx.raw_input is .*implies"):
        open_artifact(tmp_path / "model.onnx", "ort-cpu")


def test_the_documents_reader_feeds_a_uint8_export(exported, runs, tmp_path):
    """docs/artifact-format.md's reader, alone, answers from a uint8 export as from the float one."""
    from PIL import Image

    reference = run_blocks([b for b in python_blocks() if defines_only(b[1])], {"__name__": "artifact_format"})
    float_dir, raw_dir = exported
    raw, _ = runs.test_samples("convnet", 6)
    items = []
    for i, picture in enumerate(raw):
        Image.fromarray(picture).save(tmp_path / f"{i}.png")
        items.append(str(tmp_path / f"{i}.png"))
    want = reference["predict"](str(float_dir / "model.onnx"), items, raw=True)
    got = reference["predict"](str(raw_dir / "model.onnx"), items, raw=True)
    assert [label for label, _ in got] == [label for label, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-5)
    ptx_says = open_artifact(raw_dir / "model.onnx", "ort-cpu").predict(items, raw=True)
    assert [p.label_name for p in ptx_says] == [label for label, _ in got]


def test_bench_feeds_a_uint8_artifact_pictures_and_its_bare_peer_the_same(exported):
    from ptx.infer.bench.timing import bench

    _, raw_dir = exported
    rows = bench(Target.of("convnet", root=raw_dir.parent), backends=["ort-cpu"], batch_sizes=(1, 8), warmup=1,
                 seconds=0.02, rounds=1).rows
    assert {(r.runner, r.batch) for r in rows} == {(runner, b) for b in (1, 8) for runner in
                                                   ("ort-cpu", "bare InferenceSession.run (ort-cpu)")}
    assert not any("resident" in r.runner for r in rows)  # the GPU-resident ceiling is a CUDA row only


def test_the_bare_torch_peer_pays_the_host_copies_and_the_resident_one_does_not(exported):
    float_dir, _ = exported
    predictor = open_artifact(float_dir / "model.torchscript.pt", "torchscript")
    feeds = {predictor.graph_input.name: to_model_input(pictures(4), predictor.contract)}
    _, bare = predictor.runner.bare(feeds)
    _, resident = predictor.runner.resident(feeds)
    assert isinstance(bare()[0], np.ndarray)  # back on the host, as ptx's row returns it
    assert isinstance(resident(), torch.Tensor)  # left where it was computed
    np.testing.assert_allclose(bare()[0], resident().numpy(), rtol=1e-6)


def test_serve_batches_pictures_as_uint8_for_a_uint8_export(exported, runs):
    """`ptx serve`'s image route hands a --input uint8 artifact the pictures themselves, through a
    batcher of their own, and answers as the float export does."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from ptx.serve.model import ServedModel

    float_dir, raw_dir = exported
    raw, _ = runs.test_samples("convnet", 5)
    options = dict(max_batch_size=8, max_delay_s=0.001)

    def served(path):
        predictor = open_artifact(path, "ort-cpu")
        model = ServedModel("convnet", predictor, options, ThreadPoolExecutor(1))
        try:
            return model, asyncio.run(model._predict_samples(list(raw)))
        finally:
            model.close()

    as_uint8, got = served(raw_dir / "model.onnx")
    as_float, want = served(float_dir / "model.onnx")
    assert as_uint8.picture_batcher is not None and as_float.picture_batcher is None
    assert [p.label for p in got] == [p.label for p in want]
    np.testing.assert_allclose([p.probability for p in got], [p.probability for p in want], atol=1e-6)


def test_io_binding_binds_uint8_pictures_for_a_uint8_export(exported, runs):
    """ort-cuda's IO binding, checked through ORT's CPU device: a uint8 graph is bound to uint8
    pictures, and a float model input is refused before any pointer is handed over."""
    from ptx.infer.runtime.ort_runner import run_with_binding

    _, raw_dir = exported
    predictor = open_artifact(raw_dir / "model.onnx", "ort-cpu")
    name_in, name_out = predictor.graph_input.name, predictor.contract.output.name
    raw, _ = runs.test_samples("convnet", 7)
    bound = run_with_binding(predictor.runner, {name_in: torch.from_numpy(np.ascontiguousarray(raw))}, "cpu")[name_out]
    np.testing.assert_array_equal(bound.numpy(), predictor.predict_pictures(raw))
    with pytest.raises(InputError, match=r"torch.float32 does not fit convnet's uint8 input: convert it"):
        run_with_binding(predictor.runner, {name_in: torch.zeros(7, 1, 28, 28)}, "cpu")


def test_verify_judges_a_uint8_export_of_a_normalising_model(exported):
    """Found reading the H100 run (2026-11-23): verify's edge inputs were all-0 and all-1 tensors in
    model space, which are no normalised picture of convnet's (mean 0.1307, std 0.3081), so a uint8
    export refused them and its rows FAILed. The edges are now a blank picture and one all ink."""
    from ptx.infer.verify.verify import verify

    _, raw_dir = exported
    report = verify(Target.of("convnet", run=raw_dir, verifying=True),
                    backends=["ort-cpu", "torchscript-cpu"], samples=64, notice=lambda _: None)
    assert report.ok and {v.label for v in report.rows} >= {"ort-cpu", "torchscript-cpu"}, report.table()
