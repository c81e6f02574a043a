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
                 # the read model and one compiled shape (the runner keeps more only where memory has room); a
                 # dynamically quantized int8 graph compiles to 12.6x its file (6.1 GB for a 485 MB Qwen2-0.5B)
                 holds=2.2, holds_at=(("int8", 13.0),)))
