"""Export: checkpoint -> TorchScript and ONNX files, validated against eager before they are kept;
and a user's own nn.Module -> validated files (``export_module``, ``ptx export --module``).

Importing this package imports neither torch nor onnx (the CLI reads the format names through it):
``export_module`` is imported on first use.
"""


def __getattr__(name: str):
    if name in ("export_module", "load_factory"):
        from . import module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
