"""A shape certificate: every declared dynamic axis of a model file tried at several sizes (1, 2, a
larger prime and the user's --max-shape), and what the file did there (torch-free).

The field's most reported export trap is a dynamic axis the export silently fixed (pytorch#157621,
#151582: the batch or the sequence specialised to the example's size) or one the module cannot
keep (a ``view`` with a constant): the example's size runs, and the first request of another size
fails in production. ``ptx export`` and ``ptx verify`` run each symbol at each size, the others held
at their usual sizes, and judge three things: the runtime takes the size, every output's shape is
the declared one (a symbol the input has is the input's size; a fixed size is that size), and,
where there is a reference to compare with (eager, at export), the answers agree. An axis that
fails is named with what happened and, where the file says it, the node that fixed it (the
Reshape whose shape constant holds the example's size). The certificate is stored in the file
(``ptx.shape_certificate``, docs/artifact-format.md) and shown by ``ptx inspect``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .tensor_inputs import VERIFY_BATCHES, InputPlan, make_feeds
from .tensors import Signature

CERTIFICATE_KEY = "shape_certificate"  # ptx.shape_certificate in a file's metadata
CHECK_SIZES = (1, 2, 7)  # 0 and 1 are what exporters specialise; 7, a prime, matches no example's size
DYNAMIC, FIXED, CHANGES = "dynamic", "fixed", "changes the answers"
# The ops whose shape input turns a size into a constant of the graph (x.view(B, 8, -1)).
SHAPE_OPS = ("Reshape", "Expand", "ConstantOfShape", "Tile", "Slice")


@dataclass(frozen=True)
class Probe:
    """One run of the certificate: ``symbol`` at ``size``, the others at their usual sizes."""

    symbol: str
    size: int
    feeds: dict


@dataclass
class AxisCheck:
    """What one symbol did at the sizes it was tried at."""

    symbol: str
    sizes: list[int]
    status: str = DYNAMIC  # dynamic, fixed, changes the answers
    detail: str = ""  # what happened at the first size that failed
    where: str = ""  # the node or module that fixed it, where the file says it

    def line(self) -> str:
        tried = ", ".join(map(str, self.sizes))
        if self.status == DYNAMIC:
            return f"{self.symbol}: dynamic ({tried})"
        return f"{self.symbol}: {self.status.upper()}: {self.detail}" + (f"; {self.where}" if self.where else "")


@dataclass
class Certificate:
    """Every dynamic axis, checked; ``against``: what the answers were compared with ('' where only
    runs and shapes were checked)."""

    axes: list[AxisCheck] = field(default_factory=list)
    outputs: str = ""  # a declared output shape the runtime contradicts, in words ('' where none)
    against: str = ""

    @property
    def holds(self) -> bool:
        return not self.outputs and all(a.status == DYNAMIC for a in self.axes)

    def bad(self) -> list[AxisCheck]:
        return [a for a in self.axes if a.status != DYNAMIC]

    def summary(self) -> str:
        """One line: ``holds: batch 1, 2, 7; seq 1, 2, 7 (answers against eager)``, or what failed."""
        if not self.axes and not self.outputs:
            return "no dynamic axis to check"
        tried = "; ".join(f"{a.symbol} {', '.join(map(str, a.sizes))}" for a in self.axes)
        checked = f"answers against {self.against}" if self.against else "runs and output shapes"
        if self.holds:
            return f"holds: {tried} ({checked})"
        return "does NOT hold: " + "; ".join([*(a.line() for a in self.bad()), *filter(None, [self.outputs])])

    def to_dict(self) -> dict:
        return {"holds": self.holds, "against": self.against, "outputs": self.outputs,
                "axes": [asdict(a) for a in self.axes]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Certificate | None":
        """The certificate a file records, or None where the text is not one (a reader never fails on it:
        it is a record for people)."""
        try:
            doc = json.loads(text)
            return cls([AxisCheck(str(a["symbol"]), [int(s) for s in a["sizes"]], str(a["status"]),
                                  str(a.get("detail", "")), str(a.get("where", ""))) for a in doc["axes"]],
                       str(doc.get("outputs", "")), str(doc.get("against", "")))
        except (ValueError, KeyError, TypeError):
            return None


def probes(signature: Signature, plan: InputPlan, max_sizes: Mapping[str, int] | None = None, seed: int = 0,
           of: str = "") -> list[Probe]:
    """The inputs the certificate runs: each symbol at each of CHECK_SIZES (and its ``max_sizes``
    entry), the others at the plan's sizes and the batch at verify's first batch, none past a size the
    model bounds (``signature.limits``). A ``max_sizes`` symbol no input has, or one past its bound, is
    refused (``of``: the file, as the message names it)."""
    unknown = sorted(set(max_sizes or {}) - set(signature.symbols()))
    if unknown:
        raise PtxError(f"--max-shape {unknown[0]}=...: no input{f' of {of}' if of else ''} has a symbolic dim "
                       f"{unknown[0]!r}; the dynamic ones are {', '.join(signature.symbols()) or 'none'}")
    for symbol, size in (max_sizes or {}).items():
        limit = signature.limit(symbol)
        if limit is not None and size > limit:
            raise PtxError(f"--max-shape {symbol}={size}: {of or 'the model'} takes {symbol} up to {limit} (the model's "
                           f"own bound, recorded at export): give at most {limit}")
    inputs = Signature(signature.inputs, ())
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    base_batch = VERIFY_BATCHES[0] if batch_symbols else None
    out = []
    for symbol in signature.symbols():
        extra = (max_sizes or {}).get(symbol)
        limit = signature.limit(symbol) or math.inf  # past the model's own bound a size is refused, not checked
        for size in sorted({*(n for n in CHECK_SIZES if n <= limit), *([extra] if extra else [])}):
            if symbol in batch_symbols:
                feeds = make_feeds(inputs, plan, size, seed)
            else:
                feeds = make_feeds(inputs, replace(plan, bound={**plan.bound, symbol: size}), base_batch, seed)
            out.append(Probe(symbol, size, feeds))
    return out


def _shape_problem(signature: Signature, feeds, got: Mapping[str, np.ndarray]) -> tuple[str, str]:
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


def certify(signature: Signature, probes_: Sequence[Probe], run: Callable[[dict], Mapping[str, np.ndarray]], *,
            wants: Sequence[Mapping[str, np.ndarray]] | None = None,
            compare: Callable[[str, np.ndarray, np.ndarray], str] | None = None, against: str = "",
            where: Callable[[str], str] | None = None) -> Certificate:
    """Run each probe through ``run`` (feeds -> outputs by name; an Exception is a refusal) and judge
    it: a refusal or an output whose symbol's size is not the input's makes the axis FIXED; with
    ``wants`` (the reference's outputs per probe) and ``compare`` (name, got, want -> '' or what
    differs), a difference makes it CHANGES. ``where(symbol)`` names what fixed it."""
    checks: dict[str, AxisCheck] = {}
    outputs = ""
    for k, probe in enumerate(probes_):
        check = checks.setdefault(probe.symbol, AxisCheck(probe.symbol, []))
        check.sizes.append(probe.size)
        if check.status != DYNAMIC:
            continue  # the first failure says it; the other sizes are still listed as tried
        at = f"{probe.symbol}={probe.size}"
        try:
            got = run(dict(probe.feeds))
        except Exception as exc:  # noqa: BLE001 - any runtime's refusal of the size is the finding
            said = " ".join(str(exc).replace("[ONNXRuntimeError] : 1 : FAIL : ", "").split())
            check.status, check.detail = FIXED, f"the runtime refuses {at} ({said[:200]})"
            continue
        moved, declared = _shape_problem(signature, probe.feeds, got)
        if moved:
            check.status, check.detail = FIXED, f"at {at}, {moved}"
            continue
        outputs = outputs or (f"at {at}, {declared}" if declared else "")
        if wants is not None and compare is not None:
            for sig in signature.outputs:
                differs = compare(sig.name, np.asarray(got[sig.name]), np.asarray(wants[k][sig.name]))
                if differs:
                    check.status, check.detail = CHANGES, f"at {at}, {differs}"
                    break
    certificate = Certificate(list(checks.values()), outputs, against if wants is not None else "")
    for check in certificate.bad():
        check.where = (where(check.symbol) if where else "") or ""
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
    producers = {}
    for node in graph.node:
        for out in node.output:
            producers[out] = node
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
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
