"""The rewrites ptx makes of a decoder's file, on the families users bring as transformers builds them, not only
Llama: each layer's rotation as ONNX Runtime's RotaryEmbedding (a partial rotation, a layer without one), the
products that read one input merged, the cache in place (--ort-attention), OpenVINO's attention operator. Each
file is held by the judge against eager PyTorch; what a family asks that an operator does not give (Gemma 2's
soft-capped scores) is refused in one line or left as the file writes it, never rewritten wrongly."""
from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")

from ptx.contract.verdict import recorded_verdicts  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer.formats.model_files import read_model_file  # noqa: E402

LAYERS = 2
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
             max_position_embeddings=256, initializer_range=0.2)
# family: (model class, config class, what the config adds, the rotations a file holds: queries and keys per layer
# that rotates)
FAMILIES = {
    # a quarter of each head rotated, query, key and value one product in the module
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(rotary_pct=0.25), 2 * LAYERS),
    # half of each head rotated; attention and MLP side by side off one norm
    "phi": ("PhiForCausalLM", "PhiConfig", dict(partial_rotary_factor=0.5), 2 * LAYERS),
    # an RMS norm of each head's queries and keys before the rotation; grouped heads
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(num_key_value_heads=2, head_dim=16), 2 * LAYERS),
    # every second layer without positions (NoPE)
    "smollm3": ("SmolLM3ForCausalLM", "SmolLM3Config", dict(num_key_value_heads=2, no_rope_layer_interval=2,
                                                            pad_token_id=0), LAYERS),
}


def family(name: str):
    model, config, extra, _ = FAMILIES[name]
    if not hasattr(transformers, model):
        pytest.skip(f"transformers {transformers.__version__} has no {model}")
    torch.manual_seed(0)
    return getattr(transformers, model)(getattr(transformers, config)(**SHAPE, **extra)).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_s_file_in_place_and_in_8_bits_passes_with_its_rotations_as_one_op(name, tmp_path):
    pytest.importorskip("onnxruntime")
    lines: list[str] = []
    export_module(family(name), None, tmp_path, name=name, formats=["onnx", "onnx-int8w"], ort_attention=True,
                  log=lines.append)
    said = "\n".join(lines)
    assert "worst |diff| vs eager" in said and "greedy tokens: 64 of 64 as the reference's" in said, said
    reduced = read_model_file(tmp_path / "model.int8w.onnx").metadata
    assert {k: v.status for k, v in recorded_verdicts(reduced).items()} == {"ort-cpu-int8": "PASS"}, said
    rotations = FAMILIES[name][3]
    assert re.search(rf"(^|; ){rotations} rotary rotations as RotaryEmbedding", reduced["quantization"]), \
        reduced["quantization"]


@pytest.mark.parametrize("name", ["phi", "smollm3"])
def test_each_family_s_attention_is_openvino_s_operator_and_decodes_eager_s_tokens(name, tmp_path):
    ov = pytest.importorskip("openvino")
    from ptx.infer import load
    from ptx.infer.runtime.openvino_attention import fuse_attention

    export_module(family(name), None, tmp_path, name=name, formats=["onnx"], log=lambda line: None)
    assert fuse_attention(ov.Core().read_model(str(tmp_path / "model.onnx"))) == LAYERS
    prompt = [5, 17, 93, 4]
    with torch.no_grad():
        eager = family(name).generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, 4:].tolist()
    with load(tmp_path / "model.onnx", "openvino") as model:
        assert model.runner.attention_fused == LAYERS
        assert model.decode([prompt], 12, eos=()).tokens[0] == eager


def gemma2():
    if not hasattr(transformers, "Gemma2ForCausalLM"):
        pytest.skip(f"transformers {transformers.__version__} has no Gemma2ForCausalLM")
    torch.manual_seed(0)
    return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**SHAPE, num_key_value_heads=2, head_dim=16,
                                                                    sliding_window=512)).eval()


def test_soft_capped_scores_are_refused_in_place_in_ptx_s_own_words(tmp_path):
    """Gemma 2 caps its attention scores (tanh): ONNX Runtime's operator as ptx writes it has no cap, so
    --ort-attention refuses it in one line, ptx's own (not as the exporter's refusal, which wrapped it), and
    writes nothing."""
    pytest.importorskip("onnxruntime")
    with pytest.raises(PtxError, match="^--ort-attention: layer 0's attention asks for softcap"):
        export_module(gemma2(), None, tmp_path / "in-place", name="gemma2", formats=["onnx"], ort_attention=True,
                      log=lambda line: None)
    assert not (tmp_path / "in-place" / "model.onnx").exists()


def test_soft_capped_scores_are_left_as_written_for_openvino(tmp_path):
    ov = pytest.importorskip("openvino")
    from ptx.infer.runtime.openvino_attention import fuse_attention

    export_module(gemma2(), None, tmp_path, name="gemma2", formats=["onnx"], log=lambda line: None)
    assert fuse_attention(ov.Core().read_model(str(tmp_path / "model.onnx"))) == 0


def _raised(make):
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - the chain is what is tested
        return exc
    raise AssertionError("nothing raised")


def test_ptx_s_own_refusal_is_found_through_an_exporter_s_causes_only():
    from ptx.export.refusal import ptx_s_own

    own = PtxError("--ort-attention: planted")

    def wrapped():  # as torch.onnx wraps what it caught, twice over: raise ... from
        try:
            try:
                raise own
            except PtxError as exc:
                raise ValueError("tracing failed") from exc
        except ValueError as exc:
            raise RuntimeError("the exporter failed") from exc

    def handled():  # a refusal code caught and dealt with, then another failure: not the answer
        try:
            raise PtxError("handled")
        except PtxError:
            raise RuntimeError("an unrelated failure")

    assert ptx_s_own(_raised(wrapped)) is own
    assert ptx_s_own(own) is own
    assert ptx_s_own(_raised(handled)) is None
    assert ptx_s_own(RuntimeError("no ptx refusal")) is None
