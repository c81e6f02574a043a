"""`ptx serve`: the models behind the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe
speak it), a dynamic batcher per model, Prometheus metrics and a drawing page. After infer in ptx's
one-way flow: it serves Predictors from ptx.infer, and the ONNX Runtime path never imports torch."""
from ptx.errors import BackendUnavailableError

# The serve extra's import names (pyproject's [project.optional-dependencies] serve).
SERVE_EXTRA = {"uvicorn", "httptools", "uvloop", "starlette", "orjson", "grpc", "tritonclient", "prometheus_client"}

try:
    from .server import serve
    from .service import ServeOptions
except ModuleNotFoundError as exc:  # without the extra: one line with the command, not a traceback
    if (exc.name or "").split(".")[0] not in SERVE_EXTRA:
        raise
    raise BackendUnavailableError(f"ptx serve needs the serve extra ({exc.name} is not installed): "
                                  "pip install 'ptx[serve]'") from None

__all__ = ["ServeOptions", "serve"]
