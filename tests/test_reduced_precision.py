"""OpenVINO, int8 and bf16 (issue 12): the int8 export, the accuracy gate verify applies to
reduced precision, and the one-line refusals. OpenVINO's f32 agreement for every model comes from
the registry (tests/test_agreement.py)."""
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image
from onnx import numpy_helper

from ptx.contract.weights import digest_of
from ptx.errors import PtxError
from ptx.export.api import export_model
from ptx.infer import load
from ptx.infer import backends
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target
from ptx_command import ptx

OPENVINO_MISSING = backends.get("openvino").unavailable("cpu")
needs_openvino = pytest.mark.skipif(OPENVINO_MISSING is not None, reason=f"openvino: {OPENVINO_MISSING}")


@pytest.fixture(scope="module")
def int8_export(runs, tmp_path_factory):
    """A copy of convnet's run with model.int8.onnx exported into it (the shared runs stay f32), and
    export's result (with its judgement)."""
    root = tmp_path_factory.mktemp("int8")
    shutil.copytree(runs.trained("convnet"), root / "convnet")
    [result] = export_model("convnet", ["onnx-int8"], checkpoint=root / "convnet" / "checkpoint.pt",
                            log=lambda _: None)
    return root, result


@pytest.fixture(scope="module")
def int8_root(int8_export):
    return int8_export[0]


def test_the_librarys_export_keeps_its_verdict_where_verify_keeps_its_own(int8_export):
    """export_model itself keeps a reduced file's verdict in the run's verify.json, as `ptx export` did
    through the CLI (issue 67: the CLI no longer writes export's judgement back through infer's
    records), so that predict and serve warn on it whichever of the two exported the file."""
    import json

    from ptx.contract.names import VERIFY_RECORD_FILE
    from ptx.files import file_sha256

    root, result = int8_export
    row = json.loads((root / "convnet" / VERIFY_RECORD_FILE).read_text())["rows"]["ort-cpu-int8"]
    assert row["by"] == "export" and row["status"] == result.judgement.status
    assert row["sha256"] == file_sha256(root / "convnet" / "model.int8.onnx")


def test_int8_weights_use_seven_bits_so_no_cpu_saturates(int8_root):
    """x86 CPUs without VNNI (this AMD EPYC's AVX2; AVX-512 before VNNI) add two uint8 x int8 products in
    16 bits: 255 x 127 x 2 overflows 32,767, 255 x 64 x 2 does not. With every weight within [-64, 64],
    ONNX Runtime computes the same sums with or without VNNI, so the verdict cannot depend on the CPU."""
    proto = onnx.load(str(int8_root / "convnet" / "model.int8.onnx"))
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "7-bit int8 weights" in meta["ptx.quantization"]


def test_int8_export_and_verify_give_one_verdict(int8_export):
    """Export judges with verify's own samples, batches and backend: the same file gets the same numbers."""
    root, result = int8_export
    report = verify(Target.of("convnet", root=root, verifying=True), backends=["ort-cpu-int8"], notice=lambda _: None)
    [row] = report.rows
    judged = result.judgement  # the verdict record (ptx.contract.verdict), the same as verify's row makes
    assert result.judged_by == "ort-cpu-int8" and report.samples == 1000
    assert judged.evidence == row.verdict.evidence == "labels"
    assert judged.measured.startswith("1,000 real ") and judged.measured.endswith(row.verdict.measured)
    assert f"labels agree with eager on {100 * row.argmax_agreement:.1f}%, accuracy {row.accuracy:.4f}" in judged.measured
    assert judged.status == row.status, f"export: {judged.status} {judged.unusable}; verify: {row.status} {row.reasons}"


@needs_openvino
def test_a_runs_int8_gets_one_verdict_from_export_verify_bench_and_load(int8_export, tmp_path):
    """Issue 57's consistency, for a tutorial model's run and each reduced format (ORT's and NNCF's int8):
    the verdict export records in the file = verify's row (--json) = bench's verify column = what load(),
    predict and serve say (a warning only where it is NOT USABLE)."""
    import json
    import warnings

    import serving
    from ptx.contract.verdict import recorded_verdicts
    from ptx.errors import UnusablePrecisionWarning

    root, result = int8_export
    run = tmp_path / "convnet"
    shutil.copytree(root / "convnet", run)  # verify and bench write their records into the run: a copy
    export_model("convnet", ["openvino-int8"], checkpoint=run / "checkpoint.pt", log=lambda _: None)
    one = np.full((28, 28), 255, np.uint8)
    one[4:24, 13:16] = 0  # a 1 drawn in ink on paper
    Image.fromarray(one).save(tmp_path / "one.png")
    for label, backend, name in (("ort-cpu-int8", "ort-cpu", "model.int8.onnx"),
                                 ("openvino-int8", "openvino", "model.openvino-int8.onnx")):
        strings = {p.key[4:]: p.value for p in onnx.load(str(run / name)).metadata_props}
        recorded = recorded_verdicts(strings)[label]
        assert recorded.evidence == "labels", recorded
        if label == "ort-cpu-int8":
            assert recorded.status == result.judgement.status
        unusable = recorded.status != "PASS"
        shown = ptx("verify", "convnet", "--run", str(run), "--backends", backend, "--samples", "1000", "--json")
        [row] = [r for r in json.loads(shown.stdout)["rows"] if r["label"] == label]
        assert row["status"] == row["verdict"]["status"] == recorded.status, (row["verdict"], recorded)
        timed = ptx("bench", "convnet", "--run", str(run), "--backends", backend, "--batch-sizes", "8", "--seconds",
                    "0.05", "--rounds", "1", "--json")
        assert timed.returncode == 0, timed.stderr
        [column] = [r for r in json.loads(timed.stdout)["reduced"] if r["runner"] == label]
        assert column["verdict"] == recorded.status
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            load("convnet", backend, precision="int8", run=run).close()
        warned = [w for w in seen if issubclass(w.category, UnusablePrecisionWarning)]
        assert bool(warned) == unusable, [str(w.message) for w in warned]
        said = ptx("predict", tmp_path / "one.png", "--run", run, "--backend", backend, "--precision", "int8")
        assert said.returncode == 0 and ("NOT USABLE" in said.stderr) == unusable, said.stderr
        with serving.running(tmp_path, "convnet", args=("--backend", backend, "--precision", "int8")) as server:
            started = "\n".join(server.lines)
        assert f"{backend} (cpu, int8)" in started and ("NOT USABLE" in started) == unusable, started


def test_int8_export_records_its_precision_and_is_judged_by_labels(int8_root, runs):
    meta = {p.key: p.value for p in onnx.load(str(int8_root / "convnet" / "model.int8.onnx")).metadata_props}
    assert meta["ptx.precision"] == "int8" and meta["ptx.quantization"].startswith("static QDQ")
    assert "512 calibration samples" in meta["ptx.quantization"]
    report = verify(Target.of("convnet", root=int8_root, verifying=True),
                    backends=["ort-cpu", "openvino"], samples=300, notice=lambda _: None)
    rows = {(v.backend, v.precision): v for v in report.rows}
    int8 = rows[("ort-cpu", "int8")]
    # The verdict's own reasons (failures and a missed label/accuracy gate) in the message.
    assert int8.status == "PASS", f"{int8.status}: {int8.reasons}"
    assert int8.max_abs > 1e-3  # beyond the f32 atol: it passes on labels, not on atol
    assert int8.argmax_agreement >= 0.99 and int8.accuracy >= rows[("ort-cpu", "f32")].accuracy - 0.005
    if ("openvino", "bf16") in rows:
        assert rows[("openvino", "bf16")].ok
    raw, truth = runs.test_samples("convnet", 200)
    predictor = load("convnet", backend="ort-cpu", root=int8_root, precision="int8")
    assert predictor.precision == "int8"
    assert load(int8_root / "convnet" / "model.int8.onnx").precision == "int8"  # the file says its precision
    labels = np.array([p.label for p in predictor.predict(raw, raw=True)])
    assert (labels == truth).mean() >= 0.8


def test_a_damaged_int8_artifact_fails_the_label_gate(int8_root, runs, tmp_path):
    shutil.copytree(int8_root / "convnet", tmp_path / "convnet")
    path = tmp_path / "convnet" / "model.int8.onnx"
    proto = onnx.load(str(path))
    # The last layer's weights scrambled: the outputs stay finite and shaped, the labels do not.
    scales = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    weight = scales[-1]
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(np.random.default_rng(0).permutation(values.reshape(-1)).reshape(values.shape),
                                            weight.name))
    onnx.save(proto, str(path))
    # As if the export itself had written these weights: its digest is re-recorded, so verify judges
    # the numbers (a file changed after export is refused before that: test_own_model).
    restamped = onnx.load(path)
    for prop in restamped.metadata_props:
        if prop.key == "ptx.weights_sha256":
            prop.value = digest_of(path, "onnx")
    onnx.save(restamped, path)
    result = ptx("verify", "convnet", "--backends", "ort-cpu-int8", "--samples", "200", "--root", str(tmp_path))
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and failing[0].startswith("ort-cpu") and "labels agree on" in failing[0], result.stdout
    # The verdict is kept for this machine: predict with that file answers, and warns in one line. It is the
    # verdict by the rule (NOT USABLE, as export and a verify that did not name the row say), not the FAIL
    # that naming the row gives verify's exit status.
    raw, _ = runs.test_samples("convnet", 1)
    picture = tmp_path / "digit.png"
    Image.fromarray(raw[0]).save(picture)
    predicted = ptx("predict", "--root", str(tmp_path), "--precision", "int8", "--raw", str(picture))
    assert predicted.returncode == 0, predicted.stderr
    warned = [line for line in predicted.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "ort-cpu-int8 is NOT USABLE for convnet on this machine" in warned[0], predicted.stderr


def test_int8_refusals_are_one_line(runs, tmp_path):
    result = ptx("export", "linreg", "--format", "onnx-int8", "--checkpoint",
                 str(runs.trained("linreg") / "checkpoint.pt"), "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "regression" in result.stderr and not list(tmp_path.iterdir())
    root = str(runs.ready("convnet"))
    missing = ptx("predict", "--root", root, "--precision", "int8", "0.5", "--model", "convnet")
    assert missing.returncode == 2 and "ptx export convnet --format onnx-int8" in missing.stderr


@pytest.mark.parametrize("args,says", [
    (["--precision", "fp8"], "'fp8' is not one of"),
    (["--backend", "ort-cpu", "--precision", "bf16"], "bf16 runs on openvino"),
    (["--backend", "torchscript", "--precision", "int8"], "runs f32, tf32, not int8"),
])
def test_bad_precisions_are_one_line_errors(runs, args, says):
    result = ptx("predict", "x.png", "--root", str(runs.ready("convnet")), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


@pytest.mark.parametrize("variable,value", [("PTX_ORT_OPT_LEVEL", "fastest"), ("PTX_ORT_SPINNING", "yes")])
def test_bad_ort_session_options_are_one_line_errors(runs, variable, value):
    import os

    env = {**os.environ, variable: value}
    result = ptx("predict", "--model", "linreg", "0.5", "--root", str(runs.ready("linreg")), env=env)
    assert result.returncode == 2 and f"{variable}={value!r}" in result.stderr
    assert result.stderr.count("\n") == 1


@needs_openvino
def test_openvino_runs_f32_unless_asked(runs):
    root = runs.ready("convnet")
    assert load("convnet", backend="openvino", root=root).runner.config["INFERENCE_PRECISION_HINT"] == "f32"
    with pytest.raises(PtxError, match=r"model.onnx is an f32 model and there is no model.openvino-int8.onnx beside "
                                       r"model.onnx: run `ptx export convnet --format openvino-int8 --run "):
        load(root / "convnet" / "model.onnx", backend="openvino", precision="int8")
