"""A decoder's attention rewritten into OpenVINO's ScaledDotProductAttention for its stateful form
(infer/runtime/openvino_attention.py), so that the CPU plugin runs its fused kernel with the cache in its
variables. Exported from transformers' Llama (grouped heads, ptx's per-group layout; its int4 file too) and GPT-2
(a key/value head per query head, torch's Reshape/Transpose K^T and NaN guard): every layer's attention found, the
compiled model holds the fused operator, and the judge passes the openvino row; a rewrite planted wrong (its
scale, its mask dropped) fails it. Hand-built graphs: each layout rewritten computes what it computed; one that
differs (a Softmax over another axis, no mask, the weights read elsewhere) is left as written."""
from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import openvino.opset13 as ops  # noqa: E402

from ptx.infer import load  # noqa: E402
from ptx.infer.runtime import openvino_attention  # noqa: E402
from ptx.infer.runtime.openvino_attention import fuse_attention  # noqa: E402
from test_generate import PROMPTS, _verify, eager_generate  # noqa: E402

LAYERS = 2


@pytest.fixture(scope="module")
def files(tiny_decoders):
    """Llama's and GPT-2's plain exports and llama's int4 file, made once per run."""
    done = {name: tiny_decoders[name][0] for name in ("llama", "gpt2")}
    done["llama-int4"] = tiny_decoders.int4("llama")
    return done


def runtime_types(compiled) -> set[str]:
    return {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}


@pytest.mark.parametrize("name", ["llama", "gpt2", "llama-int4"])
def test_every_layer_s_attention_is_the_fused_operator_and_decodes_eager_s_tokens(files, name):
    assert fuse_attention(ov.Core().read_model(str(files[name]))) == LAYERS
    model = load(files[name], "openvino")
    runner = model.runner
    assert runner.attention_fused == LAYERS
    compiled, _ = runner.compiled_for({}, stateful=True)
    assert "ScaledDotProductAttention" in runtime_types(compiled) and "Softmax" not in runtime_types(compiled)
    if name != "llama-int4":  # int4's own rounding parts from eager's tokens: its judge's bounds hold it
        assert model.decode([PROMPTS[1]], 12, eos=()).tokens[0] == eager_generate(name, tuple(PROMPTS[1]), 12)
    report = _verify(files[name], ("openvino",))
    assert report.exit_code() == 0 and report.lines()[-1].startswith("OK"), report.lines()


def test_the_attention_as_written_when_asked_or_when_the_rewrite_fails(files, monkeypatch):
    monkeypatch.setenv("PTX_OPENVINO_ATTENTION", "off")
    runner = load(files["llama"], "openvino").runner
    assert runner.attention_fused == 0 and "Softmax" in runtime_types(runner.compiled_for({}, stateful=True)[0])
    monkeypatch.delenv("PTX_OPENVINO_ATTENTION")

    def refused(model):
        raise RuntimeError("planted: the matcher failed")
    from ptx.errors import PtxWarning
    from ptx.infer.runtime import openvino_runner

    monkeypatch.setattr(openvino_runner, "fuse_attention", refused)
    with pytest.warns(PtxWarning, match="attention as the file writes it.*planted: the matcher failed"):
        model = load(files["llama"], "openvino")
    assert model.runner.attention_fused == 0 and model.runner.pairs  # still stateful, as written
    assert model.decode([PROMPTS[1]], 12, eos=()).tokens[0] == eager_generate("llama", tuple(PROMPTS[1]), 12)


@pytest.mark.parametrize("fault", ["scale", "mask"])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_a_rewrite_planted_wrong_fails_the_judge_s_openvino_row(files, name, fault, monkeypatch):
    real = openvino_attention._rewrite

    def wrong(match):
        if fault == "scale":
            match.scale *= 1.25
        else:
            match.found["mask"] = ops.constant(np.array(0, np.float32)).output(0)
        real(match)
    monkeypatch.setattr(openvino_attention, "_rewrite", wrong)
    report = _verify(files[name], ("openvino",))
    assert report.exit_code() == 1 and report.lines()[-1].startswith("FAIL: openvino"), report.lines()


# hand-built attention blocks: [batch, heads, new, size] queries against [batch, kv heads, past, size] keys


def _param(shape, name):
    return ops.parameter(ov.PartialShape(shape), np.float32, name=name)


def _block(layout: str = "gpt2", axis: int = -1, mask: bool = True, weights_read: bool = False):
    """An ov.Model of one attention block as torch.onnx writes it: ``gpt2`` (a head per head, sqrt(scale) on Q
    and on K^T, K^T as Reshape/Transpose/Reshape, the NaN guard), ``grouped`` (ptx's per-group layout)."""
    heads, kv_heads, size = (2, 2, 16) if layout == "gpt2" else (4, 2, 8)
    q, k, v = _param([-1, heads, -1, size], "q"), _param([-1, kv_heads, -1, size], "k"), \
        _param([-1, kv_heads, -1, size], "v")
    m = _param([-1, 1, -1, -1], "mask")
    const = lambda *values: ops.constant(np.array(values, np.int64))  # noqa: E731
    if layout == "gpt2":
        half = ops.constant(np.array(0.5, np.float32))
        past = ops.gather(ops.shape_of(k), const(2), 0)
        flat = ops.reshape(k, ops.concat([const(-1), past, const(size)], 0), False)  # [batch x heads, past, size]
        k_t = ops.reshape(ops.transpose(flat, const(0, 2, 1)), ops.concat([const(-1, kv_heads, size), past], 0), False)
        scores = ops.matmul(ops.multiply(q, half), ops.multiply(k_t, half), False, False)
    else:
        grouped = ops.reshape(q, const(0, kv_heads, -1, size), True)
        scores = ops.matmul(grouped, ops.transpose(k, const(0, 1, 3, 2)), False, False)
        back = ops.concat([ops.gather(ops.shape_of(q), const(0), 0), const(heads, -1),
                           ops.gather(ops.shape_of(k), const(2), 0)], 0)
        scores = ops.multiply(ops.reshape(scores, back, False), ops.constant(np.array(size ** -0.5, np.float32)))
    masked = ops.add(scores, m) if mask else scores
    weights = ops.softmax(masked, axis)
    if layout == "gpt2":
        weights = ops.select(ops.is_nan(weights), ops.constant(np.array(0, np.float32)), weights)
        out = ops.matmul(weights, v, False, False)
    else:
        regrouped = ops.reshape(weights, ops.concat([const(0, kv_heads, -1), ops.gather(ops.shape_of(k), const(2), 0)],
                                                    0), True)
        out = ops.reshape(ops.matmul(regrouped, v, False, False), const(0, heads, -1, size), True)
    results = [ops.result(out)] + ([ops.result(weights)] if weights_read else [])
    return ov.Model(results, [q, k, v, m])


def _feeds(layout: str, batch=2, new=3, past=5):
    rng = np.random.default_rng(0)
    heads, kv_heads, size = (2, 2, 16) if layout == "gpt2" else (4, 2, 8)
    mask = np.where(rng.random((batch, 1, new, past)) < 0.3, np.float32(-3.4028235e38), np.float32(0))
    return {"q": rng.standard_normal((batch, heads, new, size), np.float32),
            "k": rng.standard_normal((batch, kv_heads, past, size), np.float32),
            "v": rng.standard_normal((batch, kv_heads, past, size), np.float32), "mask": mask}


def _outputs(model, feeds):
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(feeds)[0]


@pytest.mark.parametrize("layout", ["gpt2", "grouped"])
def test_a_hand_built_block_rewritten_computes_what_it_did_and_a_wrong_scale_does_not(layout, monkeypatch):
    feeds = _feeds(layout)
    written = _outputs(_block(layout), feeds)
    model = _block(layout)
    assert fuse_attention(model) == 1
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "ScaledDotProductAttention" in types and "Softmax" not in types
    np.testing.assert_allclose(_outputs(model, feeds), written, atol=1e-5)
    real = openvino_attention._rewrite

    def wrong(match):
        match.scale *= 1.25
        real(match)
    monkeypatch.setattr(openvino_attention, "_rewrite", wrong)
    planted = _block(layout)
    assert fuse_attention(planted) == 1
    assert not np.allclose(_outputs(planted, feeds), written, atol=1e-3)


@pytest.mark.parametrize("layout", ["gpt2", "grouped"])
@pytest.mark.parametrize("change", [dict(axis=2), dict(mask=False), dict(weights_read=True)])
def test_a_block_that_differs_is_left_as_written(layout, change):
    model = _block(layout, **change)
    before = sorted(op.get_type_name() for op in model.get_ordered_ops())
    assert fuse_attention(model) == 0
    assert sorted(op.get_type_name() for op in model.get_ordered_ops()) == before
