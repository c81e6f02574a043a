"""Inputs for a model of any signature (torch-free): generated for ``ptx verify``/``bench`` and
export's validation, and checked when a caller hands them to ``run``.

Generated inputs are seeded and dtype-aware (Polygraphy's data loader is the model): floats
uniform in a range ([0, 1) unless the tensor or the user says otherwise), integers in a range
([0, 10) by default, so that they index any vocabulary of 10 or more, or below the rows of the
embedding the graph feeds them to, where the caller found one: ``limits``), booleans at random.
What an input is shapes it as a tokenizer would: an integer mask (``attention_mask``, ``*_mask``)
is ones then padding in each row, every row keeping at least one position (random 0/1 masks leave
whole query rows masked, whose answers no two runtimes need agree on); ``token_type_ids`` are a run
of 0s then a run of 1s. A user's range, ``--range [NAME=]LOW,HIGH``, is
[LOW, HIGH) for integers as for floats; a bare one is every input's that is not boolean. A
contract's own range is [low, high], both ends included.
Symbolic dimensions are bound by the user (``--shape seq=5`` by the symbol's name, or
``--shape name=2x3x224x224`` by an input's) or chosen by ptx, which
says what it chose: Polygraphy's silent 1 surprised its users. The batch axis is set by the
caller, at sizes that are neither 0 nor 1, so that a batch the exporter specialised is caught.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ptx.errors import InputError, PtxError

from .tensors import Signature, TensorSig, parse_range, parse_shape

DEFAULT_FLOAT_RANGE = (0.0, 1.0)
DEFAULT_INT_RANGE = (0, 10)  # [low, high): indexes any vocabulary of 10 or more
MASK_RANGE = (0, 2)  # [low, high): an integer attention mask holds 0 and 1
_MASK_NAME = re.compile(r"mask", re.IGNORECASE)
# Ones then padding per row: a mask as a tokenizer pads a batch (attention_mask, *_mask), not random 0/1.
_PADDING_MASK = re.compile(r"(^|_)mask$|^attention_mask$", re.IGNORECASE)
_TOKEN_TYPES = re.compile(r"^(token_)?type_ids$|^segment_ids$", re.IGNORECASE)
SPATIAL_SIZE = 64  # a symbolic height or width: room for a few stride-2 stages
OTHER_SIZE = 8  # any other symbol (a sequence length, a number of boxes)
VERIFY_BATCHES = (3, 5)  # never 0 or 1, and not the 2 that exporters' examples often use
BENCH_BATCHES = (1, 8)  # a user's model may be large: 1 for latency, 8 for a first look at throughput


@dataclass
class InputPlan:
    """How inputs are made: symbol sizes (bound by the user, or chosen and reported), fixed values
    and per-input ranges."""

    bound: dict[str, int] = field(default_factory=dict)  # from --shape
    chosen: dict[str, int] = field(default_factory=dict)  # ptx's choice, printed
    values: dict[str, float] = field(default_factory=dict)  # --value name=number
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # --range name=lo,hi
    default_range: tuple[float, float] | None = None  # --range lo,hi for every input but booleans
    # An integer input's values below N where the graph says so (ids into an embedding of N rows):
    # {name: (N, why)}; a user's --range or --value for the input wins.
    limits: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The sizes export validated at, as the file records them (Signature.sizes): chosen, and said so.
    recorded: dict[str, int] = field(default_factory=dict)

    def size(self, symbol: str) -> int:
        return self.bound.get(symbol) or self.chosen[symbol]

    def describe_choices(self) -> str:
        """The line that says which sizes ptx chose, and which it took from the file, or ''."""
        own = {s: v for s, v in self.chosen.items() if s not in self.recorded}
        said = []
        if own:
            first, size = next(iter(own.items()))
            said.append("symbolic dims chosen by ptx: " + ", ".join(f"{s}={v}" for s, v in own.items())
                        + f" (bind them with --shape SYMBOL=SIZE, e.g. --shape {first}={size})")
        if self.recorded:
            said.append("using the sizes export validated at: "
                        + ", ".join(f"{s}={v}" for s, v in self.recorded.items()) + " (recorded in the file)")
        return "; ".join(said)


def plan_inputs(signature: Signature, shapes: Mapping[str, str] = (), values: Mapping[str, str] = (),
                ranges: Mapping[str, str] = (), default_range: str | None = None) -> InputPlan:
    """Check the user's --shape/--value/--range against the signature and choose the sizes of the
    symbols nobody bound (the batch symbols excepted: the caller sets the batch)."""
    shapes, values, ranges = dict(shapes), dict(values), dict(ranges)
    names = signature.input_names
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    plan = InputPlan()
    for symbol in [n for n in shapes if n not in names and n in signature.symbols()]:
        plan.bound[symbol] = _symbol_size(symbol, shapes.pop(symbol), batch_symbols)
    for option, given in (("--shape", shapes), ("--value", values), ("--range", ranges)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            symbols = [s for s in signature.symbols() if s not in batch_symbols]
            also = (f" and no symbolic dim of that name; its symbolic dims are {', '.join(symbols)}"
                    if option == "--shape" and symbols else "")
            raise PtxError(f"{option} {unknown[0]}=...: the model has no input {unknown[0]!r}{also}; its inputs are "
                           f"{', '.join(names)}")
    for name, text in shapes.items():
        sig = signature.input(name)
        dims = parse_shape(text, f"--shape {name}={text}")
        # the batch axis may be written as its symbol (input_ids=batchx5): verify varies the batch itself
        dims = tuple(sig.shape[a] if a == sig.batch_axis and isinstance(d, str) else d for a, d in enumerate(dims))
        if len(dims) != len(sig.shape) or not all(isinstance(d, int) or a == sig.batch_axis
                                                  for a, d in enumerate(dims)):
            raise PtxError(f"--shape {name}={text}: {name} has {len(sig.shape)} axes {list(sig.shape)}; give "
                           f"{len(sig.shape)} sizes, e.g. {'x'.join(str(d if isinstance(d, int) else 2) for d in sig.shape) or '(a scalar has none)'}")
        for axis, (want, got) in enumerate(zip(sig.shape, dims)):
            if isinstance(want, int) and want != got:
                raise PtxError(f"--shape {name}={text}: axis {axis} of {name} is fixed to {want}, not {got}")
            if isinstance(want, str) and axis != sig.batch_axis:
                if plan.bound.get(want, got) != got:
                    raise PtxError(f"--shape: the symbol {want!r} is bound to {plan.bound[want]} and to {got}")
                if got < 1:
                    raise PtxError(f"--shape {name}={text}: {want} must be at least 1")
                plan.bound[want] = got
    for name, text in values.items():
        sig = signature.input(name)
        try:
            number = float(text)
        except ValueError:
            raise PtxError(f"--value {name}={text}: not a number") from None
        if sig.dtype_info.is_integer and number != int(number):
            raise PtxError(f"--value {name}={text}: {name} is {sig.dtype}; give a whole number")
        plan.values[name] = number
    plan.ranges = {name: parse_range(text, f"--range {name}") for name, text in ranges.items()}
    plan.default_range = parse_range(default_range, "--range") if default_range else None
    for t in signature.inputs:
        for axis, d in enumerate(t.shape):
            if isinstance(d, str) and d not in plan.bound and d not in batch_symbols and d not in plan.chosen:
                recorded = signature.validated_size(d)  # a file's own: the size export validated at
                if recorded is not None:
                    plan.chosen[d] = plan.recorded[d] = recorded
                    continue
                spatial = t.dtype_info.is_float and len(t.shape) >= 4 and axis >= len(t.shape) - 2
                plan.chosen[d] = SPATIAL_SIZE if spatial else OTHER_SIZE
    return plan


def _symbol_size(symbol: str, text: str, batch_symbols) -> int:
    """``--shape seq=5``: one symbolic dim bound by its name, to a size of 1 or more."""
    if symbol in batch_symbols:
        raise PtxError(f"--shape {symbol}={text}: {symbol} is the batch, which verify varies itself: give "
                       "--batch-sizes")
    if not text.strip().isdigit() or int(text) < 1:
        raise PtxError(f"--shape {symbol}={text}: give the size of {symbol}, a whole number of 1 or more")
    return int(text)


def symbol_steps(signature: Signature) -> dict[str, int]:
    """How much each symbol but the batch grows in a second set of inputs: its own even step, 2, 4, ...
    in the signature's order, so that an output's size names the symbol it follows, and stays even for
    a model that halves it. The eager runner's second output-learning run and export's second
    validation case both grow by these (the runner answers that case from that run)."""
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    return {s: 2 * (k + 1) for k, s in enumerate(s for s in signature.symbols() if s not in batch_symbols)}


def concrete_shape(sig: TensorSig, plan: InputPlan, batch: int | None) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else batch if axis == sig.batch_axis and batch is not None
                 else plan.size(d) for axis, d in enumerate(sig.shape))


def make_feeds(signature: Signature, plan: InputPlan, batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded set of inputs at ``batch`` (ignored by inputs without a batch axis)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for sig in signature.inputs:
        shape = concrete_shape(sig, plan, batch)
        dtype = np.dtype(sig.dtype)
        if sig.name in plan.values:
            feeds[sig.name] = np.full(shape, plan.values[sig.name], dtype=dtype)
            continue
        (low, high), inclusive = range_of(sig, plan)
        if sig.dtype == "bool":
            feeds[sig.name] = rng.random(shape) < 0.5
        elif sig.dtype_info.is_integer and _shaped_like_text(sig, plan, shape):
            feeds[sig.name] = _text_like(sig, shape, dtype, rng)
        elif sig.dtype_info.is_integer:
            info = np.iinfo(dtype)
            first = max(math.ceil(low), info.min)
            # the largest value drawn: a contract's [low, high] includes high, a range [low, high) does not
            last = min(math.floor(high) if inclusive else math.ceil(high) - 1, info.max)
            feeds[sig.name] = rng.integers(first, max(last, first), size=shape, dtype=dtype, endpoint=True)
        else:
            feeds[sig.name] = rng.uniform(low, high, size=shape).astype(dtype)
    return feeds


def _shaped_like_text(sig: TensorSig, plan: InputPlan, shape: tuple[int, ...]) -> bool:
    """An integer mask or token-type input of rank 2 or more that nobody gave a range for."""
    return (len(shape) >= 2 and sig.name not in plan.ranges and not plan.default_range
            and (not sig.value_range or sig.value_range[0] <= 0 < 1 <= sig.value_range[1])
            and bool(_PADDING_MASK.search(sig.name) or _TOKEN_TYPES.search(sig.name)))


def _text_like(sig: TensorSig, shape: tuple[int, ...], dtype, rng) -> np.ndarray:
    """As a tokenizer makes it, along the last axis of each row: a mask of ones then padding (at
    least one 1), token types a run of 0s then a run of 1s (the second segment may be empty)."""
    length = shape[-1]
    rows = int(np.prod(shape[:-1]))
    positions = np.arange(length)
    if _PADDING_MASK.search(sig.name):
        kept = rng.integers(1, length, size=rows, endpoint=True)  # 1..length ones in each row
        out = positions[None, :] < kept[:, None]
    else:
        first = rng.integers(1, length, size=rows, endpoint=True)  # the first segment: 1..length tokens
        out = positions[None, :] >= first[:, None]
    return out.reshape(shape).astype(dtype)


def describe_inputs(signature: Signature, plan: InputPlan) -> str:
    """How each generated input is made, in words: ``input_ids int64 in [0, 50) (rows of the
    embedding wte), attention_mask ones then padding``."""
    parts = []
    for sig in signature.inputs:
        if sig.name in plan.values:
            parts.append(f"{sig.name} = {plan.values[sig.name]:g}")
        elif sig.dtype == "bool":
            parts.append(f"{sig.name} random booleans")
        elif sig.dtype_info.is_integer and len(sig.shape) >= 2 and _shaped_like_text(sig, plan, (2, 2)):
            kind = "ones then padding per row" if _PADDING_MASK.search(sig.name) else "a run of 0s then of 1s per row"
            parts.append(f"{sig.name} {kind}")
        else:
            (low, high), inclusive = range_of(sig, plan)
            why = f" ({plan.limits[sig.name][1]})" if sig.name in plan.limits and sig.name not in plan.ranges else ""
            parts.append(f"{sig.name} {sig.dtype} in [{low:g}, {high:g}{']' if inclusive else ')'}{why}")
    return ", ".join(parts)


def range_of(sig: TensorSig, plan: InputPlan) -> tuple[tuple[float, float], bool]:
    """(the range ``sig``'s values are drawn from, whether its high end is included): --range
    NAME=..., else the contract's own [low, high], else a bare --range, else the default by dtype
    (an integer input named like a mask: 0 or 1)."""
    if sig.name in plan.ranges:
        return plan.ranges[sig.name], False
    if sig.value_range:
        return sig.value_range, True
    if plan.default_range and sig.dtype != "bool":
        return plan.default_range, False
    if sig.name in plan.limits and sig.dtype_info.is_integer:  # ids below the embedding's rows
        return (0, plan.limits[sig.name][0]), False
    if sig.dtype_info.is_float:
        return DEFAULT_FLOAT_RANGE, False
    return (MASK_RANGE if _MASK_NAME.search(sig.name) else DEFAULT_INT_RANGE), False


# -- checking what a caller hands over ------------------------------------------------------------


def check_feeds(signature: Signature, feeds: Mapping[str, object], model: str = "the model", *,
                from_file: bool = False) -> dict[str, np.ndarray]:
    """A caller's inputs by name, checked against the signature: every input present and none
    unknown, the dtype (a float array for a float input is cast, an integer array for an integer
    one when its values fit; anything else is refused), the rank, the fixed sizes, and one size per
    symbol across inputs. Raises InputError naming the input. ``from_file``: ``model`` names the
    file the feeds were read from (samples.npz), and a name that fits no input is the file's."""
    names = ", ".join(signature.input_names)
    if not isinstance(feeds, Mapping):
        raise InputError(f"give {model}'s inputs as a dict by name ({names}), not {type(feeds).__name__}")
    unknown = [n for n in feeds if n not in signature.input_names]
    if unknown:
        raise InputError(f"{model} holds an array {unknown[0]!r}, and the model has no input of that name; its inputs "
                         f"are {names}: name each array after the input it feeds" if from_file
                         else f"{model} has no input {unknown[0]!r}; its inputs are {names}")
    missing = [n for n in signature.input_names if n not in feeds]
    if missing:
        raise InputError(f"{model} holds no array for input {missing[0]!r}; the model takes {names}" if from_file
                         else f"input {missing[0]!r} of {model} is missing; it takes {names}")
    sizes: dict[str, tuple[int, str]] = {}
    out = {}
    for sig in signature.inputs:
        array = _as_dtype(feeds[sig.name], sig, model)
        if array.ndim != len(sig.shape):
            raise InputError(f"input {sig.name!r} of {model} has shape {list(array.shape)}; it takes "
                             f"{sig.dims_text()} ({len(sig.shape)} axes)")
        for axis, (want, got) in enumerate(zip(sig.shape, array.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"input {sig.name!r} of {model} has shape {list(array.shape)}; axis {axis} must be "
                                 f"{want} ({sig.dims_text()})")
            if isinstance(want, str):
                seen = sizes.setdefault(want, (got, sig.name))
                if seen[0] != got:
                    raise InputError(f"input {sig.name!r} has {want}={got} but {seen[1]!r} has {want}={seen[0]}: "
                                     f"one {want} for every input")
        if sig.batch_axis is not None and array.shape[sig.batch_axis] == 0:
            raise InputError(f"input {sig.name!r} of {model} is an empty batch")
        # np.ascontiguousarray makes a 0-d array 1-d: a scalar input (a flag, a sample rate) stays a scalar.
        out[sig.name] = np.require(array, requirements="C")
    for symbol, (size, name) in sizes.items():
        limit = signature.limit(symbol)
        if limit is not None and size > limit:
            raise InputError(f"input {name!r} of {model} has {symbol}={size}; the model takes {symbol} up to {limit} "
                             f"(its own bound, recorded at export): give at most {limit}")
    return out


class ExactFeeds:
    """``fits(feeds)``: whether a caller's inputs need nothing from check_feeds (a dict of C-ordered
    arrays by exactly the input names, of the right dtypes, ranks, fixed sizes, one size per symbol,
    no empty batch): then they go to the runtime as they are. The plan is read from the signature
    once, because at batch 1 check_feeds' general walk costs as much as ONNX Runtime's run of a small
    model; anything else (casts, mistakes) takes check_feeds' path and its one-line errors."""

    def __init__(self, signature: Signature):
        self.count = len(signature.inputs)
        self.limits = signature.limits
        self.plan = [(t.name, np.dtype(t.dtype), len(t.shape),
                      tuple((axis, d) for axis, d in enumerate(t.shape) if isinstance(d, int)),
                      tuple((axis, d) for axis, d in enumerate(t.shape) if isinstance(d, str)), t.batch_axis)
                     for t in signature.inputs]

    def fits(self, feeds) -> bool:
        if type(feeds) is not dict or len(feeds) != self.count:
            return False
        sizes: dict[str, int] = {}
        for name, dtype, rank, fixed, symbols, batch_axis in self.plan:
            array = feeds.get(name)
            if type(array) is not np.ndarray or array.dtype != dtype or array.ndim != rank \
                    or not array.flags.c_contiguous:
                return False
            shape = array.shape
            for axis, size in fixed:
                if shape[axis] != size:
                    return False
            for axis, symbol in symbols:
                if sizes.setdefault(symbol, shape[axis]) != shape[axis]:
                    return False
            if batch_axis is not None and shape[batch_axis] == 0:
                return False
        return all(sizes.get(symbol, 0) <= limit for symbol, limit in self.limits)


def _as_dtype(value, sig: TensorSig, model: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input {sig.name!r} of {model}: not an array ({exc})") from None
    want = np.dtype(sig.dtype)
    if array.dtype == want:
        return array
    kind, target = array.dtype.kind, want.kind
    if target == "f" and kind in "fiu":
        # 1e6 cast to float16 is inf without a word, and the answer NaN: refuse it as an integer
        # input refuses a value past its range (the server does the same for a JSON request).
        try:
            with np.errstate(over="raise"):
                return array.astype(want)
        except FloatingPointError:
            raise InputError(f"input {sig.name!r} of {model} holds values outside {sig.dtype}'s range") from None
    if target in "iu" and kind in "iu":
        info = np.iinfo(want)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return array.astype(want)
        raise InputError(f"input {sig.name!r} of {model} holds values outside {sig.dtype}'s range")
    raise InputError(f"input {sig.name!r} of {model} is {array.dtype}; it takes {sig.dtype}"
                     + (" (round or cast it first)" if target in "iu" and kind == "f" else ""))


def load_input_file(path, signature: Signature) -> list[dict[str, np.ndarray]]:
    """Real samples for verify/bench/predict from ``.npz`` (one array per input name, or
    ``NAME:K`` keys for several cases), ``.npy`` (the model's one input) or ``.json`` ({name:
    nested lists}, or a list of such). Each case is checked by check_feeds."""
    import json
    import zipfile
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            cases = _cases_from_keys(arrays, path, signature.input_names)
        elif suffix == ".npy":
            if len(signature.inputs) != 1:
                raise InputError(f"{path}: a .npy holds one array, and the model takes {len(signature.inputs)} inputs "
                                 f"({', '.join(signature.input_names)}): save them in one .npz by name")
            cases = [{signature.inputs[0].name: np.load(path, allow_pickle=False)}]
        elif suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            listed = doc if isinstance(doc, list) else [doc]
            if not listed or not all(isinstance(c, dict) for c in listed):
                raise InputError(f"{path}: give an object {{input name: nested list}} or a list of them")
            cases = [dict(c) for c in listed]
        else:
            raise InputError(f"{path}: inputs come as .npz (arrays by input name), .npy (one input) or .json")
    except (OSError, ValueError, json.JSONDecodeError, zipfile.BadZipFile, EOFError) as exc:
        # A .npz is a zip archive: a truncated or damaged one raises BadZipFile (not an OSError).
        again = {".npz": "; save it again with numpy.savez", ".npy": "; save it again with numpy.save"}.get(suffix, "")
        raise InputError(f"{path}: cannot read it ({' '.join(str(exc).split())[:200]}){again}") from None
    return [check_feeds(signature, case, path.name, from_file=True) for case in cases]


def _cases_from_keys(arrays: dict[str, np.ndarray], path, names=()) -> list[dict[str, np.ndarray]]:
    """``{"x": a, "y": b}`` is one case; ``{"x:0": .., "y:0": .., "x:1": ..}`` several. Keys that are
    all the model's input names are one case even with a colon: tf2onnx names inputs ``x:0``. Beside
    numbered cases, ``labels`` (the true labels `ptx verify --save-inputs` keeps) is no input."""
    if any(":" in k for k in arrays) and "labels" not in names:
        arrays = {k: v for k, v in arrays.items() if k != "labels"}
    if not any(":" in k for k in arrays) or set(arrays) <= set(names):
        return [arrays]
    cases: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        name, sep, index = key.rpartition(":")
        if not sep:
            raise InputError(f"{path}: key {key!r} has no case number while others do (NAME:K)")
        cases.setdefault(index, {})[name] = array
    return [cases[k] for k in sorted(cases, key=lambda k: (len(k), k))]
