"""`ptx export FILE.onnx --format onnx-int8`: a user's own ONNX file quantized by the onnx-int8 format's
one writer, calibrated on --calibration samples or on inputs generated from its signature, and judged
against the f32 file on held-out inputs (ptx.contract.verdict.judge_tensors); --keep-f32
NODE and auto; the one-line refusals of options that mean nothing for a kind of model; and the one
Triton and KServe writer for a user's file, a module and a tutorial model's file."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

import own_models as zoo
from ptx.contract.metadata import from_props
from ptx.contract.weights import digest_of
from ptx.errors import OtherCpuWarning, UnusablePrecisionWarning
from ptx.infer import load
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target
from ptx.machine import describe_cpu
from ptx_command import ptx


def meta(path: Path) -> dict[str, str]:
    return from_props({p.key: p.value for p in onnx.load(str(path)).metadata_props})


def refused(result) -> str:
    """The one error line of a command refused with exit status 2."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


class Outlier(torch.nn.Module):
    """Four class scores from 16 hidden units, one of which is always 0 (its weights 0, its bias -1,
    then ReLU) and read by every score with a weight 1000 times the others (test_triage plants the
    same in mlp): eager's scores do not see it, but int8's per-channel weights scale each score's
    row by it, and the row's other weights round to 0."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
        with torch.no_grad():
            self.hidden.weight[0], self.hidden.bias[0] = 0.0, -1.0
            self.out.weight[:, 0] = 1000 * float(self.out.weight.abs().max())

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def onnx_file(module, example, path: Path, **names) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in [*names["input_names"], *names["output_names"]]},
                          **names)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own-int8")
    zoo.export_onnx(zoo.catalog()["residual"], folder / "residual.onnx")
    zoo.export_onnx(zoo.catalog()["two_io"], folder / "two_io.onnx")
    onnx_file(Outlier(), (torch.rand(2, 8),), folder / "outlier.onnx", input_names=["x"], output_names=["logits"])
    np.savez(folder / "samples.npz", image=np.random.default_rng(1).random((40, 3, 32, 32), dtype=np.float32))
    return folder


def test_an_onnx_file_becomes_int8_calibrated_on_inputs_generated_from_its_signature(files, tmp_path):
    shutil.copy(files / "residual.onnx", tmp_path / "residual.onnx")
    done = ptx("export", "residual.onnx", "--format", "onnx-int8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # int8 measured slower than f32 (a busy machine, a CPU without VNNI) adds a line that says so: not this test's
    lines = [ln for ln in done.stdout.splitlines() if "slower than f32 on this CPU" not in ln]
    assert lines[0] == ("calibration: 64 samples generated from residual.onnx's signature (seeded), and 32 samples "
                        "held out to judge the int8 file: give --calibration SAMPLES.npz to calibrate on real inputs")
    # the ways to quantize it, timed against residual.onnx and judged, then the one kept and its verdict
    assert lines[1].startswith("onnx-int8   ") and "ways to quantize timed against residual.onnx" in lines[1]
    assert lines[2].startswith("onnx-int8   residual.int8.onnx  ") and "static QDQ" in lines[2]
    # an untrained model on generated noise: f32's own top-two margin is under 0.1 on every row (near-ties, whose
    # argmax no precision keeps), so the scores are judged by their relative error instead
    assert lines[3].strip().startswith("ort-cpu-int8 on ") and lines[3].endswith("PASS"), lines[3]
    assert ("32 samples held out against the f32 file: logits: all 32 rows near-ties (f32's top-two margin < 0.1), "
            "judged by relative error, logits relative error") in lines[3]
    path = tmp_path / "residual.int8.onnx"
    strings = meta(path)
    assert strings["precision"] == "int8" and "64 calibration samples; " in strings["quantization"]
    assert json.loads(strings["verdict"])["ort-cpu-int8"]["status"] == "PASS" and strings["source"] == "residual.onnx"
    assert "judgement" not in strings  # one stored form of a verdict: ptx.verdict
    assert strings["weights_sha256"] == digest_of(path, "onnx")
    f32, int8 = load(tmp_path / "residual.onnx"), load(path, "ort-cpu", precision="int8")
    assert int8.precision == "int8" and int8.signature == f32.signature
    assert json.loads(strings["signature"]) == f32.signature.to_dict()
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    assert strings["cpu"] == describe_cpu() and int8.elsewhere is None
    # verify of the f32 file judges its int8 twin against it (the reference's backend at int8 is a row, not it)
    report = verify(Target.of(str(tmp_path / "residual.onnx"), verifying=True),
                    backends=["ort-cpu", "ort-cpu-int8"], notice=lambda _: None)
    [row] = [r for r in report.rows if r.precision == "int8"]
    assert not row.is_reference and row.against == "ort-cpu" and row.outputs and row.ok, row
    # Carried to a machine with another kind of CPU, the int8 file says its speed was measured elsewhere.
    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == "ptx.cpu").value = "Intel Xeon (avx2, avx512f, amx_int8)"
    onnx.save(proto, str(tmp_path / "carried.int8.onnx"))
    with pytest.warns(OtherCpuWarning, match=r"carried.int8.onnx was quantized and timed on Intel Xeon .*; this CPU "
                                             r"is .*: `ptx bench` measures whether int8 pays here"):
        load(tmp_path / "carried.int8.onnx", "ort-cpu", precision="int8").close()


def test_calibration_samples_are_split_into_calibration_and_held_out_inputs(files, tmp_path):
    done = ptx("export", files / "residual.onnx", "--format", "onnx-int8", "--calibration", files / "samples.npz",
               "--out", tmp_path / "q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("calibration: 30 samples from samples.npz, and 10 samples held out to "
                                           "judge the int8 file")
    strings = meta(tmp_path / "q" / "residual.int8.onnx")
    assert "30 calibration samples; " in strings["quantization"] and not (files / "residual.int8.onnx").exists()
    np.savez(tmp_path / "one.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    line = refused(ptx("export", files / "residual.onnx", "--format", "onnx-int8", "--calibration", tmp_path / "one.npz",
                       "--out", tmp_path / "one"))
    assert "one.npz holds one sample" in line and "give at least 2" in line
    line = refused(ptx("export", files / "two_io.onnx", "--format", "onnx-int8", "--calibration", files / "samples.npz",
                       "--out", tmp_path / "two"))
    assert "samples.npz holds an array 'image', and the model has no input of that name" in line


def test_integer_inputs_are_quantized_dynamically_and_said_so(files, tmp_path):
    done = ptx("export", files / "two_io.onnx", "--format", "onnx-int8", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("calibration: none, two_io.onnx is quantized dynamically (it has recurrent nodes or "
                                  "integer inputs); 32 samples generated")
    assert meta(tmp_path / "two_io.int8.onnx")["quantization"].startswith("dynamic")


def test_a_failing_int8_is_written_with_its_verdict_and_keep_f32_auto_finds_the_node(files, tmp_path):
    """The outlier model's int8 loses its scores: the file is still written, its verdict NOT USABLE
    said in one line and recorded in it; --keep-f32 auto keeps the layer of the outlier weights in
    f32, and the judgement passes."""
    shutil.copy(files / "outlier.onnx", tmp_path / "outlier.onnx")
    done = ptx("export", "outlier.onnx", "--format", "onnx-int8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # one line per runtime that reads the file, its own (onnxruntime's) first
    last = next(line for line in done.stdout.splitlines() if line.strip().startswith("ort-cpu-int8 on "))
    assert "NOT USABLE: logits: argmax agrees on" in last and last.endswith(
        "do not use int8 for outlier (serve outlier.onnx)"), done.stdout
    verdict = json.loads(meta(tmp_path / "outlier.int8.onnx")["verdict"])["ort-cpu-int8"]
    assert verdict["status"] == "NOT USABLE" and verdict["reasons"][0].startswith("logits: argmax agrees on")
    # predict and serve open it through load(), which says the verdict the file carries
    with pytest.warns(UnusablePrecisionWarning, match=r"outlier.int8.onnx was judged NOT USABLE through ort-cpu-int8 by "
                                                      r"`ptx export` \(logits: argmax agrees on"):
        load(tmp_path / "outlier.int8.onnx", "ort-cpu", precision="int8").close()
    done = ptx("export", "outlier.onnx", "--format", "onnx-int8", "--keep-f32", "auto", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--keep-f32 auto: 32 samples held out against the f32 file: logits argmax agrees on" in done.stdout
    assert next(line for line in done.stdout.splitlines() if line.strip().startswith("ort-cpu-int8 on ")
                ).endswith(": PASS"), done.stdout
    strings = meta(tmp_path / "outlier.int8.onnx")
    assert json.loads(strings["verdict"])["ort-cpu-int8"]["status"] == "PASS" and strings["keep_f32"]
    assert strings["keep_f32"].split(",")[0] == "/out/Gemm", strings["keep_f32"]


def test_keep_f32_names_a_node_left_in_f32(files, tmp_path):
    node = next(n.name for n in onnx.load(str(files / "residual.onnx")).graph.node if n.op_type == "Conv")
    done = ptx("export", files / "residual.onnx", "--format", "onnx-int8", "--keep-f32", node, "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"kept 1 node in f32 ({node})" in done.stdout
    proto = onnx.load(str(tmp_path / "residual.int8.onnx"))
    [kept] = [n for n in proto.graph.node if n.name == node]
    weights = {t.name: t.data_type for t in proto.graph.initializer}
    assert weights.get(kept.input[1]) == onnx.TensorProto.FLOAT  # its weight unquantized, reaching it as f32
    assert meta(tmp_path / "residual.int8.onnx")["keep_f32"] == node
    line = refused(ptx("export", files / "residual.onnx", "--format", "onnx-int8", "--keep-f32", "nope", "--out",
                       tmp_path / "nope"))
    assert line.startswith("error: --keep-f32 nope: residual's graph has no node of that name")


@pytest.mark.parametrize("args,says", [
    (["convnet", "--format", "onnx-int8", "--calibration", "x.npz"],
     "--calibration means nothing for a tutorial model NAME: its checkpoint holds its weights and the real training "
     "samples its int8 is calibrated on"),
    (["FILE", "--format", "onnx-int8", "--checkpoint", "w.pt"],
     "--checkpoint means nothing for a model file: it holds its weights and its tensors already"),
    (["FILE", "--format", "triton", "--out", "repo", "--triton-backend", "pytorch"],
     "--triton-backend means nothing for a model file"),
    (["FILE", "--format", "onnx-int8", "--device", "cpu"], "--device means nothing for a model file"),
    (["--module", "net.py:build", "--calibration", "x.npz", "--out", "o"],
     "--calibration means nothing for --module: it exports your own nn.Module"),
    (["convnet", "--module", "net.py:build", "--out", "o"], "NAME means nothing for --module"),
    (["FILE", "--format", "onnx"], "a model file exports as its int8 (ptx export FILE --format onnx-int8, "
                                   "openvino-int8 or both), its weights in 4 or 8 bits (onnx-int4, onnx-int8w, "
                                   "openvino-int4, openvino-int8w) or as a folder"),
    (["FILE", "--format", "onnx-int8,onnx"], "a model file exports as its int8"),
    (["FILE", "--format", "triton", "--out", "repo", "--calibration", "x.npz"],
     "--calibration calibrates an int8 file: give --format onnx-int8 or openvino-int8 (not triton)"),
    (["FILE.pt", "--format", "onnx-int8"], "onnx-int8 quantizes an ONNX file"),
])
def test_options_that_mean_nothing_for_a_kind_of_model_are_refused_in_one_line(files, tmp_path, args, says):
    shutil.copy(files / "residual.onnx", tmp_path / "FILE.onnx")
    zoo.export_torchscript(zoo.catalog()["residual"], tmp_path / "FILE.pt")
    args = ["FILE.onnx" if a == "FILE" else a for a in args]
    line = refused(ptx("export", *args, cwd=tmp_path))
    assert says.replace("FILE", "FILE.onnx") in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE.onnx", "FILE.pt"]  # nothing written


def test_an_int8_file_is_not_quantized_again_and_a_file_ptx_did_not_write_is_not_replaced(files, tmp_path):
    shutil.copy(files / "residual.onnx", tmp_path / "residual.onnx")
    assert ptx("export", "residual.onnx", "--format", "onnx-int8", cwd=tmp_path).returncode == 0
    line = refused(ptx("export", "residual.int8.onnx", "--format", "onnx-int8", "--out", "again", cwd=tmp_path))
    assert "residual.int8.onnx is already int8: quantize the f32 file it was made from" in line
    (tmp_path / "notes.int8.onnx").write_text("mine")
    shutil.copy(files / "residual.onnx", tmp_path / "notes.onnx")
    line = refused(ptx("export", "notes.onnx", "--format", "onnx-int8", cwd=tmp_path))
    assert "notes.int8.onnx is not an int8 export of notes.onnx: pass another --out, or --force" in line
    assert (tmp_path / "notes.int8.onnx").read_text() == "mine"


def test_one_triton_writer_for_a_module_and_a_tutorial_models_file(runs, tmp_path):
    """A module's folder holds its validated export, described by its tensors; a tutorial model's
    model.onnx given as a file gets its contract's README and labels."""
    (tmp_path / "net.py").write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                                     "import own_models as zoo\n\n\ndef build():\n"
                                     "    m = zoo.catalog()['residual']\n    return m.module, m.example\n")
    done = ptx("export", "--module", "net.py:build", "--format", "triton", "--out", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    onnx_line = next(line for line in lines if line.startswith("onnx "))  # after the validation inputs' line
    assert onnx_line.startswith("onnx        repo/build/1/model.onnx  ") and "worst |diff| vs eager" in onnx_line
    assert lines[-2].startswith("triton      repo/build  1/model.onnx, README.md, config.pbtxt  (platform "
                                "onnxruntime_onnx, max_batch_size 256)")
    # then (issue 59) the line that checks the served model against the file the folder holds
    assert lines[-1].startswith("verify it once served: ptx verify http://HOST:8000/v2/models/build --against "
                                "repo/build/1/model.onnx")
    folder = tmp_path / "repo" / "build"
    assert (folder / "config.pbtxt").read_text().startswith("# Written by ptx export --module net.py:build --format "
                                                            "triton: your own model (ONNX)")
    assert "exported from `net.py:build`" in (folder / "README.md").read_text()
    assert load(folder / "1" / "model.onnx").signature.input_names == ["x"]
    shutil.copy(runs.trained("convnet") / "model.onnx", tmp_path / "convnet.onnx")
    done = ptx("export", "convnet.onnx", "--format", "triton", "--out", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "repo" / "convnet"
    assert "What a client must do first" in (folder / "README.md").read_text() and (folder / "labels.txt").is_file()
    assert (folder / "config.pbtxt").read_text().startswith("# Written by ptx export convnet.onnx --format triton")
    again = ptx("export", "convnet.onnx", "--format", "triton", "--out", "repo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # its own folder: replaced
    assert "--force" in refused(ptx("export", "convnet", "--format", "triton", "--out", "repo", "--checkpoint",
                                    runs.trained("convnet") / "checkpoint.pt", cwd=tmp_path))


def test_one_kserve_writer_serves_a_users_onnx_file_by_its_path(files, tmp_path):
    done = ptx("export", files / "residual.onnx", "--format", "kserve", "--out", tmp_path / "deploy")
    assert done.returncode == 0, done.stderr
    deploy = tmp_path / "deploy"
    assert (deploy / "models" / "residual" / "model.onnx").read_bytes() == (files / "residual.onnx").read_bytes()
    entry = [ln for ln in (deploy / "Dockerfile").read_text().splitlines() if ln.startswith("ENTRYPOINT ")]
    assert json.loads(entry[0][len("ENTRYPOINT "):])[:4] == ["ptx", "serve", "/models/residual/model.onnx", "--name"]
    services = list(yaml.safe_load_all((deploy / "inferenceservice.yaml").read_text()))
    assert [s["metadata"]["name"] for s in services] == ["residual", "residual-grpc"]
    zoo.export_torchscript(zoo.catalog()["residual"], tmp_path / "residual.pt")
    line = refused(ptx("export", tmp_path / "residual.pt", "--format", "kserve", "--out", tmp_path / "d2", "--input",
                       "image=batchx3x32x32"))
    assert "the KServe image runs ONNX Runtime, without torch" in line and not (tmp_path / "d2").exists()
