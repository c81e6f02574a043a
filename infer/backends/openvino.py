"""openvino: model.onnx through OpenVINO's CPU plugin (numpy + onnx + openvino, never torch).

Optional: ``pip install 'ptx[openvino]'``. f32 by default (set explicitly: OpenVINO would pick
bf16 on CPUs with AMX); ``bf16`` runs the same file at bf16; ``int8`` reads model.int8.onnx. A user's own
ONNX file runs through openvino_tensor.py (f32 or bf16)."""
from . import Backend, lazy, register

register(Backend(name="openvino", artifact="onnx", devices=("cpu",), load=lazy("openvino_predictor", "OpenVinoPredictor"),
                 unavailable=lazy("openvino_predictor", "unavailable"),
                 bare=lazy("openvino_predictor", "bare_compiled_runner"), needs_torch=False,
                 description="OpenVINO, CPU plugin",
                 precisions=(("f32", None), ("bf16", None), ("int8", "onnx-int8")),
                 open_file=lazy("openvino_tensor", "OpenVinoTensorModel")))
