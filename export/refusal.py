"""An exporter's or a user's file's failure in one line, in the user's words: the operator an exporter
has no translation for, or what it could not do and the line of the user's code it was at. The
format writers (export/formats/) and ``--module``'s factory loading say their refusals through here.
"""
from __future__ import annotations

import functools
import inspect
import re
import sys
import traceback
from pathlib import Path
from typing import Sequence

from ptx.errors import PtxError, first_line

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
# How each exporter names the operator it has no translation for.
_OPERATOR = [
    (re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'"), lambda m: m.replace(".", "::", 1)),
    (re.compile(r"unrecognized namespace ([\w:]+(?:\.\w+)*)"), None),
    (re.compile(r"Exporting the operator '?([\w:.]+)'? to ONNX opset version \d+ is not supported"), None),
    (re.compile(r"Unsupported: ONNX export of operator ([\w:.]+)"), None),
    (re.compile(r"Unsupported FX nodes: \{'call_function': \['([^']+)'"), None),
]
# torch.export's exceptions that say more in plain words than in their message.
PLAIN = {"GuardOnDataDependentSymNode": "data-dependent control flow (a Python branch or size on a tensor's value)"}
DATA_DEPENDENT = "data-dependent"  # torch.export's words for a Python branch on a tensor's value
CONTROL_FLOW = ("Python control flow needs --torchscript-mode script (library: torchscript_mode='script'; it becomes "
                "an ONNX If) or torch.cond")


def is_user_file(filename: str, user_files: Sequence[str] = ()) -> bool:
    """Whether a frame's file is the user's code: one of ``user_files``, else anything outside
    torch, site-packages, ptx's own machinery and Python's own ``<...>`` pseudo-files."""
    if user_files:
        return str(Path(filename).resolve()) in user_files
    torch_dir = str(Path(sys.modules["torch"].__file__).resolve().parent)  # what refuses is torch's: it is loaded
    resolved = str(Path(filename).resolve())
    return not (filename.startswith("<") or "site-packages" in filename or "dist-packages" in filename
                or resolved.startswith(torch_dir) or any(resolved.startswith(d) for d in _ptx_dirs()))


@functools.cache
def _ptx_dirs() -> tuple[str, ...]:
    """The folders of ptx's own machinery (ptx/, export/, infer/, serve/ in an editable checkout, which
    site-packages does not hold): the frame that calls a user's module (the shape certificate's
    ``module(*args)``, the keyword wrapper of a transformers model) is never the user's line."""
    import importlib.util

    dirs = []
    for name in ("ptx", "ptx.export", "ptx.infer", "ptx.serve"):
        spec = importlib.util.find_spec(name)
        dirs += [str(Path(d).resolve()) + "/" for d in ((spec and spec.submodule_search_locations) or [])]
    return tuple(dirs)


def user_files(module) -> tuple[str, ...]:
    """The source files of the module's classes that are not torch's: where a refusal's line is."""
    files = set()
    for sub in module.modules():
        try:
            source = inspect.getsourcefile(type(sub))
        except TypeError:
            continue
        if source and is_user_file(source):
            files.add(str(Path(source).resolve()))
    return tuple(sorted(files))


def ptx_s_own(exc: BaseException) -> PtxError | None:
    """A refusal of ptx's own that an exporter wrapped (raised inside the module it traced, as --ort-attention's
    check of what a layer asks): the user's answer, to be said as it is rather than as the exporter's refusal.
    Only the chain of causes is followed (``raise ... from``, as the exporters wrap what they caught): a PtxError
    that code caught and handled before failing otherwise is in ``__context__``, and is not the answer."""
    seen = 0
    while exc is not None and seen < 16:  # a chain, not a cycle: bounded all the same
        if isinstance(exc, PtxError):
            return exc
        exc, seen = exc.__cause__, seen + 1
    return None


def describe_refusal(exc: BaseException, user_files: Sequence[str] = ()) -> str:
    """An exporter's exception in one line: the operator it has no translation for, or what it
    could not do and the line of the user's code it was at (torch.export's errors carry that frame:
    ``File "net.py", line 12``), as ``net.py:12 `if x.sum() > 0:```."""
    text = str(exc)
    op = None
    for pattern, fix in _OPERATOR:
        match = pattern.search(text)
        if match:
            op = fix(match[1]) if fix else match[1]
            break
    what = f"operator {op} has no ONNX translation" if op else _summary(exc, text)
    where = _user_line(exc, text, user_files)
    return f"{what}{f', at {where}' if where else ''}"[:400]


def _summary(exc: BaseException, text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    if "## Exception summary" in lines:  # torch.onnx's report: the cause is the next line
        cause = next((ln for ln in lines[lines.index("## Exception summary") + 1:] if ln), "")
        match = re.match(r"<class '(?:[\w.]+\.)?(\w+)'>: (.*)", cause)
        if match:
            return PLAIN.get(match[1]) or f"{match[1]}: {sentence(match[2])}"
    return f"{type(exc).__name__}: {sentence(first_line(exc))}"


def sentence(text: str) -> str:
    """The first sentence of an exception's text, without terminal colours or torch.export's repeats."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    text = re.sub(r"\s*\(unhinted: [^)]*\)", "", text)  # torch.export repeats the expression
    cut = re.search(r"(?<=[a-z0-9)\]])\.\s", text)
    return (text[:cut.start()] if cut else text)[:200]


def _user_line(exc: BaseException, text: str, user_files: Sequence[str]) -> str | None:
    """``file.py:LINE `code``` of the innermost frame in the user's code: from the message (torch.export
    and torch.jit.script print it), else from the traceback."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        match = _FRAME.search(line)
        if match and is_user_file(match[1], user_files):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found = (match[1], match[2], code if code and not _FRAME.search(code) else "")
    if found is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_user_file(f.filename, user_files)]
        if frames:
            found = (frames[-1].filename, str(frames[-1].lineno), (frames[-1].line or "").strip())
    if found is None:
        return None
    file, line, code = found
    return f"{Path(file).name}:{line}" + (f" `{code[:80]}`" if code else "")


def raised(exc: BaseException, path: Path) -> str:
    """``raised ValueError: its first sentence (at FILE.py:LINE)``: the user's code's exception in one
    line, at the innermost frame of ``exc`` in the user's file ``path`` where it has one."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return (f"raised {type(exc).__name__}: {sentence(first_line(exc))}"
            + (f" (at {path.name}:{frames[-1].lineno})" if frames else ""))
