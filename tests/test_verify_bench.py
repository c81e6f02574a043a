import json
import shutil

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ptx.contract import compare
from ptx.contract.weights import digest_of
from ptx.errors import PtxError
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target
from ptx_command import ptx


def test_the_one_agreement_rule():
    """|got - want| <= atol + rtol x the largest |want| of its row, finite outputs, and the same decisions."""
    from ptx.contract import Tolerance
    from ptx.models import get

    contract = get("convnet").contract()
    tol = Tolerance(atol=1e-3, rtol=1e-3)
    want = np.array([[100.0, 0.001] + [-50.0] * 8])
    near = want.copy()
    near[0, 0] += 0.05  # 0.05 <= 1e-3 + 1e-3 * 100
    assert compare(near, want, contract, tolerance=tol).ok
    far = want.copy()
    far[0, 1] = 0.5
    assert compare(far, want, contract, tolerance=tol).failures == [
        "1 of 10 values beyond atol 0.001 + rtol 0.001 x the largest |reference| in its row"]
    nan = want.copy()
    nan[0, 0] = np.nan
    assert "NaN/Inf" in compare(nan, want, contract, tolerance=tol).failures[0]
    # An infinite reference against a NaN: said in plain indices, and no numpy warning on the way (inf - inf)
    infinite = want.copy()
    infinite[0, 3] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        said = compare(np.where(np.isinf(infinite), np.nan, infinite), infinite, contract, tolerance=tol).failures
    assert "(first at index (0, 3))" in said[0], said
    flipped = want.copy()
    flipped[0, 1] = 200.0
    assert any("decision differs on 1 of 1" in f for f in compare(flipped, want, contract, tolerance=tol).failures)
    # Under a tolerance wide enough for 100 vs 200, that flip is a tie, not a disagreement.
    assert compare(flipped, want, contract, tolerance=Tolerance(1e3, 0)).ties == 1
    with pytest.raises(PtxError, match="finite"):
        compare(want, want, contract, tolerance=Tolerance(float("nan"), 0.0))


@pytest.mark.parametrize("name", ["convnet", "lstm"])
def test_verify_passes_and_prints_the_table(runs, name):
    result = ptx("verify", name, "--samples", "200", "--root", str(runs.ready(name)))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("eager (cpu)") and line.endswith("the reference: ran 6 cases") for line in lines)
    for backend in ("torchscript (cpu)", "ort-cpu (cpu)"):
        assert any(line.startswith(backend) and line.endswith("PASS") for line in lines)
    assert lines[-1].startswith("all agree: torchscript-cpu, ort-cpu")


def test_verify_json_and_saved_inputs(runs, tmp_path):
    root = runs.ready("convnet")
    result = ptx("verify", "convnet", "--samples", "100", "--batch-sizes", "1,5", "--json", "--root", str(root),
                 "--save-inputs", str(tmp_path / "inputs.npz"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["samples"] == 100
    assert {v["backend"] for v in doc["rows"]} >= {"eager", "torchscript", "ort-cpu"}
    assert all(v["batch_sizes"] == [1, 5, 7] for v in doc["rows"])
    # the cases as --inputs reads them back (NAME:K, K in the table's case order), and the true labels
    saved = np.load(tmp_path / "inputs.npz")
    assert doc["cases"] == ["real", "zeros", "ones", "batch-1", "batch-5", "batch-7"]
    assert {f"input:{k}" for k in range(6)} | {"labels"} == set(saved.files)
    assert saved["input:0"].shape == (100, 1, 28, 28) and saved["labels"].shape == (100,)


def test_a_corrupted_onnx_weight_makes_verify_fail_and_name_the_backend(runs, tmp_path):
    src = runs.trained("convnet")
    (tmp_path / "convnet").mkdir()
    for f in ("checkpoint.pt", "model.torchscript.pt"):
        (tmp_path / "convnet" / f).write_bytes((src / f).read_bytes())
    proto = onnx.load(str(src / "model.onnx"))
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 5.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(proto, str(tmp_path / "convnet" / "model.onnx"))
    # As if the export itself had written these weights: its digest is re-recorded, so verify judges
    # the numbers (a file changed after export is refused before that: test_own_model).
    restamped = onnx.load(tmp_path / "convnet" / "model.onnx")
    for prop in restamped.metadata_props:
        if prop.key == "ptx.weights_sha256":
            prop.value = digest_of(tmp_path / "convnet" / "model.onnx", "onnx")
    onnx.save(restamped, tmp_path / "convnet" / "model.onnx")
    result = ptx("verify", "convnet", "--samples", "200", "--root", str(tmp_path))
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if "FAIL" in line]
    # Every row that reads model.onnx fails (ort-cpu, and openvino where installed; onnx.reference, a
    # third opinion, differs too); no other row.
    assert failing and failing[0].startswith("ort-cpu (cpu)")
    assert all(line.startswith(("ort-cpu (cpu)", "openvino (cpu)", "onnx.reference (cpu)")) for line in failing), failing
    assert result.stdout.splitlines()[-1].startswith("DISAGREE: ort-cpu vs eager-cpu, output logits")


def test_verify_all_covers_every_model_with_artifacts(runs, tmp_path):
    # a root of its own holding two runs: the worker's shared root holds every model trained so far, and
    # verifying all of them on every backend is test_agreement's job
    for name in ("convnet", "linreg"):
        shutil.copytree(runs.trained(name), tmp_path / name)
    doc = json.loads(ptx("verify", "--all", "--samples", "50", "--json", "--root", str(tmp_path)).stdout)
    assert {r["model"] for r in doc} == {"convnet", "linreg"}


def test_what_verify_is_asked_is_one_record_and_keywords_replace_its_fields(runs):
    """The CLI hands verify a VerifyOptions; a library caller's keywords replace its fields, and a word that is
    no field is refused before anything runs."""
    from ptx.infer.verify.options import VerifyOptions

    target = Target.of("linreg", root=runs.ready("linreg"), verifying=True)
    record = VerifyOptions(backends=["ort-cpu"], samples=20)
    by_record = verify(target, record, notice=lambda _: None)
    by_keywords = verify(target, backends=["ort-cpu"], samples=20, notice=lambda _: None)
    assert [r.label for r in by_record.rows] == [r.label for r in by_keywords.rows] == ["ort-cpu"]
    assert by_record.samples == by_keywords.samples and by_record.cases == by_keywords.cases
    assert verify(target, record, backends=["torchscript"], notice=lambda _: None).rows[-1].label == "torchscript-cpu"
    with pytest.raises(TypeError, match="sample"):
        verify(target, record, sample=5)


def test_verify_reports_skipped_backends(runs):
    report = verify(Target.of("linreg", root=runs.ready("linreg"), verifying=True), samples=20, notice=lambda _: None)
    assert report.ok
    import torch

    if not torch.cuda.is_available():
        # CUDA is not here; reduced precision has no labels to be judged by in a regression.
        cuda = {"eager-cuda", "torchscript-cuda", "ort-cuda", "aoti-cuda", "ort-cuda-graph", "eager-cuda-graph"}
        assert set(report.skipped) - {"openvino-bf16"} == cuda | {f"{label}-tf32" for label in cuda} | {
            "aoti-cpu", "ort-cpu-int8", "openvino-int8", "ort-cpu-int4", "openvino-int4", "ort-cuda-int4"}
    # A regression has no labels: its bf16 row, where this CPU runs bf16, is judged by its tensors'
    # relative error (issue 51: every capability where it means something); there is no int8 file.
    bf16 = next((r for r in report.rows if r.label == "openvino-bf16"), None)
    assert bf16 is not None or "no bf16 instructions" in report.skipped["openvino-bf16"]
    assert bf16 is None or (bf16.argmax_agreement is None and bf16.status in ("PASS", "NOT USABLE"))
    # pt2 is not part of `ptx export`'s default: the skip names the command that writes it
    assert "`ptx export linreg --format pt2`" in report.skipped["aoti-cpu"]


def test_bench_json_reports_cpu_backends_and_bare_rows(runs):
    result = ptx("bench", "convnet", "--json", "--seconds", "0.05", "--batch-sizes", "1,8", "--warmup", "2",
                 "--root", str(runs.ready("convnet")))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    runners = {r["runner"] for r in rows}
    assert {"eager-cpu", "torchscript-cpu", "ort-cpu"} <= runners
    assert {"bare InferenceSession.run (ort-cpu)", "bare nn.Module call (eager-cpu)",
            "bare torch.jit module call (torchscript-cpu)"} <= runners
    for r in rows:
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] and r["images_per_s"] > 0 and r["iterations"] >= 20
        assert r["batch"] in (1, 8)
    assert all(r["overhead"] > 0 for r in rows if not r["runner"].startswith("bare"))
    fastest = json.loads(result.stdout)["fastest"]  # the fastest verified backend per batch size
    assert [f["batch"] for f in fastest] == [1, 8] and all(f["vs_peer"] > 0 for f in fastest)


def test_bench_runs_every_model(runs, model_name):
    from ptx.infer.bench.timing import bench

    rows = bench(Target.of(model_name, root=runs.ready(model_name)), backends=["ort-cpu"], batch_sizes=(2,),
                 warmup=1, seconds=0.01, bare=False).rows
    assert [(r.runner, r.batch) for r in rows] == [("ort-cpu", 2)] and rows[0].p50_us > 0


def test_ort_cuda_is_verified_against_eager_on_the_cpu_when_torch_has_no_cuda(runs, monkeypatch):
    """scripts/setup.sh installs a CPU-only torch beside onnxruntime-gpu: on a GPU machine set up so,
    ort-cuda (torch-free) is still checked, against eager on the CPU at the CUDA tolerance; the
    torch backends on CUDA are skipped with torch's reason."""
    import dataclasses

    from ptx.infer import backends
    from ptx.infer.runtime import ort_session
    from ptx.infer.verify import verify as verify_mod

    registry = backends._REGISTRY.entries
    monkeypatch.setitem(registry, "eager", dataclasses.replace(
        registry["eager"], unavailable=lambda d: None if d == "cpu" else "torch sees no CUDA GPU"))
    assert verify_mod.reference_device(backends.get("ort-cuda"), "cuda") == "cpu"
    assert verify_mod.reference_device(backends.get("torchscript"), "cuda") is None
    assert verify_mod.reference_device(backends.get("ort-cpu"), "cpu") == "cpu"

    # This machine's ORT cannot start CUDA: with its availability check passed, verify loads
    # ort-cuda and reports the load's own reason, not a missing eager reference.
    monkeypatch.setitem(registry, "ort-cuda", dataclasses.replace(registry["ort-cuda"], unavailable=lambda d: None))
    monkeypatch.setattr("ptx.machine.visible_gpus", lambda: 1)  # a GPU machine's driver, pretended
    monkeypatch.setitem(registry, "torchscript", dataclasses.replace(
        registry["torchscript"], unavailable=lambda d: None if d == "cpu" else "torch sees no CUDA GPU"))
    if ort_session.cuda_unavailable() is None:
        pytest.skip("this machine runs ort-cuda: the agreement suite checks it")
    report = verify(Target.of("convnet", root=runs.ready("convnet"), verifying=True),
                    backends=["ort-cpu", "ort-cuda", "torchscript-cuda"], samples=50, notice=lambda _: None)
    assert report.skipped["ort-cuda"].startswith("ort-cuda: CUDA is not active")
    assert report.skipped["torchscript-cuda"] == "torch sees no CUDA GPU"


def test_the_gpu_resident_ceiling_rows_are_never_verified_nor_fastest(runs, monkeypatch):
    """Found on the H100 (2026-11-23): `ptx bench` handed the GPU-resident ceiling rows to verify as
    backends ("unknown backend GPU-resident nn.Module call, ...") and every CUDA bench failed. A
    ceiling row is timed and shown, but it is no backend: verify never sees it, it is never the fastest."""
    from click.testing import CliRunner

    from ptx import cli
    from ptx.infer.bench import timing as bench_module
    from ptx.infer.bench.timing import BenchRow, fastest

    ours = BenchRow("eager-cuda", "cuda", 1, 300.0, 310.0, 320.0, 3_333.0, 50)
    bare = BenchRow("bare nn.Module call (eager-cuda)", "cuda", 1, 250.0, 260.0, 270.0, 4_000.0, 50,
                    peer_of="eager-cuda")
    ceiling = BenchRow("GPU-resident nn.Module call, the ceiling (eager-cuda)", "cuda", 1, 100.0, 110.0, 120.0,
                       10_000.0, 50, ceiling_of="eager-cuda")
    rows = [ours, bare, ceiling]
    (verdict,) = fastest(rows, {"eager-cuda", ceiling.runner})
    assert verdict.runner == "eager-cuda" and verdict.peer == bare.runner

    asked = {}

    def fake_verify(name, backends, **kwargs):
        asked["backends"] = backends
        raise SystemExit(0)  # what verify would say is not this test's concern

    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: bench_module.Bench("convnet", rows=rows))
    monkeypatch.setattr("ptx.infer.verify.verify.verify", fake_verify)
    monkeypatch.setattr("ptx.infer.model.records.record_bench", lambda *a, **k: None)
    CliRunner().invoke(cli.cli, ["bench", "convnet", "--root", str(runs.ready("convnet"))])
    assert asked["backends"] == ["eager-cuda"]


# -- summaries and bench's verdicts from the rows (issue 57 item 7) ------------------------------------

def _wide_relu(path, width=40_000):
    """A model whose generated cases (batches 3 and 5 of ``width`` values) are all over
    onnx.reference's limit of 100,000 values per case."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])])
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_row_that_ran_no_case_is_said_so_and_never_agrees(tmp_path):
    """Before: "note: onnx.reference ran on 0 of 2 cases" and then "all agree: ..., onnx.reference"."""
    path = _wide_relu(tmp_path / "wide.onnx")
    report = verify(Target.of(path, verifying=True), notice=lambda _: None)
    idle = next(r for r in report.rows if r.backend == "onnx.reference")
    assert idle.no_case == "inputs over its limit of 100,000 values" and not idle.cases and not idle.ok
    summary = report.summary()
    assert "onnx.reference" not in summary.split(";")[0], summary
    assert "ran no case: onnx.reference (inputs over its limit of 100,000 values)" in summary
    result = ptx("verify", path, "--json")
    doc = json.loads(result.stdout)
    row = next(r for r in doc["rows"] if r["backend"] == "onnx.reference")
    assert row["agrees"] is False and row["no_case"] and "ran no case: onnx.reference" in doc["summary"]


def test_the_locate_offer_speaks_of_labels_only_for_a_model_with_labels(tmp_path):
    """Before: a detector with no labels was told "where openvino-bf16 loses labels"."""
    from ptx.infer.model.target import Target
    from ptx.infer.verify.report import Report, Row
    from ptx.infer.verify.offers import offers as _offers

    path = _wide_relu(tmp_path / "wide.onnx", width=4)
    target = Target.of(path)
    bf16 = Row("openvino", "cpu", "bf16", against="ort-cpu", cases=["batch 3"], unusable=["y: relative error 0.3"])
    headless = Report(str(path), "onnx", "ort-cpu", rows=[bf16], head=False)
    (offer,) = _offers(target, headless, (), (), False)
    # (the command last, as locate's offers print it so that it runs as printed)
    assert offer.startswith(f"where openvino-bf16 departs (the nodes to keep in f32): ptx verify {path} --backends "
                            "openvino-bf16") and offer.endswith(" --locate")
    assert "labels" not in offer
    labelled = Report(str(path), "onnx", "ort-cpu", rows=[bf16], head=True)
    assert _offers(target, labelled, (), (), False)[0].startswith("where openvino-bf16 loses labels (")


def test_bench_shows_the_verdict_verify_records_not_a_stricter_one_of_its_own(runs, tmp_path, monkeypatch):
    """Before: bench verified the rows it timed as if the user had named them (a NOT USABLE bf16 row
    became FAIL), and with --verify-samples 0 every reduced row was "not verified" whatever verify had
    recorded (openvino-bf16 at 5.02x "not verified" where verify said NOT USABLE)."""
    import shutil

    from click.testing import CliRunner

    from ptx import cli
    from ptx.infer.bench import timing as bench_module
    from ptx.infer.bench.timing import BenchRow
    from ptx.infer.model.records import record_verify
    from ptx.infer.verify.report import Report, Row

    shutil.copytree(runs.trained("convnet"), tmp_path / "convnet")
    rows = [BenchRow("ort-cpu", "cpu", 1, 100.0, 110.0, 120.0, 10_000.0, 50),
            BenchRow("openvino-bf16", "cpu", 1, 20.0, 22.0, 24.0, 50_200.0, 50, precision="bf16")]
    monkeypatch.setattr(bench_module, "bench", lambda *a, **k: bench_module.Bench("convnet", rows=rows))
    bf16 = Row("openvino", precision="bf16", against="eager-cpu", cases=["real"], argmax_agreement=0.9,
               accuracy=0.8, reference_accuracy=0.98, unusable=["labels agree on 90.0% (< 99%)"])
    asked = {}

    def fake_verify(name, backends, named=None, **kwargs):
        asked.update(backends=backends, named=named)
        bf16.required = bf16.label in set(named)  # as verify's rule: a FAIL only where the user named it
        return Report("convnet", rows=[Row("eager", against="eager-cpu", cases=["real"]), bf16])

    monkeypatch.setattr("ptx.infer.verify.verify.verify", fake_verify)
    result = CliRunner().invoke(cli.cli, ["bench", "convnet", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert asked == {"backends": ["openvino-bf16", "ort-cpu"], "named": ()}
    assert [r["verdict"] for r in doc["reduced"]] == ["NOT USABLE"]
    # the verdict kept in the run folder is verify's, and bench without verifying reads it back
    record_verify(Report("convnet", rows=[bf16]), tmp_path / "convnet")
    quiet = CliRunner().invoke(cli.cli, ["bench", "convnet", "--root", str(tmp_path), "--verify-samples", "0"])
    assert quiet.exit_code == 0, quiet.output
    *_, line = (ln for ln in quiet.stdout.splitlines() if ln.startswith("openvino-bf16 "))  # the reduced table's
    assert line.endswith("NOT USABLE") and "not verified" not in quiet.stdout, quiet.stdout


def test_a_row_asked_for_that_cannot_open_fails_bench_and_verify(runs, tmp_path):
    """Before: `ptx bench convnet --backends ort-cpu` with a cut model.onnx skipped the row asked for,
    timed ort-cpu-int8 instead and exited 0."""
    import shutil

    from ptx.export.api import export_model

    shutil.copytree(runs.trained("convnet"), tmp_path / "convnet")
    export_model("convnet", ["onnx-int8"], checkpoint=tmp_path / "convnet" / "checkpoint.pt",
                 log=lambda _: None)
    onnx_file = tmp_path / "convnet" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    fast = ("--seconds", "0.02", "--rounds", "1", "--warmup", "1", "--verify-samples", "0")
    result = ptx("bench", "convnet", "--backends", "ort-cpu", "--root", str(tmp_path), *fast)
    assert result.returncode == 2, result.stdout + result.stderr  # refused in one line, as any unreadable file
    errors = [ln for ln in result.stderr.splitlines() if not ln.startswith("timing ")]
    assert len(errors) == 1 and "ort-cpu, asked for with --backends, cannot open convnet" in errors[0], errors
    assert "timing ort-cpu-int8" not in result.stderr and not result.stdout
    checked = ptx("verify", "convnet", "--backends", "ort-cpu", "--samples", "50", "--root", str(tmp_path))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert any(ln.startswith("ort-cpu (cpu)") and "FAIL" in ln for ln in checked.stdout.splitlines())
    # the file gone altogether: the row asked for is a FAIL too, never a skip behind the int8 row
    onnx_file.unlink()
    gone = ptx("verify", "convnet", "--backends", "ort-cpu", "--samples", "50", "--root", str(tmp_path))
    assert gone.returncode == 1 and "DISAGREE: ort-cpu" in gone.stdout.splitlines()[-1], gone.stdout + gone.stderr
    assert ptx("bench", "convnet", "--backends", "ort-cpu", "--root", str(tmp_path), *fast).returncode == 2
    # a backend this machine cannot run at all stays a skip with its reason
    import torch

    if not torch.cuda.is_available():
        skipped = verify(Target.of("convnet", root=tmp_path, verifying=True), backends=["eager-cuda", "torchscript"],
                         samples=50, notice=lambda _: None)
        assert "eager-cuda" in skipped.skipped and skipped.exit_status == 0


def test_bench_of_a_runs_eager_row_without_verifying_reads_no_verdict_from_its_checkpoint(runs):
    """`ptx bench convnet --backends eager --verify-samples 0` read the recorded verdict of eager's file,
    checkpoint.pt, as a model file and stopped: "a torch.save file ..., not a model ptx can run"."""
    fast = ("--batch-sizes", "1", "--seconds", "0.02", "--rounds", "1", "--warmup", "1", "--verify-samples", "0")
    result = ptx("bench", "convnet", "--backends", "eager", "--run", str(runs.trained("convnet")), *fast)
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.startswith("eager-cpu ") for line in result.stdout.splitlines()), result.stdout
