"""A transformers folder exported without holding its model whole (docs/large-lms.md): the folder's weights known
from its safetensors headers before any is read, the graph traced without them, each weight read from its shard
as a file is written, and, where the model does not fit in memory, the reference decoding run with each module's
weights read as it runs. The folder is scripts/make_lm_folder.py's tiny-sharded: Qwen2.5's layout, 34M
parameters in bfloat16 shards (9 files), and a ChatML tokenizer."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptx.errors import PtxError
from ptx.export.folder_weights import FolderWeights, read_header
from ptx_command import ptx, ptx_ok
from repo_scripts import script

REPO = Path(__file__).resolve().parent.parent


def graph_and_weights(path: Path) -> tuple[list, dict]:
    """An ONNX file's nodes (op, inputs, outputs) and its initializers' values by name: what two files of the same
    model must share, whatever their metadata (when and from what each was made)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    nodes = [(n.op_type, list(n.input), list(n.output)) for n in proto.graph.node]
    return nodes, {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def same_file(a: Path, b: Path) -> None:
    nodes_a, weights_a = graph_and_weights(a)
    nodes_b, weights_b = graph_and_weights(b)
    assert nodes_a == nodes_b
    assert weights_a.keys() == weights_b.keys()
    assert [k for k in weights_a if not np.array_equal(weights_a[k], weights_b[k])] == []


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    made = tmp_path_factory.mktemp("sharded") / "qwen-tiny"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_lm_folder.py"), "tiny-sharded", str(made)], check=True,
                   capture_output=True)
    return made


# Runs the command as its child and writes the child's peak resident bytes: the kernel's count for a child starts from
# the high-water mark of the process that forked it (exec records it: a pytest worker that held a model before would
# lend the child its peak), so the child is forked from this small process, not from the test's.
_PEAK_OF_CHILD = ("import os, subprocess, sys\n"
                  "child = subprocess.Popen(sys.argv[2:])\n"
                  "_, status, usage = os.wait4(child.pid, 0)\n"
                  "open(sys.argv[1], 'w').write(str(usage.ru_maxrss * 1024))\n"
                  "sys.exit(os.waitstatus_to_exitcode(status))")


def measured_export(folder: Path, out: Path, limit: int | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """`ptx export FOLDER --format onnx-int4 --out OUT` in its own process (under PTX_MEMORY_LIMIT=``limit`` where
    given): (it, the process's peak resident bytes, as the kernel counted it for that child: wait4)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PTX_MEMORY_LIMIT"}
    if limit:
        env["PTX_MEMORY_LIMIT"] = str(limit)
    peak = out.parent / f".{out.name}.peak"
    done = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, str(peak), sys.executable, "-m", "ptx", "export",
                           str(folder), "--format", "onnx-int4", "--out", str(out)], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, int(peak.read_text())


@pytest.fixture(scope="module")
def exported(folder, tmp_path_factory) -> dict:
    """The folder's int4 file as `ptx export FOLDER --format onnx-int4` writes it on this machine (the model whole
    in memory: it has room), with that process's peak; and the same model's int4 file by the way every decoder
    file was made before: its f32 model.onnx first, traced with its weights, and the int4 file quantized from it."""
    from transformers import AutoModelForCausalLM

    from ptx.export.module import export_module

    root = tmp_path_factory.mktemp("exported")
    done, peak = measured_export(folder, root / "folder")
    module = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    export_module(module, None, root / "old", name="qwen-tiny", formats=["onnx", "onnx-int4"], log=lambda _: None)
    return {"log": done.stdout, "peak": peak, "int4": root / "folder" / "model.int4.onnx",
            "old": root / "old" / "model.int4.onnx", "out": root / "folder"}


def test_the_folder_s_tensors_are_known_before_any_is_read(folder):
    weights = FolderWeights.of(folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(weights.tensors) == set(index["weight_map"])
    assert weights.stored_bytes == index["metadata"]["total_size"] and weights.f32_bytes == 2 * weights.stored_bytes
    assert weights.dtype == "bfloat16" and weights.largest_f32 == 4 * 4096 * 1024


def test_a_bfloat16_tensor_reads_as_torch_widens_it(folder):
    from safetensors.torch import load_file

    weights = FolderWeights.of(folder)
    stored = weights.tensors["model.layers.1.mlp.down_proj.weight"]
    theirs = load_file(str(stored.path))[stored.key].float().numpy()
    assert np.array_equal(weights.read(stored.key), theirs)


def test_a_weight_read_transposed_is_its_transpose_block_by_block():
    """folder_weights.transposed_copy (blocks of rows, for speed): numpy's transpose, contiguous, at sizes that are
    not whole blocks and from a view that is not contiguous either."""
    from ptx.export.folder_weights import TRANSPOSE_ROWS, transposed_copy

    values = np.random.default_rng(0).standard_normal((3 * TRANSPOSE_ROWS + 5, 2 * TRANSPOSE_ROWS + 3), np.float32)
    for view in (values, values[:, 7:], values[:1], values[:TRANSPOSE_ROWS]):
        got = transposed_copy(view)
        assert got.flags.c_contiguous and np.array_equal(got, view.T)


def test_a_damaged_or_missing_shard_is_one_line(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = sorted(copy.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(PtxError, match="damaged or cut short; download it again"):
        FolderWeights.of(copy)
    shard.unlink()
    with pytest.raises(PtxError, match=f"names {shard.name}, which is not in the folder: download it too"):
        FolderWeights.of(copy)


def test_a_tensor_stored_transposed_is_refused_naming_it_and_its_shard(folder, tmp_path):
    """A shard whose tensor is laid out otherwise than the config's model (a converter's bug) is refused before the
    export reads anything, naming the tensor and its file, where the whole model's loading would fail later."""
    import shutil

    from ptx.export.streamed_module import folder_keys, empty_model
    from transformers import AutoConfig, Qwen2ForCausalLM

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    key = "model.layers.0.mlp.up_proj.weight"
    shard = copy / json.loads((copy / "model.safetensors.index.json").read_text())["weight_map"][key]
    size = struct.unpack("<Q", shard.read_bytes()[:8])[0]
    header = json.loads(shard.read_bytes()[8:8 + size])
    header[key]["shape"] = header[key]["shape"][::-1]
    text = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    shard.write_bytes(shard.read_bytes()[:8] + text + shard.read_bytes()[8 + size:])
    assert read_header(shard)[key].shape == (1024, 4096)
    model = empty_model(Qwen2ForCausalLM, AutoConfig.from_pretrained(str(copy)))
    with pytest.raises(PtxError, match=f"{shard.name}: {key} has shape \\[1024, 4096\\] where the model's config makes "
                                       "it \\[4096, 1024\\]"):
        folder_keys(model, FolderWeights.of(copy))


def test_the_streamed_model_computes_what_the_whole_one_does_one_module_at_a_time(folder):
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2ForCausalLM

    from ptx.export.streamed_module import empty_model, stream

    whole = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    streamed = stream(empty_model(Qwen2ForCausalLM, AutoConfig.from_pretrained(str(folder))), FolderWeights.of(folder))
    held = []

    def count(module, args):  # the modules holding real weights while this one runs: itself alone
        held.append(sum(any(p.device.type != "meta" for p in m._parameters.values() if p is not None)
                        for m in streamed.modules()))

    for module in streamed.modules():
        if module._parameters:
            module.register_forward_pre_hook(count)  # after the stream's own: its weights are read by now
    ids = torch.tensor([[5, 17, 93, 400, 2, 2, 7]])
    with torch.no_grad():
        assert torch.equal(streamed(input_ids=ids).logits, whole(input_ids=ids).logits)
    assert held and max(held) == 1
    assert all(p.device.type == "meta" for p in streamed.parameters())  # every weight let go after its module ran


def test_a_folder_s_int4_file_is_the_f32_file_s_and_needs_no_model_onnx(exported):
    """The graph traced without the weights and each weight read from its shard give the very file the old way
    made (model.onnx traced with the weights, then quantized): same nodes, same values; and no f32 file."""
    assert "graph: traced without its weights" in exported["log"]
    assert sorted(p.name for p in exported["out"].glob("*.onnx*")) == ["model.int4.onnx"]
    same_file(exported["int4"], exported["old"])
    assert "ort-cpu-int4 on" in exported["log"] and ": PASS" in exported["log"]


def test_files_past_one_message_keep_their_weights_beside_them_written_tensor_by_tensor(folder, tmp_path, monkeypatch,
                                                                                        exported):
    """Past ONE_FILE_BYTES (lowered here, as a 7B model's weights pass it) the f32 file's weights are written from
    the shards into its data file one tensor at a time, and the int4 file's go to its own data file as the quantizer
    makes them, never gathered in the graph, a weight past PIECE_BYTES (lowered too) quantized in pieces; both are
    checked, and the int4 file is the same model, value for value. The graph is traced once for both files."""
    from ptx.infer.formats import onnx_files
    from ptx.infer.model.target import load

    from ptx.export.formats import onnx_weights

    monkeypatch.setattr(onnx_files, "ONE_FILE_BYTES", 1 << 20)
    monkeypatch.setattr(onnx_weights, "PIECE_BYTES", 3 << 20)  # the 4096-wide weights and the table in pieces
    traces, trace = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: traces.append(1) or trace(*args, **kwargs))
    done = ptx_ok("export", folder, "--format", "onnx,onnx-int4", "--out", tmp_path / "out")
    assert len(traces) == 1  # the int4 file is made from the graph model.onnx was written from
    assert "graph: model.onnx's, traced without its weights" in done.stdout
    assert "written from qwen-tiny's bfloat16 tensors" in done.stdout and "greedy tokens: 64 of 64" in done.stdout
    for name in ("model.onnx", "model.int4.onnx"):
        written = tmp_path / "out" / name
        assert onnx_files.companions(written) == [f"{name}.data"] and written.stat().st_size < 1 << 20
    same_file(tmp_path / "out" / "model.int4.onnx", exported["int4"])
    assert len(load(tmp_path / "out" / "model.int4.onnx").generate([5, 17, 93], max_new_tokens=3)[0]) == 3
    assert "torchscript" not in done.stdout and "torchscript" not in exported["log"]  # only where asked


def test_under_a_memory_limit_below_the_whole_model_s_it_streams_and_never_passes_it(folder, tmp_path, exported):
    """An artificial memory limit below what the export with the model whole took: the plan reads the model one
    module at a time instead, the file is the same, and the process never held more than the limit."""
    assert "opened whole" in exported["log"]
    limit = exported["peak"] - (150 << 20)  # holding the model whole took some 330 MB more here (137 MB of weights)
    done, peak = measured_export(folder, tmp_path / "streamed", limit)
    assert "read one tensor at a time" in done.stdout and "each module's read from the folder" in done.stdout
    assert peak <= limit, (peak, limit, exported["peak"])
    same_file(tmp_path / "streamed" / "model.int4.onnx", exported["int4"])
    assert sorted(p.name for p in (tmp_path / "streamed").glob("*.onnx*")) == ["model.int4.onnx"]  # no f32 file


def test_a_folder_that_cannot_fit_is_refused_before_a_weight_is_read(folder, tmp_path, monkeypatch):
    from ptx.export import folder_weights, streamed_module

    def never(*args, **kwargs):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(folder_weights, "read_stored", never)
    monkeypatch.setattr(streamed_module, "read_f32", never)
    done = ptx("export", folder, "--format", "onnx-int4", "--out", tmp_path, env={**__import__("os").environ,
                                                                                   "PTX_MEMORY_LIMIT": "100M"})
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: qwen-tiny: exporting a Qwen2ForCausalLM (qwen2) needs about") and \
        "even read one tensor at a time" in line and "is available (PTX_MEMORY_LIMIT less what ptx holds)" in line
    assert not (tmp_path / "model.int4.onnx").exists()


def test_a_weight_read_wrong_fails_the_int4_verdict_naming_its_layer(folder, tmp_path, monkeypatch):
    """A planted fault in the writer's reading (one layer's attention output projection read transposed: a square
    matrix, so every shape still fits) is caught by the judge, whose reference reads the folder its own way, and
    export names the layer it is in (the file itself is kept, said NOT USABLE, as every reduced file that misses its
    bounds is)."""
    from ptx.export import folder_weights

    read, layer = folder_weights.read_lazy, 0

    def transposed_once(tensor, part=None):
        values = read(tensor, part)
        planted = folder_weights.stored_of(tensor)[0].key == f"model.layers.{layer}.self_attn.o_proj.weight"
        return np.ascontiguousarray(values.T) if planted else values

    monkeypatch.setattr(folder_weights, "read_lazy", transposed_once)
    done = ptx("export", folder, "--format", "onnx-int4", "--out", tmp_path)
    assert ": NOT USABLE: prompt" in done.stdout, done.stdout + done.stderr
    assert f"the file parts from the model most in model.layers.{layer} (layer {layer + 1} of 2)" in done.stdout


def test_departure_names_the_layer_a_difference_is_born_in(folder, exported):
    """The layer-by-layer comparison on its own: the folder's int4 file against the model it was made from (int4's
    rounding in every layer, the first layer's the largest share), and against the model with its second layer's
    output projection transposed, where it names that layer."""
    from transformers import AutoModelForCausalLM

    from ptx.contract.generation import of_metadata
    from ptx.contract.reference_decoding import recorded_reference
    from ptx.export.departure import departure
    from ptx.export.weight_only import first_steps
    from ptx.infer.formats.model_files import read_model_file
    from ptx.infer.formats.signature import recorded_signature

    path = exported["int4"]
    meta = read_model_file(path).metadata
    generation = of_metadata(meta, path.name)
    prompt = recorded_reference(generation).prompts[2]
    feeds = first_steps(recorded_signature(meta, path), generation, [prompt])[0]
    module = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    said = departure(path, module, feeds, np.asarray([prompt]))
    assert said.startswith("the file parts from the model most in model.layers.0 (layer 1 of 2)"), said
    with torch.no_grad():
        projection = module.model.layers[1].self_attn.o_proj.weight
        projection.copy_(projection.T.clone())
    said = departure(path, module, feeds, np.asarray([prompt]))
    assert said.startswith("the file parts from the model most in model.layers.1 (layer 2 of 2)"), said


FAMILIES = script("lm_families")


@pytest.mark.parametrize("family", sorted(FAMILIES.FAMILIES))
def test_every_family_read_module_by_module_computes_what_it_computes_whole(family, tmp_path):
    """The families users bring (scripts/lm_families.py), each saved as a folder in bfloat16 and read one module at
    a time: the same logits as transformers' whole model in float32, and every tensor of the folder named (a tied
    head read under the table's name, a fused projection as it is stored)."""
    from transformers import AutoModelForCausalLM

    from ptx.export.streamed_module import empty_model, stream

    FAMILIES.build(family).to(torch.bfloat16).save_pretrained(str(tmp_path), max_shard_size="64KB")
    whole = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    streamed = stream(empty_model(type(whole), whole.config), FolderWeights.of(tmp_path))
    ids = torch.tensor([[5, 17, 93, 40, 2, 7, 11]])
    with torch.no_grad():
        assert torch.equal(streamed(input_ids=ids).logits, whole(input_ids=ids).logits)
