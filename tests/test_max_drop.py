"""Issue 53, items 2 and 3: int8 through NNCF for OpenVINO (``--format openvino-int8``), and the user's
bound (``--max-drop X``, on a tutorial model's real test accuracy or a file's ``--metric FILE.py:FN``):
the fewest nodes kept in f32 that hold it, found by a ranking and a revert pass after which no node
left in f32 could go back to int8 alone; the file records the bound, the metric, both values, the
nodes kept and its speed. Nothing here asserts a speed: export measures it and the file says it."""
from __future__ import annotations

import re
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ptx.contract.accuracy_rule import recorded_max_drop
from ptx.errors import PtxError
from ptx.export.api import export_model
from ptx.export.bound import Bound, Held
from ptx.export.file import export_int8_file
from ptx.extras import missing_part
from ptx.infer import load
from ptx.infer.locate.triage_run import rank_int8
from ptx.infer.model.target import Target
from test_export_file import Outlier, meta, onnx_file, ptx, refused

NO_NNCF = missing_part("nncf")
needs_nncf = pytest.mark.skipif(bool(NO_NNCF), reason=NO_NNCF or "")
METRIC = textwrap.dedent('''
    from pathlib import Path

    import numpy as np

    data = np.load(Path(__file__).with_name("labelled.npz"))


    def accuracy(run):
        """Share of the labelled rows whose top score is their label."""
        return float((run({"x": data["x"]})["logits"].argmax(1) == data["y"]).mean())


    def broken(run):
        return run({"nope": data["x"]})


    def words(run):
        return "high"
''')
MAX_DROP = 0.02  # of the share above: 6 of the 300 rows


@pytest.fixture(scope="module")
def outlier(tmp_path_factory) -> Path:
    """test_export_file's Outlier as a user's ONNX file, 300 rows labelled by its own f32 answers and
    a metric file that scores them: quantizing its output Gemm (one weight column 1000 times the
    others) flips most labels, quantizing its hidden Gemm none."""
    folder = tmp_path_factory.mktemp("bound")
    path = onnx_file(Outlier(), (torch.rand(2, 8),), folder / "outlier.onnx", input_names=["x"],
                     output_names=["logits"])
    x = np.random.default_rng(7).random((300, 8), dtype=np.float32)
    np.savez(folder / "labelled.npz", x=x, y=load(path).run({"x": x})["logits"].argmax(1))
    (folder / "metric.py").write_text(METRIC)
    return path


def gemm(path: Path, layer: str) -> str:
    return next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm" and layer in n.name)


def accuracy_of(path: Path, backend: str, labelled: Path) -> float:
    data = np.load(labelled)
    model = load(path, backend, precision="int8")
    return float((model.run({"x": data["x"]})["logits"].argmax(1) == data["y"]).mean())


# -- the revert pass ------------------------------------------------------------------------------


class _Judged:
    def __init__(self, drop: float, bound: float):
        self.drop = drop
        self.unusable = [] if drop <= bound else [f"drops {drop:g}"]

    def describe(self) -> str:
        return f"drops {self.drop:g}"


def test_the_revert_pass_leaves_no_f32_node_the_bound_holds_without():
    """A toy graph whose nodes' costs interact: b alone in int8 costs 0.03, but only beside a in int8
    (a and b share a scale). The greedy search kept a, b and c; one pass returns c and b (b's cost
    is gone while a stays f32) and keeps a; the second pass finds a still needed. After it, each node
    left in f32 breaks the bound when it alone goes back to int8."""
    from ptx.export.keep_f32 import revert

    every = ["a", "b", "c", "d"]

    def cost(in_int8: set[str]) -> float:
        return 0.02 * ("a" in in_int8) + (0.03 if {"a", "b"} <= in_int8 else 0.0) + 0.001 * len(in_int8)

    written: list[list[str]] = []

    def quantize(kept):
        written.append(sorted(kept))
        return frozenset(n for n in every if n not in kept)

    def judge(in_int8):
        return _Judged(cost(in_int8), 0.01)

    lines: list[str] = []
    kept = revert(quantize, judge, ["a", "b", "c"], lines.append)
    assert kept == ["a"] and written[-1] == ["a"], (kept, written)  # the file written last is the one kept
    for node in kept:  # nothing left in f32 that could go back alone
        assert judge(quantize([n for n in kept if n != node])).unusable
    assert sum("back in int8" in ln for ln in lines) == 2 and any("a in int8" in ln and "stays in f32" in ln
                                                                 for ln in lines), lines


def test_held_is_the_bound_on_the_metric():
    bound = Bound(0.5, "accuracy on 10 real test samples", 0.9, lambda path, items=None: (0.895, None), points=100.0,
                  unit=" accuracy points")
    assert not Held(bound, 0.895).unusable and Held(bound, 0.894).unusable
    assert "0.6 accuracy points" in Held(bound, 0.894).unusable[0]
    assert recorded_max_drop(bound.strings(0.895)) == 0.5
    assert recorded_max_drop({"max_drop": "0.5", "metric": "metric.py:accuracy"}) is None  # a user's own metric


# -- a user's file and its own metric --------------------------------------------------------------


def test_max_drop_on_a_users_file_keeps_only_the_node_it_needs(outlier, tmp_path):
    """Acceptance (issue 53): after the search, quantizing any node it kept in f32 breaks the bound."""
    out = tmp_path / "ort"
    said: list[str] = []
    result = export_int8_file(outlier, "onnx-int8", out=out, max_drop=MAX_DROP,
                              metric=f"{outlier.parent / 'metric.py'}:accuracy", rank=rank_int8, log=said.append)
    strings = meta(result.path)
    kept = strings["keep_f32"].split(",")
    assert kept == [gemm(outlier, "out")], said
    assert strings["max_drop"] == f"{MAX_DROP:g}" and strings["metric"].startswith("metric.py:accuracy")
    assert float(strings["metric_f32"]) == 1.0 and float(strings["metric_int8"]) >= 1.0 - MAX_DROP
    assert float(strings["metric_int8"]) == accuracy_of(result.path, "ort-cpu", outlier.parent / "labelled.npz")  # recorded = measured on the file
    assert re.fullmatch(r"\d+\.\d\dx outlier\.onnx's speed through ONNX Runtime on the CPU, batch 16, median of "
                        r"\d+ alternating rounds, 20\d\d-\d\d-\d\d", strings["speed_vs_f32"]), strings["speed_vs_f32"]
    for node in kept:  # each kept node back in int8 (with the others kept) breaks the bound
        again = export_int8_file(outlier, "onnx-int8", out=tmp_path / node.replace("/", "_"),
                                 keep_f32=[n for n in kept if n != node], log=lambda _: None)
        assert accuracy_of(again.path, "ort-cpu", outlier.parent / "labelled.npz") < 1.0 - MAX_DROP


@needs_nncf
def test_openvino_int8_of_a_users_file_with_a_metric(outlier, tmp_path):
    """NNCF's accuracy control on the user's metric, then the revert pass: the output Gemm stays f32.
    The file is the openvino backend's int8, found beside the f32 file by verify. Both int8 formats
    named at once write both files, as for a tutorial model."""
    folder = tmp_path / "files"
    folder.mkdir()
    for name in ("outlier.onnx", "labelled.npz", "metric.py"):
        shutil.copy(outlier.parent / name, folder / name)
    done = ptx("export", "outlier.onnx", "--format", "onnx-int8,openvino-int8", "--max-drop", MAX_DROP, "--metric",
               "metric.py:accuracy", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert meta(folder / "outlier.int8.onnx")["max_drop"] == f"{MAX_DROP:g}"
    assert "NNCF quantize_with_accuracy_control: metric.py:accuracy may drop at most 0.02" in done.stdout
    # one verdict per runtime that reads the NNCF file, its own first, each by the bound it was made to hold
    said = [line.strip() for line in done.stdout.splitlines()]
    written = next(i for i, line in enumerate(said) if line.startswith("openvino-int8 ") and "outlier.openvino-int8.onnx"
                   in line)
    own, through_ort = said[written + 1], said[written + 2]
    assert own.startswith("openvino-int8 on ") and "metric.py:accuracy: 1.0000 (f32 1.0000), 0.00 below, --max-drop 0.02" in own
    assert own.endswith(": PASS") and through_ort.startswith("ort-cpu-int8 on "), done.stdout
    path = folder / "outlier.openvino-int8.onnx"
    strings = meta(path)
    recorded = json.loads(strings["verdict"])
    assert list(recorded) == ["openvino-int8", "ort-cpu-int8"] and recorded["openvino-int8"]["evidence"] == "bound"
    assert recorded["ort-cpu-int8"]["status"] in through_ort and recorded["ort-cpu-int8"]["evidence"] == "bound"
    assert (strings["precision"], strings["format"], strings["keep_f32"]) == ("int8", "openvino-int8",
                                                                            gemm(outlier, "out"))
    assert strings["quantization"].startswith("NNCF ") and "7-bit int8 weights" in strings["quantization"]
    assert float(strings["metric_int8"]) == accuracy_of(path, "openvino", folder / "labelled.npz") >= 1.0 - MAX_DROP
    assert "ONNX Runtime f32" in strings["speed_vs_f32"] and strings["cpu"]
    model = load(path, "openvino")
    assert model.precision == "int8"
    shown = ptx("verify", "outlier.onnx", "--backends", "ort-cpu,openvino-int8", cwd=folder)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert any(line.startswith("openvino (cpu)") and " int8 " in line and line.rstrip().endswith("PASS")
               for line in shown.stdout.splitlines()), shown.stdout


@pytest.mark.parametrize("args,says", [
    (["--max-drop", "0.02"], "--max-drop X bounds a metric, and ptx knows none for outlier.onnx: give --metric"),
    (["--metric", "metric.py:accuracy"], "--metric is what --max-drop X bounds: give --max-drop too"),
    (["--max-drop", "-1", "--metric", "metric.py:accuracy"], "--max-drop -1.0: give the most the metric may drop"),
    (["--max-drop", "0.02", "--metric", "metric.py:broken"], "--metric metric.py:broken raised InputError: "),
    (["--max-drop", "0.02", "--metric", "metric.py:words"], "--metric metric.py:words returned 'high': return one"),
    (["--max-drop", "0.02", "--metric", "metric.py:acuracy"], "metric.py defines no acuracy (did you mean accuracy?)"),
    (["--max-drop", "0.02", "--metric", "metric.py"], "--metric metric.py: write FILE.py:FN"),
    (["--max-drop", "0.02", "--metric", "metric.py:accuracy", "--keep-f32", "/out/Gemm"],
     "--max-drop chooses the nodes kept in f32 itself: leave out --keep-f32 /out/Gemm"),
])
def test_a_users_bound_is_refused_in_one_line(outlier, tmp_path, args, says):
    for name in ("outlier.onnx", "labelled.npz", "metric.py"):
        shutil.copy(outlier.parent / name, tmp_path / name)
    line = refused(ptx("export", "outlier.onnx", "--format", "onnx-int8", *args, cwd=tmp_path))
    assert says in line, line
    assert not (tmp_path / "outlier.int8.onnx").exists()  # nothing half-written


# -- a tutorial model: accuracy points on its real test samples -------------------------------------


@pytest.fixture(scope="module")
def mlp(runs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bound-mlp")
    shutil.copytree(runs.trained("mlp"), root / "mlp")
    return root / "mlp"


@pytest.mark.parametrize("fmt", ["onnx-int8", pytest.param("openvino-int8", marks=needs_nncf)])
def test_max_drop_holds_on_the_real_test_samples_and_verify_judges_by_it(mlp, fmt):
    """The file's recorded accuracy is within the bound of eager's on the samples verify judges on,
    and verify's row of it says so, judged by the recorded bound."""
    from ptx.infer.verify.verify import verify

    said: list[str] = []
    [result] = export_model("mlp", [fmt], checkpoint=mlp / "checkpoint.pt", max_drop=0.5, rank=rank_int8, force=True,
                            log=said.append)
    strings = meta(result.path)
    assert strings["max_drop"] == "0.5 accuracy points" and strings["metric"].startswith("accuracy on 1,000 real ")
    assert strings["format"] == fmt and strings["precision"] == "int8"
    reference, value = float(strings["metric_f32"]), float(strings["metric_int8"])
    assert 100 * (reference - value) <= 0.5 + 1e-9, said
    # the verdict (ptx.contract.verdict) is the bound's: the strongest evidence, recorded in the file
    assert not result.judgement.unusable and result.judgement.evidence == "bound"
    assert "(--max-drop 0.5)" in result.judgement.measured
    label = "ort-cpu-int8" if fmt == "onnx-int8" else "openvino-int8"
    assert json.loads(strings["verdict"])[label]["evidence"] == "bound"
    report = verify(Target.of("mlp", run=mlp, verifying=True), backends=[label], notice=lambda _: None)
    [row] = [r for r in report.rows if r.label == label]
    assert row.max_drop == 0.5 and row.status == "PASS" and abs(row.accuracy - value) < 1e-9
    assert (row.verdict.evidence, row.verdict.rechecked) == ("bound", True)  # measured again on the real samples
    assert abs(row.reference_accuracy - reference) < 1e-9


@pytest.mark.parametrize("args,says", [
    (["mlp", "--format", "onnx-int8", "--metric", "m.py:f"],
     "--metric means nothing for a tutorial model NAME: its int8 is held to its accuracy on the real test samples"),
    (["mlp", "--format", "onnx", "--max-drop", "0.5"], "--max-drop bounds what int8 may lose: give --format onnx-int8"),
    (["--module", "net.py:build", "--out", "o", "--max-drop", "0.5"], "--max-drop means nothing for --module"),
])
def test_the_bound_is_refused_where_it_means_nothing(runs, tmp_path, args, says):
    line = refused(ptx("export", *args, "--checkpoint" if args[0] == "mlp" else "--name",
                       runs.trained("mlp") / "checkpoint.pt" if args[0] == "mlp" else "n", cwd=tmp_path))
    assert says in line, line


def test_a_module_is_not_exported_to_openvino_int8():
    from ptx.export.module import _check_formats

    with pytest.raises(PtxError, match="openvino-int8 calibrates on real inputs, and a module comes without them"):
        _check_formats(["onnx", "openvino-int8"])


def test_without_nncf_openvino_int8_is_one_line(runs, tmp_path):
    """nncf is NNCF's part of the openvino extra: simulated absent in a child Python, it is refused before
    the format named with it is written."""
    shutil.copytree(runs.trained("mlp"), tmp_path / "mlp")
    code = textwrap.dedent(f"""
        import sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name == "nncf" or name.startswith("nncf."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Absent())
        from ptx.cli import main
        sys.argv = ["ptx", "export", "--run", {str(tmp_path / 'mlp')!r}, "--format", "onnx-int8,openvino-int8"]
        main()
    """)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mlp").iterdir()}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = refused(result)
    assert line == "error: openvino-int8 needs nncf: pip install 'ptx[openvino]' (from a clone: pip install -e " \
                   "'.[openvino]')", line
    # refused before anything is written: not even the onnx-int8 file named before it
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mlp").iterdir()} == before


# -- bench: each reduced row's speed against ort-cpu f32 and its accuracy cost, side by side ---------


def test_bench_sets_each_reduced_row_against_ort_cpu_f32_and_its_accuracy_cost():
    from ptx.infer.bench.reduced import heading, reduced_rows, slower_line, to_text
    from ptx.infer.bench.timing import BenchRow
    from ptx.infer.verify.report import Row

    def timed(runner, precision, images_per_s, peer_of=None):
        return BenchRow(runner, "cpu", 1024, 1.0, 1.0, 1.0, images_per_s, 10, precision=precision, peer_of=peer_of)

    rows = [timed("ort-cpu", "f32", 100_000.0), timed("bare InferenceSession.run (ort-cpu)", "f32", 101_000.0,
                                                      "ort-cpu"),
            timed("ort-cpu-int8", "int8", 50_000.0), timed("openvino-int8", "int8", 160_000.0),
            timed("openvino-bf16", "bf16", 150_000.0)]
    judged = [Row("ort-cpu", precision="int8", against="eager-cpu", accuracy=0.860, reference_accuracy=0.863,
                  argmax_agreement=0.99),
              Row("openvino", precision="int8", against="eager-cpu", accuracy=0.862, reference_accuracy=0.863,
                  argmax_agreement=0.985, max_drop=0.5),
              Row("openvino", precision="bf16", against="eager-cpu", accuracy=0.84, reference_accuracy=0.863,
                  argmax_agreement=0.97, unusable=["labels agree on 97.0% (< 99%)"])]
    found = {r.runner: r for r in reduced_rows(rows, judged)}
    assert set(found) == {"ort-cpu-int8", "openvino-int8", "openvino-bf16"}  # f32 and bare rows are not reduced
    assert (found["ort-cpu-int8"].vs_ort_f32, found["ort-cpu-int8"].drop_points) == (0.5, 0.3)
    assert (found["openvino-int8"].vs_ort_f32, found["openvino-int8"].verdict) == (1.6, "PASS")
    assert found["openvino-bf16"].verdict == "NOT USABLE" and found["openvino-bf16"].drop_points == 2.3
    text = to_text(list(found.values()), heading("AMD EPYC (avx2, avx512f, avx512_vnni, avx512_bf16)", judged))
    assert max(map(len, text.splitlines())) <= 100, text
    assert "eager's accuracy (0.8630)" in text and "PASS (--max-drop 0.5)" in text and "1.60x" in text
    # a row slower than ort-cpu f32 is said in one line, and only that one
    slower = slower_line(list(found.values()), "AMD EPYC")
    assert "ort-cpu-int8 0.50x at batch 1024" in slower and "openvino" not in slower and "\n" not in slower
    assert slower_line([found["openvino-int8"]], "AMD EPYC") is None


def test_nodes_nncf_left_in_f32_are_read_through_the_ops_a_qdq_pair_sits_before():
    """NNCF puts an input's Q/DQ pair before a Reshape (or an LSTM's last step's Gather), so the Gemm
    after it reads a Reshape's output yet runs in int8; only a Gemm reading neither data nor weight
    through a DequantizeLinear was left in f32 (a first version named every such Gemm "kept in f32")."""
    from onnx import TensorProto, helper, numpy_helper

    from ptx.export.formats.openvino_int8 import f32_nodes, quantized_nodes

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z")
    wq = numpy_helper.from_array(np.ones((4, 4), np.int8), "wq")
    wzero = numpy_helper.from_array(np.int8(0), "wz")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Reshape", ["xd", "shape"], ["xr"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "wz"], ["wd"]),
             helper.make_node("Gemm", ["xr", "wd"], ["h"], name="int8_after_reshape"),
             helper.make_node("Gemm", ["h", "w"], ["y"], name="left_in_f32")]
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [weight, scale, zero, wq, wzero, shape])
    model = helper.make_model(graph)
    assert f32_nodes(model) == ["left_in_f32"]
    assert quantized_nodes(model) == ["int8_after_reshape"]


def test_a_reduced_file_is_opened_once_per_runtime_for_all_of_its_judgements(mlp, monkeypatch):
    """The written int8 file is opened once on its serving runtime (checked, then judged by accuracy and by
    the bound through that one opening) and once on each other runtime that reads it: it was reopened on
    every judgement, 2-3 times per runtime with --max-drop. (The candidates the quantizer chooses among are
    other files, in its scratch folder.)"""
    from collections import Counter

    from ptx.export import api, validate

    opened: Counter = Counter()

    def counting(real):
        def load_file(path, backend, *args, **kwargs):
            if "ptx-int8-" not in str(path) and "keep-f32" not in str(path):  # the written file, not a candidate
                opened[(Path(path).name, backend)] += 1
            return real(path, backend, *args, **kwargs)
        return load_file

    monkeypatch.setattr(api, "load_file", counting(api.load_file))
    monkeypatch.setattr(validate, "load_file", counting(validate.load_file))
    export_model("mlp", ["onnx-int8"], checkpoint=mlp / "checkpoint.pt", max_drop=0.5, rank=rank_int8, force=True,
                 log=lambda _: None)
    mine = {key: n for key, n in opened.items() if key[0] == "model.int8.onnx"}
    assert mine.get(("model.int8.onnx", "ort-cpu")) == 1, opened
    assert all(n == 1 for n in mine.values()), opened
