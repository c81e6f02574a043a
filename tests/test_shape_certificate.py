"""The shape certificate (issue 58): every declared dynamic axis tried at 1, 2, 7 and --max-shape,
at export against eager and at verify through the file's own runtime; an axis the export or the
module fixed is named with what fixed it, and a file that holds carries its certificate."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ptx.contract.metadata import from_props
from ptx.contract.shape_certificate import (CERTIFICATE_KEY, CHANGES, FIXED, REFUSED, Certificate, certify,
                                            onnx_fixing_nodes, probes)
from ptx.contract.schema import Tolerance
from ptx.contract.tensor_inputs import plan_inputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError, ValidationError
from ptx.export import export_module
from ptx_command import ptx


class FixedView(nn.Module):
    """x [batch, seq, 4]: view(B, 8, -1) holds the sequence length 8 as a constant of the code."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x.view(x.shape[0], 8, -1))


class IntView(nn.Module):
    """The sequence length read as a Python number: eager keeps it dynamic, a trace fixes the example's."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x.view(x.shape[0], int(x.shape[1]), -1))


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x.view(x.shape[0], x.shape[1], -1))


SIG = Signature((TensorSig("x", "float32", ("batch", "seq", 4), 0),), (TensorSig("y", "float32", ("batch", "seq"), 0),))


def _export(module, tmp_path, **options):
    torch.manual_seed(0)
    lines = []
    result = export_module(module, None, tmp_path / "out", inputs=["x=batchxseqx4"],
                           log=lines.append, **options)
    return result, lines


# -- the certificate's own judgement ------------------------------------------------------------------


def test_probes_try_each_symbol_at_1_2_7_and_the_max_shape_with_the_others_held():
    plan = plan_inputs(Signature(SIG.inputs, ()))
    tried = probes(SIG, plan, max_sizes={"seq": 33})
    assert [(p.symbol, p.size) for p in tried] == [("batch", 1), ("batch", 2), ("batch", 7),
                                                   ("seq", 1), ("seq", 2), ("seq", 7), ("seq", 33)]
    assert tried[0].feeds["x"].shape == (1, 8, 4) and tried[-1].feeds["x"].shape == (3, 33, 4)


def test_a_refused_size_a_moved_output_and_changed_answers_each_fail_the_axis_they_belong_to():
    plan = plan_inputs(Signature(SIG.inputs, ()))
    tried = probes(SIG, plan)

    def refuses_seq(feeds):  # a graph that takes only the example's sequence length
        x = feeds["x"]
        if x.shape[1] != 8:
            raise ValueError("Reshape: cannot reshape")
        return {"y": x.sum(-1)}

    # Where eager took the size (at export), the export fixed the axis; where nothing says why (verify,
    # no node holding the size), the refusal is said in the runtime's words, not blamed on the export.
    refused = certify(SIG, tried, refuses_seq, reference_takes=True)
    assert [a.status for a in refused.axes] == ["dynamic", FIXED] and not refused.holds
    assert "the runtime refuses seq=1 (Reshape: cannot reshape)" in refused.axes[1].detail
    unexplained = certify(SIG, tried, refuses_seq)
    assert [a.status for a in unexplained.axes] == ["dynamic", REFUSED] and not unexplained.holds
    # refused at its smallest size: the line says how to start the axis where the model takes it
    assert unexplained.axes[1].line() == ("seq: the runtime refuses seq=1 (Reshape: cannot reshape): where the model "
                                          "takes seq only from some size up, --min-shape seq=SIZE starts there")
    named = certify(SIG, tried, refuses_seq, where=lambda symbol: "Reshape node /view holds 8")
    assert named.axes[1].status == FIXED and named.axes[1].line().startswith("seq: FIXED: the runtime refuses")
    moved = certify(SIG, tried, lambda f: {"y": np.zeros((f["x"].shape[0], 8), np.float32)})
    assert moved.axes[1].status == FIXED and "output y has seq 8 where the input has 1" in moved.axes[1].detail
    wants = [{"y": p.feeds["x"].sum(-1)} for p in tried]
    tolerance = lambda name: Tolerance(1e-4, 1e-3)  # noqa: E731
    changed = certify(SIG, tried, lambda f: {"y": f["x"].sum(-1) + (f["x"].shape[0] == 7)}, wants=wants,
                      tolerance=tolerance, against="eager")
    assert [a.status for a in changed.axes] == [CHANGES, "dynamic"] and "at batch=7" in changed.axes[0].detail
    assert "y: max abs 1.00e+00" in changed.axes[0].detail  # the one comparison's words
    holds = certify(SIG, tried, lambda f: {"y": f["x"].sum(-1)}, wants=wants, tolerance=tolerance, against="eager")
    assert holds.holds and holds.summary() == "holds: batch 1, 2, 7; seq 1, 2, 7 (answers against eager)"
    assert Certificate.from_json(holds.to_json()).to_dict() == holds.to_dict()


def test_a_native_runtimes_echo_of_a_refusal_is_held_and_a_good_runs_writing_passed_on(capfd):
    # AOTInductor's C++ prints a page of generated code to descriptor 2 before raising a size's refusal;
    # the certificate quotes the refusal once, so the echo is held back; a run that succeeds keeps its words.
    plan = plan_inputs(Signature(SIG.inputs, ()))
    tried = probes(SIG, plan)

    def native(feeds):
        x = feeds["x"]
        os.write(2, b"Error: aoti_torch_cpu_convolution(buf0, ...) API call failed\n" if x.shape[1] != 8
                 else b"native note\n")
        if x.shape[1] != 8:
            raise RuntimeError("Kernel size can't be greater than actual input size")
        return {"y": x.sum(-1)}

    said = certify(SIG, tried, native)
    err = capfd.readouterr().err
    assert "Kernel size can't be greater" in said.axes[1].detail and "API call failed" not in err, err
    assert err.count("native note") == 3, err  # the batch probes, run at seq 8


def test_a_declared_output_shape_the_runtime_contradicts_is_flagged():
    declared = Signature(SIG.inputs, (TensorSig("y", "float32", (1, "seqlen"), None),))
    found = certify(declared, probes(declared, plan_inputs(Signature(SIG.inputs, ()))),
                    lambda f: {"y": np.zeros((20, 1, 8210), np.float32)})
    assert not found.holds and "output y is declared [1, seqlen] and the runtime returns [20, 1, 8210]" in found.outputs


# -- at export ------------------------------------------------------------------------------------------


def test_a_module_whose_view_fixes_the_sequence_length_is_named_at_export(tmp_path):
    with pytest.raises(PtxError) as caught:
        _export(FixedView(), tmp_path, formats=["onnx"])
    message = str(caught.value)
    assert "seq is declared dynamic and FixedView.forward fixes it: eager PyTorch refuses seq=1, 2, 7" in message
    assert "(the example's seq is 8)" in message and "x.view(x.shape[0], 8, -1)" in message, message
    assert "\n" not in message and not (tmp_path / "out").exists()
    # a view with a number is the usual cause, not a certainty: a check that raises fixes the axis too
    assert "where the code turns that size into a constant" in message, message


INSTALLED_MODEL = '''
import torch


class Installed(torch.nn.Module):
    """Fixes the sequence length as FixedView does, from an installed package (as transformers' are)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x, cache=None, mask=None):
        return self.lin(x.view(x.shape[0], 8, -1))
'''


@pytest.mark.parametrize("inputs", [["x=batchxseqx4"], ["x=batchxseqx4", "mask=batchxseq"]])
def test_a_refusal_in_an_installed_package_names_no_line_of_ptx_as_the_users(tmp_path, inputs):
    # An editable checkout keeps ptx outside site-packages: the certificate's own `module(*args)`
    # (certificate.py) and the keyword wrapper's call (as_it_comes.py, with mask declared) were named
    # as the user's line where the module's code lives in an installed package.
    import importlib.util

    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "installed_model.py").write_text(INSTALLED_MODEL)
    spec = importlib.util.spec_from_file_location("installed_model", tmp_path / "site-packages" / "installed_model.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    with pytest.raises(PtxError) as caught:
        export_module(installed.Installed(), None, tmp_path / "out", inputs=inputs,
                      formats=["onnx"], log=lambda _: None)
    message = str(caught.value)
    assert "seq is declared dynamic and Installed.forward fixes it: eager PyTorch refuses seq=1, 2, 7" in message
    assert "certificate.py" not in message and "as_it_comes.py" not in message, message


def test_an_axis_the_export_fixed_is_named_with_the_node_that_holds_the_example_size(tmp_path):
    with pytest.raises(ValidationError) as onnx_refusal:
        _export(IntView(), tmp_path, formats=["onnx"], exporter="legacy")
    message = str(onnx_refusal.value)
    assert "shape certificate: seq: FIXED: the runtime refuses seq=1" in message, message
    assert "the example's size 8 is a constant of Reshape node '/Reshape' (shape constant [8])" in message, message
    with pytest.raises(ValidationError) as traced:
        _export(IntView(), tmp_path, formats=["torchscript"])
    assert "the example's size 8 is a constant of view in forward (sizes holding 8)" in str(traced.value)
    assert not (tmp_path / "out").exists()


def test_a_good_module_gets_a_certificate_that_holds_in_every_file_and_inspect_and_verify_show_it(tmp_path):
    result, lines = _export(Good(), tmp_path, formats=["onnx", "torchscript"], max_sizes={"seq": 33})
    said = [ln for ln in lines if "shape certificate:" in ln]
    assert len(said) == 2 and all("holds: batch 1, 2, 7; seq 1, 2, 7, 33 (answers against eager)" in ln
                                  for ln in said), lines
    onnx_props = from_props({p.key: p.value for p in onnx.load(str(tmp_path / "out" / "model.onnx")).metadata_props})
    recorded = Certificate.from_json(onnx_props[CERTIFICATE_KEY])
    assert recorded.holds and [a.sizes for a in recorded.axes] == [[1, 2, 7], [1, 2, 7, 33]]
    assert recorded.against == "eager"
    for name in ("model.onnx", "model.torchscript.pt"):
        shown = ptx("inspect", str(tmp_path / "out" / name))
        assert shown.returncode == 0, shown.stderr
        # the recorded weights still match: the certificate lies outside the digest
        assert "matches its recorded ptx.weights_sha256" in shown.stdout, shown.stdout
        assert "shape certificate (at export): holds: batch 1, 2, 7; seq 1, 2, 7, 33" in shown.stdout, shown.stdout
    checked = ptx("verify", str(tmp_path / "out" / "model.onnx"),
                  "--max-shape", "seq=20", "--json")
    assert checked.returncode == 0, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["shape_certificate"]["holds"] and doc["shape_certificate"]["axes"][1]["sizes"] == [1, 2, 7, 20]
    assert "shape certificate: holds: batch 1, 2, 7; seq 1, 2, 7, 20 (runs and output shapes)" in doc["notes"]


def test_max_shape_names_a_symbol(tmp_path):
    with pytest.raises(PtxError, match="--max-shape tokens=...: no input has a symbolic dim 'tokens'"):
        _export(Good(), tmp_path, formats=["onnx"], max_sizes={"tokens": 9})


# -- at verify, a file of the user's own --------------------------------------------------------------


def _fixed_reshape_onnx(path):
    """x [batch, seq, 4] -> Reshape to [-1, 8, 4]: a graph that runs only at seq 8 (and multiples)."""
    shape = numpy_helper.from_array(np.array([-1, 8, 4], np.int64), "shape")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"], name="fix_seq"),
         helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)],
        "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])], [shape, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime reads
    onnx.save(model, str(path))
    return path


def test_verify_names_the_axis_a_users_file_fixed_and_its_reshape(tmp_path):
    path = _fixed_reshape_onnx(tmp_path / "fixed.onnx")
    assert onnx_fixing_nodes(path, 8) == ["Reshape node 'fix_seq' (shape constant [-1, 8, 4])"]
    result = ptx("verify", str(path), "--backends", "ort-cpu", "--json")
    doc = json.loads(result.stdout)
    certificate = doc["shape_certificate"]
    assert not certificate["holds"], certificate
    seq = next(a for a in certificate["axes"] if a["symbol"] == "seq")
    assert seq["status"] == FIXED and "seq=1" in seq["detail"], seq
    assert "8 is a constant of Reshape node 'fix_seq' (shape constant [-1, 8, 4])" in seq["where"], seq


# -- the model's own bound: sizes eager itself refuses --------------------------------------------------


class Strided(nn.Module):
    """Downsamples 8 times (a stem of stride 4, a stage of stride 2) as ConvNext's stages do: eager
    refuses an image under 8 pixels, which no export can change."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, stride=4)
        self.stage = nn.Conv2d(4, 4, 2, stride=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


class Positions(nn.Module):
    """A learned position table of 16 rows (BERT's 512): a sequence longer than 16 is refused by eager."""

    def __init__(self):
        super().__init__()
        self.positions = nn.Embedding(16, 4)

    def forward(self, x):
        return x + self.positions(torch.arange(x.shape[1]))


def _certificate_line(module, example, tmp_path, declared: str, **options) -> str:
    """The shape certificate line export says for ``module`` (seeded) declared as ``declared``."""
    torch.manual_seed(0)
    lines = []
    export_module(module, example, tmp_path / "out", inputs=[declared], formats=["onnx"],
                  force=True, log=lines.append, **options)
    return next(ln for ln in lines if "shape certificate:" in ln)


def test_sizes_eager_refuses_are_the_models_bound_not_an_axis_the_export_fixed(tmp_path):
    # ConvNext's stem refused 1, 2 and 7 pixels and the certificate said FIXED with "the code turns
    # that size into a constant", which was false: the module takes 8 pixels and up.
    said = _certificate_line(Strided(), torch.randn(1, 3, 32, 32), tmp_path, "x=batchx3xhxw")
    assert "holds: batch 1, 2, 7 (answers against eager)" in said and "FIXED" not in said, said
    assert "h: the model itself refuses h=1, 2, 7 (RuntimeError: " in said, said
    assert "its bound, not the export's: --min-shape h=SIZE tries sizes from SIZE up" in said, said
    # verify does not try the recorded bound's sizes through the file again, and says it as export did
    model = str(tmp_path / "out" / "model.onnx")
    checked = ptx("verify", model, "--json")
    assert checked.returncode == 0, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["shape_certificate"]["holds"], doc["shape_certificate"]
    assert [a["refused"] for a in doc["shape_certificate"]["axes"]] == [[], [1, 2, 7], [1, 2, 7]]
    # --min-shape tries the smallest size the model takes, the next, and a prime above them
    started = ptx("verify", model, "--min-shape", "h=8", "--min-shape", "w=16")
    assert "shape certificate: holds: batch 1, 2, 7; h 8, 9, 11; w 16, 17, 19 (runs and output shapes)" in \
        started.stdout, started.stdout + started.stderr
    # a --max-shape inside the recorded bound is the model's, not a verdict on the file: said, not tried
    inside = ptx("verify", model, "--max-shape", "h=3")
    assert inside.returncode == 2 and "--max-shape h=3: the model itself refuses h=1, 2, 7 (export's shape " \
        "certificate, recorded in model.onnx): give a size above 7" in inside.stderr, inside.stderr
    said = _certificate_line(Strided(), torch.randn(1, 3, 32, 32), tmp_path, "x=batchx3xhxw",
                             min_sizes={"h": 8, "w": 8})
    assert "shape certificate: holds: batch 1, 2, 7; h 8, 9, 11; w 8, 9, 11 (answers against eager)" in said, said
    below = ptx("verify", model, "--min-shape", "h=8", "--max-shape", "h=4")
    assert below.returncode == 2 and "--max-shape h=4 is below --min-shape h=8" in below.stderr, below.stderr


def test_a_fixed_batch_does_not_hide_the_models_bound_and_nothing_tried_is_not_said_to_hold(tmp_path):
    # x=1x3xhxw: every probe is an h or w the model refuses, which read as "fails at every size" and
    # raised eager's raw error; the model takes its example (and 64 pixels), so each is its bound, and a
    # certificate that tried no size through the file does not say 'holds'.
    said = _certificate_line(Strided(), torch.randn(1, 3, 32, 32), tmp_path, "x=1x3xhxw")
    assert "shape certificate: no size tried through the file; h: the model itself refuses h=1, 2, 7" in said, said
    assert "--min-shape h=SIZE tries sizes from SIZE up (a SIZE above 7)" in said and "holds" not in said, said
    # a --min-shape still under the model's bound reads as such
    said = _certificate_line(Strided(), torch.randn(1, 3, 32, 32), tmp_path, "x=1x3xhxw", min_sizes={"h": 3, "w": 8})
    assert "holds: w 8, 9, 11 (answers against eager); h: the model itself refuses h=3, 4, 7" in said, said
    assert "(a SIZE above 7)" in said, said


def test_a_max_shape_past_the_models_own_table_is_its_bound(tmp_path):
    # BERT's 512 positions at --max-shape seq=600: eager refuses it, which is the model's bound, said as
    # such, not 'the export fixed seq'; the sizes it takes are still certified.
    said = _certificate_line(Positions(), torch.randn(1, 8, 4), tmp_path, "x=batchxseqx4", max_sizes={"seq": 20})
    assert "holds: batch 1, 2, 7; seq 1, 2, 7 (answers against eager)" in said, said
    assert "seq: the model itself refuses seq=20 (" in said and "its bound, not the export's" in said, said
    assert "--min-shape" not in said and "FIXED" not in said, said
    past = ptx("verify", str(tmp_path / "out" / "model.onnx"), "--max-shape", "seq=25")
    assert past.returncode == 2 and "the model itself refuses seq=20" in past.stderr, past.stderr
    assert "give a size under 20" in past.stderr, past.stderr


# -- the inputs export makes: two symbols of one size, a minimum length, values the model takes -------


class Boxes(nn.Module):
    """LayoutLM's bbox: a box's width (x1 - x0) indexes a table, so that generated boxes (x1 below x0)
    are refused; --range x=0,1 makes boxes it takes."""

    def __init__(self):
        super().__init__()
        self.width = nn.Embedding(8, 3)

    def forward(self, x):
        return self.width(x[..., 1] - x[..., 0])


def _exported(module, declared: str, tmp_path, **options) -> list[str]:
    torch.manual_seed(0)
    lines = []
    export_module(module, None, tmp_path / "out", inputs=[declared], formats=["onnx"], force=True,
                  log=lines.append, **options)
    return lines


def test_outputs_follow_the_symbol_they_have_where_two_symbols_start_at_one_size(tmp_path):
    # h and w were both made 64 then 66, so that an output's w read as h: a plain Conv2d was refused
    # as "FIXED"; each symbol now moves by its own step.
    said = _exported(nn.Conv2d(3, 4, 3, padding=1), "x=batchx3xhxw", tmp_path)
    assert "outputs output float32 [batch, 4, h, w]" in said[0], said
    assert any("shape certificate: holds: batch 1, 2, 7; h 1, 2, 7; w 1, 2, 7" in ln for ln in said), said


def test_the_users_shape_min_shape_and_range_make_every_input_export_runs(tmp_path):
    # a model under a minimum length (wav2vec2's strided convolutions): its outputs are learned at
    # --min-shape (or --shape), and the sizes under it are its bound
    strided = nn.Conv1d(1, 2, 10)
    at_min = _exported(strided, "x=batchx1xsamples", tmp_path, min_sizes={"samples": 16})
    assert "outputs output float32 [batch, 2, output_2]" in at_min[0], at_min
    assert any("holds: batch 1, 2, 7; samples 16, 17, 19" in ln for ln in at_min), at_min
    shaped = _exported(strided, "x=batchx1xsamples", tmp_path, plan={"shapes": {"samples": "64"}})
    assert any("samples: the model itself refuses samples=1, 2, 7" in ln for ln in shaped), shaped
    # values the model takes, as --range makes them
    with pytest.raises(PtxError, match="or shape the inputs it takes with --shape, --min-shape, --range or --value"):
        _exported(Boxes(), "x=batchxseqx2:int64", tmp_path)
    ranged = _exported(Boxes(), "x=batchxseqx2:int64", tmp_path, plan={"ranges": {"x": "0,1"}})
    assert "outputs output float32 [batch, seq, 3]" in ranged[0], ranged
    # --shape at the largest size it takes (a table of 16 positions): the second run steps down, not past it
    at_most = _exported(Positions(), "x=batchxseqx4", tmp_path, plan={"shapes": {"seq": "16"}})
    assert "outputs output float32 [batch, seq, 4]" in at_most[0], at_most


def test_verify_fails_where_the_file_refuses_a_max_shape_the_user_will_feed(tmp_path):
    # "does NOT hold" then "all agree" and exit 0 let CI pass a model that refuses the size it will be fed
    _certificate_line(Positions(), torch.randn(1, 8, 4), tmp_path, "x=batchxseqx4")
    said = ptx("verify", str(tmp_path / "out" / "model.onnx"), "--max-shape", "seq=20")
    assert said.returncode == 1, said.stdout + said.stderr
    last = said.stdout.strip().splitlines()[-1]
    assert last.startswith("SHAPES: the shape certificate does NOT hold: seq: the runtime refuses seq=20"), last


class Windowed(nn.Module):
    """transformers' Swin: an image smaller than the window shrinks the layer's window_size, and keeps it,
    on its way to refusing the size; every later size was then run by another model."""

    def __init__(self):
        super().__init__()
        self.window = 4

    def forward(self, x):
        if x.shape[-1] < self.window:
            self.window = x.shape[-1]
            raise RuntimeError("an image smaller than the window")
        return x.sum(-1, keepdim=True) * self.window


def test_a_module_a_refusal_changed_is_put_back_before_the_next_size():
    from ptx.export.certificate import eager_bounds

    module = Windowed()
    sig = Signature((TensorSig("x", "float32", ("batch", 3, "w"), 0),), ())
    tried = probes(sig, plan_inputs(sig))
    bounds = eager_bounds(module, sig, tried, [torch.rand(2, 3, 16)])
    assert bounds["w"].refused == [1, 2] and module.window == 4, (bounds, module.window)


class Shifting(nn.Module):
    """transformers' Swin at an image no larger than its window: the shift is set to 0 and kept, on a run
    that succeeds. Later runs, and the exporters' trace, then saw another model than the user's."""

    def __init__(self):
        super().__init__()
        self.shift = 2

    def forward(self, x):
        if x.shape[-1] <= 4:
            self.shift = 0
        return x * (1 + self.shift)


def test_a_module_a_run_changed_is_put_back_and_its_size_dependence_found(tmp_path):
    # before: the probe at w=1 set shift to 0 for good, every later answer and the trace agreed on the
    # changed model, and the export passed; the model's answers do change with w, which is the finding
    module = Shifting()
    with pytest.raises(ValidationError, match=r"w: CHANGES THE ANSWERS: at w=1"):
        _exported(module, "x=batchx3xw", tmp_path)
    assert module.shift == 2



class Counting(nn.Module):
    """Keeps how many times it ran, and answers by it: every run changes it, and succeeds."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


def test_each_validation_case_meets_the_module_as_the_user_made_it(tmp_path):
    # before: the attributes were put back after the probes but not between the two validation cases, so
    # batch 5's eager answer came from the count batch 3 left (2x), and the exported file (1x) was refused
    said = _exported(Counting(), "x=batchx4", tmp_path)
    assert any("worst |diff| vs eager 0.00e+00" in line for line in said), said

class Heads(nn.Module):
    """16 positions, and a view into 2 heads of 8: a Reshape constant of 8, the size verify's cases run
    seq at, is no fixed axis of a model that takes 16."""

    def __init__(self):
        super().__init__()
        self.positions = nn.Embedding(16, 16)

    def forward(self, x):
        h = x + self.positions(torch.arange(x.shape[1]))
        return h.view(h.shape[0], h.shape[1], 2, 8).sum((2, 3))


def test_a_refusal_past_a_table_is_not_blamed_on_a_constant_that_holds_verifys_size(tmp_path):
    torch.manual_seed(0)
    export_module(Heads(), None, tmp_path / "out", inputs=["x=batchxseqx16"], formats=["onnx"],
                  log=lambda _: None)
    said = ptx("verify", str(tmp_path / "out" / "model.onnx"), "--max-shape", "seq=20")
    last = said.stdout.strip().splitlines()[-1]
    assert said.returncode == 1 and last.startswith("SHAPES: the shape certificate does NOT hold: seq: the runtime "
                                                    "refuses seq=20"), last
    assert "FIXED" not in last and "is a constant of" not in last, last


class Stride4(nn.Module):
    """A UNet's skip connection over two poolings: it takes sizes divisible by 4 only (64, 128; not 66, 62)."""

    def forward(self, x):
        down = nn.functional.avg_pool2d(nn.functional.avg_pool2d(x, 2), 2)
        return x + nn.functional.interpolate(down, scale_factor=4.0)


def test_a_model_that_takes_multiples_of_its_stride_exports_with_dynamic_sizes(tmp_path):
    # its outputs were learned at 64 then 66 and 68 (refused), and its second validation case was at 66
    said = _exported(Stride4(), "x=batchx1xhxw", tmp_path)
    assert "outputs output float32 [batch, 1, h, w]" in said[0], said
    assert any("h 64, 128; w 64, 128" in ln for ln in said), said
