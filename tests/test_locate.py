"""`ptx verify FILE.onnx --locate [--repro DIR]` (issue 44): disagreements planted in small graphs,
each located to the node where it is born, named in the module's code, and reproduced alone."""
from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from ptx.infer.verify.report_table import REPRO_NOTE
from ptx_command import ptx

TIMEOUT = 240


def located(result) -> dict:
    return json.loads(result.stdout)["locate"]


class Basic(nn.Module):
    """torchvision's BasicBlock, smaller."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # the line the located conv2 is named by
        return F.relu(out + self.shortcut(x))


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(Basic(8, 8, 1), Basic(8, 8, 1))
        self.layer2 = nn.Sequential(Basic(8, 16, 2), Basic(16, 16, 1))
        self.layer3 = nn.Sequential(Basic(16, 32, 2), Basic(32, 32, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.layer3(self.layer2(self.layer1(self.stem(x)))).mean((2, 3)))


CONV2_LINE = next(i for i, line in enumerate(inspect.getsource(Basic).splitlines()) if "the line the located" in line)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> dict[str, Path]:
    """The module exported as torch's exporter does for `ptx export --module` (dynamo, with its node
    metadata), its TorchScript, and the ONNX with one weight of layer3.1.conv2 changed."""
    folder = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    module = ResNetLike().eval()
    with torch.no_grad():  # batch norms that are not the identity
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
    example = (torch.randn(2, 3, 16, 16),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(folder / "model.onnx"), dynamo=True, input_names=["image"],
                          output_names=["logits"], verbose=False)
        torch.jit.trace(module, example).save(str(folder / "model.torchscript.pt"))
    proto = onnx.load(str(folder / "model.onnx"))
    weight = next(t for t in proto.graph.initializer if t.name == "layer3.1.conv2.weight")
    changed = numpy_helper.to_array(weight).copy()
    changed[3, 5, 1, 1] += 0.5
    weight.CopyFrom(numpy_helper.from_array(changed, weight.name))
    onnx.save(proto, str(folder / "changed.onnx"))
    return {"model": folder / "model.onnx", "changed": folder / "changed.onnx",
            "torchscript": folder / "model.torchscript.pt", "source": Path(inspect.getsourcefile(Basic))}


def test_a_changed_weight_of_a_deep_convolution_is_located_named_and_reproduced(resnet, tmp_path):
    result = ptx("verify", resnet["changed"], "--against", resnet["model"], "--locate", "--repro", tmp_path / "r",
                 "--json")
    assert result.returncode == 1, result.stderr[-3000:]
    origin = located(result)["origin"]
    assert origin["op"] == "Conv" and origin["module"] == "layer3.1.conv2", origin
    line = inspect.getsourcelines(Basic)[1] + CONV2_LINE
    assert origin["source"] == f"{resnet['source']}:{line}" and "self.conv2(out)" in origin["code"]
    weight = next(i for i in origin["inputs"] if i["name"] == "layer3.1.conv2.weight")
    assert weight["departs"] and 0.5 * 0.5 < weight["max_abs"] < 2.0  # batch norm folded in scales it
    assert all(not i["departs"] for i in origin["inputs"] if i["kind"] != "weight")
    path = located(result)["path"]
    assert path[0]["node"] == origin["node"] and path[-1]["output"] == "logits" and all(s["departs"] for s in path)

    text = ptx("verify", resnet["changed"], "--against", resnet["model"], "--locate")
    # the files as given, so the offered command runs from wherever it is typed
    assert f"where it is born{REPRO_NOTE}: ptx verify {resnet['changed']} --locate --against {resnet['model']}" in text.stdout
    assert re.search(r"^origin: node \S+ \(Conv\)", text.stdout, re.M) and "module layer3.1.conv2" in text.stdout

    repro = json.loads(result.stdout)["locate"]["repro"]
    assert 1 <= repro["nodes"] <= 5
    readme = (tmp_path / "r" / "README").read_text().splitlines()
    assert len(readme) == 3 and readme[1] == repro["command"]
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"README", "repro.onnx", "inputs.npz", "outputs.npz",
                                                            "against.onnx"}
    alone = ptx(*readme[1].split()[1:])
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert alone.stdout.rstrip().splitlines()[-1].startswith("DISAGREE: against.onnx (ort-cpu) vs ort-cpu")


def test_onnx_against_its_torchscript_names_the_module(resnet, tmp_path):
    result = ptx("verify", resnet["changed"], "--against", resnet["torchscript"], "--locate", "--json",
                 "--repro", tmp_path / "r")
    assert result.returncode == 1, result.stderr[-3000:]
    found = located(result)
    assert found["origin"]["module"] == "layer3.1.conv2", found["origin"]
    assert "layer3.1" in [s["module"] for s in found["path"]]  # the block around it departs too
    command = (tmp_path / "r" / "README").read_text().splitlines()[1]
    assert "--against" in command and command.endswith("against.pt")
    alone = ptx(*command.split()[1:])
    assert alone.returncode == 1, alone.stdout + alone.stderr


def _chain_graph(first_scale: float) -> onnx.ModelProto:
    """x -> x * first_scale -> twenty cheap steps -> x * 1000: a small difference born at the first
    node, carried and amplified by the last."""
    nodes = [helper.make_node("Mul", ["x", "s0"], ["t0"], name="early_mul")]
    inits = [numpy_helper.from_array(np.array(first_scale, np.float32), "s0")]
    for i in range(1, 21):
        op = ["Abs", "Add", "Neg", "Identity"][i % 4]
        ins = [f"t{i - 1}"] + (["one"] if op == "Add" else [])
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=f"step{i}_{op.lower()}"))
    inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    inits.append(numpy_helper.from_array(np.array(1000.0, np.float32), "gain"))
    nodes.append(helper.make_node("Mul", ["t20", "gain"], ["y"], name="amplify"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_error_carried_and_amplified_is_located_where_it_is_born(tmp_path):
    onnx.save(_chain_graph(1.0), str(tmp_path / "a.onnx"))
    onnx.save(_chain_graph(1.01), str(tmp_path / "b.onnx"))
    result = ptx("verify", tmp_path / "a.onnx", "--against", tmp_path / "b.onnx", "--locate", "--json")
    assert result.returncode == 1, result.stderr[-3000:]
    found = located(result)
    assert found["origin"]["node"] == "early_mul" and found["origin"]["module"] is None
    assert found["origin"]["alone"]["departs"]  # computed alone from the reference's input, it departs too
    errors = [s["max_abs"] for s in found["path"]]
    assert [s["node"] for s in found["path"]][0] == "early_mul" and found["path"][-1]["node"] == "amplify"
    assert errors[-1] > 100 * errors[0] > 0


def _resize_graph() -> onnx.ModelProto:
    """A real operator on which runtimes here differ: Resize, linear, align_corners, scale 1.7.
    onnx.reference (1.23) maps output pixels back with the scale where align_corners asks for
    (in - 1) / (out - 1); ONNX Runtime and OpenVINO agree with each other."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"], name="double"),
             helper.make_node("Resize", ["doubled", "", "scales"], ["resized"], name="upsample", mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("Relu", ["resized"], ["y"], name="relu")]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array([1, 1, 1.7, 1.7], np.float32), "scales")]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_runtime_that_computes_an_operator_differently_is_located_to_it_alone(tmp_path):
    """Issue 52 item 8: onnx.reference is a third opinion; where it alone departs, --locate says where in
    a note and verify's exit status stays 0; --strict makes it a verdict, and the repro fails alone."""
    onnx.save(_resize_graph(), str(tmp_path / "resize.onnx"))
    # onnx.reference is a third opinion: where it alone departs, a note (exit 0) unless --strict
    noted = ptx("verify", tmp_path / "resize.onnx")
    assert noted.returncode == 0 and "a third opinion differs: onnx.reference" in noted.stdout, noted.stdout
    note = ptx("verify", tmp_path / "resize.onnx", "--locate")
    assert note.returncode == 0, note.stdout + note.stderr
    assert "note: onnx.reference departs alone, a third opinion and no verdict" in note.stdout, note.stdout
    assert re.search(r"^origin: node upsample \(Resize\)", note.stdout, re.M), note.stdout
    result = ptx("verify", tmp_path / "resize.onnx", "--locate", "--json", "--strict", "--repro", tmp_path / "r")
    assert result.returncode == 1, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert [r["backend"] for r in doc["rows"] if not r["ok"]] == ["onnx.reference"]
    found = doc["locate"]
    assert found["other"] == "onnx.reference" and found["origin"]["op"] == "Resize"
    assert found["origin"]["node"] == "upsample" and found["origin"]["alone"]["departs"]
    assert all(not i["departs"] for i in found["origin"]["inputs"])
    readme = (tmp_path / "r" / "README").read_text().splitlines()
    assert readme[2].startswith("exits 1: its outputs disagree") and "--strict" in readme[1]
    alone = ptx(*readme[1].split()[1:])
    assert alone.returncode == 1 and "DISAGREE: onnx.reference vs ort-cpu" in alone.stdout, alone.stdout


def test_every_onnx_runtime_row_verify_offers_has_a_side_to_trace(tmp_path):
    """A failing ort-cuda-graph row offers `--backends ort-cuda-graph --locate`; a captured graph cannot
    be asked for intermediates, so its side is the same session un-captured (ort-cuda, the same
    kernels), at the row's precision: on CUDA, proven here without one."""
    from ptx.infer.locate.graph import LocateGraph
    from ptx.infer.locate.sweep import Side

    onnx.save(_resize_graph(), str(tmp_path / "resize.onnx"))
    graph = LocateGraph.open(tmp_path / "resize.onnx")
    try:
        sides = {label: Side(graph, {}, label) for label in
                 ("ort-cpu", "ort-cuda", "ort-cuda-graph", "ort-cuda-tf32", "ort-cuda-graph-tf32")}
    finally:
        graph.close()
    assert {side.backend.name for side in sides.values()} == {"ort-cpu", "ort-cuda"}
    assert [(s.device, s.label, s.precision) for s in sides.values()] == [
        ("cpu", "ort-cpu", "f32"), ("cuda", "ort-cuda", "f32"), ("cuda", "ort-cuda", "f32"),
        ("cuda", "ort-cuda-tf32", "tf32"), ("cuda", "ort-cuda-tf32", "tf32")]


def test_an_against_file_that_cannot_run_offers_no_locate(tmp_path):
    """--locate traces two sides that both ran: an --against file that fails on the ONNX file's inputs
    (another model's TorchScript) is a failed row, and offering --locate for it led to a refusal."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              str(tmp_path / "relu.onnx"))
    torch.jit.trace(nn.Conv2d(3, 2, 3).eval(), torch.randn(1, 3, 8, 8)).save(str(tmp_path / "conv.pt"))
    result = ptx("verify", tmp_path / "relu.onnx", "--against", tmp_path / "conv.pt", "--backends", "ort-cpu")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "conv.pt (torchscript-cpu)" in result.stdout and "failed" in result.stdout, result.stdout
    assert "--locate" not in result.stdout, result.stdout


def test_locate_of_onnx_files_never_imports_torch(tmp_path):
    onnx.save(_chain_graph(1.0), str(tmp_path / "a.onnx"))
    onnx.save(_chain_graph(1.01), str(tmp_path / "b.onnx"))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptx", "verify", tmp_path / "a.onnx",
                             "--against", tmp_path / "b.onnx", "--locate"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 1 and "origin: node early_mul" in result.stdout, result.stderr[-2000:]
    assert not re.search(r"\|\s+torch$", result.stderr, re.M), "--locate of two ONNX files imported torch"


def test_bad_uses_are_one_line_each(resnet, tmp_path):
    def error(result):
        lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("verify: ")]
        assert len(lines) == 1, result.stderr
        return lines[0]

    assert "add --locate" in error(ptx("verify", resnet["model"], "--repro", tmp_path / "r"))
    assert "--locate traces an ONNX graph" in error(ptx("verify", resnet["torchscript"], "--locate",
                                                        "--input", "image=2,3,16,16"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    full = ptx("verify", resnet["changed"], "--against", resnet["model"], "--locate", "--repro", tmp_path / "full")
    assert full.returncode == 2 and "not an empty folder" in error(full)  # refused before verify runs
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    agree = ptx("verify", resnet["model"], "--locate")
    assert agree.returncode == 0 and "nothing to locate: every f32 row agrees" in agree.stderr


def test_a_tutorial_models_disagreeing_rows_offer_the_command_that_locates_them(runs, tmp_path):
    """Issue 44 item 1: offered under every DISAGREE, a tutorial model's too. With a tolerance no
    runtime meets, ort-cpu's row offers the ONNX file against its TorchScript export (eager's code,
    module by module), another runtime's row the file against ort-cpu; the --atol given goes with
    it, and the offered command traces to an origin. On a copy of the run: verify records the failed
    row in the run's verify.json, which the other tests of this worker would read."""
    root = tmp_path / "runs"
    shutil.copytree(runs.trained("convnet"), root / "convnet")
    result = ptx("verify", "convnet", "--root", root, "--backends", "ort-cpu", "--atol", "1e-9", "--rtol", "0",
                 "--samples", "50")
    assert result.returncode == 1, result.stdout + result.stderr
    offer = next(ln for ln in result.stdout.splitlines() if ln.startswith("where ort-cpu parts from eager"))
    onnx_file, torchscript = root / "convnet" / "model.onnx", root / "convnet" / "model.torchscript.pt"
    command = offer.split(": ", 1)[1]  # the command ends the line: it runs as printed (issue 57)
    assert command == f"ptx verify {onnx_file} --against {torchscript} --atol 1e-09 --rtol 0 --locate"
    assert json.loads(ptx("verify", "convnet", "--root", root, "--backends", "ort-cpu", "--atol", "1e-9", "--rtol",
                          "0", "--samples", "50", "--json").stdout)["locate_commands"] == [offer]
    traced = ptx(*command.split()[1:])
    # the row asked about (the TorchScript export against the ONNX file), not the first row that fails
    assert traced.returncode == 1, traced.stdout + traced.stderr
    assert "where it is born: model.torchscript.pt (torchscript-cpu) vs ort-cpu" in traced.stdout, traced.stdout
    assert "origin: node " in traced.stdout


def test_a_file_offer_repeats_what_made_the_verdict_and_runs_from_elsewhere(runs, tmp_path):
    """The offer under a file's DISAGREE carries the file's path as given and the options behind
    the verdict (--backends, --atol): typed as printed, from another folder, it locates. `--backends
    ort-cpu` runs ort-cpu alone: onnx.reference is a backend of its own, named or left out (issue 52)."""
    pytest.importorskip("openvino")
    model = runs.ready("convnet") / "convnet" / "model.onnx"
    alone = ptx("verify", model, "--backends", "ort-cpu", "--atol", "1e-9", "--rtol", "0")
    assert "onnx.reference" not in alone.stdout, alone.stdout
    result = ptx("verify", model, "--backends", "ort-cpu,openvino", "--atol", "1e-9", "--rtol", "0")
    offer = next(ln for ln in result.stdout.splitlines() if ln.startswith("where it is born"))
    assert offer == (f"where it is born (add --repro DIR for a repro to file): ptx verify {model} --locate --backends "
                     "ort-cpu,openvino --atol 1e-09 --rtol 0")
    traced = subprocess.run([sys.executable, "-m", "ptx", *offer.split(": ", 1)[1].split()[1:]],
                            capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert traced.returncode == 1 and "where it is born: openvino vs ort-cpu" in traced.stdout, \
        traced.stdout + traced.stderr


def test_the_line_located_is_shown_as_the_reader_named_its_file(tmp_path, monkeypatch):
    """The exporter records the module's file by its absolute path; the words show it relative to the
    working folder where it lies under it (`ptx export --module mynet.py:build` then says `mynet.py:20`),
    elsewhere as recorded, and --json keeps the record."""
    from ptx.infer.locate.render import _shown

    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert _shown(f"{tmp_path}/demo/mynet.py:20") == "demo/mynet.py:20"
    assert _shown("/usr/lib/python3/other.py:7") == "/usr/lib/python3/other.py:7"
