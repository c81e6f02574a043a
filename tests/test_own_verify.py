"""`ptx inspect`, `ptx verify` and `ptx bench` on a user's own model file (issue 36), through the CLI
and the library, with the zoo of tests/own_models.py."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import own_models as zoo
from ptx.contract.reference import load_reference, reference_path
from ptx.errors import ArtifactError, PtxError
from ptx.infer import load
from ptx.infer.inspect.file import inspect_path
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target
from ptx_command import ptx, ptx_process

ONNX_ZOO = ["residual", "mobile", "two_io", "stateful", "fixed1", "half", "specialised"]
AGREEING = [n for n in ONNX_ZOO if n != "specialised"]
TIMEOUT = 240


def last_line(result) -> str:
    return result.stdout.rstrip("\n").splitlines()[-1]


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("verify: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- inspect ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONNX_ZOO)
def test_inspect_says_what_each_zoo_model_is(own_models, name):
    report = inspect_path(Target.of(own_models[name], verifying=True))
    spec = zoo.catalog()[name]
    text, doc = report.text(), json.loads(json.dumps(report.to_dict()))
    assert [t["name"] for t in doc["signature"]["inputs"]] == spec.input_names
    assert [t["name"] for t in doc["signature"]["outputs"]] == spec.output_names
    assert doc["graph"]["opsets"] == {"ai.onnx": 17} and doc["graph"]["parameters"] > 0
    assert sum(doc["graph"]["operators"].values()) == doc["graph"]["nodes"] + doc["graph"]["subgraph_nodes"]
    assert doc["weights_sha256"] and doc["weights_match"] is None  # a foreign file records no digest
    lines = {b["backend"]: b for b in doc["backends"]}
    assert lines["ort-cpu"]["status"] == "runs here" and lines["openvino"]["status"] == "runs here"
    assert {"ort-cuda", "ort-cuda-graph"} <= set(lines)
    assert text.startswith(f"{name}.onnx: an ONNX file") and "contract: the graph" in text
    assert re.search(r"^int8: onnxruntime's quantize_dynamic has integer kernels for \d+ of \d+ nodes", text, re.M)
    if name == "stateful":
        assert "  x       float32  [steps, batch, 6]  batch axis 1" in text
        assert "mode    int64    []                 no batch axis" in text
        assert "batching: none (mode has no batch axis)" in text and "inside If/Loop/Scan bodies" in text
        assert "not capturable as a CUDA graph (If nodes)" in lines["ort-cuda-graph"]["detail"]
    if name == "half":
        assert doc["signature"]["inputs"][0]["dtype"] == "float16"
    if name == "fixed1":
        assert doc["signature"]["inputs"][0]["shape"] == [1, 12] and doc["batched"] is False
    if name == "specialised":  # the graph says batch, ONNX Runtime's shape inference says 3
        assert "may have specialised the batch" in text


def test_inspect_cli_text_and_json_and_a_torchscript_file(own_models):
    text = ptx("inspect", own_models["two_io"])
    assert text.returncode == 0, text.stderr
    assert "  ids      int64    [batch, tokens]     batch axis 0" in text.stdout
    assert "symbolic dims: batch, tokens" in text.stdout and "  ort-cpu         runs here" in text.stdout
    doc = json.loads(ptx("inspect", own_models["two_io"], "--json").stdout)
    assert doc["signature"]["outputs"][1]["name"] == "joint" and doc["batched"] is True
    undeclared = inspect_path(Target.of(own_models["two_io.pt"], verifying=True), probe=False)
    assert undeclared.signature is None and "keeps no description of its inputs; declare them with --input" in \
        undeclared.text()
    declared = json.loads(ptx("inspect", own_models["two_io.pt"], "--json",
                              *[f"--input={d}" for d in zoo.catalog()["two_io"].declarations]).stdout)
    assert [t["name"] for t in declared["signature"]["outputs"]] == ["output_0", "output_1"]
    assert declared["parameters"] == sum(p.numel() for p in zoo.catalog()["two_io"].module.parameters())
    assert {b["backend"]: b["status"] for b in declared["backends"]}["torchscript-cpu"] == "runs here"


def test_inspect_a_run_folder_lists_its_exports_with_their_contract(runs):
    run = runs.trained("convnet")
    result = ptx("inspect", run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"run {run}: convnet")
    assert "model.onnx: an ONNX file, convnet's onnx export" in result.stdout
    assert "model.torchscript.pt: a TorchScript file, convnet's torchscript export" in result.stdout
    assert "contract: the ptx contract of the tutorial model convnet" in result.stdout
    doc = json.loads(ptx("inspect", run, "--json").stdout)
    assert doc["model"] == "convnet" and {f["format"] for f in doc["files"]} >= {"onnx", "torchscript"}
    assert all(f["signature"]["inputs"][0]["shape"] == ["batch", 1, 28, 28] for f in doc["files"])


def test_inspect_refuses_what_it_cannot_read_in_one_line(tmp_path):
    assert one_error_line(ptx("inspect", tmp_path / "nope.onnx")).endswith("nope.onnx: no such file or run folder")
    assert "not a run folder ptx trained into" in one_error_line(ptx("inspect", tmp_path))


def test_a_folder_for_a_model_is_a_run_to_load_and_one_line_to_a_command(tmp_path):
    """Issue 57: one rule (Target.of) decides every command's argument and load()'s. A folder where a
    command takes a model says, in one line, to give it by --run (predict and serve say what verify
    says); load() takes a run folder as its argument, and a folder that is none is refused so."""
    folder = tmp_path / "exp"
    folder.mkdir()
    for args in (("predict", "--model", f"{folder}/", "x.png"), ("verify", f"{folder}/")):
        assert one_error_line(ptx(*args)).endswith(f"{folder}: a folder; give the model file inside it (a .onnx, "
                                                   "TorchScript .pt or .pt2), or a run folder to the tutorial "
                                                   "models' commands with --run"), args
    with pytest.raises(ArtifactError, match="a folder, but not a run folder ptx trained into"):
        load(folder)


def test_a_bare_name_that_is_a_folder_here_is_told_to_go_by_run(tmp_path, monkeypatch):
    # `ptx predict --model exp` with a run folder exp here: the name is not a registered model, and the
    # one line says how to give the folder, rather than only listing the registry's names.
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path)
    said = one_error_line(ptx("predict", "--model", "exp", "x.png"))
    assert "unknown model 'exp'" in said and "exp is a folder here: give a run folder with --run exp" in said, said
    # serve says what predict says, and takes the --run it names (it had none, and said to give it)
    said = one_error_line(ptx("serve", "exp"))
    assert "unknown model 'exp'" in said and "exp is a folder here: give a run folder with --run exp" in said, said
    assert one_error_line(ptx("serve", "exp/")).endswith("or a run folder to the tutorial models' commands with --run")


def test_load_says_a_contradicted_run_in_its_own_words(tmp_path):
    # load("convnet", run=<a linreg run>) told the library caller to 'leave out NAME' and 'give --run'
    run = tmp_path / "alpha"
    run.mkdir()
    (run / "metrics.json").write_text('{"model": "linreg"}')
    with pytest.raises(PtxError) as caught:
        load("convnet", run=run)
    assert str(caught.value) == (f"{run} holds a run of linreg, not convnet: leave out the name (the run says its "
                                 "model), or give run= a folder that holds a convnet run (`ptx runs` lists them)")


# -- verify -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AGREEING)
def test_verify_agrees_for_each_zoo_model_and_against_its_torchscript(own_models, name):
    against = ["--against", own_models[f"{name}.pt"]] if f"{name}.pt" in own_models else []
    result = ptx("verify", own_models[name], *against)
    assert result.returncode == 0, result.stdout + result.stderr
    assert last_line(result).startswith("all agree: openvino") and "onnx.reference" in last_line(result)
    rows = [ln.split() for ln in result.stdout.splitlines()]
    assert any(r[:4] == ["openvino", "(cpu)", "f32", "ort-cpu"] and r[-1] == "PASS" for r in rows)
    assert "CUDA rows: not run: no GPU on this machine" in result.stdout
    if against:
        assert f"{name}.pt (torchscript-cpu)" in last_line(result)
        assert "matched by position" in result.stdout  # a TorchScript file's output_0.. to the ONNX's names


def test_a_changed_weight_disagrees_with_the_reference_tensors_and_the_torchscript(own_models, tmp_path):
    """Issue 36's acceptance: one weight changed after export; the reference tensors kept beside the
    file (written first, from the unchanged file) and the TorchScript file both say so."""
    model = tmp_path / "model.onnx"
    shutil.copy(own_models["residual"], model)
    saved = ptx("verify", model, "--save-reference")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    kept = load_reference(reference_path(model))
    assert [c.feeds["image"].shape[0] for c in kept.cases] == [3, 5] and kept.produced_by.startswith("ort-cpu")
    proto = onnx.load(str(model))
    weight = next(t for t in proto.graph.initializer if len(t.dims) == 4)
    changed = numpy_helper.to_array(weight).copy()
    changed.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(changed, weight.name))
    onnx.save(proto, str(model))

    stored = ptx("verify", model, "--json")
    assert stored.returncode == 1, stored.stdout + stored.stderr
    doc = json.loads(stored.stdout)
    assert re.match(r"DISAGREE: ort-cpu vs stored reference, output logits: max abs \d\.\d\de-\d\d", doc["summary"])
    bad = next(r for r in doc["rows"] if r["against"] == "stored reference" and not r["ok"])
    assert bad["outputs"][0]["needed_atol"] > 1e-4 and sum(bad["outputs"][0]["histogram"]["counts"]) > 0
    assert any("made for other weights" in n for n in doc["notes"])
    assert all(r["ok"] for r in doc["rows"] if r["against"] == "ort-cpu")  # the backends still agree with each other

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model, alone / "model.onnx")
    against = ptx("verify", alone / "model.onnx", "--against", own_models["residual.pt"])
    assert against.returncode == 1, against.stdout + against.stderr
    assert re.match(r"DISAGREE: residual.pt \(torchscript-cpu\) vs ort-cpu, output logits: max abs \d", last_line(against))


def test_a_batch_the_exporter_specialised_is_caught_at_the_second_batch_size(own_models):
    result = ptx("verify", own_models["specialised"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert last_line(result).startswith("DISAGREE: ort-cpu (the reference): runs at batch 3 but fails at batch 5: ")
    assert last_line(result).endswith("(the exporter specialised the batch?)")


@pytest.mark.parametrize("arrays, message", [
    ({"picture": np.zeros((2, 1, 16, 16), np.float32), "ids": np.full((2, 6), 0.5, np.float32)},
     "input 'ids' of samples.npz is float32; it takes int64 (round or cast it first)"),
    ({"picture": np.zeros((2, 1, 15, 16), np.float32), "ids": np.zeros((2, 6), np.int64)},
     "input 'picture' of samples.npz has shape [2, 1, 15, 16]; axis 2 must be 16"),
    ({"picture": np.zeros((2, 1, 16, 16), np.float32), "ids": np.zeros((2, 6), np.int64), "nope": np.zeros(3)},
     "samples.npz holds an array 'nope', and the model has no input of that name; its inputs are picture, ids: "
     "name each array after the input it feeds"),
    ({"picture": np.zeros((2, 1, 16, 16), np.float32)}, "samples.npz holds no array for input 'ids'; the model takes "
                                                         "picture, ids"),
])
def test_samples_that_do_not_fit_are_one_line(own_models, tmp_path, arrays, message):
    np.savez(tmp_path / "samples.npz", **arrays)
    result = ptx("verify", own_models["two_io"], "--inputs", tmp_path / "samples.npz")
    assert result.returncode == 2 and one_error_line(result).startswith(f"error: {message}")


def test_real_samples_and_options_that_name_no_input_or_output(own_models, tmp_path):
    feeds = {"picture": np.random.default_rng(0).random((2, 1, 16, 16), np.float32), "ids": np.ones((2, 6), np.int64)}
    np.savez(tmp_path / "samples.npz", **feeds)
    report = verify(Target.of(own_models["two_io"], verifying=True),
                    input_files=[tmp_path / "samples.npz"], backends=["ort-cpu"])
    # ort-cpu's own row with its batch composition (samples alone vs in the batch of 2); onnx.reference is a
    # backend of its own now, run only where --backends names it (issue 52 item 7)
    assert report.ok and report.cases == ["samples.npz"] and \
        [(r.backend, r.composition is not None) for r in report.rows] == [("ort-cpu", True)]
    shape = ptx("verify", own_models["two_io"], "--shape", "nope=3x4")
    # --shape binds a symbolic dim by its name too (issue 58), so the refusal names the symbols as well
    assert one_error_line(shape) == ("error: --shape nope=...: the model has no input 'nope' and no symbolic dim of "
                                     "that name; its symbolic dims are tokens; its inputs are picture, ids")
    tolerance = ptx("verify", own_models["two_io"], "--atol", "nope=1e-3")
    assert one_error_line(tolerance).startswith("error: --atol nope=...: the model has no output 'nope'")


def test_save_inputs_writes_the_generated_cases_that_inputs_feeds_again(own_models, tmp_path):
    saved = tmp_path / "cases.npz"
    result = ptx("verify", own_models["two_io"], "--save-inputs", saved, "--backends", "ort-cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"saved the inputs: {saved} (2 cases; --inputs {saved} feeds them again)" in result.stdout
    with np.load(saved) as archive:
        assert sorted(archive.files) == ["ids:0", "ids:1", "picture:0", "picture:1"]
        assert archive["picture:0"].shape[0] == 3 and archive["picture:1"].shape[0] == 5
    again = ptx("verify", own_models["two_io"], "--inputs", saved, "--backends", "ort-cpu")
    assert again.returncode == 0 and "cases: 2 from cases.npz" in again.stdout, again.stdout + again.stderr
    assert "--save-inputs" in one_error_line(ptx("verify", own_models["two_io"], "--save-inputs", tmp_path / "x.txt"))


def test_float16_is_judged_with_float16_tolerances_and_per_output_overrides(own_models):
    report = verify(Target.of(own_models["half"], verifying=True))
    assert report.ok
    assert {(o.tolerance.atol, o.tolerance.rtol) for r in report.rows for o in r.outputs} == {(1e-2, 1e-2)}
    two = verify(Target.of(own_models["two_io"], verifying=True),
                 atol=[("scores", 1e-3), (None, 1e-2)], backends=["openvino"])
    # the f32 row by its label: openvino-bf16 is a row only on a CPU with bf16 instructions
    [row] = [r for r in two.rows if r.label == "openvino"]
    assert {o.name: o.tolerance.atol for o in row.outputs} == {"scores": 1e-3, "joint": 1e-2}


def test_verify_of_an_onnx_file_never_imports_torch(own_models):
    result = ptx_process("verify", own_models["two_io"], "--json", python_flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert not re.search(r"\|\s+torch$", result.stderr, re.M), "ptx verify of an ONNX file imported torch"
    assert json.loads(result.stdout)["ok"]


def test_names_and_paths_that_are_neither_say_what_ptx_takes(tmp_path):
    assert one_error_line(ptx("verify", tmp_path / "my.onnx")).startswith(f"error: {tmp_path / 'my.onnx'}: no such file")
    assert one_error_line(ptx("bench", "convnett")).endswith("or give a model file's path (`ptx bench model.onnx`)")


def test_options_of_the_other_kind_are_refused(own_models):
    """From one place (ptx.cli.options.ONE_KIND): what an option cannot mean for a kind of model."""
    assert "--samples counts real test samples, which only a tutorial model's contract names" in \
        one_error_line(ptx("verify", own_models["fixed1"], "--samples", "5"))
    assert "--shape, --value and --range shape generated inputs; a tutorial model is fed its real test samples: add " \
        "--seed" in one_error_line(ptx("verify", "convnet", "--shape", "x=1"))
    assert "--input declares a model file's inputs; a tutorial model's contract declares its own" in \
        one_error_line(ptx("bench", "convnet", "--input", "x=1"))


def test_a_runtime_that_crashes_opening_the_file_is_that_rows_failure(own_models, monkeypatch):
    from ptx.infer.model import opening
    from ptx.infer.model.target import Target

    crash_openvino = ("import json, os, signal, sys\nfor args in json.loads(sys.argv[1]):\n"
                      "    if args['backend'] == 'openvino':\n        os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(opening, "PROBE", crash_openvino)
    monkeypatch.setattr(opening, "_PROBED", set())  # this process's earlier tests opened the file in a child
    target = Target.of(own_models["residual"])
    variants = [v for v in target.variants() if v.device == "cpu" and v.precision == "f32"]
    skipped = []
    with target.opened_together(variants, skipped=skipped.append) as opened:
        assert dict((v.label, m) for v, m in opened)["ort-cpu"].signature.input_names == ["image"]
    assert {s.variant.label: s.why for s in skipped}["openvino"] == "openvino opening residual.onnx crashed (SIGSEGV)"
    assert {v.label for v in variants} >= {"ort-cpu", "openvino", "onnx.reference"}


def test_the_openvino_model_answers_like_onnx_runtime_and_says_why_it_cannot(own_models):
    from ptx.contract.tensor_inputs import make_feeds, plan_inputs
    from ptx.errors import ModelRunError

    ort, ov = load(own_models["stateful"], probe=False), load(own_models["stateful"], "openvino", probe=False)
    assert ov.backend == "openvino" and ov.signature == ort.signature
    for batch in (3, 5):
        feeds = make_feeds(ort.signature, plan_inputs(ort.signature), batch)
        got, want = ov.run(feeds), ort.run(feeds)
        assert all(np.allclose(got[n], want[n], atol=1e-5) for n in want)
    specialised = load(own_models["specialised"], "openvino", probe=False)
    with pytest.raises(ModelRunError, match=r"openvino cannot compile specialised for inputs x \[5, 8\]: While "):
        specialised.run({"x": np.zeros((5, 8), np.float32)})


def _inverse_graph(path):
    """ONNX Runtime runs com.microsoft's Inverse; OpenVINO's front end has no conversion rule for it."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")], "inverse",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 2])])
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                     helper.make_opsetid("com.microsoft", 1)]), path)
    return path


def test_a_backend_that_cannot_read_the_file_is_no_disagreement_unless_strict(tmp_path):
    pytest.importorskip("openvino")
    path = _inverse_graph(tmp_path / "inverse.onnx")
    verify(Target.of(path, verifying=True),
           save=True)  # reference tensors, so that ort-cpu has a row of its own that runs
    report = verify(Target.of(path, verifying=True))
    # openvino cannot read com.microsoft's Inverse (nor can onnx.reference, a third opinion, evaluate it)
    assert report.could_not_run[0] == "openvino" and \
        set(report.could_not_run) <= {"openvino", "openvino-bf16", "onnx.reference"}  # each row by its label
    assert report.exit_status == 0
    result = ptx("verify", path)
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith("openvino "))
    assert re.search(r"  could not run: OpenVINO cannot read it \(its ONNX reader does not convert "
                     r"com\.microsoft\.Inverse \(no conversion rule\)", row), row
    assert "core.cpp" not in row and str(path) not in row and len(row.split("could not run: ")[1]) <= 160
    assert last_line(result).startswith("all agree: ort-cpu (against stored reference); each alone as inside a "
                                        "batch: ort-cpu; could not run: openvino")
    assert last_line(result).endswith("(not a disagreement; --strict fails it)")
    strict = ptx("verify", path, "--strict")
    assert strict.returncode == 1 and last_line(strict).startswith("DISAGREE: openvino: "), strict.stdout
    assert "  FAIL: OpenVINO cannot read it (" in strict.stdout


def _lstm_with_state(path):
    """An LSTM whose initial state [2, state_1, 8] holds the batch on axis 1 under a name ptx cannot
    read as a batch, beside input [N, T] (issue 43 item 7)."""
    from onnx import TensorProto, helper

    hidden, rng = 8, np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
               (("W", (2, 4 * hidden, 1)), ("R", (2, 4 * hidden, hidden)), ("B", (2, 8 * hidden)))]
    nodes = [helper.make_node("Unsqueeze", ["input", "axis2"], ["x3"]),
             helper.make_node("Transpose", ["x3"], ["steps_first"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["steps_first", "W", "R", "B", "", "state"], ["", "h"], hidden_size=hidden,
                              direction="bidirectional")]
    graph = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T"]),
                                              helper.make_tensor_value_info("state", TensorProto.FLOAT,
                                                                            [2, "state_1", hidden])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "N", hidden])],
                              [*weights, numpy_helper.from_array(np.array([2], np.int64), "axis2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_state_whose_batch_ptx_could_not_tell_is_named_with_the_batch_axis_that_says_so(tmp_path):
    path = _lstm_with_state(tmp_path / "lstm.onnx")
    result = ptx("verify", path, "--backends", "ort-cpu")
    assert result.returncode == 2 and "LSTM" in result.stderr, result.stderr
    assert one_error_line(result).endswith("state [2, state_1, 8] may hold the batch, which ptx could not tell, and "
                                           "was fed a size of its own: if its batch is axis 1, say so with "
                                           "--batch-axis state=1")
    told = ptx("verify", path, "--batch-axis", "state=1")
    assert told.returncode == 0 and last_line(told).startswith("all agree: openvino"), told.stdout + told.stderr


# -- bench --------------------------------------------------------------------------------------


def test_bench_prints_each_backend_beside_its_bare_runtime(own_models):
    result = ptx("bench", own_models["two_io"], "--seconds", "0.05", "--rounds", "2", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = {(r["runner"], r["batch"]): r for r in doc["rows"]}
    for batch in (1, 8):
        assert rows[("ort-cpu", batch)]["vs_bare"] > 0
        assert rows[("bare InferenceSession.run (ort-cpu)", batch)]["peer_of"] == "ort-cpu"
        assert ("openvino", batch) in rows
    assert doc["unit"] == "samples/s" and any("tokens=8" in n for n in doc["notes"])
    fixed = ptx("bench", own_models["fixed1"], "--seconds", "0.05", "--rounds", "2", "--backends", "ort-cpu")
    assert fixed.returncode == 0, fixed.stderr
    assert "no input has a batch axis: timed at its fixed shape only" in fixed.stdout
    assert re.search(r"^bare InferenceSession.run \(ort-cpu\)\s+cpu\s+1\s", fixed.stdout, re.M)
    assert "runs/s" in fixed.stdout
    # the summary's throughput is in the table's unit: a model file's runs are not images
    assert re.search(r"^batch 1: fastest verified is ort-cpu \(f32\), [\d,]+ runs/s", fixed.stdout, re.M), fixed.stdout
    assert "images/s" not in fixed.stdout, fixed.stdout


@pytest.mark.parametrize("name", AGREEING)
def test_bench_times_each_zoo_model_beside_a_bare_session(own_models, name):
    """Issue 36's acceptance: bench for each own model, ort-cpu beside a bare InferenceSession.run at
    each batch size (fixed1 has no batch axis: its one fixed shape)."""
    result = ptx("bench", own_models[name], "--seconds", "0.02", "--rounds", "1", "--warmup", "1",
                 "--backends", "ort-cpu", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["runner"], r["batch"]): r for r in json.loads(result.stdout)["rows"]}
    batches = [1] if name == "fixed1" else [1, 8]
    assert sorted(rows) == sorted((runner, b) for b in batches
                                  for runner in ("ort-cpu", "bare InferenceSession.run (ort-cpu)")), sorted(rows)
    for row in rows.values():
        assert row["images_per_s"] > 0 and 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"], row
    assert all(rows[("ort-cpu", b)]["vs_bare"] > 0 for b in batches)


def test_a_truncated_external_data_file_is_one_line_saying_so(tmp_path):
    """A model whose data file was copied in part (a download cut short): inspect printed a digest of
    the short file, and predict, verify and serve answered with ONNX Runtime's
    "GetExtDataFromTensorProto ... out of bounds". Now each says the file is truncated."""
    from onnx import TensorProto, helper

    from ptx.errors import ArtifactError

    weight = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert load(tmp_path / "m.onnx", probe=False).run({"x": np.ones((1, 8), np.float32)})["y"].shape == (1, 8)
    (tmp_path / "m.data").write_bytes((tmp_path / "m.data").read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"its weights live in 'm.data', which holds 100 bytes where the graph "
                                            r"reads 256: the file is truncated; copy it whole with the model"):
        load(tmp_path / "m.onnx", probe=False)
    with pytest.raises(ArtifactError, match="the file is truncated"):
        inspect_path(Target.of(tmp_path / "m.onnx", verifying=True))


def test_value_and_shape_bind_the_inputs_verify_generates(own_models, tmp_path):
    """--value fixes an input (the GRU's branch), --shape binds a symbolic dim (its steps); the inputs
    kept by --save-reference are what verify ran, at its two batch sizes; a dim ptx chose is said."""
    shutil.copy(own_models["stateful"], tmp_path / "gru.onnx")
    result = ptx("verify", tmp_path / "gru.onnx", "--value", "mode=0", "--shape", "x=4x2x6", "--save-reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "steps=" not in result.stdout  # bound, not chosen
    cases = load_reference(tmp_path / "gru.reference.npz").cases
    assert [c.feeds["x"].shape for c in cases] == [(4, 3, 6), (4, 5, 6)]
    assert all(c.feeds["mode"].shape == () and int(c.feeds["mode"]) == 0 for c in cases)
    chosen = ptx("verify", own_models["stateful"], "--value", "mode=1")
    assert "symbolic dims chosen by ptx: steps=8 (bind them with --shape SYMBOL=SIZE, e.g. --shape steps=8)" \
        in chosen.stdout, chosen.stdout
    assert "give a whole number" in one_error_line(ptx("verify", tmp_path / "gru.onnx", "--value", "mode=0.5"))


def test_weights_in_external_data_are_inspected_and_verified_like_inline_ones(own_models, tmp_path):
    """A model saved with its weights beside it (as big models are): inspect names the data file and
    judges CUDA placement as for the inline file; verify agrees; the data file missing is one line."""
    onnx.save(onnx.load(str(own_models["residual"])), str(tmp_path / "r.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="r.data")
    doc = inspect_path(Target.of(tmp_path / "r.onnx", verifying=True)).to_dict()
    inline = inspect_path(Target.of(own_models["residual"], verifying=True)).to_dict()
    assert "r.data" in json.dumps(doc["graph"])
    details = {b["backend"]: b["detail"] for b in doc["backends"]}
    assert details["ort-cuda"] == {b["backend"]: b["detail"] for b in inline["backends"]}["ort-cuda"]
    assert "static placement: all 16 nodes on CUDA" in details["ort-cuda"], details
    result = ptx("verify", tmp_path / "r.onnx")
    assert result.returncode == 0 and last_line(result).startswith("all agree"), result.stdout + result.stderr
    (tmp_path / "r.data").unlink()
    assert one_error_line(ptx("inspect", tmp_path / "r.onnx")).endswith(
        "its weights live in 'r.data', which is missing beside it: copy the external data file(s) with the model")
