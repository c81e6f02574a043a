"""A decoder whose attention is ONNX Runtime's GroupQueryAttention (`ptx export --ort-attention`,
export/ort_attention.py), its cache kept in place. Exported from transformers' Llama (grouped heads) and GPT-2 (a
key/value head per query head): one operator per layer, no Concat of a past; it decodes transformers' tokens
alone and left-padded in one batch, through buffers the operator writes into (past and present bound to one
array) in a batch of decodings too, and, fed the past apart, as any decoder; a planted fault in the operator's
inputs (its scale) is refused by export's judge; verify and bench leave out the runtimes that do not run it, and
export refuses the formats of those runtimes in one line."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from ptx_command import ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.errors import PtxError, ValidationError  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.infer.model.batch import Batch  # noqa: E402
from ptx.infer.model.generation import GREEDY, Decoding  # noqa: E402
from ptx.infer.runtime.ort_runner import OrtRunner  # noqa: E402
from test_generate import PROMPTS, eager_generate  # noqa: E402
from tiny_decoders import BUILDERS  # noqa: E402

NEW = 24
LAYERS = 2


@pytest.fixture(scope="module")
def placed(tiny_decoders):
    """Llama's and GPT-2's --ort-attention exports (llama's int4 file too: its graph's rewrites), made once per run."""
    return {name: tiny_decoders.placed(name) for name in ("llama", "gpt2")}


def _writes(monkeypatch, copies: bool = False) -> list:
    """Each ort-cpu run_holding from now on: the outputs it was asked to write into given arrays. ``copies``: a
    planted fault, the runner binding a copy of each array instead of the array (its writes lost)."""
    seen, holding = [], OrtRunner.run_holding

    def recorded(self, feeds, held, into=None):
        seen.append(sorted(into or {}))
        if copies and into:
            copied = {name: array.copy() for name, array in into.items()}
            feeds = {name: next((copied[out] for out, a in into.items() if a is value), value)
                     for name, value in feeds.items()}
            into = copied
        return holding(self, feeds, held, into)

    monkeypatch.setattr(OrtRunner, "run_holding", recorded)
    return seen


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_one_operator_per_layer_reads_each_past_where_it_lies(placed, name):
    path, lines = placed[name]
    onnx_line = next(ln for ln in lines if ln.startswith("onnx "))
    assert "greedy tokens: 64 of 64" in onnx_line, onnx_line
    graph = onnx.load(str(path), load_external_data=False).graph
    operators = [n for n in graph.node if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft"]
    assert len(operators) == LAYERS
    pasts = {i.name for i in graph.input if i.name.startswith("past_key_values.")}
    readers = [n for n in graph.node for i in n.input if i in pasts]
    # the operator reads each past's values (no Concat copies it into its present); a Shape reads only its batch
    assert {n.op_type for n in readers} == {"GroupQueryAttention", "Shape"}, {n.op_type for n in readers}
    for shape in (n for n in readers if n.op_type == "Shape"):
        assert {(a.name, a.i) for a in shape.attribute} == {("start", 0), ("end", 1)}
    with load(path) as model:
        assert model.generation.in_place
        assert model.signature.input("past_key_values.0.key").shape[2] == "past"  # the usual layout


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_it_decodes_transformers_tokens_alone_and_batched_in_place(placed, name, monkeypatch):
    writes = _writes(monkeypatch)
    with load(placed[name][0]) as model:
        alone = [model.generate([p], max_new_tokens=NEW, eos=())[0] for p in PROMPTS]
        together = model.generate(PROMPTS, max_new_tokens=NEW, eos=())
    for prompt, one, batched in zip(PROMPTS, alone, together):
        assert one == batched == eager_generate(name, tuple(prompt), NEW)
    # every step after each of the four decodings' prompt's run was asked to write each present in place
    assert len(writes) == 4 * NEW and sum(len(w) == 2 * LAYERS for w in writes) == 4 * (NEW - 1), writes


@pytest.mark.parametrize("fault", [False, True])
def test_in_place_and_the_past_fed_apart_give_the_same_logits(placed, monkeypatch, fault):
    """The steps in place read the past only from the buffers the runner wrote: a runner that writes a copy
    instead (planted) leaves them as the prompt's run left them, and its logits part from the past fed apart."""
    _writes(monkeypatch, copies=fault)
    with load(placed["llama"][0]) as model:
        def logits(cache):
            decoding, seen = Decoding(model.run, model.signature, model.generation, PROMPTS, 6, eos=(), cache=cache), []
            for step in decoding:
                seen.append(step.logits.copy())
                decoding.append(GREEDY(step.logits, decoding.history))
            return seen

        kept, apart = logits(model.runner.new_cache(model.generation)), logits(None)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(kept, apart))
    assert (worst > 1e-2) if fault else (worst < 1e-5), worst


@pytest.mark.parametrize("in_place", [True, False])
def test_a_batch_of_decodings_gets_each_one_s_tokens_in_place_and_fed_apart(placed, in_place):
    """A server's batch: decodings joining (two together, one later) keep the buffer in place (the runner's cache),
    and a batch whose cache is numpy arrays feeds the past apart, as any decoder: each gets its own tokens."""
    with load(placed["llama"][0]) as model:
        alone = [model.generate([p], max_new_tokens=8, eos=())[0] for p in PROMPTS]
        cache = model.runner.new_cache(model.generation) if in_place else None
        batch = Batch(model.runner.run, model.signature, model.generation, cache=cache)
        assert type(batch.cache).__name__ == ("PlacedCache" if in_place else "ArrayCache")
        decodings = [model.decoding([p], 8, eos=()) for p in PROMPTS]
        for decoding, first in zip(decodings[:2], batch.join_together(decodings[:2])):
            decoding.append(GREEDY(first.logits, None))
        for t in range(16):
            if t == 2:
                first = batch.join(decodings[2])
                decodings[2].append(GREEDY(first.logits, None))
            for decoding, step in batch.step():
                decoding.append(GREEDY(step.logits, None))
    assert [d.tokens[0] for d in decodings] == alone


def test_a_planted_fault_in_the_operator_s_scale_is_refused_by_export(tmp_path, monkeypatch):
    """Each layer's GroupQueryAttention given 1.02x the model's scale: a file a little off at every position.
    Export's judge refuses it, and writes nothing."""
    import ptx.export.ort_attention as ort_attention

    own = ort_attention._attention

    def off(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        return own(module, query, key, value, attention_mask, scaling * 1.02, dropout, **kwargs)

    monkeypatch.setattr(ort_attention, "_attention", off)
    with pytest.raises(ValidationError) as caught:
        export_module(BUILDERS["llama"](), None, tmp_path / "bad", log=lambda _: None, formats=["onnx"],
                      ort_attention=True)
    assert "prompt" in str(caught.value), str(caught.value)
    assert not (tmp_path / "bad" / "model.onnx").exists()


def test_verify_and_bench_leave_out_the_runtimes_that_do_not_run_it(placed):
    path = placed["llama"][0]
    done = ptx("verify", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^ +ort-cpu +PASS", done.stdout, re.M) and "skipped openvino" in done.stdout, done.stdout
    assert "GroupQueryAttention (exported with --ort-attention)" in done.stdout, done.stdout
    bench = ptx("bench", path, "--generate", "4", "--prompt-length", "8", "--rounds", "1")
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "skipped openvino" in bench.stdout and "ort-cpu" in bench.stdout, bench.stdout
    asked = ptx("generate", path, "--ids", "5,17", "--max-new-tokens", "2", "--backend", "openvino")
    assert asked.returncode != 0 and asked.stderr.count("\n") == 1 and "use --backend ort-cpu" in asked.stderr, \
        asked.stderr


def test_the_default_formats_write_the_onnx_file_alone_and_only_ort_cpu_runs_it(tmp_path):
    from ptx.contract.generation import Generation
    from ptx.infer.runtime import backends

    lines: list[str] = []
    export_module(BUILDERS["llama"](), None, tmp_path / "d", log=lines.append, ort_attention=True)
    assert any(line.startswith("formats: onnx (--ort-attention") for line in lines), lines
    assert sorted(p.name for p in (tmp_path / "d").glob("model.*")) == ["model.onnx"]
    placed_contract = Generation((("p", "q"),), in_place=True)
    for name in backends.list_backends():
        why = backends.refuses_generation(backends.get(name), placed_contract)
        assert (why is None) == (name == "ort-cpu"), (name, why)
        # a plain decoder's past grows at every step: ort-cuda-graph, which replays fixed shapes, takes a
        # --static-cache file instead (test_static_cache.py)
        plain = backends.refuses_generation(backends.get(name), Generation((("p", "q"),)))
        assert (plain is None) == (name != "ort-cuda-graph"), (name, plain)


def test_formats_and_tasks_it_does_not_shape_are_refused_in_one_line(tmp_path):
    for formats, said in ((["torchscript"], "--format torchscript: --ort-attention writes ONNX Runtime's"),
                          (["onnx", "pt2"], "--format pt2: --ort-attention writes ONNX Runtime's"),
                          (["onnx", "openvino-int4"], "--format openvino-int4: --ort-attention writes")):
        with pytest.raises(PtxError, match=said):
            export_module(BUILDERS["llama"](), None, tmp_path / "f", log=lambda _: None, formats=formats,
                          ort_attention=True)
    with pytest.raises(PtxError, match="--ort-attention is for a causal LM exported with its cache"):
        export_module(BUILDERS["llama"](), None, tmp_path / "g", log=lambda _: None, formats=["onnx"],
                      task="forward", ort_attention=True, inputs=["input_ids=batchxseq:int64"])
    factory = tmp_path / "lm.py"
    factory.write_text("import torch\n\ndef net():\n    return torch.nn.Linear(2, 2)\n")
    done = ptx("export", "--module", f"{factory}:net", "--format", "triton", "--ort-attention", "--out", tmp_path / "r")
    assert done.returncode == 2 and "--ort-attention shapes a decoder exported with its cache" in done.stderr, \
        done.stderr


def test_its_int4_file_feeds_the_operator_straight_from_the_projections(placed):
    """onnx-int4 of the file: each layer's queries and keys go from their one MatMulNBits and its Split
    (export/onnx_shared_input.py) through one RotaryEmbedding into GroupQueryAttention, its values straight in,
    with no Reshape or Transpose between (export/onnx_rotary.py, onnx_graph.drop_reshape_round_trips); export's
    judge passes it and it decodes in place."""
    path, lines = placed["llama"]
    said = "\n".join(lines)
    assert "4 rotary rotations as RotaryEmbedding" in said and "Reshapes that undid each other dropped" in said \
        and re.search(r"ort-cpu-int4 on .*: PASS", said), said
    graph = onnx.load(path.with_name("model.int4.onnx")).graph
    made = {out: node.op_type for node in graph.node for out in node.output}
    for node in (n for n in graph.node if n.op_type == "GroupQueryAttention"):
        feeding = [made[name] for name in node.input[:3]]
        assert feeding == ["RotaryEmbedding", "RotaryEmbedding", "Split"], feeding
        split = next(n for n in graph.node if node.input[2] in n.output)
        assert made[split.input[0]] == "MatMulNBits" and len(split.output) == 3
    with load(path.with_name("model.int4.onnx")) as model:
        assert len(model.generate([PROMPTS[0]], max_new_tokens=4, eos=())[0]) == 4
