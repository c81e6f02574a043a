"""Issue 44 item 5: reduced precision, triaged. The nodes where an int8/bf16 error is born, ranked
(infer/locate/triage.py); `ptx verify NAME --locate` prints them; `ptx export NAME --format onnx-int8
--keep-f32 auto|NODE` leaves them in f32 (onnxruntime's nodes_to_exclude)."""
import shutil

import numpy as np
import onnx
import pytest
import torch

from ptx.export.api import export_model
from ptx.infer import backends
from ptx.infer.locate.triage_run import rank_int8, triage_rows
from ptx.infer.model.target import Target
from ptx_command import ptx

PLANTED = "linear_relu_stack.2"  # mlp's middle Linear


def meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def planted(runs, tmp_path_factory):
    """mlp with one outlier weight per output row of its middle Linear, read from a hidden unit that
    is always 0 (its row of the first layer zeroed, bias -1, so ReLU gives 0): eager's answers are
    the trained ones, but per-channel int8 scales every row of that layer by the outlier, and its
    other weights round to 0. Exported to ONNX and all-int8."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(runs.trained("mlp"), root / "mlp")
    path = root / "mlp" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=False)
    state = ckpt["state_dict"]
    state["linear_relu_stack.0.weight"][0] = 0.0
    state["linear_relu_stack.0.bias"][0] = -1.0
    weight = state[f"{PLANTED}.weight"]
    weight[:, 0] = 1000 * float(weight.abs().max())
    torch.save(ckpt, path)
    export_model("mlp", ["onnx", "onnx-int8"], checkpoint=path, log=lambda _: None)
    return root


def test_triage_ranks_the_planted_layer_first(planted):
    [found] = triage_rows(Target.of("mlp", root=planted), ["ort-cpu-int8"], notice=lambda _: None)
    first = found.keep()[0]
    assert first.module == PLANTED and first.op == "Gemm", found.text()
    # computed alone from the f32 side's input, it departs by itself: born there, not carried in
    assert first.born > 0.5, found.text()
    assert "keep in f32: " + first.node in found.text()
    # keeping it (and the next worst) in f32, measured on the int8 file itself, lowers the output's error
    assert found.kept["after"] < 0.5 * found.kept["before"], found.text()
    assert "measured: output rel error" in found.text()


def test_keep_f32_auto_restores_label_agreement_where_int8_loses_it(planted, tmp_path):
    shutil.copytree(planted / "mlp", tmp_path / "mlp")
    ckpt = tmp_path / "mlp" / "checkpoint.pt"
    said = []
    [before] = export_model("mlp", ["onnx-int8"], checkpoint=ckpt, log=said.append,
                            force=True)
    assert before.judgement.unusable, before.judgement.describe()  # the planted outlier breaks int8's labels
    [after] = export_model("mlp", ["onnx-int8"], checkpoint=ckpt, log=said.append,
                           force=True, keep_f32="auto", rank=rank_int8)
    assert not after.judgement.unusable, after.judgement.describe()
    kept = meta(after.path)["ptx.keep_f32"].split(",")
    proto = onnx.load(str(after.path))
    planted_node = next(n.name for n in proto.graph.node if n.op_type == "Gemm" and
                        any(i.startswith(f"{PLANTED}.weight") for i in n.input))
    assert planted_node in kept and len(kept) <= 4, kept
    assert any(line.startswith(f"onnx-int8   kept {len(kept)} node") and "x, medians of 20 runs" in line
               for line in said), said


def test_keep_f32_auto_says_nothing_needed_keeping_where_int8_agrees(runs, tmp_path):
    shutil.copytree(runs.trained("convnet"), tmp_path / "convnet")
    said = []
    [result] = export_model("convnet", ["onnx-int8"], checkpoint=tmp_path / "convnet" / "checkpoint.pt",
                            log=said.append, keep_f32="auto", rank=rank_int8)
    assert not result.judgement.unusable
    assert any("nothing needed keeping in f32" in line for line in said), said
    assert "ptx.keep_f32" not in meta(result.path)


def test_explicit_keep_f32_leaves_the_node_without_quantize_dequantize(planted, tmp_path):
    shutil.copytree(planted / "mlp", tmp_path / "mlp")
    int8 = onnx.load(str(planted / "mlp" / "model.int8.onnx"))
    node = next(n for n in int8.graph.node if n.op_type == "Gemm" and any(i.startswith(PLANTED) for i in n.input))
    result = ptx("export", "mlp", "--format", "onnx-int8", "--keep-f32", node.name, "--out", str(tmp_path / "mlp"),
                 "--force")
    assert result.returncode == 0, result.stderr
    assert f"kept 1 node in f32 ({node.name})" in result.stdout, result.stdout
    proto = onnx.load(str(tmp_path / "mlp" / "model.int8.onnx"))
    made = {o: n for n in proto.graph.node for o in n.output}
    [kept] = [n for n in proto.graph.node if n.name == node.name]
    # Its weight and bias reach it as f32 initializers (no DequantizeLinear), and nothing quantizes
    # its output. The activation it reads is still DequantizeLinear's: the node before it quantizes
    # its own output (onnxruntime quantizes a tensor at its producer; excluding that is its own node).
    weights = {t.name: t.data_type for t in proto.graph.initializer}
    assert [weights.get(i) for i in kept.input[1:]] == [onnx.TensorProto.FLOAT] * 2, list(kept.input)
    assert not any(i in made and made[i].op_type == "DequantizeLinear" for i in kept.input[1:])
    readers = {n.op_type for n in proto.graph.node if set(n.input) & set(kept.output)}
    assert "QuantizeLinear" not in readers, readers
    assert meta(tmp_path / "mlp" / "model.int8.onnx")["ptx.keep_f32"] == node.name
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)  # the rest is still int8


@pytest.mark.parametrize("args,says", [
    (["mlp", "--format", "onnx", "--keep-f32", "auto"], "give --format onnx-int8"),
    (["mlp", "--format", "onnx-int8", "--keep-f32", "no_such_node"], "--keep-f32 no_such_node: mlp's graph has no node"),
    (["linreg", "--format", "onnx-int8", "--keep-f32", "auto"], "regression"),
    (["mlp", "--format", "onnx-int8", "--keep-f32", ","], "give auto or NODE"),
])
def test_keep_f32_refusals_are_one_line(runs, tmp_path, args, says):
    model = args[0]
    shutil.copytree(runs.trained(model), tmp_path / model)
    result = ptx("export", *args, "--out", str(tmp_path / model), "--force")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.stderr  # a refusal


def _bf16_runs_here() -> bool:
    """openvino-bf16 is a row only where OpenVINO runs and this CPU has bf16 instructions (an AVX2-only
    EPYC has none: the row is skipped there, with its reason, and has nothing to triage)."""
    if backends.get("openvino").unavailable("cpu") is not None:
        return False
    from ptx.infer.runtime.openvino_runner import has_bf16

    return has_bf16()


@pytest.mark.parametrize("model", ["convnet", "mlp", "lstm"])
def test_verify_locate_prints_a_triage_for_the_reduced_rows(runs, tmp_path, model):
    shutil.copytree(runs.trained(model), tmp_path / model)
    export_model(model, ["onnx-int8"], checkpoint=tmp_path / model / "checkpoint.pt", log=lambda _: None)
    rows = ["ort-cpu-int8"] + (["openvino-bf16"] if _bf16_runs_here() else [])
    result = ptx("verify", model, "--root", str(tmp_path), "--backends", ",".join(rows), "--samples", "200",
                 "--locate")
    # A smoke-trained model's int8 may miss the label gate (a named row: FAIL, exit 1): triaged all the same.
    assert result.returncode == 0 or "labels agree on" in result.stdout, result.stdout + result.stderr
    for row in rows:
        assert f"triage: {row} against" in result.stdout, result.stdout
    assert result.stdout.count("keep in f32: ") == len(rows), result.stdout
    # the run folder named, so the offered command runs from anywhere
    assert f"ptx export {model} --run {tmp_path / model} --format onnx-int8 --keep-f32 auto" in result.stdout


def test_triage_compares_only_tensors_that_mean_the_same(runs, tmp_path):
    """torch's exporter numbers some tensors afresh on each export (lstm): a name made by another kind
    of node in the int8 file is not compared, and the report counts it."""
    shutil.copytree(runs.trained("lstm"), tmp_path / "lstm")
    export_model("lstm", ["onnx-int8"], checkpoint=tmp_path / "lstm" / "checkpoint.pt", log=lambda _: None)
    [found] = triage_rows(Target.of("lstm", root=tmp_path), ["ort-cpu-int8"], notice=lambda _: None)
    assert found.compared >= 1 and all(np.isfinite(b.error) for b in found.blames)
    assert [b.op for b in found.keep()] == ["Gemm"], found.text()  # dynamic quantization: only the Linear is int8


class _Judged:
    def __init__(self, agree: float):
        self.agree = agree
        self.unusable = [] if agree >= 0.99 else [f"labels agree on {agree:.1%}"]

    def describe(self) -> str:
        return f"labels agree on {self.agree:.1%}"


def _fake_quantizer(hurt: dict[str, float], nothing_alone: set[str]):
    """quantize(kept) and judge(path) over a fake graph: each node in int8 costs ``hurt[node]`` of
    label agreement; a file whose int8 nodes all sit in ``nothing_alone`` is nothing in int8 (the
    quantizer's refusal, as a MaxPool with no quantized input). Records every file written."""
    from ptx.errors import PtxError

    written: list[list[str]] = []

    def quantize(kept):
        in_int8 = [n for n in hurt if n not in kept]
        if set(in_int8) <= nothing_alone:
            raise PtxError("onnx-int8: onnxruntime's quantizer leaves nothing in int8")
        written.append(sorted(kept))
        return tuple(in_int8)

    def judge(in_int8):
        return _Judged(1.0 - sum(hurt[n] for n in in_int8))

    return quantize, judge, written


def test_keep_f32_auto_judges_each_node_by_labels_where_the_ranking_runs_dry():
    """Issue 44 item 5, a barely trained model: the ranking's next nodes would leave nothing in int8,
    though one node (not the least-error one by the ranking) can be int8 with labels kept. The search
    turns round and releases nodes one at a time, judged by labels; the file written last is the
    one that passed."""
    from ptx.export.keep_f32 import keep_auto

    hurt = {"conv": 0.008, "pool": 0.0, "conv_1": 0.004, "fc": 0.02, "fc_1": 0.008}
    quantize, judge, written = _fake_quantizer(hurt, nothing_alone={"pool"})
    # Ranked by tensor error, conv_1 before conv and fc_1: keeping fc and conv_1 leaves 1.6% flipped,
    # and keeping conv and fc_1 too leaves only the pool, which is nothing in int8.
    ranking = [("fc", 0.3), ("conv_1", 0.2), ("conv", 0.1), ("fc_1", 0.05)]
    lines: list[str] = []
    kept = keep_auto(quantize, None, {}, lambda *_: list(ranking), judge, "toy", lines.append,
                     quantizable=list(hurt))
    in_int8 = set(hurt) - set(kept.nodes)
    assert sum(hurt[n] for n in in_int8) <= 0.01 and in_int8 & {"conv", "fc_1", "conv_1"}, kept.nodes
    assert written[-1] == sorted(kept.nodes)  # the trials overwrote the file; the passing one is last
    assert any("judging each node in int8 on its own" in ln for ln in lines)
    assert any("back to f32" in ln for ln in lines) and any("stays in int8" in ln for ln in lines)


def test_keep_f32_auto_says_in_one_line_when_no_node_can_be_int8():
    from ptx.errors import PtxError
    from ptx.export.keep_f32 import keep_auto

    hurt = {"conv": 0.02, "fc": 0.03}
    quantize, judge, _ = _fake_quantizer(hurt, nothing_alone=set())
    with pytest.raises(PtxError) as caught:
        keep_auto(quantize, None, {}, lambda *_: [("fc", 0.3), ("conv", 0.2)], judge, "toy", lambda _: None,
                  quantizable=list(hurt))
    assert "with any one of the 2 nodes it judged in int8 (of 2 quantizable;" in str(caught.value)
    assert "\n" not in str(caught.value)
