"""Tiny causal LMs as transformers makes them, with random weights from configs: a Llama-shaped one (grouped-query
attention, rotary positions), a GPT-2-shaped one (learned positions, a tied head) and a Qwen2 (Llama's shape with
biases on q, k and v, the embedding tied to the head); and their exports, made once per test run for every file
that reads them (``TinyDecoders``: test_generate, test_cache, test_ort_attention and test_openvino_attention each
exported the same decoders, some 10 s apiece on 2 cores, almost all of it torch.export's tracing)."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers

VOCAB = 128
STATIC = "static"  # the layout --static-cache exports (FORMATS' key beside --ort-attention's True and plain False)


def llama(vocab: int = VOCAB, tied: bool = False):
    """The Llama (``tied``: its head tied to the embedding, as test_weight_only quantizes it)."""
    torch.manual_seed(0)  # initializer_range 0.2: logits far apart enough that greedy choices are no near-ties
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      initializer_range=0.2, tie_word_embeddings=tied, bos_token_id=None,
                                      eos_token_id=None)
    return transformers.LlamaForCausalLM(config).eval()


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).eval()


def qwen2():
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      initializer_range=0.2, tie_word_embeddings=True, bos_token_id=None,
                                      eos_token_id=None)
    return transformers.Qwen2ForCausalLM(config).eval()


BUILDERS = {"llama": llama, "gpt2": gpt2, "qwen2": qwen2}
# What each export writes, for every test that reads it: (decoder, --ort-attention) -> formats. Llama's int4 file
# in place is read beside its f32 one (test_ort_attention); GPT-2's TorchScript carries the cache where its trace
# holds (test_generate). A plain file's int4 twin is made apart (TinyDecoders.int4): beside it, verify would judge
# it too in every test that verifies the f32 file.
FORMATS = {("llama", False): ["onnx"], ("gpt2", False): ["onnx", "torchscript"],
           ("qwen2", False): ["onnx"], ("llama", True): ["onnx", "onnx-int4"], ("gpt2", True): ["onnx"],
           ("llama", STATIC): ["onnx", "torchscript"], ("qwen2", STATIC): ["onnx"]}


class TinyDecoders:
    """The decoders of BUILDERS, each exported once by ``once(name, make) -> folder`` (conftest's made_once: shared
    by the run's workers) the first time a test asks: ``[name]`` or ``.placed(name)`` (--ort-attention) -> (its
    model.onnx, what export said), ``.int4(name)`` -> the plain file's int4 twin. The files are read, never written:
    a test that changes one works on a copy."""

    def __init__(self, once):
        self.once, self.folders = once, {}

    def __getitem__(self, name: str) -> tuple[Path, list[str]]:
        return self._made(name, False)

    def placed(self, name: str) -> tuple[Path, list[str]]:
        return self._made(name, True)

    def static(self, name: str) -> tuple[Path, list[str]]:
        """The decoder exported with --static-cache (its cache a buffer of fixed length)."""
        return self._made(name, STATIC)

    def int4(self, name: str) -> Path:
        """The plain file's int4 twin, `ptx export model.onnx --format onnx-int4` of a copy in a folder of its own."""
        f32, _ = self[name]

        def make(folder: Path) -> None:
            from ptx_command import ptx

            shutil.copy2(f32, folder / "model.onnx")
            done = ptx("export", folder / "model.onnx", "--format", "onnx-int4")
            assert done.returncode == 0, done.stdout + done.stderr
        return self._folder(f"{name}-int4", make) / "model.int4.onnx"

    def _made(self, name: str, layout) -> tuple[Path, list[str]]:
        def make(folder: Path) -> None:
            from ptx.export.module import export_module

            lines: list[str] = []
            export_module(BUILDERS[name](), None, folder, log=lines.append, formats=FORMATS[(name, layout)],
                          ort_attention=layout is True, static_cache=layout == STATIC)
            (folder / "exported.log").write_text("\n".join(lines))
        folder = self._folder(f"{name}-static-cache" if layout == STATIC else f"{name}-ort-attention" if layout
                              else name, make)
        return folder / "model.onnx", (folder / "exported.log").read_text().split("\n")

    def _folder(self, key: str, make) -> Path:
        if key not in self.folders:  # asked once per process: a worker's own folder is made at each ask
            self.folders[key] = self.once(key, make)
        return self.folders[key]
