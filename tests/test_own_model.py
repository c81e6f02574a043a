"""A user's own model through the library: the tensor layer of the contract, ptx.infer.load() on an
ONNX file, a TorchScript file and a live nn.Module, and the refusals a user meets."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import own_models as zoo
from conftest import outputs
from ptx.contract.comparison import compare_output, default_tolerance
from ptx.contract.tensor_inputs import VERIFY_BATCHES, check_feeds, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig, infer_batch_axes, parse_declaration, parse_shape
from ptx.errors import ArtifactError, InputError, ModelRunError, PtxError
from ptx.infer import load


def feeds_for(model, batch=3, seed=0, **options):
    return make_feeds(model.signature, plan_inputs(model.signature, **options), batch, seed)


# -- the tensor layer --------------------------------------------------------------------------


def test_declarations_and_shapes_parse_as_triton_users_write_them():
    assert parse_declaration("x=batchx3x224x224") == TensorSig("x", "float32", ("batch", 3, 224, 224), 0)
    assert parse_declaration("ids=N,max_len:int64") == TensorSig("ids", "int64", ("N", "max_len"), 0)
    assert parse_declaration("flag=:bool") == TensorSig("flag", "bool", (), None)
    assert parse_shape("2x-1x7", "t") == (2, "dim1", 7)
    for bad in ("x", "x=3x?x:complex64", "=3"):
        with pytest.raises(PtxError):
            parse_declaration(bad)


def test_each_unnamed_size_is_a_size_of_its_own(tmp_path):
    """paddle2onnx writes every unknown size as ``?``: [-1, 3, ?, ?] takes a 48x192 picture, as ONNX
    Runtime does, and two declarations' ``?`` are two sizes."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "paddle",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])])
    path = tmp_path / "paddle.onnx"
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = load(path)
    assert model.signature.inputs[0].shape == ("N", 3, "x_2", "x_3")
    assert model.run({"x": np.ones((1, 3, 48, 192), np.float32)})["y"].shape == (1, 3)
    a, b = parse_declaration("a=?x-1"), parse_declaration("b=?x?")
    assert a.shape == ("a_0", "a_1") and b.shape == ("b_0", "b_1")
    check_feeds(Signature((a, b), ()), {"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 5), np.float32)}, "t")


def test_the_batch_is_read_from_symbol_names_and_follows_a_state_on_axis_one():
    inputs = (TensorSig("x", "float32", ("steps", "batch", 6)), TensorSig("h0", "float32", (1, "batch", 12)),
              TensorSig("mode", "int64", ()))
    outputs = (TensorSig("y", "float32", ("batch", 3)), TensorSig("h", "float32", (1, "batch", 12)))
    ins, outs = infer_batch_axes(inputs, outputs)
    assert [t.batch_axis for t in ins] == [1, 1, None] and [t.batch_axis for t in outs] == [0, 1]
    ins, _ = infer_batch_axes(inputs, outputs, {"x": None, "h0": None})
    assert [t.batch_axis for t in ins] == [None, None, None]
    with pytest.raises(PtxError, match="symbolic dimensions"):
        infer_batch_axes(inputs, outputs, {"mode": 0})


def test_a_signature_round_trips_and_refuses_what_it_cannot_hold():
    sig = Signature((TensorSig("x", "float16", ("batch", 4), 0, (0.0, 1.0)),), (TensorSig("y", "bool", ("batch",), 0),))
    assert Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig
    doc = sig.to_dict()
    doc["inputs"][0]["batch_axis"] = 1
    with pytest.raises(PtxError, match="batch_axis"):
        Signature.from_dict(doc)
    doc = sig.to_dict()
    doc["version"] = 99
    with pytest.raises(PtxError, match="newer"):
        Signature.from_dict(doc)


def test_generated_inputs_are_seeded_dtype_aware_and_say_what_ptx_chose(own_models):
    model = load(own_models["two_io"], probe=False)
    plan = plan_inputs(model.signature, values={}, ranges={"ids": "5,7"})
    assert plan.chosen == {"tokens": 8} and "tokens=8" in plan.describe_choices()
    a, b = make_feeds(model.signature, plan, 3, seed=1), make_feeds(model.signature, plan, 3, seed=1)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 5 and a["ids"].max() <= 7
    assert a["picture"].shape == (3, 1, 16, 16) and a["picture"].dtype == np.float32
    with pytest.raises(PtxError, match="no input 'nope'"):
        plan_inputs(model.signature, shapes={"nope": "2x3"})
    with pytest.raises(PtxError, match="axis 1 of picture is fixed to 1"):
        plan_inputs(model.signature, shapes={"picture": "2x3x16x16"})
    assert 1 not in VERIFY_BATCHES and 0 not in VERIFY_BATCHES and len(set(VERIFY_BATCHES)) == 2


def test_a_range_is_low_inclusive_high_exclusive_for_integers_and_a_bare_one_ranges_them_too():
    sig = Signature((TensorSig("bytes", "int64", ("batch", 4096), 0), TensorSig("attention_mask", "int64", ("batch", 64), 0),
                     TensorSig("x", "float32", ("batch", 4), 0), TensorSig("flag", "bool", ("batch",), 0)), ())
    named = make_feeds(sig, plan_inputs(sig, ranges={"bytes": "0,257"}), 3)
    assert named["bytes"].min() == 0 and named["bytes"].max() == 256  # [0, 257): 256 drawn, 257 never
    bare = make_feeds(sig, plan_inputs(sig, default_range="0,257"), 3)
    assert bare["bytes"].max() == 256 and bare["attention_mask"].max() > 9 and bare["x"].max() > 1
    assert bare["flag"].dtype == np.bool_
    default = make_feeds(sig, plan_inputs(sig), 3)
    assert set(np.unique(default["attention_mask"])) == {0, 1}  # a mask is 0 or 1
    assert set(np.unique(default["bytes"])) == set(range(10))
    contract = Signature((TensorSig("level", "int32", ("batch", 4096), 0, (0, 3)),), ())
    assert set(np.unique(make_feeds(contract, plan_inputs(contract), 3)["level"])) == {0, 1, 2, 3}


def test_argmax_max_rel_and_needed_atol_are_shown_where_they_mean_something(tmp_path):

    from ptx.contract.comparison import needed_atol_text
    from ptx.infer.verify.report import Report, Row

    rng = np.random.default_rng(0)
    tol = default_tolerance("float32")
    hidden = rng.random((3, 8, 16), dtype=np.float32)
    assert compare_output("last_hidden_state", hidden, hidden, tol, 0).decisions == 0
    assert compare_output("h_n", hidden[:, 0], hidden[:, 0], tol, 0).decisions == 0
    assert compare_output("pooler_output", hidden[:, 0], hidden[:, 0], tol, 0).decisions == 0
    assert compare_output("state", hidden.transpose(1, 0, 2), hidden.transpose(1, 0, 2), tol, 1).decisions == 0
    assert compare_output("logits", hidden[:, 0], hidden[:, 0], tol, 0).decisions == 3
    state = np.zeros((1, 3, 4), np.float32)  # a state padded with zeros: a 1e-6 beside a 0 is no infinite error
    state[0, 0] = 1.0
    got = state + 1e-6
    agreement = compare_output("h", got, state, tol, 1)
    assert agreement.ok and 0 < agreement.max_rel < 1e-5 and agreement.decisions == 0
    # max abs 1e-6, all inside rtol * |ref| where the reference is 1: an atol of 0 would pass only there
    covered = compare_output("y", np.ones((3, 4), np.float32) + 1e-6, np.ones((3, 4), np.float32), tol, 0)
    assert covered.max_abs > 0 and covered.needed_atol == 0 and needed_atol_text(covered) == "none"
    assert needed_atol_text(agreement) == f"{agreement.needed_atol:.2e}"
    bad = compare_output("y", np.ones((3, 4), np.float32) * 2, np.ones((3, 4), np.float32), tol, 0)
    report = Report("m.onnx", "onnx", "ort-cpu", signature=Signature((), ()),
                    rows=[Row("openvino", against="ort-cpu", cases=["batch 3"], outputs=[bad])] * 3)
    assert report.summary().endswith("(and 2 more table rows fail)")
    report.rows = report.rows[:2]
    assert report.summary().endswith("(and 1 more table row fails)")


def test_outputs_are_judged_per_dtype():
    want = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    assert compare_output("y", want + 5e-5, want, default_tolerance("float32"), 0).ok
    assert not compare_output("y", want + 5e-3, want, default_tolerance("float32"), 0).ok
    half = want.astype(np.float16)
    assert compare_output("y", half + np.float16(4e-3), half, default_tolerance("float16"), 0).ok
    ids = np.arange(6)
    moved = ids.copy()
    moved[2] = 9
    result = compare_output("ids", moved, ids, default_tolerance("int64"), None)
    assert not result.ok and result.beyond == 1 and result.needed_atol == 7
    nan = want.copy()
    nan[0, 0] = np.nan
    assert not compare_output("y", nan, want, default_tolerance("float32"), 0).ok


# -- load() on a user's files -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["residual", "mobile", "two_io", "stateful", "fixed1", "half"])
def test_load_runs_each_onnx_by_name_at_two_batch_sizes(own_models, name):
    model = load(own_models[name], probe=False)
    assert model.backend == "ort-cpu"
    reference = zoo.catalog()[name]
    assert model.signature.input_names == reference.input_names
    assert model.signature.output_names == reference.output_names
    for batch in VERIFY_BATCHES:
        feeds = feeds_for(model, batch)
        out = model.run(feeds)
        assert set(out) == set(reference.output_names)
        for sig in model.signature.outputs:
            if sig.batch_axis is not None:
                assert out[sig.name].shape[sig.batch_axis] == batch
        assert list(model.run(feeds, outputs=[reference.output_names[-1]])) == [reference.output_names[-1]]


def test_the_onnx_answers_are_the_modules(own_models):
    """load(module) is the reference a user's file is checked against."""
    for name in ("residual", "two_io", "stateful"):
        spec = zoo.catalog()[name]
        onnx_model = load(own_models[name], probe=False)
        declared = [t for t in onnx_model.signature.inputs]
        module = load(spec.module, inputs=declared)
        assert module.backend == "eager"
        feeds = feeds_for(onnx_model, 5, seed=3)
        got, want = onnx_model.run(feeds), module.run(feeds)
        for sig, produced in zip(onnx_model.signature.outputs, want.values()):
            assert compare_output(sig.name, got[sig.name], produced, default_tolerance(sig.dtype), sig.batch_axis).ok


def test_a_state_whose_batch_is_axis_one_and_a_branch_input(own_models):
    model = load(own_models["stateful"], probe=False)
    x, h0, mode = model.signature.inputs
    assert (x.batch_axis, h0.batch_axis, mode.batch_axis, mode.shape) == (1, 1, None, ())
    assert not model.signature.batched  # a scalar input: requests cannot be joined
    assert any(n.op_type == "If" for n in onnx.load(str(own_models["stateful"])).graph.node)
    feeds = feeds_for(model, 3)
    one = model.run({**feeds, "mode": np.array(1)})["scores"]
    zero = model.run({**feeds, "mode": np.array(0)})["scores"]
    assert not np.allclose(one, zero)  # the branch input picks another computation


def test_a_fixed_batch_and_float16_are_what_the_graph_says(own_models):
    fixed = load(own_models["fixed1"], probe=False)
    assert fixed.signature.inputs[0].shape == (1, 12) and fixed.signature.inputs[0].batch_axis is None
    with pytest.raises(InputError, match="axis 0 must be 1"):
        fixed.run({"x": np.zeros((2, 12), np.float32)})
    half = load(own_models["half"], probe=False)
    out = half.run({"x": np.random.rand(4, 16)})  # float64 is cast to the float16 input
    assert half.signature.inputs[0].dtype == "float16" and out["y"].dtype == np.float16


def test_inputs_that_do_not_fit_are_one_line_naming_the_input(own_models):
    model = load(own_models["two_io"], probe=False)
    feeds = feeds_for(model)
    cases = [({"picture": feeds["picture"]}, "'ids' of two_io is missing"),
             ({**feeds, "extra": feeds["ids"]}, "no input 'extra'"),
             ({**feeds, "ids": feeds["ids"].astype(np.float32)}, "'ids' of two_io is float32; it takes int64"),
             ({**feeds, "ids": feeds["ids"][:2]}, "one batch for every input"),
             ({**feeds, "picture": feeds["picture"][:, :, :3]}, "axis 2 must be 16"),
             ("not a dict", "as a dict by name")]
    for bad, message in cases:
        with pytest.raises(InputError, match=message):
            model.run(bad)
    with pytest.raises(InputError, match="no output 'nope'"):
        model.run(feeds, outputs=["nope"])


def test_a_batch_the_exporter_specialised_fails_at_another_batch_in_one_line(own_models):
    model = load(own_models["specialised"], probe=False)
    model.run(feeds_for(model, 3))  # the export's own batch
    with pytest.raises(ModelRunError, match=r"ort-cpu failed running specialised on inputs x float32 \[5, 8\]") as err:
        model.run(feeds_for(model, 5))
    assert "\n" not in str(err.value)


def test_torchscript_needs_its_inputs_declared_and_learns_its_outputs(own_models):
    with pytest.raises(PtxError, match="keeps no description of its inputs: declare each"):
        load(own_models["two_io.pt"], probe=False)
    model = load(own_models["two_io.pt"], inputs=zoo.catalog()["two_io"].declarations, probe=False)
    assert model.backend == "torchscript"
    assert [(t.name, t.shape, t.batch_axis) for t in model.signature.outputs] == [
        ("output_0", ("batch", 4), 0), ("output_1", ("batch", 16), 0)]
    onnx_model = load(own_models["two_io"], probe=False)
    feeds = feeds_for(onnx_model, 5)
    got, want = model.run(feeds), onnx_model.run(feeds)
    assert np.allclose(got["output_0"], want["scores"], atol=1e-5)


def test_a_symbol_that_follows_an_input_is_learned_for_torchscript_outputs(own_models):
    model = load(own_models["mobile.pt"], inputs=["image=batchx3xheightxwidth"], probe=False)
    assert model.signature.outputs[0].shape == ("batch", 7)


def test_the_onnx_path_never_imports_torch(own_models):
    code = ("import sys, numpy as np; from ptx.infer import load; m = load(sys.argv[1]); "
            "print(sorted(m.run({'x': np.zeros((2, 16), np.float16)})), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(own_models["half"])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['y']", "False"]


def test_files_that_are_not_models_are_one_line_each(own_models, tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model at all")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(own_models["residual"].read_bytes()[:3000])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    state = tmp_path / "weights.pt"
    torch.save(zoo.catalog()["residual"].module.state_dict(), state)
    code = tmp_path / "net.py"  # the user's model code, or tensors meant as inputs: what to do with them
    code.write_text("import torch\n")
    tensors = tmp_path / "inputs.npz"
    np.savez(tensors, x=np.zeros(3))
    for path, message in [(text, "not an ONNX model"), (truncated, "truncated.*; export it again, or copy it whole"),
                          (empty, "empty file"), (tmp_path / "missing.onnx", "no such file"),
                          (code, f"net.py: not a model file; export the nn.Module it builds: `ptx export --module "
                                 f"{code}:FACTORY"),
                          (tensors, "inputs.npz: not a model file; tensors are a model's inputs: `ptx predict "
                                    "--model MODEL_FILE")]:
        with pytest.raises(ArtifactError, match=message) as err:
            load(path, probe=False)
        assert "\n" not in str(err.value)
    with pytest.raises(PtxError, match="--module"):
        load(state)


def test_a_runtime_crash_on_a_foreign_file_is_one_line(own_models, monkeypatch):
    """The child process a foreign file is first opened in dies: ptx says so and lives."""
    from ptx.child import ChildCrashError
    from ptx.infer.model import opening as api

    monkeypatch.setattr(api, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(api, "_PROBED", set())  # this process's earlier tests opened the file in a child
    with pytest.raises(ChildCrashError, match=r"ort-cpu opening residual.onnx crashed \(SIGSEGV\)"):
        load(own_models["residual"])


# -- a contract belongs to its weights ----------------------------------------------------------


def test_ptx_metadata_copied_onto_another_model_is_refused(runs, own_models, tmp_path):
    """Issue 36, item 8: convnet's ptx.* metadata on a foreign ONNX made it answer as convnet."""
    run = runs.ready("convnet") / "convnet"
    source = onnx.load(str(run / "model.onnx"))
    assert any(p.key == "ptx.weights_sha256" for p in source.metadata_props)
    foreign = onnx.load(str(own_models["residual"]))
    del foreign.metadata_props[:]
    for prop in source.metadata_props:
        foreign.metadata_props.add(key=prop.key, value=prop.value)
    path = tmp_path / "model.onnx"
    onnx.save(foreign, str(path))
    with pytest.raises(ArtifactError, match="weights are not the ones its ptx.. metadata was written for"):
        load(path)
    own = load(path, ignore_metadata=True, probe=False)  # the way in the message
    assert own.signature.input_names == ["image"]
    from ptx.infer.runtime.backends import get as get_backend

    if get_backend("openvino").unavailable("cpu") is None:  # every backend that reads the file refuses it
        with pytest.raises(ArtifactError, match="weights are not the ones"):
            load(path, backend="openvino")


def test_ptx_json_copied_onto_another_torchscript_file_is_refused(runs, own_models, tmp_path):
    """The same for TorchScript: convnet's ptx.json inside the zoo's residual network."""
    from ptx.infer.runtime.torch_files import load_torchscript
    from ptx.torch_quiet import quiet_jit

    _, text = load_torchscript(runs.ready("convnet") / "convnet" / "model.torchscript.pt")
    assert "weights_sha256" in json.loads(text)
    with quiet_jit():
        module = torch.jit.load(str(own_models["residual.pt"]))
        path = tmp_path / "model.torchscript.pt"
        torch.jit.save(module, str(path), _extra_files={"ptx.json": text})
    with pytest.raises(ArtifactError, match="weights are not the ones its ptx.. metadata was written for") as err:
        load(path)
    assert "--ignore-metadata" in str(err.value) and "\n" not in str(err.value)
    own = load(path, ignore_metadata=True, inputs=zoo.catalog()["residual"].declarations, probe=False)
    assert own.run({"image": np.zeros((3, 3, 32, 32), np.float32)})["output"].shape == (3, 10)


def test_exports_written_before_digests_load_as_before(runs, tmp_path):
    """Artifacts from before ptx recorded ptx.weights_sha256 and ptx.signature are believed as before."""
    from ptx.infer.runtime.torch_files import load_torchscript
    from ptx.torch_quiet import quiet_jit

    run = runs.ready("convnet") / "convnet"
    proto = onnx.load(str(run / "model.onnx"))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in ("ptx.weights_sha256", "ptx.signature")]
    del proto.metadata_props[:]
    for key, value in kept:
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp_path / "model.onnx"))
    module, text = load_torchscript(run / "model.torchscript.pt")
    strings = {k: v for k, v in json.loads(text).items() if k not in ("weights_sha256", "signature")}
    with quiet_jit():
        torch.jit.save(module, str(tmp_path / "model.torchscript.pt"), _extra_files={"ptx.json": json.dumps(strings)})
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    want = outputs(load(run / "model.onnx"), x)
    for file, backend in (("model.onnx", "ort-cpu"), ("model.torchscript.pt", "torchscript"), ("model.onnx", "openvino")):
        from ptx.infer.runtime.backends import get as get_backend

        if get_backend(backend).unavailable("cpu") is not None:
            continue
        old = load(tmp_path / file, backend=backend)
        assert old.contract.model == "convnet"
        assert np.allclose(outputs(old, x), want, atol=1e-4)


def test_tutorial_predictors_answer_the_tensor_layer_too(runs):
    predictor = load("convnet", root=runs.ready("convnet"))
    sig = predictor.signature
    assert (sig.input_names, sig.output_names) == (["input"], ["logits"]) and sig.batched
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    out = predictor.run({"input": x})
    assert np.array_equal(out["logits"], outputs(predictor, x))
    with pytest.raises(InputError, match="no input 'image'"):
        predictor.run({"image": x})


def test_check_feeds_casts_only_what_keeps_its_values():
    sig = Signature((TensorSig("i", "int32", ("batch",), 0),), (TensorSig("y", "float32", ("batch",), 0),))
    assert check_feeds(sig, {"i": np.array([1, 2], np.int64)})["i"].dtype == np.int32
    with pytest.raises(InputError, match="outside int32's range"):
        check_feeds(sig, {"i": np.array([2**40])})
    with pytest.raises(InputError, match="round or cast it first"):
        check_feeds(sig, {"i": np.array([1.5])})
    with pytest.raises(InputError, match="empty batch"):
        check_feeds(sig, {"i": np.zeros(0, np.int32)})


def test_a_copied_folder_keeps_working(own_models, tmp_path):
    """A model file is self-contained: copied elsewhere it loads the same."""
    copy = tmp_path / "elsewhere.onnx"
    shutil.copy(own_models["mobile"], copy)
    model = load(copy, probe=False)
    assert model.name == "elsewhere" and model.signature.inputs[0].shape == ("batch", 3, "height", "width")


@pytest.mark.parametrize("file, declared", [("two_io", None), ("two_io.pt", zoo.catalog()["two_io"].declarations)])
def test_run_is_thread_safe_like_the_tutorial_predictors(own_models, file, declared):
    """Issue 36, item 5: one predictor shared by threads answers each call as if it ran alone."""
    import concurrent.futures

    model = load(own_models[file], inputs=declared, probe=False)
    cases = [feeds_for(model, batch=2 + i % 4, seed=i) for i in range(32)]
    alone = [model.run(case) for case in cases]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(model.run, cases))
    for want, got in zip(alone, together):
        assert sorted(got) == sorted(want) and all(np.array_equal(got[n], want[n]) for n in want)


def test_inspect_names_a_sequence_of_maps_output_as_onnx_runtime_does(tmp_path):
    """A scikit-learn classifier converted with ZipMap (onnxruntime's own logreg_iris.onnx) has an
    output that is a sequence of maps: `ptx inspect` called it `tensor(0)`, while `ptx verify` said
    `seq(map(int64,tensor(float)))`. Both now say the latter."""
    from onnx import TensorProto, helper

    from test_hostile_data import ptx_here

    value = helper.make_tensor_type_proto(TensorProto.FLOAT, [])
    probs = helper.make_value_info("probabilities", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, value)))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]), probs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "zipmap.onnx")
    result = ptx_here("inspect", "zipmap.onnx", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "output 'probabilities' is seq(map(int64,tensor(float))), which ptx does not run" in result.stderr, \
        result.stderr


def test_an_input_the_graph_gives_no_shape_is_declared_with_input_not_taken_for_a_scalar(tmp_path):
    """A graph input with no shape at all (no rank): ONNX Runtime lists it as [], so ptx took it for a
    scalar, inspect printed `x float32 []` and every real sample was refused as the wrong rank, with
    --input refused too ("declared float32 [batch, 3], but it takes float32 []"). Now the file asks
    for --input, which gives the shape; a true scalar input stays a scalar."""
    from onnx import TensorProto, helper

    def save(name, shape):
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / name)
        return tmp_path / name

    unranked = save("unranked.onnx", None)
    with pytest.raises(ArtifactError, match=r"unranked.onnx: input 'x' has no shape in the graph, not even a rank: "
                                            r"declare it with --input x=SHAPE\[:DTYPE\]"):
        load(unranked, probe=False)
    model = load(unranked, inputs=["x=batchx3"], probe=False)
    assert model.signature.inputs[0].shape == ("batch", 3) and model.signature.inputs[0].batch_axis == 0
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    assert np.array_equal(model.run({"x": x})["y"], np.maximum(x, 0))
    assert load(save("scalar.onnx", []), probe=False).signature.inputs[0].shape == ()


def test_a_float_input_past_its_dtypes_range_is_refused_not_cast_to_inf():
    """`ptx predict` of a float64 1e6 for a float16 input (or 1e39 for float32, from a .json file)
    cast it to inf and answered NaN; an integer input past its range was already refused. An
    infinity the user gives stays one."""
    sig = Signature((TensorSig("h", "float16", ("batch",), 0),), (TensorSig("y", "float16", ("batch",), 0),))
    with pytest.raises(InputError, match="input 'h' of .* holds values outside float16's range"):
        check_feeds(sig, {"h": np.array([1e6, 1.0])})
    assert np.isinf(check_feeds(sig, {"h": np.array([np.inf, 65504.0])})["h"][0])


def test_an_ir_version_onnxruntime_does_not_know_says_which_to_save_it_with(tmp_path):
    """A graph built with onnx.helper.make_model (whose default IR version is newer than this
    onnxruntime reads) was refused with ONNX Runtime's C++ signature and "re-export it", which with
    the same onnx writes the same version. Now the message names the version to save with."""
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 99
    onnx.save(model, tmp_path / "new.onnx")
    with pytest.raises(ArtifactError) as refused:
        load(tmp_path / "new.onnx", probe=False)
    supported = re.search(r"max supported IR version: (\d+)\)", str(refused.value))
    assert supported and str(refused.value).endswith(
        f"new.onnx: ONNX Runtime cannot load it (Unsupported model IR version: 99, max supported IR version: "
        f"{supported[1]}); save it with IR version {supported[1]} (model.ir_version = {supported[1]} before "
        f"onnx.save), or install an onnxruntime newer than {onnxruntime.__version__}"), str(refused.value)
