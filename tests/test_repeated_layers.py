"""A decoder exported from its folder is traced with two of its layers and layer 1's nodes repeated for the others
(export/repeated_layers.py): the file is the one a trace of every layer makes, and every way the two traced
layers could fail to stand for the rest sends the export back to tracing them all."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from ptx_command import ptx  # noqa: E402

LAYERS = 4


def qwen2(layers: int = LAYERS, **settings):
    config = transformers.Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      eos_token_id=2, **settings)
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A 4-layer Qwen2 as a transformers folder (bfloat16 safetensors)."""
    made = tmp_path_factory.mktemp("repeated") / "qwen2-4"
    qwen2().to(torch.bfloat16).save_pretrained(made)
    return made


@pytest.fixture(scope="module")
def exported(folder, tmp_path_factory) -> dict:
    """`ptx export FOLDER --format onnx`: what it printed, and its model.onnx."""
    out = tmp_path_factory.mktemp("repeated-onnx")
    run = ptx("export", str(folder), "--format", "onnx", "--out", str(out), merged=True)
    assert run.returncode == 0, run.stdout
    return {"log": run.stdout, "file": out / "model.onnx"}


def test_a_folder_s_decoder_is_exported_from_two_traced_layers_and_judged(exported):
    assert "its 4 layers traced as 2, layers 2 to 3 repeated from layer 1's nodes" in exported["log"]
    assert "greedy tokens: 64 of 64 as the reference's" in exported["log"]  # judged against eager as every export is


def _traced_whole(folder: Path, repeat: bool = False):
    """(The folder's decoder graph as export traces it without its weights with the repeat off (every layer
    traced; ``repeat``: on, as export has it), its folder tensors read in and the rewrites export's ONNX writer makes
    after the trace; how its layers were traced)."""
    import ptx.export.repeated_layers as repeated
    from ptx.export.cached_decoder import decoder_of, example_feeds
    from ptx.export.folder_weights import FolderWeights, read_lazy_inside
    from ptx.export.formats.onnx import _weightless_proto
    from ptx.export.onnx_graph import omit_zero_initial_states, rsqrt_as_division
    from ptx.export.streamed_module import folder_keys

    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    decoder, signature, generation = decoder_of(model, lambda _: None)
    decoder.eval()
    example = tuple(torch.from_numpy(v) for v in example_feeds(signature, generation, 256).values())
    weights = FolderWeights.of(folder)
    before, repeated.FEWEST = repeated.FEWEST, repeated.FEWEST if repeat else 10 ** 6
    try:
        with torch.no_grad():
            proto, how = _weightless_proto(decoder, example, signature, 18,
                                           folder_keys(decoder, weights, decoder.folder_prefix), weights)
    finally:
        repeated.FEWEST = before
    assert repeat or how == ""  # a decoder of few layers: traced whole, nothing said
    read_lazy_inside(proto)
    omit_zero_initial_states(proto)
    rsqrt_as_division(proto)
    return proto, how


def _same_graph(a, b) -> None:
    """``a`` and ``b`` are one graph: the same ops, inputs, outputs, folder weights and constants, and ONNX Runtime's
    answers equal to the bit on one run of three positions of two rows past 10 (13 in all: past a window of 8)."""
    # each node's op and module path (the exporter's name_scopes, which locate and export's departure read): a
    # repeated layer's nodes named as their own layer's, not as the layer they were copied from
    assert _nodes_by_module(a) == _nodes_by_module(b)
    assert [i.name for i in a.graph.input] == [i.name for i in b.graph.input]
    assert [o.name for o in a.graph.output] == [o.name for o in b.graph.output]
    # the weights by their folder names; the constants the exporter made, named by its counter, by their values
    weights_a, weights_b = ({t.name: numpy_helper.to_array(t) for t in m.graph.initializer if t.name.startswith("model.")}
                            for m in (a, b))
    assert weights_a.keys() == weights_b.keys()
    assert [k for k in weights_a if not np.array_equal(weights_a[k], weights_b[k])] == []
    constants_a, constants_b = (sorted((t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
                                       for t in m.graph.initializer if not t.name.startswith("model.")) for m in (a, b))
    assert constants_a == constants_b
    import onnxruntime

    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 256, (2, 3)), "attention_mask": np.ones((2, 13), np.int64),
             "position_ids": np.tile(np.arange(10, 13), (2, 1)), "logits_to_keep": np.array([1, 2])}
    feeds = {k: v.astype(np.int64) for k, v in feeds.items()}
    feeds.update({i.name: rng.standard_normal((2, 2, 10, 16)).astype(np.float32) for i in a.graph.input
                  if i.name.startswith("past_key_values.")})
    answers = [onnxruntime.InferenceSession(m.SerializeToString()).run(None, feeds) for m in (a, b)]
    for name, x, y in zip([o.name for o in a.graph.output], *answers):
        np.testing.assert_array_equal(x, y, err_msg=name)


def _nodes_by_module(model) -> list[tuple[str, tuple]]:
    """Each node's op and its module path (the exporter's name_scopes but their last, the node's own counted name)."""
    def path(node) -> tuple:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        return tuple(ast.literal_eval(scopes)[:-1])
    return sorted((n.op_type, path(n)) for n in model.graph.node)


def test_the_file_made_from_two_traced_layers_is_the_one_every_layer_s_trace_makes(folder, exported):
    _same_graph(onnx.load(str(exported["file"])), _traced_whole(folder)[0])


def gemma2(layers: int = 6):
    """A Gemma 2 whose layers alternate sliding and full attention (its layer_types), as its checkpoints' do."""
    config = transformers.Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                       max_position_embeddings=256, initializer_range=0.2)
    torch.manual_seed(0)
    return transformers.Gemma2ForCausalLM(config).eval()


def test_alternating_layers_are_traced_as_two_periods_and_repeated_as_every_layer_s_trace_makes(tmp_path):
    """Gemma 2's 6 layers, sliding and full attention in turn: layers 0 to 3 traced, 2 and 3 repeated as 4 and 5; the
    graph is the one every layer's trace makes, on positions past the window of 8, where a sliding layer reading the
    full layers' mask would answer otherwise (one copy reading the one before: the Qwen2 above, whose code it is)."""
    gemma2().to(torch.bfloat16).save_pretrained(tmp_path / "gemma2-6")
    repeated, how = _traced_whole(tmp_path / "gemma2-6", repeat=True)
    assert how == ("its 6 layers traced as 4 (their layer_types repeat every 2: sliding_attention, full_attention), "
                   "layers 4 to 5 repeated from layers 2 to 3's nodes"), how
    _same_graph(repeated, _traced_whole(tmp_path / "gemma2-6")[0])


def test_layers_set_apart_by_their_config_or_their_modules_are_traced_every_one():
    from ptx.export.cached_decoder import decoder_of
    from ptx.export.repeated_layers import traced_by_two_layers

    def why(model) -> str:
        decoder, signature, _ = decoder_of(model, lambda _: None)
        program, reason = traced_by_two_layers(decoder, (), signature,
                                               lambda *_: pytest.fail("traced although its layers differ"))
        assert program is None
        return reason

    # Qwen2's sliding window past max_window_layers: two kinds of layer in layer_types
    assert why(qwen2(use_sliding_window=True, sliding_window=8, max_window_layers=3)) == \
        "its layers are of 2 kinds (full_attention, sliding_attention)"
    plain = qwen2()
    plain.model.layers[3].self_attn.scaling = 0.5  # one layer's module set apart (a planted setting)
    assert why(plain) == "layer 3 is not built as layer 1 is"
    plain = qwen2()
    plain.config.no_rope_layers = [1, 1, 0, 1]  # a per-layer list, as SmolLM3's config has one
    assert why(plain) == "its config's no_rope_layers sets its layers apart"
    assert why(qwen2(layers=3)) == ""  # traced whole, quick enough: nothing said
    # two kinds in turn, but in no whole number of periods (5 layers), or one layer of a period built otherwise
    assert why(gemma2(layers=5)) == "its layers are of 2 kinds (full_attention, sliding_attention), in turn every 2: " \
                                    "not a whole number of periods"
    assert why(gemma2(layers=4)) == "its layers are of 2 kinds (full_attention, sliding_attention), in turn every 2: " \
                                    "fewer than 3 periods"
    planted = gemma2()
    planted.model.layers[4].self_attn.scaling = 0.5
    assert why(planted) == "layer 4 is not built as layer 2 is"
    planted.config.layer_types = ["full_attention"] * 6  # one kind, said; its modules' windows alternate
    assert why(planted) == "layer 4 is not built as layer 2 is"


@pytest.fixture(scope="module")
def two_layer_graph():
    """The unoptimized program of a 4-layer Qwen2's decoder traced with its first two layers, as the repeat gets it,
    and what the repeat is told of the cache: (program, signature)."""
    import ptx.export.repeated_layers as repeated
    from ptx.export.cached_decoder import decoder_of, example_feeds
    from ptx.export.formats.onnx import dynamic_dims

    decoder, signature, generation = decoder_of(qwen2(), lambda _: None)
    decoder.eval()
    feeds = example_feeds(signature, generation, 256)
    taken = {}

    def trace(module, example, cut):
        taken["program"] = torch.onnx.export(module, tuple(example), None, dynamo=True, opset_version=18,
                                             dynamic_shapes=dynamic_dims(cut), optimize=False,
                                             input_names=list(cut.input_names), output_names=list(cut.output_names))
        taken["cut"] = cut
        return taken["program"]

    keep = repeated.repeat_layers
    repeated.repeat_layers = lambda *args: "stopped before the repeat"  # the two-layer graph as it is traced
    try:
        repeated.traced_by_two_layers(decoder, tuple(torch.from_numpy(feeds[n]) for n in signature.input_names),
                                      signature, trace)
    finally:
        repeated.repeat_layers = keep
    return taken["program"], signature


def _repeat(program, signature, plant=None):
    """repeat_layers on a copy of ``program``'s graph, ``plant(graph)`` done to it first."""
    import onnx_ir as ir

    from ptx.export.repeated_layers import _pasts, cache_layers, repeat_layers

    graph = ir.from_proto(ir.to_proto(program.model)).graph
    if plant:
        plant(graph)
    past, present = cache_layers(signature)
    return repeat_layers(graph, "model.model.layers", LAYERS, past, present, lambda k: _pasts(graph, signature, k),
                         lambda k: [n for n, layer in present.items() if layer == k],
                         lambda held, name: ir.Value(name=name, shape=held.shape, type=held.type,
                                                     const_value=held.const_value)), graph


def _node_reading(graph, name: str, op_type: str):
    return next((n, i) for n in graph for i, v in enumerate(n.inputs)
                if v is not None and v.name == name and n.op_type == op_type)


def test_the_repeat_refuses_a_second_layer_that_does_not_stand_for_the_others(two_layer_graph):
    program, signature = two_layer_graph
    why, graph = _repeat(program, signature)
    assert why is None  # the legitimate case: repeated, every layer's past and present in the signature's order
    assert [v.name for v in graph.inputs] == list(signature.input_names)
    assert [v.name for v in graph.outputs] == list(signature.output_names)

    def reads_layer_0_s_weight(graph):
        node, index = _node_reading(graph, "model.model.layers.1.mlp.up_proj.weight", "Transpose")
        node.replace_input_with(index, graph.initializers["model.model.layers.0.mlp.up_proj.weight"])

    why, _ = _repeat(program, signature, reads_layer_0_s_weight)
    assert why is not None and "up_proj" in why

    def reads_layer_0_s_past(graph):
        node, index = _node_reading(graph, "past_key_values.1.value", "Identity")  # the cache made from it
        node.replace_input_with(index, next(v for v in graph.inputs if v.name == "past_key_values.0.value"))

    why, _ = _repeat(program, signature, reads_layer_0_s_past)
    # the cache's copy of the past reads two layers' tensors now: no layer's, so layer 1 is a node short
    counts = re.fullmatch(r"layers 0 and 1 have (\d+) and (\d+) nodes", why or "")
    assert counts and int(counts[2]) == int(counts[1]) - 1, why

    def the_head_reads_layer_0(graph):
        import onnx_ir as ir

        inside = next(n for n in graph if "model.model.layers.0.mlp" in n.metadata_props.get(
            "pkg.torch.onnx.name_scopes", "") and n.op_type == "MatMul")
        graph.append(ir.Node("", "Identity", [inside.outputs[0]], name="reads_layer_0"))
        graph.outputs.append(graph.node("reads_layer_0").outputs[0])

    why, _ = _repeat(program, signature, the_head_reads_layer_0)
    assert why is not None and "layer 0" in why
