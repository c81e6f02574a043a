"""openvino: an ONNX file through OpenVINO's CPU plugin (numpy + onnx + openvino, never torch).

Optional: ``pip install 'ptx[openvino]'``. f32 by default (set explicitly: OpenVINO would pick
bf16 on CPUs with AMX); ``bf16`` runs the same file at bf16; ``int8`` reads model.int8.onnx. A user's
own ONNX file runs on the same runner, at the same precisions."""
from . import Backend, lazy, register

register(Backend(name="openvino", artifact="onnx", devices=("cpu",), open=lazy("runtime.openvino_runner", "OpenVinoRunner.open"),
                 unavailable=lazy("runtime.openvino_runner", "unavailable"), needs_torch=False,
                 description="OpenVINO, CPU plugin",
                 precisions=(("f32", None), ("bf16", None), ("int8", "onnx-int8"))))
