import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

import onnx
import pytest
import torch

from ptx.contract.metadata import from_props, from_strings
from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.weights import digest_of
from ptx.errors import CheckpointError, PtxError, UnknownModelError, ValidationError
from ptx.export import formats
from ptx.export.api import export_model
from ptx.export.formats.onnx import symbolic_dims
from ptx.infer.runtime.torch_files import load_torchscript
from ptx.models import get
from ptx_command import ptx

QUIET = dict(log=lambda _: None)
PROVENANCE = {"ptx_version", "dataset", "epochs", "checkpoint_sha256", "torch_version", "export_time"}


def test_every_model_exports_every_format_with_a_dynamic_batch(runs, model_name):
    run_dir = runs.trained(model_name)
    onnx_path = run_dir / "model.onnx"
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    in_dims, out_dims = symbolic_dims(onnx_path)
    contract = get(model_name).contract()
    assert isinstance(in_dims[contract.input.batch_axis], str) and isinstance(out_dims[0], str), (in_dims, out_dims)
    for dims, declared in ((in_dims, contract.input.shape), (out_dims, contract.output.shape)):
        assert [isinstance(d, str) for d in dims] == [isinstance(d, str) for d in declared], (dims, declared)
    results = runs.export_results(model_name)  # what the export of those files returned
    assert [r.format for r in results] == formats.default_formats()
    assert [r.path.name for r in results] == ["model.onnx", "model.torchscript.pt"]
    for r in results:
        assert r.batches == (1, 2, 7, 64) and r.worst.ok
        assert r.worst.max_abs <= contract.tolerance("cpu").atol + contract.tolerance("cpu").rtol
        assert len(r.sizes.get("seq", ())) == (2 if contract.input.seq_axis is not None else 0)


def test_metadata_round_trips(runs, model_name):
    run_dir = runs.trained(model_name)
    props = {p.key: p.value for p in onnx.load(str(run_dir / "model.onnx")).metadata_props}
    onnx_strings = from_props(props)
    _, ts_text = load_torchscript(run_dir / "model.torchscript.pt")
    ts_strings = json.loads(ts_text)
    contract = get(model_name).contract(runs.dataset(model_name).name)
    for strings in (onnx_strings, ts_strings):
        info = from_strings(strings)
        assert info.contract == contract
        assert PROVENANCE <= set(info.provenance) and {"test_accuracy", "test_mse"} & set(info.provenance)
        assert strings["model"] == model_name and strings["labels"] == "\n".join(contract.labels)  # plain strings
    assert onnx_strings["opset"] == "18" and ts_strings["torchscript_method"] in ("script", "trace")
    assert onnx_strings["checkpoint_sha256"] == ts_strings["checkpoint_sha256"]
    # The contract belongs to these weights (issue 36): each file records its own weights digest,
    # and the tensor signature every tool reads a model by.
    assert onnx_strings["weights_sha256"] == digest_of(run_dir / "model.onnx", "onnx")
    assert ts_strings["weights_sha256"] == digest_of(run_dir / "model.torchscript.pt", "torchscript")
    for strings in (onnx_strings, ts_strings):
        assert Signature.from_json(strings["signature"], model_name) == signature_of_contract(contract)


ORT_ONLY = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    path, shape, axis = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], int(sys.argv[3])
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for b in (1, 3, 64):
        shape[axis] = b
        out = s.run(None, {"input": np.random.rand(*shape).astype(np.float32)})[0]
        assert out.shape[0] == b, out.shape
    assert "torch" not in sys.modules and "ptx" not in sys.modules
    print("ok")
""")
TORCH_ONLY = textwrap.dedent("""
    import sys, torch
    path, shape = sys.argv[1], [int(d) for d in sys.argv[2].split(",")]
    m = torch.jit.load(path)
    out = m(torch.rand(*shape))
    assert out.shape[0] == 5, out.shape
    assert not any(name == "ptx" or name.startswith("ptx.") for name in sys.modules)
    print("ok")
""")


@pytest.mark.parametrize("name", ["convnet", "lstm"])
def test_artifacts_run_in_separate_processes_without_ptx(runs, name, tmp_path):
    run_dir = runs.trained(name)
    spec = get(name)
    shape = ",".join(str(d) for d in spec.batch_shape(5))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ort_run = subprocess.run([sys.executable, "-c", ORT_ONLY, str(run_dir / "model.onnx"), shape,
                              str(spec.input.batch_axis)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ort_run.stdout.strip() == "ok", ort_run.stderr
    ts_run = subprocess.run([sys.executable, "-W", "ignore", "-c", TORCH_ONLY, str(run_dir / "model.torchscript.pt"),
                             shape], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ts_run.stdout.strip() == "ok", ts_run.stderr


@pytest.fixture
def convnet_copy(runs, tmp_path):
    """A private copy of a trained convnet run, so that tests may break it."""
    src = runs.trained("convnet")
    for f in ("checkpoint.pt", "model.onnx", "model.torchscript.pt"):
        (tmp_path / f).write_bytes((src / f).read_bytes())
    return tmp_path


def test_failed_validation_keeps_the_earlier_good_file(convnet_copy, monkeypatch):
    before = (convnet_copy / "model.onnx").read_bytes()
    onnx_format = formats.get("onnx")

    def export_then_corrupt(model, example, path, *args, **kwargs):
        with torch.no_grad():
            model.fc[-1].bias.add_(1.0)  # the file now disagrees with the eager model it is checked against
        try:
            return onnx_format.write(model, example, path, *args, **kwargs)
        finally:
            with torch.no_grad():
                model.fc[-1].bias.sub_(1.0)

    monkeypatch.setitem(formats._REGISTRY.entries, "onnx", dataclasses.replace(onnx_format, write=export_then_corrupt))
    with pytest.raises(ValidationError, match=r"onnx: batch 1: logits: max abs 1\.00e\+00.*beyond atol .*passes with atol >= "):
        export_model("convnet", ["onnx"], checkpoint=convnet_copy / "checkpoint.pt", **QUIET)
    assert (convnet_copy / "model.onnx").read_bytes() == before
    assert not [p for p in convnet_copy.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_write_leaves_no_half_file(convnet_copy, monkeypatch):
    before = (convnet_copy / "model.torchscript.pt").read_bytes()

    def half_write(model, example, path, *args, **kwargs):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setitem(formats._REGISTRY.entries, "torchscript", dataclasses.replace(formats.get("torchscript"), write=half_write))
    with pytest.raises(KeyboardInterrupt):
        export_model("convnet", ["torchscript"], checkpoint=convnet_copy / "checkpoint.pt", **QUIET)
    assert (convnet_copy / "model.torchscript.pt").read_bytes() == before
    assert not [p for p in convnet_copy.iterdir() if p.name.endswith(".tmp")]


def test_bad_inputs_are_errors_and_write_nothing(convnet_copy, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="ptx train lstm"):
        export_model("lstm", checkpoint=convnet_copy / "checkpoint.pt", out=out, **QUIET)
    (tmp_path / "corrupt.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable ptx checkpoint"):
        export_model("convnet", checkpoint=tmp_path / "corrupt.pt", out=out, **QUIET)
    with pytest.raises(CheckpointError, match="run `ptx train convnet` first"):
        export_model("convnet", checkpoint=tmp_path / "missing.pt", out=out, **QUIET)
    with pytest.raises(UnknownModelError):
        export_model("nope", checkpoint=convnet_copy / "checkpoint.pt", out=out, **QUIET)
    assert not out.exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PtxError, match="cannot write"):
        export_model("convnet", checkpoint=convnet_copy / "checkpoint.pt", out=tmp_path / "a-file" / "sub", **QUIET)


def test_legacy_exporter_also_keeps_the_batch_dynamic(convnet_copy, tmp_path):
    export_model("convnet", ["onnx"], checkpoint=convnet_copy / "checkpoint.pt",
                 out=tmp_path / "legacy", exporter="legacy", **QUIET)
    in_dims, out_dims = symbolic_dims(tmp_path / "legacy" / "model.onnx")
    assert isinstance(in_dims[0], str) and isinstance(out_dims[0], str)


def test_cli_export_prints_one_line_per_format_and_errors_in_one_line(convnet_copy, tmp_path):
    ok = ptx("export", "convnet", "--checkpoint",
             str(convnet_copy / "checkpoint.pt"), "--out", str(tmp_path / "cli"))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    # The checkpoint it exported, then one line per format.
    assert len(lines) == 3 and lines[0].startswith(f"checkpoint: {convnet_copy / 'checkpoint.pt'} (")
    assert lines[1].startswith("onnx") and re.search(r"\d (kB|MB|GB)  ", lines[1]) and "worst |diff|" in lines[2]
    assert "Warning" not in ok.stderr and "deprecated" not in ok.stderr
    missing = ptx("export", "mlp-dropout", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "ptx train mlp-dropout" in missing.stderr


def test_format_all_is_every_file_this_machine_can_write_for_the_model(monkeypatch):
    """It meant the two default files while `ptx models` said all = six formats (issue 38): now it is
    every file format the model can take and this machine can write, each one left out with its reason."""
    # openvino-int8 where NNCF and OpenVINO are installed (the openvino extra), else left out with why
    why = formats.get("openvino-int8").unavailable()
    ov = [] if why else ["openvino-int8"]
    # the weight-only formats (a language model's) are left out of a tutorial model's in one line
    weights = ("onnx-int4, onnx-int8w, openvino-int4, openvino-int8w: weight-only formats are for language models, "
               "whose decoding reads every weight once per token; a tutorial model's reduced file is onnx-int8 (or "
               "openvino-int8)")
    assert formats.every_format(get("convnet")) == (["onnx", "torchscript", "onnx-int8", *ov, "pt2"],
                                                    [*([why] if why else []), weights])
    chosen, left_out = formats.every_format(get("linreg"))  # a regression has no int8
    assert chosen == ["onnx", "torchscript", "pt2"] and left_out[0].startswith("onnx-int8: linreg is a regression")
    assert left_out[1].startswith("openvino-int8: linreg is a regression")
    chosen, left_out = formats.every_format(get("rnn-hello"))
    assert "pt2" not in chosen and any("cannot be exported as pt2" in why for why in left_out)
    assert formats.every_format(get("convnet"), raw_pictures=True)[0] == ["onnx", "torchscript"]
    monkeypatch.setenv("CXX", "no-such-compiler++")
    chosen, left_out = formats.every_format(get("convnet"))
    assert chosen == ["onnx", "torchscript", "onnx-int8", *ov] and "no no-such-compiler++ on PATH" in left_out[-2]


def test_cli_format_all_writes_what_it_says_and_the_default_is_named(runs, tmp_path):
    run_dir = runs.trained("linreg")
    env = {**os.environ, "CXX": "no-such-compiler++"}  # pt2 left out: no 40 s compile in a test
    result = ptx("export", "linreg", "--format", "all", "--checkpoint",
                 str(run_dir / "checkpoint.pt"), "--out", str(tmp_path / "all"), env=env)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("--format all: onnx, torchscript; left out: onnx-int8: linreg is a regression") and \
        "left out: pt2: AOTInductor compiles C++ and there is no no-such-compiler++" in first, first
    assert sorted(p.name for p in (tmp_path / "all").glob("model.*")) == ["model.onnx", "model.torchscript.pt"]
    shown = " ".join(ptx("export", "--help").stdout.split())
    assert "[default: onnx,torchscript]" in shown and "or all: every file this machine can write" in shown


def test_metadata_added_after_writing_leaves_the_graph_and_its_digest_as_written(tmp_path):
    """What export learns of a file after writing it (its certificate, verdicts) is added without
    writing the graph again: an ONNX file's new keys are appended to it, a TorchScript file's ptx.json
    is replaced in its archive (its module is not saved again); both stay bound to their weights, read as one entry per
    key, and a key a file holds already is replaced, not doubled."""
    from ptx.contract.onnx_wire import read_onnx
    from ptx.export.formats import onnx as onnx_format, torchscript as torchscript_format

    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    signature = Signature((TensorSig("x", "float32", ("batch", 4), 0),), (TensorSig("y", "float32", ("batch", 3), 0),))
    strings = {"model": "tiny"}
    path = tmp_path / "model.onnx"
    onnx_format.write(module, (torch.rand(2, 4),), path, signature, strings)
    graph = onnx.load(str(path)).graph.SerializeToString()
    onnx_format.add_metadata(path, {"shape_certificate": "{}"})
    props, digest = read_onnx(path)
    assert props["ptx.shape_certificate"] == "{}" and props["ptx.weights_sha256"] == digest
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)  # no key twice
    assert proto.graph.SerializeToString() == graph
    onnx_format.add_metadata(path, {"shape_certificate": "{\"held\": 1}"})  # a key it holds: rewritten whole
    keys = [p.key for p in onnx.load(str(path)).metadata_props]
    assert keys.count("ptx.shape_certificate") == 1 and read_onnx(path)[0]["ptx.shape_certificate"] == "{\"held\": 1}"
    assert read_onnx(path)[1] == digest

    path = tmp_path / "model.torchscript.pt"
    torchscript_format.write(module, (torch.rand(2, 4),), path, signature, strings)
    digest = digest_of(path, "torchscript")
    written = {i.filename: (i.header_offset, i.CRC) for i in zipfile.ZipFile(path).infolist() if "/extra/" not in i.filename}
    torchscript_format.add_metadata(path, {"shape_certificate": "{}"})
    torchscript_format.add_metadata(path, {"verdict": "x"})  # a second time: one ptx.json, holding both
    extra = {"ptx.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    held = json.loads(extra["ptx.json"])
    assert held["shape_certificate"] == "{}" and held["weights_sha256"] == digest == digest_of(path, "torchscript")
    assert held["torchscript_method"] == "trace" and held["model"] == "tiny" and held["verdict"] == "x"
    x = torch.rand(3, 4)
    assert torch.equal(loaded(x), module(x))
    # the module's members stay where torch wrote them, and the file holds one ptx.json, which it reads as the last
    archive = zipfile.ZipFile(path)
    assert {i.filename: (i.header_offset, i.CRC) for i in archive.infolist() if "/extra/" not in i.filename} == written
    # one ptx.json, under the top folder torch.jit.save named every member under (after the file it saved to)
    assert [n for n in archive.namelist() if n.endswith("/extra/ptx.json")] == ["model.torchscript/extra/ptx.json"]
    assert archive.testzip() is None
