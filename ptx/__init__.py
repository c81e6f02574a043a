"""ptx: train the tutorials' models, export them, and serve them through agreeing backends
(eager, torchscript, ort-cpu, ort-cuda, openvino, aoti).

Importing ``ptx`` imports neither torch nor onnxruntime: the ONNX Runtime path must stay light.
"""
from ptx.errors import PtxError

__version__ = "0.1.0"
__all__ = ["PtxError", "__version__"]
