"""openvino: an ONNX file through OpenVINO's CPU plugin (numpy + onnx + openvino, never torch).

Optional: ``pip install 'ptx[openvino]'``. f32 by default (set explicitly: OpenVINO would pick
bf16 on CPUs with AMX); ``bf16`` runs the same file at bf16; ``int8`` reads model.openvino-int8.onnx,
the graph NNCF quantized for OpenVINO (``ptx export NAME --format openvino-int8``), or a decoder's weights
NNCF compressed (model.openvino-int8w.onnx), ``int4`` model.openvino-int4.onnx. A user's own ONNX
file runs on the same runner, at the same precisions, and so does any int8 file given by its path
(onnxruntime's quantizer's too: both are Q/DQ graphs)."""
from . import Backend, lazy, register

register(Backend(name="openvino", artifact="onnx", devices=("cpu",), open=lazy("runtime.openvino_runner", "OpenVinoRunner.open"),
                 unavailable=lazy("runtime.openvino_runner", "unavailable"), needs_torch=False,
                 precisions=(("f32", None), ("bf16", None), ("int8", "openvino-int8"), ("int4", "openvino-int4")),
                 # the read model and one compiled shape (the runner keeps more only where memory has room):
                 # 2.35x a 134 MB MLP's weights, 2.10x a 504 MB one's (bf16: 2.11x, 2.03x; scripts/backend_memory.py,
                 # Intel Xeon, 2026-11-26), 2.2x a 783 MB Qwen2's (AMD EPYC); a dynamically quantized int8 graph is
                 # compiled to f32 weights: 13x its file at its peak, its compiled shape (below) and the graph read;
                 # a weight-only file holds as f32 of its own weights (Backend.holds_for): 2.41x Qwen2.5-3B's int8w
                 # file, 4.74 GB, opened and decoding (AMD EPYC, 2026-11-29)
                 holds=2.4, holds_at=(("int8", 13.0),),
                 # each further compiled shape: the CPU plugin repacks the weights for it (783 MB Qwen2: 1.0x at
                 # f32, 0.7x at bf16; the int8 Qwen2-0.5B: 12.6x its file, 6.1 GB; a weight-only int4 file, taken as
                 # f32's 1.0x of its own weights)
                 compiled_copy_at=(("f32", 1.0), ("bf16", 0.7), ("int8", 12.6), ("int4", 1.0)),
                 # a 2-layer Qwen2's 25 MB int4 decoder compiled and decoding, stateful and not, took 272 MB beyond
                 # the process before it (AMD EPYC, OpenVINO 2025, 2026-11-28): 2.4x its weights and some 200 MB more
                 opens_with=200 << 20))
