"""A decoder whose cache has a fixed length (`ptx export --static-cache`, export/static_cache.py): past and present
one buffer as long as the mask, the new positions written at the slots cache_position names, plain ONNX operators.
Exported from transformers' Llama and Qwen2: the file's tensors say the layout and export's judge held it to
transformers' generate(); at the sizes a decoding step fixes (ONNX Runtime's free-dimension overrides, as
ort-cuda-graph's step session opens it) no shape arithmetic is left for the CPU, which a CUDA graph's capture
refuses, and a size left free keeps it (the check's planted fault); the step session writes the buffers it is
bound to in place; ort-cuda-graph refuses a growing cache in one line; a model whose code keeps its cache its own
way is refused at export. The forms of the cache it decodes through are in test_cache.py's parametrised set."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.contract.generation import GENERATION_KEY, Generation  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export import static_cache  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.infer.model.generation import Decoding  # noqa: E402
from ptx.infer.runtime import backends  # noqa: E402
from ptx.infer.runtime.ort_graph import OrtGraphRunner  # noqa: E402
from ptx.infer.runtime.graph_shapes import step_sizes  # noqa: E402
from test_generate import PROMPTS, eager_generate  # noqa: E402
from test_graph_paths import on_runner  # noqa: E402
from tiny_decoders import BUILDERS  # noqa: E402

# what a CUDA graph cannot hold: sizes computed as the graph runs (ONNX Runtime keeps that arithmetic on the CPU):
# these operators' outputs, and the size inputs (read on the host) of those below where they are not constants
SIZES = {"Shape", "Size", "Range", "ConstantOfShape", "NonZero"}
SIZE_INPUTS = {"Expand": slice(1, 2), "Reshape": slice(1, 2), "Tile": slice(1, 2), "Slice": slice(1, None)}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def static(request, tiny_decoders):
    return request.param, *tiny_decoders.static(request.param)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_file_says_its_layout_and_was_held_to_generate(static):
    name, path, lines = static
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs, outputs = {i.name: _dims(i) for i in graph.input}, {o.name: _dims(o) for o in graph.output}
    assert inputs["attention_mask"] == ["batch", "capacity"] and inputs["cache_position"] == ["seq"]
    assert inputs["past_key_values.0.key"][2] == outputs["present.0.key"][2] == "capacity"
    writes = [n for n in graph.node if n.op_type == "ScatterND"]
    # a write per layer's key and value, on the past itself (no Transpose of the buffer before it: ONNX Runtime then
    # writes in place where the present is bound to the past's memory)
    assert sorted(n.input[0] for n in writes) == sorted(i for i in inputs if i.startswith("past_key_values."))
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert Generation.from_json(meta["ptx." + GENERATION_KEY], "test").cache_position == "cache_position"
    judged = next(ln for ln in lines if ln.startswith("onnx "))
    assert "generate(do_sample=False)" in " ".join(lines) and "greedy tokens: 64 of 64" in judged, judged


def _sizes_at_run(path, overrides) -> list[str]:
    """The nodes of ONNX Runtime's optimized graph at ``overrides`` (free-dimension overrides) that compute a size as
    the graph runs, or read one that is not a constant."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    for dim, size in overrides.items():
        options.add_free_dimension_override_by_name(dim, size)
    optimized = path.parent / f"fixed-{'-'.join(f'{k}{v}' for k, v in overrides.items())}.onnx"
    options.optimized_model_filepath = str(optimized)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folding, no CPU-only fusions
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        graph = onnx.load(str(optimized)).graph
    finally:
        optimized.unlink()
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [f"{n.op_type} {n.name}" for n in graph.node if n.op_type in SIZES or any(
        i and i not in constants for i in list(n.input)[SIZE_INPUTS.get(n.op_type, slice(0, 0))])]


def test_at_the_step_s_fixed_sizes_no_shape_arithmetic_is_left(static, tmp_path):
    """The step session's overrides (rows, one position, the buffer, one kept logit) fold every size the graph
    computed away (Shape, Range; an Expand's or Reshape's size a constant); the planted fault, the buffer's length
    left free, keeps them: the check sees what a capture would refuse."""
    name, path, _ = static
    local = tmp_path / "model.onnx"
    local.write_bytes(path.read_bytes())
    with load(path) as model:
        fixed = step_sizes(model.signature, model.generation, 1, 256)
    assert fixed == {"batch": 1, "seq": 1, "capacity": 256, "kept": 1}
    assert _sizes_at_run(local, fixed) == []
    loose = _sizes_at_run(local, {k: v for k, v in fixed.items() if k != "capacity"})
    assert any(n.startswith("Shape ") for n in loose), loose


def test_the_step_session_writes_the_buffers_it_is_bound_to_and_gives_eager_s_tokens(static):
    name, path, _ = static
    with on_runner(OrtGraphRunner, path) as model:
        cache = model.runner.new_cache(model.generation)
        decoding = Decoding(model.runner.run, model.signature, model.generation, [PROMPTS[1]], 20, eos=(), cache=cache)
        decoding.take(decoding.step())  # the prompt, through the runner's own session, into the cache's own buffers
        assert cache._step is None
        decoding.take(decoding.step())  # the first one-position step: the cache moves into a step session's buffers
        buffers = dict(cache._buffers)
        before = {n: b.numpy().copy() for n, b in buffers.items()}
        decoding.take(decoding.step())  # the step session's replay
        step = cache._step
        assert step is not None and all(step.buffers[n] is buffers[n] for n in buffers)
        assert model.runner._steps == {}  # the cache holds its step session
        slot = cache.length - 1
        for n, b in buffers.items():
            after = b.numpy()
            assert np.abs(after[:, :, slot]).max() > 0 and not before[n][:, :, slot].any()  # written where it lies
            assert np.array_equal(after[:, :, :slot], before[n][:, :, :slot])
        done = decoding.to_end()
        assert done.tokens[0] == eager_generate(name, tuple(PROMPTS[1]), 20)
        assert list(model.runner._steps) == [(1, 256)]  # given back at the end, for the next decoding of its sizes


def test_ort_cuda_graph_refuses_a_cache_that_grows_in_one_line(static):
    graph = backends.get("ort-cuda-graph")
    with load(static[1]) as model:
        plain = Generation(model.generation.cache)
        assert backends.refuses_generation(graph, model.generation) is None
    why = backends.refuses_generation(graph, plain)
    assert why and "--static-cache" in why and "\n" not in why
    assert backends.refuses_generation(backends.get("ort-cpu"), plain) is None


def test_a_model_that_keeps_its_cache_its_own_way_is_refused(monkeypatch, tmp_path):
    """The planted fault: the layer's update leaves the buffer as it was (a model whose own code keeps its cache);
    export refuses in one line before tracing; and the two layouts together are refused."""
    layer = static_cache._layer_class()
    monkeypatch.setattr(layer, "update", lambda self, key, value, *a, **k: (key, value))
    with pytest.raises(PtxError, match=r"--static-cache: LlamaForCausalLM does not compute over a fixed-length cache "
                                       r"as over its own \(its keys were not written"):
        export_module(BUILDERS["llama"](), None, tmp_path / "x", log=lambda _: None, formats=["onnx"],
                      static_cache=True)
    monkeypatch.undo()
    with pytest.raises(PtxError, match="two layouts of the cache: give one"):
        export_module(BUILDERS["llama"](), None, tmp_path / "y", log=lambda _: None, formats=["onnx"],
                      static_cache=True, ort_attention=True)


def test_rows_that_come_and_go_replay_one_step_session_with_padding_rows(static, monkeypatch):
    """A running batch (a server's): 3 rows, a fourth joins, the first three leave. ort-cuda-graph's step session is
    made once, for 4 rows, and replays every step (its padding rows never read): each decoding's tokens are
    transformers' own, alone."""
    from ptx.infer.model.batch import Batch
    from ptx.infer.runtime import ort_graph_cache

    name, path, _ = static
    made, replays = [], []
    init, replay = ort_graph_cache.StepSession.__init__, ort_graph_cache.StepSession.replay
    monkeypatch.setattr(ort_graph_cache.StepSession, "__init__",
                        lambda self, runner, gen, rows, capacity: (made.append(rows), init(self, runner, gen, rows,
                                                                                               capacity))[1])
    monkeypatch.setattr(ort_graph_cache.StepSession, "replay",
                        lambda self, feeds: (replays.append(self.rows), replay(self, feeds))[1])
    with on_runner(OrtGraphRunner, path) as model:
        gen, sig = model.generation, model.signature
        batch = Batch(None, sig, gen, cache=model.runner.new_cache(gen))
        first = Decoding(None, sig, gen, PROMPTS, 12, eos=(), cache=model.runner.new_cache(gen))
        joiner = Decoding(None, sig, gen, [PROMPTS[1]], 12, eos=(), cache=model.runner.new_cache(gen))
        first.take(batch.join(first))
        for t in range(30):
            if t == 2:
                joiner.take(batch.join(joiner))
            if t == 6:
                batch.leave(first)
            for member, step in batch.step():
                member.take(step)
            if not batch.members:
                break
    assert made == [4], made  # 3 rows padded to 4; 4 rows; 1 row: the one session throughout
    assert set(replays) == {4} and len(replays) > 10
    assert joiner.tokens[0] == eager_generate(name, tuple(PROMPTS[1]), 12)
    for row, prompt in enumerate(PROMPTS):
        got = first.tokens[row]
        assert 0 < len(got) < 12 and got == eager_generate(name, tuple(prompt), 12)[:len(got)]


def test_where_no_gpu_is_the_step_is_placed_on_cuda_whole_as_its_session_opens_it(static, tiny_decoders):
    """ort-cuda-graph's line where it cannot run (verify, inspect): the fixed-length file's decoding step, every
    size fixed as its session fixes them, has every node on CUDA by ptx's static placement of ONNX Runtime's CUDA
    provider (a node left on the CPU would refuse the capture); the plain file, its sizes free, keeps its shape
    arithmetic on the CPU."""
    from ptx.infer.runtime.cuda_placement import graph_static_summary

    said = graph_static_summary(static[1])
    assert said.startswith("a decoding step at fixed sizes (batch 1, seq 1, capacity 256, kept 1): all "), said
    assert " nodes on CUDA" in said and "would run on the CPU" not in said
    plain = graph_static_summary(tiny_decoders[static[0]][0])
    assert plain.startswith("static placement: ") and "would run on the CPU" in plain, plain
