import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ptx.contract import compare
from ptx.contract.weights import digest_of
from ptx.errors import PtxError
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target


def ptx(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ptx", *args], capture_output=True, text=True, cwd=cwd)


def test_the_one_agreement_rule():
    """|got - want| <= atol + rtol * |want| per element, finite outputs, and the same decisions."""
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
    assert compare(far, want, contract, tolerance=tol).failures == ["1 of 10 values beyond atol 0.001 + rtol 0.001 x |reference|"]
    nan = want.copy()
    nan[0, 0] = np.nan
    assert "NaN/Inf" in compare(nan, want, contract, tolerance=tol).failures[0]
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


def test_verify_all_covers_every_model_with_artifacts(runs):
    root = runs.ready("convnet", "linreg")
    doc = json.loads(ptx("verify", "--all", "--samples", "50", "--json", "--root", str(root)).stdout)
    assert {"convnet", "linreg"} <= {r["model"] for r in doc}


def test_verify_reports_skipped_backends(runs):
    report = verify(Target.of("linreg", root=runs.ready("linreg"), verifying=True), samples=20, notice=lambda _: None)
    assert report.ok
    import torch

    if not torch.cuda.is_available():
        # CUDA is not here; reduced precision has no labels to be judged by in a regression.
        cuda = {"eager-cuda", "torchscript-cuda", "ort-cuda", "aoti-cuda", "ort-cuda-graph", "eager-cuda-graph"}
        assert set(report.skipped) - {"openvino-bf16"} == cuda | {f"{label}-tf32" for label in cuda} | {
            "aoti-cpu", "ort-cpu-int8", "openvino-int8"}
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
