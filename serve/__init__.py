"""`ptx serve`: the models behind the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe
speak it), a dynamic batcher per model, Prometheus metrics and a drawing page. After infer in ptx's
one-way flow: it serves Predictors from ptx.infer, and the ONNX Runtime path never imports torch."""
from ptx.extras import require

require("serve")  # without the extra: one line with the pip command (MissingExtraError), not a traceback

from .server import serve  # noqa: E402 - after the check above
from .service import ServeOptions  # noqa: E402

__all__ = ["ServeOptions", "serve"]
