"""The error model (ptx.contract.error_model, docs/error-model.md): a value is held to atol + rtol x the largest
|reference| of its row, since f32 rounds a dot product at the size of its terms and every value of a row carries
that noise. Proven both ways: the rounding noise of wide and deep matmuls and of transformers' Llama and GPT-2
(6 and 30 layers, initializers 0.02 and 0.2, logits of 1, 10 and 100) passes with no flag, and the same answers
with the logits scaled by 1.05, or one logit moved, fail; a Llama whose logits reach 100 exports (--task forward)
with no flag, and export's check and the shape certificate refuse its file's answers with a planted fault."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ptx.contract.comparison import compare_output, compare_outputs, default_tolerance
from ptx.contract.error_model import allowance, row_scale
from ptx.contract.reference import load_reference, reference_path
from ptx.contract.shape_certificate import CHANGES, certify
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import ValidationError
from ptx_command import ptx
from repo_scripts import script
from test_readme import REPO

error_model = script("error_model")
F32 = default_tolerance("float32")  # atol 1e-4, rtol 1e-3: what export and verify hold f32 to on the CPU


def test_a_value_is_held_at_its_rows_scale_and_a_value_without_a_row_at_its_own():
    logits = np.array([[130.0, 0.01, -40.0], [1.0, np.nan, -0.2]], np.float32)
    assert np.allclose(allowance(logits, F32), [[0.1301] * 3, [0.0011] * 3])  # NaN is no scale
    per_sample = np.array([130.0, 0.01], np.float32)  # one number per sample: never another sample's scale
    assert np.allclose(row_scale(per_sample, batch_axis=0), [130.0, 0.01])
    assert np.allclose(row_scale(per_sample[:, None]), [[130.0], [0.01]])  # a last axis of one
    assert float(row_scale(np.float32(-3.0))) == 3.0
    # the Llama: a logit near 0 in a row reaching 130 differs by 0.00228, f32 noise (6e-5 of the scale) ...
    got = logits.copy()
    got[0, 1] += 0.00228
    assert compare_output("logits", got, logits, F32, 0).ok
    assert abs(got[0, 1] - logits[0, 1]) > F32.atol + F32.rtol * abs(logits[0, 1])  # ... which allclose refused
    # ... and a fault at that scale still fails, said with the rule
    got[0, 1] = logits[0, 1] + 1.0
    found = compare_output("logits", got, logits, F32, 0)
    assert not found.ok and found.failures == ["1 of 6 values beyond atol 0.0001 + rtol 0.001 x the largest "
                                               "|reference| in its row"]
    assert found.needed_atol == pytest.approx(1.0 - 0.13, rel=1e-3)  # needed atol: at this rtol, for its row


def _faults(want: np.ndarray) -> dict[str, np.ndarray]:
    """The answers ``want`` with a planted fault: every value scaled by 1.05; one value near 0 moved by five times
    its allowance (its row's scale x rtol: half a percent of the row's largest)."""
    shifted = want.copy()
    row = tuple(np.argwhere(np.abs(want) < np.abs(want).max(-1, keepdims=True) / 10)[0])
    shifted[row] += 5 * float(allowance(want, F32)[row])
    return {"scaled by 1.05": (want * 1.05).astype(want.dtype), "one value moved": shifted}


@pytest.mark.parametrize("depth", [64, 4096])
@pytest.mark.parametrize("magnitude", [0.01, 1.0, 100.0])
def test_the_rounding_noise_of_a_wide_or_deep_matmul_passes_and_a_planted_fault_fails(depth, magnitude):
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((8, depth)).astype(np.float32)
    w = (rng.standard_normal((depth, 512)) * magnitude).astype(np.float32)  # terms of ``magnitude``
    exact = x.astype(np.float64) @ w.astype(np.float64)
    got = x @ w
    assert compare_output("y", got, exact, F32, 0).ok, compare_output("y", got, exact, F32, 0).summary()
    for fault, planted in _faults(got).items():
        assert not compare_output("y", planted, exact, F32, 0).ok, fault


@pytest.mark.parametrize("kind, layers, init", [("llama", 30, 0.2), ("llama", 6, 0.02), ("gpt2", 30, 0.02),
                                                ("gpt2", 6, 0.2)])
def test_a_language_models_rounding_noise_passes_at_logits_of_1_10_and_100_and_planted_faults_fail(kind, layers, init):
    ids = torch.randint(0, 512, (3, 10), generator=torch.Generator().manual_seed(1))
    model = error_model.build_lm(kind, layers, init, 1)
    double = copy.deepcopy(model).double()  # float64: the exact answer, to f32's noise
    for scale in (1, 10, 100):
        with torch.no_grad():
            got, exact = (m(ids).logits.numpy() for m in (model, double))
        error_model.scale_logits(model, 10), error_model.scale_logits(double, 10)
        assert 0.5 * scale < np.abs(exact).max() < 2 * scale
        agreement = compare_output("logits", got, exact, F32, 0)
        assert agreement.ok, (scale, agreement.summary())
        for fault, planted in _faults(got).items():
            assert not compare_output("logits", planted, exact, F32, 0).ok, (scale, fault)


FACTORY = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("error_model", {str(REPO / "scripts" / "error_model.py")!r})
error_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(error_model)


def build():  # a Llama whose rounding noise allclose's atol refuses at its logits of about 100 (6 layers, 0.2)
    return error_model.build_lm("llama", 6, 0.2, 100, hidden=128)
"""


def test_a_llama_with_logits_of_100_exports_with_no_flag_and_its_check_refuses_planted_faults(tmp_path):
    (tmp_path / "lm.py").write_text(FACTORY)
    out = tmp_path / "out"
    made = ptx("export", "--module", f"{tmp_path / 'lm.py'}:build", "--input", "input_ids=batchxseq:int64",
               "--task", "forward", "--format", "onnx", "--out", out)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "worst |diff| vs eager" in made.stdout + made.stderr
    from ptx.export.validate import check_model
    from ptx.infer import load

    model = load(out / "model.onnx")
    reference = load_reference(reference_path(out / "model.onnx"))
    assert np.abs(reference.cases[0].outputs["logits"]).max() > 50
    fmt = SimpleNamespace(name="onnx", precision="f32")
    tolerance = lambda sig: default_tolerance(sig.dtype)  # noqa: E731 - what export holds the file to
    check_model(fmt, model, model.signature, reference.cases, tolerance)  # the file as written: it holds
    for fault in ("scaled by 1.05", "one value moved"):
        planted = SimpleNamespace(signature=model.signature, run=lambda feeds: {
            "logits": _faults(model.run(feeds)["logits"])[fault]})
        with pytest.raises(ValidationError, match=r"^onnx: stored #0: logits: max abs .* values beyond atol 0.0001 \+ "
                                                  r"rtol 0.001 x the largest \|reference\| in its row"):
            check_model(fmt, planted, model.signature, reference.cases, tolerance)
        wants = [c.outputs for c in reference.cases]
        probes = [SimpleNamespace(symbol="batch", size=c.feeds["input_ids"].shape[0], feeds=c.feeds)
                  for c in reference.cases]
        certificate = certify(model.signature, probes, planted.run, wants=wants, against="eager",
                              tolerance=lambda name: F32)
        assert certificate.axes[0].status == CHANGES, fault


def test_the_one_loop_compares_every_output_at_its_batch_axis_and_only_the_names_asked():
    signature = Signature((TensorSig("x", "float32", ("batch", 4), 0),),
                          (TensorSig("logits", "float32", ("batch", 5), 0), TensorSig("score", "float32", ("batch",), 0)))
    want = {"logits": np.array([[100.0, 0.0, 1, 2, 3]] * 2, np.float32), "score": np.array([100.0, 0.0], np.float32)}
    got = {"logits": want["logits"] + np.float32(0.05), "score": want["score"] + np.float32(0.05)}
    found = compare_outputs(got, want, signature, lambda name: F32)
    assert list(found) == ["logits", "score"]
    assert found["logits"].ok  # 0.05 <= 1e-4 + 1e-3 x 100, its row's scale
    assert not found["score"].ok and found["score"].beyond == 1  # per sample: 0.0 is held to atol alone
    assert list(compare_outputs(got, want, signature, lambda name: F32, names=["logits"])) == ["logits"]
