"""Issue 57, items 5, 6 and 8 ("locate"): --locate on models made here. A report without the
reference's row and a --repro folder that cannot be made are one line, never a traceback; --against
locates an int8 file against its f32 source both ways round, the pair judged by the reduced rule; a
reduced row is triaged on the file it ran (openvino-int8 on NNCF's file); every command verify and
--locate print after a table runs as printed, and the --keep-f32 list offered is what export keeps."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptx.infer.runtime.openvino_runner import unavailable as openvino_unavailable
from ptx_command import ptx

TIMEOUT = 300


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]


def save(nodes, inputs, outputs, inits, path: Path) -> Path:
    made = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, inits),
                             opset_imports=[helper.make_opsetid("", 17)])
    made.ir_version = 8
    onnx.checker.check_model(made)
    onnx.save(made, str(path))
    return path


def weights(**arrays) -> list:
    return [numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in arrays.items()]


def conv_bn_net(path: Path) -> Path:
    """Conv -> BatchNormalization -> Relu -> Conv -> Relu -> pool -> Gemm: the batch norm is folded
    into its convolution by both quantizers (ORT's pre-processing, NNCF's OpenVINO graph)."""
    rng = np.random.default_rng(0)
    c = 8
    inits = weights(w1=rng.normal(0, 0.3, (c, 3, 3, 3)), b1=rng.normal(0, 0.1, c), g=rng.uniform(0.5, 3, c),
                    be=rng.normal(0, 0.2, c), m=rng.normal(0, 0.2, c), v=rng.uniform(0.2, 1.5, c),
                    w2=rng.normal(0, 0.3, (c, c, 3, 3)), fw=rng.normal(0, 0.3, (4, c)), fb=rng.normal(0, 0.1, 4))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "be", "m", "v"], ["bn1"], name="bn1"),
             helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1, name="fc")]
    return save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits, path)


def outlier_net(path: Path) -> Path:
    """A classifier whose first Gemm holds one outlier weight per output row, read from an input the
    Mul before it zeroes: per-channel int8 scales each row by the outlier and its other weights round
    to 0, so int8 loses the labels on any input (NOT USABLE), and keeping that Gemm in f32 restores them."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (8, 16)).astype(np.float32)
    w[:, 0] = 200.0
    mask = np.ones(16, np.float32)
    mask[0] = 0
    inits = weights(mask=mask, fw=w, fb=np.zeros(8), fw2=rng.normal(0, 1, (4, 8)), fb2=np.zeros(4))
    nodes = [helper.make_node("Mul", ["x", "mask"], ["xm"], name="drop_first"),
             helper.make_node("Gemm", ["xm", "fw", "fb"], ["h"], transB=1, name="fc"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "fw2", "fb2"], ["logits"], transB=1, name="fc2")]
    return save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits, path)


def resize_net(path: Path) -> Path:
    """Resize (linear, align_corners, scale 1.7): onnx.reference computes it otherwise than ONNX Runtime."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"], name="double"),
             helper.make_node("Resize", ["doubled", "", "scales"], ["resized"], name="upsample", mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("Relu", ["resized"], ["y"], name="relu")]
    return save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 5, 5])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 8, 8])],
                weights(two=2.0, scales=[1, 1, 1.7, 1.7]), path)


@pytest.fixture(scope="module")
def bn_net(tmp_path_factory) -> Path:
    """net.onnx with its int8 twins beside it (net.int8.onnx; net.openvino-int8.onnx where OpenVINO runs)."""
    folder = tmp_path_factory.mktemp("bn_net")
    conv_bn_net(folder / "net.onnx")
    formats = "onnx-int8" + (",openvino-int8" if openvino_unavailable() is None else "")
    made = ptx("export", folder / "net.onnx", "--format", formats)
    assert made.returncode == 0, made.stdout + made.stderr
    return folder


def test_locate_without_the_reference_row_in_the_table(tmp_path):
    """Item 8: --backends naming only another backend leaves the reference's row out of the table;
    locate took its label from that row (AttributeError on None). It traces all the same."""
    resize_net(tmp_path / "resize.onnx")
    result = ptx("verify", tmp_path / "resize.onnx", "--backends", "onnx.reference", "--strict", "--locate")
    no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "origin: node upsample (Resize)" in result.stdout, result.stdout
    assert "where it is born: onnx.reference vs ort-cpu" in result.stdout, result.stdout


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, a folder no one can make folders in")
def test_a_repro_folder_that_cannot_be_made_is_one_line_before_the_search(tmp_path):
    """Item 8: `--repro /proc/nope` passed the permission check (root may write anywhere, on paper)
    and was a traceback after the whole search; it is one line, exit 2, before verify runs."""
    resize_net(tmp_path / "resize.onnx")
    result = ptx("verify", tmp_path / "resize.onnx", "--strict", "--locate", "--repro", "/proc/nope")
    no_traceback(result)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: --repro /proc/nope: a folder cannot be made in /proc"), line
    assert "running" not in result.stderr and not result.stdout  # refused before the search


@pytest.mark.parametrize("way", ["int8 file against its f32 source", "f32 file against its int8 twin"])
def test_against_locates_an_int8_file_and_its_source_both_ways(bn_net, way):
    """Item 5: `ptx verify net.int8.onnx --against net.onnx --locate`, the command verify offers, exited 2
    ("open it at int8 (--precision int8)"), and the --against row was labelled f32 and judged by
    atol 1e-4. The pair is judged by the reduced rule whichever file is int8, and triaged on the two
    files: the f32 one the reference side, the int8 one the reduced side."""
    f32, int8 = bn_net / "net.onnx", bn_net / "net.int8.onnx"
    first, other = (int8, f32) if way.startswith("int8") else (f32, int8)
    result = ptx("verify", first, "--against", other, "--backends", "ort-cpu", "--locate", "--json")
    no_traceback(result)
    assert result.returncode != 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    [row] = [r for r in doc["rows"] if r["backend"].startswith(f"{other.name} (")]
    assert row["precision"] == "int8", row
    assert row["status"] in ("PASS", "NOT USABLE") and not row["failures"], row
    [triaged] = [t for t in doc["triage"] if t["row"] == row["backend"]]
    assert triaged["file"] == int8.name and triaged["reference"] == "ort-cpu", triaged
    assert triaged["compared"] > 0


def test_a_reduced_row_is_triaged_on_the_file_it_ran(bn_net):
    """Item 6: the openvino-int8 row ran net.openvino-int8.onnx (NNCF's) and was triaged on net.int8.onnx
    (ONNX Runtime's quantizer's); each row is triaged on its own file, by its own runtime."""
    if openvino_unavailable():
        pytest.skip(f"openvino is not installed here: {openvino_unavailable()}")
    result = ptx("verify", bn_net / "net.onnx", "--backends", "ort-cpu-int8,openvino-int8", "--locate", "--json")
    no_traceback(result)
    doc = json.loads(result.stdout)
    files = {t["row"]: (t["file"], t["reference"]) for t in doc["triage"]}
    assert files == {"ort-cpu-int8": ("net.int8.onnx", "ort-cpu"),
                     "openvino-int8": ("net.openvino-int8.onnx", "openvino")}, files


def offered(text: str) -> list[str]:
    """The commands a verify or --locate printed: each "where ...:", "then ...:" and "or:" line ends
    with one, from its "ptx " on."""
    return [ln[ln.index(": ptx ") + 2:] for ln in text.splitlines()
            if ln.startswith(("where ", "then", "or: ")) and ": ptx " in ln]


def run_as_printed(command: str, cwd: Path) -> subprocess.CompletedProcess:
    assert command.startswith("ptx "), command
    ran = ptx(*command.split()[1:], cwd=cwd)
    no_traceback(ran)
    assert ran.returncode != 2, (command, ran.stdout[-2000:], ran.stderr[-2000:])
    return ran


def test_every_command_offered_after_a_failing_f32_row_runs_as_printed(tmp_path):
    """Item 5: the line under a DISAGREE ended "[--repro DIR]", which click refuses as an argument."""
    resize_net(tmp_path / "resize.onnx")
    result = ptx("verify", tmp_path / "resize.onnx", "--strict")
    assert result.returncode == 1, result.stdout + result.stderr
    commands = offered(result.stdout)
    assert commands and all("--locate" in c for c in commands), result.stdout
    for command in commands:
        ran = run_as_printed(command, tmp_path)
        assert "origin: node upsample" in ran.stdout, ran.stdout


def test_every_command_offered_for_a_not_usable_int8_row_runs_and_keeps_what_it_names(tmp_path):
    """Items 5 and 6: a NOT USABLE int8 row offers its triage; the triage offers `ptx export --keep-f32
    auto` and `--keep-f32 NODE,...`; each runs as printed, and the nodes named are the ones export
    keeps in f32 (their weights f32 initializers, recorded in ptx.keep_f32), never every int8 node
    (which leaves nothing in int8, and export refuses)."""
    outlier_net(tmp_path / "out.onnx")
    made = ptx("export", tmp_path / "out.onnx", "--format", "onnx-int8")
    assert made.returncode == 0, made.stdout + made.stderr
    verdict = ptx("verify", tmp_path / "out.onnx", "--backends", "ort-cpu,ort-cpu-int8")
    # named, a row below its precision's rule fails (else NOT USABLE): the offer is its triage alone
    assert re.search(r"int8 .*(NOT USABLE|FAIL): logits: argmax agrees on", verdict.stdout), verdict.stdout
    [triage] = offered(verdict.stdout)
    assert triage == f"ptx verify {tmp_path / 'out.onnx'} --backends ort-cpu-int8 --locate", triage
    located = run_as_printed(triage, tmp_path)
    exports = offered(located.stdout)
    assert [c.split(" --keep-f32 ")[0] for c in exports] == [f"ptx export {tmp_path / 'out.onnx'} --format onnx-int8"] * 2
    assert exports[0].endswith(" --keep-f32 auto"), exports
    named = exports[1].split(" --keep-f32 ")[1].split(",")
    assert "fc" in named and set(named) != {"fc", "fc2", "drop_first"}, named  # some node is left in int8
    for command in exports:
        run_as_printed(command, tmp_path)
    # the last one run is the explicit list: the int8 file keeps exactly those nodes in f32
    proto = onnx.load(str(tmp_path / "out.int8.onnx"))
    assert {p.key: p.value for p in proto.metadata_props}["ptx.keep_f32"] == ",".join(named)
    made_by = {o: n.op_type for n in proto.graph.node for o in n.output}
    kinds = {t.name: t.data_type for t in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.name in named):
        held = [i for i in node.input[1:] if i in kinds or i in made_by]
        assert all(kinds.get(i) == TensorProto.FLOAT and made_by.get(i) != "DequantizeLinear" for i in held), \
            (node.name, list(node.input))
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)  # the rest is still int8


def test_the_export_commands_offered_calibrate_on_the_file_the_int8_file_was_made_with(tmp_path):
    """Item 4: every "then:" line is a command that runs, and runs as the file was made: one exported
    with --calibration cal.npz offered `--keep-f32 auto` calibrated on generated inputs instead. The
    int8 file records its calibration file (and digest); the offer repeats it, or says it is gone."""
    outlier_net(tmp_path / "out.onnx")
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, x=np.random.default_rng(0).random((24, 16), dtype=np.float32))
    made = ptx("export", tmp_path / "out.onnx", "--format", "onnx-int8", "--calibration", calibration)
    assert made.returncode == 0, made.stdout + made.stderr
    located = ptx("verify", tmp_path / "out.onnx", "--backends", "ort-cpu-int8", "--locate")
    exports = offered(located.stdout)
    assert exports and all(f" --calibration {calibration} --keep-f32 " in c for c in exports), located.stdout
    run_as_printed(exports[0], tmp_path)
    calibration.rename(tmp_path / "elsewhere.npz")
    located = ptx("verify", tmp_path / "out.onnx", "--backends", "ort-cpu-int8", "--locate")
    said = [ln for ln in located.stdout.splitlines() if ln.startswith("then")]
    assert said and f"(the int8 file was calibrated on {calibration}, not found here: add --calibration with it)" \
        in said[0] and "--calibration " + str(calibration) not in offered(located.stdout)[0], located.stdout


def test_the_keep_list_offered_leaves_a_node_with_an_int8_kernel_in_int8():
    """Item 4 (every "then:"/"or:" line runs): convnet's int8 file, made the "Gemm/MatMul int8, Conv f32"
    way, triaged by `ptx verify convnet --backends ort-cpu-int8 --locate`, offered `ptx export convnet
    --format onnx-int8 --keep-f32 node_linear,node_linear_1,node_Reshape_7`: both Gemms in f32 leave only
    a Reshape and a Relu, which onnxruntime quantizes only beside a quantized node, so export refused it
    (exit 2: "the quantizer leaves nothing of convnet in int8"). Dropping the last name alone was not
    enough; the list offered leaves a node with an int8 kernel of its own (Conv, Gemm, MatMul) in int8."""
    from types import SimpleNamespace

    from ptx.cli.verify import keep_commands
    from ptx.infer.locate.triage import Blame, Triage

    def blame(node: str, op: str, born: float) -> Blame:
        return Blame(node, op, f"{node}_out", born, 0.0, 0.1, 1.0, None, True)

    found = Triage("ort-cpu-int8", "ort-cpu", "model.int8.onnx", "64 real test samples",
                   [blame("node_linear", "Gemm", 7.6e-3), blame("node_linear_1", "Gemm", 6.5e-3),
                    blame("node_Reshape_7", "Reshape", 5.2e-3), blame("node_relu_2", "Relu", 1.6e-3)])
    run = SimpleNamespace(is_run=True, name="convnet", run_dir=Path("runs/convnet"), precision="f32")
    assert keep_commands(found, run, None) == ["then: ptx export convnet --format onnx-int8 --keep-f32 auto",
                                               "or: ptx export convnet --format onnx-int8 --keep-f32 node_linear"]
    # a file whose only int8 node of its own is kept by the whole list offers auto alone
    alone = Triage("ort-cpu-int8", "ort-cpu", "model.int8.onnx", "case", [blame("fc", "Gemm", 0.1),
                                                                           blame("relu", "Relu", 0.01)])
    assert keep_commands(alone, run, None) == ["then: ptx export convnet --format onnx-int8 --keep-f32 auto"]


def test_against_offers_its_triage_where_the_pair_is_not_usable(tmp_path):
    """Item 5: an --against row that pairs an int8 file with its source and misses the reduced rule
    offers the command that triages the pair, and it runs as printed."""
    outlier_net(tmp_path / "out.onnx")
    assert ptx("export", tmp_path / "out.onnx", "--format", "onnx-int8").returncode == 0
    verdict = ptx("verify", tmp_path / "out.int8.onnx", "--against", tmp_path / "out.onnx", "--backends", "ort-cpu")
    no_traceback(verdict)
    assert "out.onnx (ort-cpu)  int8" in verdict.stdout and "NOT USABLE" in verdict.stdout, verdict.stdout
    commands = offered(verdict.stdout)
    assert f"ptx verify {tmp_path / 'out.int8.onnx'} --against {tmp_path / 'out.onnx'} --locate" in commands, commands
    for command in commands:
        ran = run_as_printed(command, tmp_path)
        assert "triage: out.onnx (ort-cpu) against ort-cpu, out.int8.onnx" in ran.stdout, ran.stdout


def test_an_int8_file_verified_alone_offers_the_triage_against_its_source_and_it_locates(tmp_path):
    """The command `ptx verify out.int8.onnx` offered (`--backends openvino-int8 --locate` on the int8 file
    itself) located nothing: its rows run it against its own runtime at int8 (max abs 0) while their
    verdict is against the f32 file. The offer is now the pair's triage, and --locate on the file alone
    says where to go."""
    outlier_net(tmp_path / "out.onnx")
    assert ptx("export", tmp_path / "out.onnx", "--format", "onnx-int8").returncode == 0
    verdict = ptx("verify", tmp_path / "out.int8.onnx")
    no_traceback(verdict)
    assert "NOT USABLE" in verdict.stdout, verdict.stdout
    assert offered(verdict.stdout) == [f"ptx verify {tmp_path / 'out.int8.onnx'} --against {tmp_path / 'out.onnx'} "
                                       "--locate"], verdict.stdout
    ran = run_as_printed(offered(verdict.stdout)[0], tmp_path)
    assert "triage: out.onnx (ort-cpu) against ort-cpu, out.int8.onnx" in ran.stdout and "keep in f32: " in ran.stdout
    alone = ptx("verify", tmp_path / "out.int8.onnx", "--locate")
    assert "nothing to triage on out.int8.onnx alone: its rows run it against its own runtime at int8; give " \
           "--against the f32 file it was made from" in alone.stdout, alone.stdout
    # with reference tensors kept beside the f32 file, each row label is triaged once (before: twice, its
    # row against the stored reference being a second row of the same file)
    assert ptx("verify", tmp_path / "out.onnx", "--save-reference").returncode == 0
    located = ptx("verify", tmp_path / "out.onnx", "--backends", "ort-cpu-int8", "--locate")
    assert located.stdout.count("triage: ort-cpu-int8 against ort-cpu") == 1, located.stdout


def test_a_weight_is_compared_with_the_f32_weight_it_came_from_after_a_fold(tmp_path):
    """Item 6: onnxruntime's pre-processing folds the batch norm into the convolution before it
    quantizes, so the int8 file's conv1 weight is the folded one; compared with the unfolded f32
    weight its "rounding error" was the fold (rel 1.3 here). Folded the same way first, it is int8's
    rounding alone."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ptx.contract.schema import Tolerance
    from ptx.infer.locate.graph import LocateGraph
    from ptx.infer.locate.origin import locate
    from ptx.infer.locate.sweep import Side

    conv_bn_net(tmp_path / "net.onnx")
    quant_pre_process(str(tmp_path / "net.onnx"), str(tmp_path / "pre.onnx"))

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.left = iter([{"x": np.random.default_rng(i).normal(size=(1, 3, 16, 16)).astype(np.float32)}
                              for i in range(16)])

        def get_next(self):
            return next(self.left, None)

    quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "net.int8.onnx"), Samples(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    proto = onnx.load(str(tmp_path / "net.int8.onnx"))
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded, as on real models
    feeds = {"x": np.random.default_rng(1).normal(size=(5, 3, 16, 16)).astype(np.float32)}
    with LocateGraph.open(tmp_path / "net.onnx") as f32, LocateGraph.open(tmp_path / "net.int8.onnx") as int8:
        found = locate(f32, Side(f32, feeds), Side(int8, feeds, "ort-cpu-int8"),
                       lambda name, dtype: Tolerance(1e-4, 1e-3), "case", int8).to_dict()
    steps = [found["origin"] or {}, found["first_departure"] or {}, *(found["added"] or [])]
    w1 = next(i for step in steps for i in step.get("inputs", ()) if i["name"] == "w1")
    assert w1["folded"] == ["bn1"] and w1["stored"] == "int8", w1
    assert w1["rel"] < 0.05, w1  # int8's rounding of the folded weight; against the unfolded one it was > 1


def test_a_batch_norm_parameter_behind_an_identity_is_folded_as_its_value(tmp_path):
    """Item 6: torch's TorchScript-based exporter writes a parameter equal to another once, the second
    an Identity of the first (b2.bias = Identity(b1.bias), both zeros); locate read only an initializer,
    a DequantizeLinear or a Cast of one as a weight, so the batch norm's beta was None and the folded
    bias it compared with the other file's was NaN ("c3.bias ... differs between the two files: max abs
    0.00e+00, rel 0.0e+00; ... max |value| nan"). Read through the Identity, it is the bias the fold writes."""
    import onnxruntime as ort

    from ptx.infer.locate.graph import LocateGraph
    from ptx.infer.locate.pairs import Counterparts

    rng = np.random.default_rng(0)
    c = 4
    inits = weights(w=rng.normal(0, 0.3, (c, 3, 3, 3)), b=rng.normal(0, 0.1, c), g=rng.uniform(0.5, 3, c),
                    be0=rng.normal(0, 0.2, c), m=rng.normal(0, 0.2, c), v=rng.uniform(0.2, 1.5, c))
    nodes = [helper.make_node("Identity", ["be0"], ["be"], name="shared_beta"),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 8, 8])], inits, tmp_path / "net.onnx")
    options = ort.SessionOptions()  # onnxruntime's own fold (ConvBNFusion), as a file optimised by it holds it
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(str(tmp_path / "net.onnx"), options, providers=["CPUExecutionProvider"])
    with LocateGraph.open(tmp_path / "net.onnx") as f32, LocateGraph.open(tmp_path / "folded.onnx") as folded:
        assert np.array_equal(f32.weight_as_read("be"), f32.weight_as_read("be0"))
        k = f32.by_name["conv"]
        bias, norms = Counterparts.match(f32, folded).folded_weight(k, 2, f32.weight_as_read("b"))
        conv = folded.nodes[folded.by_name["conv"]]
        assert norms == ["bn"] and np.isfinite(bias).all(), bias
        np.testing.assert_allclose(bias, folded.weight_as_read(conv.input[2]), rtol=1e-5, atol=1e-6)


def test_a_piece_that_is_no_valid_model_says_why(tmp_path):
    """Item 6: "keeping Conv.5, ... in f32 could not be measured (region-10.onnx: invalid model)": a
    runtime names only the temporary file. A piece ptx cut or built that onnx.checker refuses says
    the checker's reason."""
    from ptx.errors import ModelRunError
    from ptx.infer.locate.graph import LocateGraph
    from ptx.infer.locate.sweep import Side

    resize_net(tmp_path / "resize.onnx")
    feeds = {"x": np.ones((2, 1, 5, 5), np.float32)}
    with LocateGraph.open(tmp_path / "resize.onnx") as graph:
        piece = graph.region_model([("p/", [graph.produced_at["y"]], ["y"])], {"p/resized": np.ones((2, 1, 8, 8),
                                                                                                  np.float32)})
        assert Side(graph, feeds).run(graph.save(piece), {"p/resized": np.ones((2, 1, 8, 8), np.float32)},
                                         ["p/y"])["p/y"].shape == (2, 1, 8, 8)  # a valid piece runs
        piece.graph.node[0].input[0] = "nowhere"  # reads a tensor nothing makes
        with pytest.raises(ModelRunError, match=r"region-\d+\.onnx, cut from resize\.onnx, is not a valid ONNX "
                                                r"model \(.*nowhere"):
            Side(graph, feeds).run(graph.save(piece), {"p/resized": np.ones((2, 1, 8, 8), np.float32)}, ["p/y"])


def test_against_another_models_file_offers_no_search_of_the_graph(tmp_path):
    """Item 8 of the probe: `--against` a file whose output has another shape (another model, or another
    head) printed `where it is born: ptx verify ... --locate`, whose search concluded "the difference
    needs the whole graph"; the shape is the finding, said alone."""
    four = outlier_net(tmp_path / "four.onnx")
    rng = np.random.default_rng(1)
    six = save([helper.make_node("Gemm", ["x", "fw", "fb"], ["logits"], transB=1, name="fc")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
               [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])],
               weights(fw=rng.normal(0, 1, (6, 16)), fb=np.zeros(6)), tmp_path / "six.onnx")
    verdict = ptx("verify", four, "--against", six)
    no_traceback(verdict)
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert verdict.stdout.strip().splitlines()[-1].endswith("shape [3, 6] where the reference's is [3, 4]"), \
        verdict.stdout
    assert "--locate" not in verdict.stdout, verdict.stdout
