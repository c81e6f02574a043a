"""`ptx export NAME --format triton --out REPO`: every generated config.pbtxt is parsed with Triton's
own schema (tritonclient's model_config_pb2) and checked against the rules Triton enforces when it
loads a model: names as in the model file, dims as in its shapes (batch removed when
max_batch_size > 0), data types that map. No Triton server runs here."""

import onnx
import pytest
import torch
from google.protobuf import text_format

from ptx.errors import PtxError, ValidationError
from ptx.export.triton import export_triton
from ptx.infer import open_artifact
from ptx.models import get, list_models
from ptx_command import ptx

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] (the test extra) is not installed")

QUIET = dict(log=lambda _: None)
ONNX_TO_TRITON = {"FLOAT": "TYPE_FP32", "INT64": "TYPE_INT64"}
PYTORCH_MODELS = ("convnet", "lstm", "gru-classifier")


@pytest.fixture(scope="module")
def repo(runs, tmp_path_factory):
    """One repository: every model through ONNX Runtime, a few more through the PyTorch backend."""
    root = tmp_path_factory.mktemp("triton")
    for name in list_models():
        export_triton(name, root / "onnx", checkpoint=runs.trained(name) / "checkpoint.pt", **QUIET)
    for name in PYTORCH_MODELS:
        export_triton(name, root / "pytorch", backend="pytorch", checkpoint=runs.trained(name) / "checkpoint.pt",
                      **QUIET)
    return root


def parse(folder):
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def type_name(value) -> str:
    return model_config_pb2.DataType.Name(value)


def onnx_dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def check_load_rules(config, model_shapes: dict[str, tuple[list[int], str]]):
    """What Triton checks when it loads a model: every configured tensor exists in the model, with
    the model's dims (its first, batch, dim dropped when max_batch_size > 0) and data type."""
    assert {t.name for t in [*config.input, *config.output]} == set(model_shapes)
    for tensor in [*config.input, *config.output]:
        dims, dtype = model_shapes[tensor.name]
        if config.max_batch_size > 0:
            assert dims[0] == -1, f"{tensor.name}: the first dimension must be -1 to batch, got {dims}"
            dims = dims[1:]
        assert list(tensor.dims) == dims, (tensor.name, list(tensor.dims), dims)
        assert type_name(tensor.data_type) == dtype, (tensor.name, type_name(tensor.data_type), dtype)
    assert config.HasField("dynamic_batching") == (config.max_batch_size > 0)


@pytest.mark.parametrize("name", list_models())
def test_onnx_model_configs_parse_and_follow_tritons_load_rules(repo, name):
    folder = repo / "onnx" / name
    config = parse(folder)
    assert config.name == name and config.platform == "onnxruntime_onnx"
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    shapes = {v.name: (onnx_dims(v), ONNX_TO_TRITON[onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)])
              for v in [*graph.input, *graph.output]}
    check_load_rules(config, shapes)
    contract = get(name).contract()
    assert (config.max_batch_size > 0) == (contract.input.batch_axis == 0)
    labels = config.output[0].label_filename
    if labels:  # one label per output element, as Triton's classification extension reads them
        assert (folder / labels).read_text().splitlines() == list(open_artifact(folder / "1" / "model.onnx",
                                                                                "ort-cpu").labels)
        assert len((folder / labels).read_text().splitlines()) == config.output[0].dims[-1]
    assert "What a client must do first" in (folder / "README.md").read_text()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("name", PYTORCH_MODELS)
def test_pytorch_model_configs_parse_and_the_torchscript_runs_with_those_shapes(repo, name):
    folder = repo / "pytorch" / name
    config = parse(folder)
    assert config.platform == "pytorch_libtorch"
    assert [t.name for t in config.input] == ["INPUT__0"] and [t.name for t in config.output] == ["OUTPUT__0"]
    module = torch.jit.load(str(folder / "1" / "model.pt"))
    # A request as Triton would form it: the batch (3) prepended when Triton batches, -1 dims -> sizes.
    dims = [3 if d == -1 else d for d in config.input[0].dims]
    shape = [3, *dims] if config.max_batch_size > 0 else dims
    dtype = {"TYPE_FP32": torch.float32, "TYPE_INT64": torch.int64}[type_name(config.input[0].data_type)]
    x = torch.randint(1, 50, shape) if dtype == torch.int64 else torch.rand(shape)
    out = module(x)
    expected = [3 if d == -1 else d for d in config.output[0].dims]
    assert list(out.shape) == ([3, *expected] if config.max_batch_size > 0 else expected)
    assert type_name(config.output[0].data_type) == "TYPE_FP32" and out.dtype == torch.float32


def test_the_acceptance_shapes_convnet_and_lstm(repo):
    convnet, lstm = parse(repo / "onnx" / "convnet"), parse(repo / "onnx" / "lstm")
    assert convnet.max_batch_size > 0 and list(convnet.input[0].dims) == [1, 28, 28]
    assert convnet.HasField("dynamic_batching")
    assert lstm.max_batch_size == 0 and list(lstm.input[0].dims) == [28, -1, 28]
    assert list(lstm.output[0].dims) == [-1, 10]
    gru = parse(repo / "onnx" / "gru-classifier")
    assert gru.max_batch_size == 0 and list(gru.input[0].dims) == [-1, -1]
    assert type_name(gru.input[0].data_type) == "TYPE_INT64"


def test_cli_writes_two_models_into_one_repository(runs, tmp_path):
    root = runs.ready("convnet", "lstm")
    for name in ("convnet", "lstm"):
        result = ptx("export", name, "--format", "triton", "--out", str(tmp_path / "repo"),
                     "--checkpoint", str(root / name / "checkpoint.pt"))
        assert result.returncode == 0, result.stderr
        assert f"triton      {tmp_path / 'repo' / name}" in result.stdout
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["convnet", "lstm"]  # no temporary folder left


def test_cli_needs_out_for_triton(tmp_path):
    result = ptx("export", "convnet", "--format", "triton", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--out REPO" in result.stderr


def test_a_failed_export_leaves_no_folder_and_keeps_the_old_one(runs, tmp_path, monkeypatch):
    import ptx.export.validate

    ckpt = runs.trained("convnet") / "checkpoint.pt"
    export_triton("convnet", tmp_path, checkpoint=ckpt, **QUIET)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def failing(path, backend, device, precision):  # validation fails after the model file was written
        raise ValidationError("onnx: batch 7: simulated disagreement")

    # export opens every file it validates by the runtime floor's opener, here made to fail
    monkeypatch.setattr(ptx.export.validate, "load_file", failing)
    with pytest.raises(ValidationError):
        export_triton("convnet", tmp_path, checkpoint=ckpt, log=lambda _: None, force=True)
    with pytest.raises(ValidationError):
        export_triton("lstm", tmp_path, checkpoint=runs.trained("lstm") / "checkpoint.pt", log=lambda _: None)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["convnet"]


def test_a_folder_ptx_did_not_write_is_not_clobbered_without_force(runs, tmp_path):
    ckpt = runs.trained("convnet") / "checkpoint.pt"
    export_triton("convnet", tmp_path, checkpoint=ckpt, **QUIET)
    export_triton("convnet", tmp_path, checkpoint=ckpt, **QUIET)  # a re-export replaces its own folder
    (tmp_path / "convnet" / "2").mkdir()  # a version someone added by hand
    (tmp_path / "convnet" / "2" / "model.onnx").write_bytes(b"theirs")
    with pytest.raises(PtxError, match="--force"):
        export_triton("convnet", tmp_path, checkpoint=ckpt, **QUIET)
    assert (tmp_path / "convnet" / "2" / "model.onnx").read_bytes() == b"theirs"
    export_triton("convnet", tmp_path, checkpoint=ckpt, force=True, **QUIET)
    assert not (tmp_path / "convnet" / "2").exists() and (tmp_path / "convnet" / "1" / "model.onnx").is_file()


def test_readme_tells_a_client_the_preprocessing(repo):
    text = (repo / "onnx" / "convnet" / "README.md").read_text()
    assert "mnist-digit" in text and "0.1307" in text and "0.3081" in text and "labels.txt" in text
    lstm = (repo / "onnx" / "lstm" / "README.md").read_text()
    assert "max_batch_size 0" in lstm and "(28, batch, 28)" in lstm
    words = (repo / "onnx" / "gru-classifier" / "README.md").read_text()
    assert "Latin-1" in words and "padded at the end with 0" in words
