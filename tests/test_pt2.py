"""pt2 (torch.export + AOTInductor) and the aoti backend. Compiling takes ~20-45 s a model here, so
only conftest.PT2_MODELS are compiled (once per session); the refusals and the registry checks need
no compile."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import PT2_MODELS, needs_gpu, outputs, skip_if_torch_loader_crashes
from ptx.contract import compare
from ptx.contract.metadata import from_props, from_strings
from ptx.contract.transforms import to_model_input
from ptx.export.formats import default_formats, get as get_format, list_formats
from ptx.infer import load
from ptx.infer.model.target import Target
from ptx.models import get, list_models
from ptx_command import ptx


def test_pt2_is_registered_but_not_part_of_all():
    assert "pt2" in list_formats() and "pt2" not in default_formats()
    assert get_format("pt2").serving_backend == "aoti" and get_format("pt2").file_name == "model.pt2"


@pytest.mark.filterwarnings("ignore")  # torch.export's notes on the GRU's flat weights
@pytest.mark.parametrize("name", list_models())
def test_torch_export_blockers_are_true(name):
    """A model's spec says torch.export cannot keep its dimensions dynamic exactly when that is so."""
    spec = get(name)
    model = spec.build().eval()
    shape = spec.input.shape
    dims = {d: torch.export.Dim(d, min=1, max=1 << 20) for d in shape if isinstance(d, str)}
    try:
        torch.export.export(model, (spec.example(2, 5),),
                            dynamic_shapes=({i: dims[d] for i, d in enumerate(shape) if isinstance(d, str)},))
        exported = True
    except Exception:  # noqa: BLE001 - any failure is what the blocker claims
        exported = False
    assert exported == (spec.torch_export_blocker is None), spec.torch_export_blocker


@pytest.mark.parametrize("name", ["rnn-hello", "gru-classifier"])
def test_pt2_refuses_models_torch_export_cannot_express_in_one_line(tmp_path, name):
    result = ptx("export", name, "--format", "pt2", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} cannot be exported as pt2: torch.export"), lines
    assert not (tmp_path / "out" / "model.pt2").exists()


def test_models_lists_the_formats_each_model_supports():
    rows = {r["name"]: r["formats"] for r in json.loads(ptx("models", "--json").stdout)}
    assert rows["convnet"] == ["onnx", "torchscript", "onnx-int8", "openvino-int8", "pt2", "triton",
                                "kserve"]
    assert "onnx-int8" not in rows["linreg"]  # a regression has no labels to judge int8 by
    assert "pt2" not in rows["rnn-hello"] and "pt2" not in rows["gru-classifier"]
    assert "triton" in rows["gru-classifier"]
    table = ptx("models").stdout.splitlines()  # the table says it shorter: "all", or what is left out
    assert "exports" in table[0] and any(line.startswith("rnn-hello ") and line.rstrip().endswith("all but pt2")
                                         for line in table)
    assert any(line.startswith("convnet ") and line.rstrip().endswith(" all") for line in table)


@pytest.mark.parametrize("name", PT2_MODELS)
def test_pt2_carries_the_contract_and_the_device(runs, name):
    run_dir = runs.with_pt2(name)
    from ptx.infer.runtime.torch_files import load_pt2 as load_package

    _, strings, device = load_package(run_dir / "model.pt2")
    info = from_strings(strings)
    assert info.contract == get(name).contract(runs.dataset(name).name)
    assert device == "cpu" and strings["aoti_device"] == "cpu"
    import onnx

    onnx_strings = from_props({p.key: p.value for p in onnx.load(str(run_dir / "model.onnx")).metadata_props})
    assert strings["checkpoint_sha256"] == onnx_strings["checkpoint_sha256"]


def test_pt2_records_its_weights_digest_and_refuses_another_packages_metadata(runs, tmp_path):
    """The package's metadata map lives beside its compiled code: convnet's ptx.* keys written into
    lstm's package are refused, as for ONNX and TorchScript."""
    import shutil

    from ptx.contract.weights import digest_of
    from ptx.errors import ArtifactError
    from ptx.export.formats.pt2 import rewrite_metadata
    from ptx.infer.runtime.torch_files import load_pt2 as load_package

    convnet = runs.with_pt2("convnet") / "model.pt2"
    _, strings, _ = load_package(convnet)
    assert strings["weights_sha256"] == digest_of(convnet, "pt2")
    foreign = tmp_path / "model.pt2"
    shutil.copy(runs.with_pt2("lstm") / "model.pt2", foreign)
    rewrite_metadata(foreign, strings, replace=True)
    assert load_package(foreign)[1]["model"] == "convnet"
    with pytest.raises(ArtifactError, match="weights are not the ones its ptx.. metadata was written for"):
        load(foreign)


# Runs in a process that never imports ptx: the package and torch alone, against eager's outputs.
TORCH_ONLY = textwrap.dedent("""
    import sys, numpy as np, torch
    package, data = sys.argv[1], np.load(sys.argv[2])
    model = torch._inductor.aoti_load_package(package)
    for b in (1, 7, 64):
        x, want = data[f"x{b}"], data[f"want{b}"]
        got = model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape, (got.shape, want.shape)
        assert np.allclose(got, want, atol=1e-4, rtol=1e-3), np.abs(got - want).max()
        assert (got.argmax(-1) == want.argmax(-1)).all()
    assert not any(m == "ptx" or m.startswith("ptx.") for m in sys.modules)
    print("ok", model.get_metadata()["ptx.model"])
""")


@pytest.mark.parametrize("name", PT2_MODELS)
def test_pt2_loads_without_ptx_and_matches_eager_at_batch_1_7_64(runs, tmp_path, name):
    run_dir = runs.with_pt2(name)
    eager = load(name, backend="eager", root=run_dir.parent)
    raw, _ = runs.test_samples(name, 64)
    arrays = {}
    for b in (1, 7, 64):
        x = to_model_input(raw[:b], eager.contract)  # lstm: (28, b, 28), batch on axis 1
        arrays[f"x{b}"], arrays[f"want{b}"] = x, outputs(eager, x)
    np.savez(tmp_path / "data.npz", **arrays)
    result = subprocess.run([sys.executable, "-c", TORCH_ONLY, str(run_dir / "model.pt2"), str(tmp_path / "data.npz")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", name]


@pytest.mark.parametrize("name", PT2_MODELS)
def test_verify_shows_an_aoti_row_that_passes(runs, name):
    root = runs.with_pt2(name).parent
    result = ptx("verify", name, "--samples", "200", "--backends", "eager,aoti", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.startswith("aoti (cpu)") and line.endswith("PASS") for line in result.stdout.splitlines())


def test_bench_times_aoti_next_to_the_bare_package_call(runs):
    from ptx.infer.bench.timing import bench

    rows = bench(Target.of("convnet", root=runs.with_pt2("convnet").parent), backends=["aoti"], batch_sizes=(1, 8),
                 warmup=2, seconds=0.05).rows
    assert {r.runner for r in rows} == {"aoti-cpu", "bare aoti_load_package call (aoti-cpu)"}
    assert all(r.p50_us > 0 for r in rows) and all(r.overhead > 0 for r in rows if r.runner == "aoti-cpu")


def test_aoti_refuses_a_damaged_or_foreign_package_in_one_line(runs, tmp_path):
    from ptx.errors import ArtifactError, PtxError

    good = runs.with_pt2("convnet") / "model.pt2"
    (tmp_path / "truncated.pt2").write_bytes(good.read_bytes()[:100_000])
    (tmp_path / "checkpoint.pt2").write_bytes((good.parent / "checkpoint.pt").read_bytes())
    with pytest.raises(ArtifactError, match="a damaged or truncated archive") as caught:
        load(tmp_path / "truncated.pt2")
    assert "\n" not in str(caught.value)
    # A file is what its content says, whatever its name: a checkpoint called .pt2 is a checkpoint,
    # which eager rebuilds, and which aoti cannot read.
    assert load(tmp_path / "checkpoint.pt2").backend == "eager"
    with pytest.raises(PtxError, match="backend aoti does not run a ptx checkpoint; these do: eager") as caught:
        load(tmp_path / "checkpoint.pt2", backend="aoti")
    assert "\n" not in str(caught.value)


def test_an_aoti_predictor_agrees_with_eager_under_the_one_rule(runs):
    root = runs.with_pt2("convnet").parent
    aoti, eager = load("convnet", backend="aoti", root=root), load("convnet", backend="eager", root=root)
    raw, _ = runs.test_samples("convnet", 64)
    x = to_model_input(raw, eager.contract)
    assert compare(outputs(aoti, x), outputs(eager, x), eager.contract).ok
    assert [r.label for r in aoti.predict_raw(raw)] == [r.label for r in eager.predict_raw(raw)]


@needs_gpu
def test_pt2_compiled_for_cuda_runs_there_only(runs, tmp_path):
    from ptx.errors import MissingArtifactError
    from ptx.export.api import export_model

    run_dir = runs.trained("convnet")
    with skip_if_torch_loader_crashes("cuda"):
        export_model("convnet", ["pt2"], checkpoint=run_dir / "checkpoint.pt", out=tmp_path, device="cuda",
                     log=lambda _: None)
    assert load(tmp_path / "model.pt2", device="cuda").device == "cuda"
    with pytest.raises(MissingArtifactError, match="compiled for cuda"):
        load(tmp_path / "model.pt2", device="cpu")


def torch_crash(tmp_path, device):
    """Export's probe on a package whose loader kills itself, as torch 2.11's did on CUDA."""
    from ptx.export.formats import pt2

    return lambda: pt2.probe_load(tmp_path / "model.pt2", device, "convnet",
                                  code="import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")


def under_the_crash_skip(device, body):
    """What skip_if_torch_loader_crashes made of ``body``: "skipped: REASON", the error that went
    through, or None. A skip is a value here, so a wrong skip fails the test instead of skipping it."""
    try:
        with skip_if_torch_loader_crashes(device):
            body()
    except pytest.skip.Exception as skipped:
        return f"skipped: {skipped}"
    except Exception as exc:  # noqa: BLE001 - the test looks at which error went through
        return exc
    return None


def test_a_crash_of_torchs_loader_skips_a_gpu_test_with_exports_one_line(tmp_path):
    # What the aoti-cuda tests meet on a GPU where torch's loader crashes: export's line is the reason.
    outcome = under_the_crash_skip("cuda", torch_crash(tmp_path, "cuda"))
    assert isinstance(outcome, str) and outcome.startswith("skipped: pt2 of convnet for cuda: torch "), outcome
    assert "\n" not in outcome and "aoti_load_package crashed (SIGSEGV)" in outcome
    assert "that crash is torch's" in outcome


def test_only_a_loader_crash_on_a_gpu_is_a_skip(tmp_path):
    from ptx.errors import PtxError
    from ptx.child import ChildCrashError

    # On the CPU torch's loader has worked: a crash there fails the test.
    assert isinstance(under_the_crash_skip("cpu", torch_crash(tmp_path, "cpu")), ChildCrashError)

    def bad_checkpoint():
        raise PtxError("a bad checkpoint")

    outcome = under_the_crash_skip("cuda", bad_checkpoint)
    assert isinstance(outcome, PtxError) and not isinstance(outcome, ChildCrashError)
    assert under_the_crash_skip("cuda", lambda: None) is None
