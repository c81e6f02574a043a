"""ptx's optional extras (pyproject's [project.optional-dependencies]): what each one brings, and the
one-line refusal when a command needs one that is not installed.

Torch-free. Each stage asks here before it imports an extra's package, so a missing one reads the
same everywhere: what needs it, and the pip command that adds it.
"""
from __future__ import annotations

import importlib

from ptx.errors import PtxError

# extra -> (the modules it must make importable, what it gives the user). pyproject is the source of
# the package lists; tests/test_extras.py checks that every extra named here exists there.
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "serve": (("uvicorn", "httptools", "starlette", "orjson", "grpc", "tritonclient.grpc", "prometheus_client"),
              "ptx serve"),
    "openvino": (("openvino",), "the openvino backend"),
    "diabetes": (("rdata",), "the pima dataset (diabetes model)"),
    "heif": (("pillow_heif",), "reading HEIC/HEIF pictures"),
    "parquet": (("pyarrow",), "--output *.parquet"),
    "ray": (("ray", "ray.data", "pyarrow"), "ptx predict --ray"),
    "text": (("tokenizers", "jinja2"), "text in and out of a generating model (ptx generate --prompt, --chat; ptx "
                                       "serve's OpenAI API)"),
}


# Modules an extra brings that only one command needs, so that the rest of the extra works without
# them: module -> (its extra, what needs it).
PARTS: dict[str, tuple[str, str]] = {
    "nncf": ("openvino", "openvino-int8"),  # ptx export --format openvino-int8 quantizes with NNCF
    # an answer masked against a grammar (infer/model/grammar.py): llguidance
    "llguidance": ("text", "an answer held to a JSON schema or a regex (response_format, --json-schema, --regex)"),
}


class MissingExtraError(PtxError):
    """An optional extra that the command needs is not installed."""


def install_command(extra: str) -> str:
    return f"pip install 'ptx[{extra}]' (from a clone: pip install -e '.[{extra}]')"


def missing(extra: str) -> str | None:
    """Why ``extra`` cannot be used here (its first module that does not import), or None."""
    modules, purpose = EXTRAS[extra]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            name = getattr(exc, "name", None) or module
            return f"{purpose} needs the '{extra}' extra ({name} is not installed): {install_command(extra)}"
    return None


def missing_part(module: str) -> str | None:
    """Why ``module`` (one of PARTS) cannot be used here, in one line with the pip command, or None."""
    extra, purpose = PARTS[module]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{purpose} needs {module}: {install_command(extra)}"
    return None


def require(extra: str) -> None:
    """Raise MissingExtraError (one line, with the pip command) unless ``extra`` is installed."""
    why = missing(extra)
    if why:
        raise MissingExtraError(why)
