"""`ptx serve`: the models behind the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe
speak it), a dynamic batcher per model, Prometheus metrics and a drawing page. After infer in ptx's
one-way flow: it serves Predictors from ptx.infer, and the ONNX Runtime path never imports torch."""
from .server import serve
from .service import ServeOptions

__all__ = ["ServeOptions", "serve"]
