"""A shape certificate: every declared dynamic axis of a model file tried at several sizes (1, 2, a
larger prime, or from the user's --min-shape up, and the user's --max-shape), and what the file did
there (torch-free).

The field's most reported export trap is a dynamic axis the export silently fixed (pytorch#157621,
#151582: the batch or the sequence specialised to the example's size) or one the module cannot
keep (a ``view`` with a constant): the example's size runs, and the first request of another size
fails in production. ``ptx export`` and ``ptx verify`` run each symbol at each size, the others held
at their usual sizes, and judge three things: the runtime takes the size, every output's shape is
the declared one (a symbol the input has is the input's size; a fixed size is that size), and,
where there is a reference to compare with (eager, at export), the answers agree. An axis that
fails is named with what happened and, where the file says it, the node that fixed it (the
Reshape whose shape constant holds the example's size). A size the model itself refuses (eager
PyTorch at export: ConvNext's strided stages below 8 pixels, BERT's 64 positions) is its bound, not
the export's: it is said as such, and not tried through the file. The certificate is stored in the file
(``ptx.shape_certificate``, docs/artifact-format.md) and shown by ``ptx inspect``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError
from ptx.torch_quiet import process_output

from .batch_rows import describe_left_out
from .comparison import compare_outputs
from .schema import Tolerance
from .tensor_inputs import VERIFY_BATCHES, InputPlan, make_feeds
from .tensors import Signature

CERTIFICATE_KEY = "shape_certificate"  # ptx.shape_certificate in a file's metadata
DYNAMIC, FIXED, CHANGES = "dynamic", "fixed", "changes the answers"
# A size the runtime refuses where nothing shows the export fixed it (verify, without eager, and no
# shape constant holding the size in the graph): the runtime's own words, no verdict on why.
REFUSED = "refused"
QUOTED = 240  # characters of a runtime's or the model's refusal a certificate quotes
# The ops whose shape input turns a size into a constant of the graph (x.view(B, 8, -1)).
SHAPE_OPS = ("Reshape", "Expand", "ConstantOfShape", "Tile", "Slice")


@dataclass(frozen=True)
class Probe:
    """One run of the certificate: ``symbol`` at ``size``, the others at their usual sizes."""

    symbol: str
    size: int
    feeds: dict


@dataclass(frozen=True)
class Bound:
    """Sizes of an axis the model itself refuses (eager at export), and why: its bound, not the export's."""

    refused: list[int]
    bound: str  # in words: the sizes, the model's refusal, and --min-shape where every small size failed


def recorded_bounds(certificate: "Certificate | None") -> dict[str, Bound]:
    """The bounds a file's recorded certificate found ({} where none): verify, without eager, does not try
    those sizes through the file again, and says the bound as export did."""
    return {a.symbol: Bound(a.refused, a.bound) for a in (certificate.axes if certificate else ()) if a.refused}


def refused_by_bound(axis: "AxisCheck", size: int) -> str:
    """How the model's own bound, as export found it on ``axis``, refuses ``size`` ('' where it does not): at
    or under the largest size it refused below every size it took (every size, where it took none), or at
    or over the smallest it refused above them."""
    low = [n for n in axis.refused if not axis.sizes or n < min(axis.sizes)]
    high = [n for n in axis.refused if axis.sizes and n > max(axis.sizes)]
    if low and size <= max(low):
        return f"give a size above {max(low)}"
    if high and size >= min(high):
        return f"give a size under {min(high)}"
    return ""


@dataclass
class AxisCheck:
    """What one symbol did at the sizes it was tried at."""

    symbol: str
    sizes: list[int]
    status: str = DYNAMIC  # dynamic, fixed, refused, changes the answers
    detail: str = ""  # what happened at the first size that failed
    where: str = ""  # the node or module that fixed it, where the file says it
    bound: str = ""  # the sizes the model itself refuses, and why: not tried through the file
    refused: list[int] = field(default_factory=list)  # those sizes, so that verify does not try them either
    failed_at: int = 0  # the size it first failed at (0: none)

    def line(self) -> str:
        if self.status == DYNAMIC:
            return f"{self.symbol}: dynamic ({', '.join(map(str, self.sizes))})"
        said = self.detail if self.status == REFUSED else f"{self.status.upper()}: {self.detail}"
        return f"{self.symbol}: {said}" + (f"; {self.where}" if self.where else "")


@dataclass
class Certificate:
    """Every dynamic axis, checked; ``against``: what the answers were compared with ('' where only
    runs and shapes were checked)."""

    axes: list[AxisCheck] = field(default_factory=list)
    outputs: str = ""  # a declared output shape the runtime contradicts, in words ('' where none)
    against: str = ""
    # {output: "per row" or why not}, as export found it (ptx.contract.batch_rows): what the batch
    # composition check and a server's batching apply to ({} where not probed: a file written before)
    rows: dict = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return not self.outputs and all(a.status == DYNAMIC for a in self.axes)

    def bad(self) -> list[AxisCheck]:
        return [a for a in self.axes if a.status != DYNAMIC]

    def failures(self, named: Mapping[str, Sequence[int]]) -> list[str]:
        """What fails verify, which has no eager to tell a fixed axis from the model's own bound (a
        stride-16 network refuses 17; an exporter that names each input's batch apart is fed pairs no
        user sends): an axis that failed at a size the user ``named`` ({symbol: sizes}: --max-shape,
        --min-shape), which the file must take. Other failures are said, not failed."""
        return [a.line() for a in self.bad() if a.failed_at in named.get(a.symbol, ())]

    def summary(self) -> str:
        """One line: ``holds: batch 1, 2, 7; seq 1, 2, 7 (answers against eager)``, or what failed."""
        if not self.axes and not self.outputs:
            return "no dynamic axis to check"
        tried = "; ".join(f"{a.symbol} {', '.join(map(str, a.sizes))}" for a in self.axes if a.sizes)
        checked = f"answers against {self.against}" if self.against else "runs and output shapes"
        bounds = "".join(f"; {a.symbol}: {a.bound}" for a in self.axes if a.bound)
        left = describe_left_out(self.rows)
        bounds += f"; not per row (no batch axis kept; batch composition leaves them out): {left}" if left else ""
        if self.holds and not tried:  # every size was the model's bound: nothing went through the file
            return f"no size tried through the file{bounds}"
        if self.holds:
            return f"holds: {tried} ({checked}){bounds}"
        return "does NOT hold: " + "; ".join([*(a.line() for a in self.bad()), *filter(None, [self.outputs])]) + bounds

    def to_dict(self) -> dict:
        return {"holds": self.holds, "against": self.against, "outputs": self.outputs,
                "axes": [asdict(a) for a in self.axes], **({"rows": dict(self.rows)} if self.rows else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Certificate | None":
        """The certificate a file records, or None where the text is not one (a reader never fails on it:
        it is a record for people)."""
        try:
            doc = json.loads(text)
            return cls([AxisCheck(str(a["symbol"]), [int(s) for s in a["sizes"]], str(a["status"]),
                                  str(a.get("detail", "")), str(a.get("where", "")), str(a.get("bound", "")),
                                  [int(s) for s in a.get("refused", [])], int(a.get("failed_at", 0)))
                        for a in doc["axes"]],
                       str(doc.get("outputs", "")), str(doc.get("against", "")),
                       {str(k): str(v) for k, v in dict(doc.get("rows", {})).items()})
        except (ValueError, KeyError, TypeError):
            return None


def check_sizes(low: int = 1) -> tuple[int, ...]:
    """The sizes an axis is tried at from its smallest, ``low``: it and the next (1 and 2 by default,
    what exporters specialise), and a prime of at least 7 above them (7: it matches no example's size)."""
    prime = max(7, low + 2)
    while any(prime % d == 0 for d in range(2, math.isqrt(prime) + 1)):
        prime += 1
    return low, low + 1, prime


def probes(signature: Signature, plan: InputPlan, max_sizes: Mapping[str, int] | None = None, seed: int = 0,
           of: str = "", min_sizes: Mapping[str, int] | None = None) -> list[Probe]:
    """The inputs the certificate runs: each symbol at check_sizes(its ``min_sizes`` entry, else 1)
    and at its ``max_sizes`` entry, none past either, the others at the plan's sizes and the batch at
    verify's first batch, none past a size the model bounds (``signature.limits``). A symbol no input
    has, one past its bound, or a smallest size above the largest, is refused (``of``: the file, as
    the message names it)."""
    max_sizes, min_sizes = dict(max_sizes or {}), dict(min_sizes or {})
    for option, sizes in (("--min-shape", min_sizes), ("--max-shape", max_sizes)):
        unknown = sorted(set(sizes) - set(signature.symbols()))
        if unknown:
            raise PtxError(f"{option} {unknown[0]}=...: no input{f' of {of}' if of else ''} has a symbolic dim "
                           f"{unknown[0]!r}; the dynamic ones are {', '.join(signature.symbols()) or 'none'}")
        for symbol, size in sizes.items():
            limit = signature.limit(symbol)
            if limit is not None and size > limit:
                raise PtxError(f"{option} {symbol}={size}: {of or 'the model'} takes {symbol} up to {limit} (the "
                               f"model's own bound, recorded at export): give at most {limit}")
            if option == "--max-shape" and size < min_sizes.get(symbol, 1):
                raise PtxError(f"--max-shape {symbol}={size} is below --min-shape {symbol}={min_sizes[symbol]}: give "
                               "the largest size you will feed, and the smallest the model takes")
    inputs = Signature(signature.inputs, ())
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    base_batch = VERIFY_BATCHES[0] if batch_symbols else None
    out = []
    for symbol in signature.symbols():
        largest = min(max_sizes.get(symbol, math.inf), signature.limit(symbol) or math.inf)  # past it: refused
        for size in sorted({*(n for n in check_sizes(min_sizes.get(symbol, 1)) if n <= largest),
                            *([max_sizes[symbol]] if symbol in max_sizes else [])}):
            if symbol in batch_symbols:
                feeds = make_feeds(inputs, plan, size, seed)
            else:
                feeds = make_feeds(inputs, replace(plan, bound={**plan.bound, symbol: size}), base_batch, seed)
            out.append(Probe(symbol, size, feeds))
    return out


def quote(text: str, limit: int = QUOTED) -> str:
    """A refusal's words as a certificate quotes them: one line, cut at a word past ``limit`` characters
    with '...', so that the sentence around the quote stays whole."""
    text = " ".join(str(text).replace("[ONNXRuntimeError] : 1 : FAIL : ", "").split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def shape_problem(signature: Signature, feeds, got: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """(how an output's shape contradicts the inputs' sizes, how it contradicts its declared shape:
    Signature.contradicted_output's one rule), each '' where it does not."""
    sizes = signature.symbol_sizes(feeds)
    got = {name: np.asarray(value) for name, value in got.items()}
    for sig in signature.outputs:
        shape = got[sig.name].shape
        if len(shape) != len(sig.shape):
            continue
        for want, size in zip(sig.shape, shape):
            if isinstance(want, str) and want in sizes and sizes[want] != size:
                return (f"output {sig.name} has {want} {size} where the input has {sizes[want]} "
                        f"(shape {list(shape)})"), ""
    found = signature.contradicted_output(got)
    if found is not None:
        sig, shape = found
        return "", f"output {sig.name} is declared {sig.dims_text()} and the runtime returns {list(shape)}"
    return "", ""


def _held_stderr(run: Callable[[dict], Mapping[str, np.ndarray]], feeds: dict) -> Mapping[str, np.ndarray]:
    """``run(feeds)`` with descriptor 2 held in a temporary file: a native runtime (AOTInductor's C++)
    prints a size's refusal there, a page of generated code, before raising it, and the refusal is the
    certificate's finding, quoted once in its line; what a run that succeeds wrote is passed on. (A
    descriptor-level redirect because no Python-level one reaches native code; a dozen lines, not
    worth a dependency such as wurlitzer.) Where another thread holds the process's descriptors (export's
    ONNX writer, while this file is checked beside it: ptx.torch_quiet), run as it is: two save-and-restore
    blocks interleaved would leave descriptor 2 on the other's redirect for the rest of the process."""
    with process_output(wait=False) as held:
        return _held(run, feeds) if held else run(feeds)


def _held(run: Callable[[dict], Mapping[str, np.ndarray]], feeds: dict) -> Mapping[str, np.ndarray]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            got = run(feeds)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        os.write(2, held.read())
    return got


def certify(signature: Signature, probes_: Sequence[Probe], run: Callable[[dict], Mapping[str, np.ndarray]], *,
            wants: Sequence[Mapping[str, np.ndarray]] | None = None,
            tolerance: Callable[[str], Tolerance] | None = None, against: str = "",
            where: Callable[[str], str] | None = None, bounds: Mapping[str, Bound] | None = None,
            reference_takes: bool = False) -> Certificate:
    """Run each probe through ``run`` (feeds -> outputs by name; an Exception is a refusal) and judge
    it: an output whose symbol's size is not the input's makes the axis FIXED, and so does a refusal
    where the export is to blame: the reference took that size (``reference_takes``: eager, at export)
    or ``where(symbol)`` names the node that fixed it; else the refusal is REFUSED, in the runtime's
    words. With ``wants`` (the reference's outputs per probe) and ``tolerance`` (an output's name -> its
    Tolerance), an output the one comparison (``compare_outputs``) finds different makes it CHANGES.
    ``bounds``: {symbol: the sizes the model itself refuses and why, a Bound}, said with the axis (their
    probes are not in ``probes_``)."""
    bounds = dict(bounds or {})
    tried = {p.symbol for p in probes_}
    checks = {s: AxisCheck(s, [], **(asdict(bounds[s]) if s in bounds else {})) for s in signature.symbols()
              if s in tried or s in bounds}
    outputs = ""
    refused: dict[str, int] = {}  # symbol: the size the runtime refused
    for k, probe in enumerate(probes_):
        check = checks[probe.symbol]
        check.sizes.append(probe.size)
        if check.status != DYNAMIC:
            continue  # the first failure says it; the other sizes are still listed as tried
        at = f"{probe.symbol}={probe.size}"
        try:
            got = _held_stderr(run, dict(probe.feeds))
        except Exception as exc:  # noqa: BLE001 - any runtime's refusal of the size is the finding
            check.status, check.detail = FIXED, f"the runtime refuses {at} ({quote(exc)})"
            refused[probe.symbol] = check.failed_at = probe.size
            continue
        moved, declared = shape_problem(signature, probe.feeds, got)
        if moved:
            check.status, check.detail, check.failed_at = FIXED, f"at {at}, {moved}", probe.size
            continue
        outputs = outputs or (f"at {at}, {declared}" if declared else "")
        if wants is not None and tolerance is not None:
            differs = next((a.summary() for a in compare_outputs(got, wants[k], signature, tolerance).values()
                            if a.problem or not a.ok), "")
            if differs:
                check.status, check.detail, check.failed_at = CHANGES, f"at {at}, {differs}", probe.size
    certificate = Certificate(list(checks.values()), outputs, against if wants is not None else "")
    for check in certificate.bad():
        check.where = (where(check.symbol) if where else "") or ""
        if check.symbol in refused and not (reference_takes or check.where):
            check.status = REFUSED  # nothing shows the export fixed it: a bound of the model's, or another failure
            if refused[check.symbol] == check.sizes[0]:  # its smallest size: a model that takes it only from some up
                check.detail += (f": where the model takes {check.symbol} only from some size up, --min-shape "
                                 f"{check.symbol}=SIZE starts there")
    return certificate


def constant_of(size: int, nodes: Sequence[str], said: str = "") -> str:
    """``8 is a constant of Reshape node '/Reshape' (...)``: the nodes that fixed an axis at ``size``
    (``said`` before the size: "the example's size "), or '' where none was found."""
    return f"{said}{size} is a constant of " + ", ".join(nodes) if nodes else ""


# -- where a size became a constant: an ONNX graph's shape constants --------------------------------


def onnx_fixing_nodes(path, size: int, limit: int = 2) -> list[str]:
    """The shape-taking nodes (Reshape, Expand, ...) of the ONNX file at ``path`` whose shape input is
    built from a constant holding ``size`` (the example's size of an axis the export fixed), each as
    ``Reshape node '/Reshape' (shape constant [-1, 8, 4])``, with the module torch recorded for it."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    # small shape constants only: a weight kept in external data is never one, and is not loaded here
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer
                 if init.data_location != onnx.TensorProto.EXTERNAL and len(init.dims) <= 1}
    producers = {out: node for node in graph.node for out in node.output}
    constants.update({node.output[0]: numpy_helper.to_array(attr.t) for node in graph.node if node.op_type == "Constant"
                      for attr in node.attribute if attr.name == "value"})
    found = []
    for node in graph.node:
        if node.op_type not in SHAPE_OPS or len(node.input) < 2:
            continue
        for value in _constants_behind(node.input[1], producers, constants):
            if value.size <= 8 and np.issubdtype(value.dtype, np.integer) and size in value.ravel().tolist():
                module = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
                found.append(f"{node.op_type} node {node.name or node.output[0]!r} (shape constant "
                             f"{value.ravel().tolist()}{f'; {module}' if module else ''})")
                break
        if len(found) >= limit:
            break
    return found


def _constants_behind(name: str, producers, constants, depth: int = 4) -> list[np.ndarray]:
    """The constants a shape input is made of: itself, or through Concat, Unsqueeze, Cast, ... a few
    steps back."""
    if name in constants:
        return [constants[name]]
    node = producers.get(name)
    if node is None or depth == 0 or node.op_type not in ("Concat", "Unsqueeze", "Cast", "Squeeze", "Identity"):
        return []
    return [v for i in node.input[:1 if node.op_type != "Concat" else None]
            for v in _constants_behind(i, producers, constants, depth - 1)]
