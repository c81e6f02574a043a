"""`ptx bench FILE --generate N`: decoding speed per backend of a tiny Llama exported with its cache (and its
TorchScript file beside it), the refusal for a file without a cache, and a prompt past the model's positions.
No timing is asserted: ratios are benchmarks, not tests."""
import json
import math

import pytest

from ptx_command import ptx

pytest.importorskip("transformers")

POSITIONS = 64


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny random Llama exported with its key/value cache as model.onnx and model.torchscript.pt."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ptx.export import export_module

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
                                         max_position_embeddings=POSITIONS, eos_token_id=None,
                                         bos_token_id=None)).eval()
    out = tmp_path_factory.mktemp("lm") / "export"
    export_module(model, None, out, formats=("torchscript", "onnx"), task="text-generation", log=lambda _: None)
    return out


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_generate_prints_a_row_per_backend(lm):
    result = ptx("bench", lm / "model.onnx", "--generate", "8", "--rounds", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ptx bench model.onnx --generate 8: batch 1, a seeded prompt of 32 tokens")
    assert lines[1].split() == ["runner", "device", "MB/token", "prefill", "ms", "prefill", "tok/s", "decode",
                                "ms/token", "tokens/s", "of", "the", "wall", "x", "the", "fastest"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if not line.startswith(("skipped", "eager", "the wall", "no wall"))}
    # every backend of the registry that opens the file here, and the TorchScript file beside it
    assert {"ort-cpu", "torchscript-cpu"} <= set(rows)
    for cells in rows.values():
        read, prefill, prefill_rate, per_token, per_s = (float(c.replace(",", "")) for c in cells[2:7])
        assert all(_positive(v) for v in (read, prefill, prefill_rate, per_token, per_s)), cells
        assert cells[7].endswith("%") and cells[8].endswith("x")
    assert any(cells[8] == "1.00x" for cells in rows.values())  # the fastest, against itself
    assert any(line.startswith("the wall on cpu: a step reads MB/token") and "numpy read probe" in line for line in lines)
    assert "decoding 2 of 2" in result.stderr  # progress on long work


def test_bench_generate_json(lm):
    result = ptx("bench", lm / "model.onnx", "--generate", "8", "--prompt-length", "5", "--batch", "2",
                 "--backends", "ort-cpu", "--rounds", "1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["generate"] == {"new_tokens": 8, "prompt_length": 5, "batch": 2, "repeats": 1, "seed": 0, "eos": []}
    [row] = doc["rows"]
    assert row["runner"] == "ort-cpu" and row["file"] == "model.onnx"
    for key in ("prefill_ms", "decode_ms_per_token", "tokens_per_s"):
        assert _positive(row[key]), key
    assert row["vs_fastest"] == 1.0
    # the eager module is not in the file: said, in one line
    assert doc["eager"].startswith("eager: not run (an ONNX file carries no module")
    assert doc["cpu"]


def test_bench_generate_refuses_a_file_without_a_cache(tmp_path):
    import torch

    from ptx.export import export_module

    out = tmp_path / "plain"
    export_module(torch.nn.Linear(4, 3).eval(), (torch.rand(2, 4),), out, formats=("onnx",), log=lambda _: None)
    result = ptx("bench", out / "model.onnx", "--generate", "8")
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "without its key/value cache" in line and "--task text-generation" in line and "Traceback" not in line


def test_bench_generate_refuses_a_prompt_past_the_positions(lm):
    result = ptx("bench", lm / "model.onnx", "--generate", "8", "--prompt-length", str(POSITIONS))
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"the model has {POSITIONS}" in line and f"--prompt-length {POSITIONS - 8} at most" in line
    # the default prompt is clipped to what fits, and said
    result = ptx("bench", lm / "model.onnx", "--generate", str(POSITIONS - 4), "--backends", "ort-cpu",
                 "--rounds", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (f"prompt clipped to 4 tokens: 4 and {POSITIONS - 4} new ones fill the "
                                             f"model's {POSITIONS} positions")


def test_ptx_ort_profile_turns_onnx_runtime_s_profiler_on_and_only_then(monkeypatch, tmp_path):
    """scripts/profile_decode_step.py's hook: PTX_ORT_PROFILE=PREFIX makes every ptx session write ONNX Runtime's
    profile there; unset, none is written."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ptx.infer.runtime.ort_session import session_options

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8).SerializeToString()

    def written():
        session = ort.InferenceSession(model, session_options(ort), providers=["CPUExecutionProvider"])
        session.run(None, {"x": [1.0, -1.0]})
        return session.end_profiling()

    monkeypatch.delenv("PTX_ORT_PROFILE", raising=False)
    assert written() == ""
    monkeypatch.setenv("PTX_ORT_PROFILE", str(tmp_path / "step"))
    path = written()
    assert path.startswith(str(tmp_path / "step")) and '"model_run"' in open(path).read()
