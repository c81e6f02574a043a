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
from repo_scripts import script  # noqa: E402

# scripts/lm_families.py, whose run docs/quantized-lms.md's table records: its families are built here as there
# (one config each, one shape for all), so the suite holds the models the table describes
SCRIPT = script("lm_families")
LAYERS = SCRIPT.SHAPE["num_hidden_layers"]
# the families kept in the suite, and the rotations each file holds (queries and keys per layer that rotates):
# GPT-NeoX a quarter of each head rotated, q, k and v one product in the module; Phi half of each head rotated,
# attention and MLP side by side off one norm; Qwen3 an RMS norm of each head's queries and keys before the
# rotation; SmolLM3 every second layer without positions (NoPE)
ROTATIONS = {"gpt_neox": 2 * LAYERS, "phi": 2 * LAYERS, "qwen3": 2 * LAYERS, "smollm3": LAYERS}


def family(name: str):
    model = SCRIPT.FAMILIES[name][0]
    if not hasattr(transformers, model):
        pytest.skip(f"transformers {transformers.__version__} has no {model}")
    return SCRIPT.build(name)


@pytest.mark.parametrize("name", ROTATIONS)
def test_each_family_s_file_in_place_and_in_8_bits_passes_with_its_rotations_as_one_op(name, tmp_path):
    pytest.importorskip("onnxruntime")
    lines: list[str] = []
    export_module(family(name), None, tmp_path, name=name, formats=["onnx", "onnx-int8w"], ort_attention=True,
                  log=lines.append)
    said = "\n".join(lines)
    assert "worst |diff| vs eager" in said and "greedy tokens: 64 of 64 as the reference's" in said, said
    reduced = read_model_file(tmp_path / "model.int8w.onnx").metadata
    assert {k: v.status for k, v in recorded_verdicts(reduced).items()} == {"ort-cpu-int8": "PASS"}, said
    rotations = ROTATIONS[name]
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
    return family("gemma2")


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
