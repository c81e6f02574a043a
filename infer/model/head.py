"""A tutorial model's head: what its contract adds above the runner's named tensors.

The runner (ptx.infer.runtime.runner) answers ``run({name: array})``; the head knows what the tensors mean:
the picture, text or number pipeline that turns a user's input into a sample, the labels, the task
and its decision rule, and so what a ``Prediction`` says. ptx.infer.model.model.Model puts the two
together; a user's own file has a runner and no head, and where a model is taken whichever it is
(ptx serve) an ``IdentityHead`` stands in: its tensors as they are. numpy and Pillow only: never torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ptx.contract import Contract, InputKind, Task, TensorSig
from ptx.contract import ContractError
from ptx.contract import catalog
from ptx.contract.metadata import CONTRACT, ArtifactInfo, from_strings
from ptx.contract.names import SEQ
from ptx.contract.pictures import picture_sample, picture_samples, split_array_batch
from ptx.contract.schema import signature_of_contract
from ptx.contract.transforms import decisions, encode_text, pictures_from_model_input, softmax
from ptx.errors import ArtifactError, InputError, NotPtxArtifactError, quoted
from ptx.files import decode_text

from .inputs import csv_text_rows

# What a user sends a head as bytes, and what its answer holds, by the names ptx serve gives them.
IMAGE_INPUT, TEXT_INPUT = "image", "text"
LABEL_OUTPUT, PROBABILITIES_OUTPUT, VALUE_OUTPUT = "label", "probabilities", "value"
# An array given to predict() -> its inputs, by the model's input kind: a picture, number or row each.
ARRAY_ITEMS = {InputKind.IMAGE: split_array_batch, InputKind.NUMBER: lambda a: list(a.reshape(-1, 1)),
               InputKind.VECTOR: lambda a: list(np.atleast_2d(a))}


def artifact_info(path: Path, strings) -> ArtifactInfo:
    """The ptx metadata an artifact carries, checked: none, or a contract that does not validate, is
    an ArtifactError naming the export command that makes a good one."""
    if not strings or CONTRACT not in strings:  # none, or a user's own export (its tensors, no head)
        raise NotPtxArtifactError(f"{path}: not a ptx export of a tutorial model (no ptx.* metadata); run it as your "
                                  f"own model (`ptx inspect {path}`, library: load(path)), or export a tutorial model "
                                  "with `ptx export NAME`")
    # Whether the strings belong to the file's weights was checked where it was opened (model_file).
    try:
        info = from_strings(strings)
    except ContractError as exc:
        raise ArtifactError(f"{path}: {exc}; re-export with `ptx export {strings.get('model', 'NAME')}`") from None
    # An export of a run on data its model cannot learn from (trained by an older ptx) answers nonsense.
    model, dataset = info.contract.model, info.get("dataset")
    if catalog.known_to_fit(model, dataset):
        return info  # the usual case, answered without loading the dataset table on predict's start
    from ptx.contract.datasets import recorded_mismatch

    problem = recorded_mismatch(model, catalog.takes(model), dataset)
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    return info


@dataclass
class Prediction:
    """One sample's answer. Classifiers fill label/label_name/probability; regression fills value."""

    logits: np.ndarray
    label: int | None = None
    label_name: str | None = None
    probability: float | None = None
    probabilities: np.ndarray | None = None
    value: float | None = None
    source: str | None = field(default=None, compare=False)
    # The artifact's label names (its contract's), so that topk() needs none passed.
    labels: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # True when a min_confidence was asked for and ``probability`` is below it: the label is the
    # model's best guess, not an answer to act on (a photo with no digit in it still gets one).
    low_confidence: bool = False

    def topk(self, k: int, labels: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` most likely (label name, probability), most likely first; ``labels`` default to
        the artifact's (a Prediction made by hand without them names labels by index)."""
        if self.probabilities is None:
            return []
        labels = labels or self.labels or [str(i) for i in range(len(self.probabilities))]
        order = np.argsort(-self.probabilities)[:k]
        return [(labels[i], float(self.probabilities[i])) for i in order]

    def to_dict(self, labels: Sequence[str] | None = None, k: int = 0) -> dict:
        out = {"input": self.source, "logits": np.asarray(self.logits, dtype=float).tolist()}
        if self.value is not None:
            out["value"] = self.value
        else:
            out.update(label=self.label, label_name=self.label_name, probability=self.probability,
                       low_confidence=self.low_confidence)
            if k:
                out["topk"] = [{"label_name": name, "probability": p} for name, p in self.topk(k, labels)]
        return out


class Head:
    """What a tutorial export's contract says above its tensors. ``info``: the artifact's contract
    and provenance; the runner it sits on answers the contract's one input and one output (the raw
    uint8 pictures for an artifact exported with --input uint8). ``endpoint``: the named tensors a
    caller feeds and reads, the contract's input and output (what its Triton config names), also where
    an --input uint8 graph takes the ``raw_input`` pictures instead; ``user_input``: what a user sends
    as bytes, encoded picture files or text (a number, a CSV row, a word)."""

    def __init__(self, info: ArtifactInfo):
        self.info, self.raw_input = info, info.raw_input
        self.contract: Contract = info.contract
        self.labels: tuple[str, ...] = info.contract.labels
        self.endpoint = signature_of_contract(info.contract)
        self.user_input = IMAGE_INPUT if info.contract.kind is InputKind.IMAGE else TEXT_INPUT
        # The tensor the runtime is fed: the contract's input, or raw uint8 pictures.
        self.graph_input: TensorSig = self.raw_input or self.contract.input
        self.input_name, self.output_name = self.graph_input.name, self.contract.output.name
        self._graph_dtype = np.dtype(self.graph_input.dtype)  # read once: feeds runs every batch

    @property
    def answers(self) -> dict[str, list[int]]:
        """What a Prediction answers, each with its shape (-1: one per input)."""
        if self.contract.task is Task.REGRESSION:
            return {VALUE_OUTPUT: [-1]}
        if self.contract.per_position:
            return {LABEL_OUTPUT: [-1]}
        return {LABEL_OUTPUT: [-1], PROBABILITIES_OUTPUT: [-1, len(self.labels)]}  # a binary contract has 2 labels

    def scores_per_label(self, width: int) -> bool:
        """Whether an output ``width`` wide is one score per label (what Triton's classification names)."""
        return PROBABILITIES_OUTPUT in self.answers and width == len(self.labels)

    @property
    def pads(self) -> dict[str, tuple[int, int]]:
        """Where a batch of token sequences may be padded (input name: (axis, pad id)): only where the
        pad id changes nothing, when the output has no position axis (gru-classifier reads each word at
        its last real character); rnn-hello answers per position: equal lengths only."""
        contract = self.contract
        if contract.encoding is None or contract.encoding.pad_id is None or contract.input.seq_axis is None \
                or SEQ in contract.output.shape:
            return {}
        return {contract.input.name: (contract.input.seq_axis, contract.encoding.pad_id)}

    def check_values(self, feeds: dict[str, np.ndarray]) -> None:
        """What the contract says of its input beyond names and shapes (check_feeds' part): no empty
        sequence, finite values, token ids its vocabulary has. Raises InputError."""
        contract, name = self.contract, self.contract.input.name
        x, seq = feeds[name], contract.input.seq_axis
        if seq is not None and x.shape[seq] == 0:
            raise InputError(f"input {name!r} has shape {list(x.shape)}: every batch and sequence dimension "
                             "needs at least 1")
        if contract.input.dtype == "float32" and not np.isfinite(x).all():
            raise InputError(f"input {name!r} holds NaN or infinite values")
        if contract.encoding is not None and x.size and (x.min() < 0 or x.max() >= contract.encoding.vocab_size):
            raise InputError(f"input {name!r} holds token ids outside 0..{contract.encoding.vocab_size - 1}")

    def feeds(self, x) -> dict[str, np.ndarray]:
        """A model-layout batch (checked) -> what ``Model.run`` takes: the graph's one input, by name,
        in the graph's dtype, or (--input uint8) the pictures it was made from (InputError when it was
        made from none)."""
        self.check_input(x)
        if hasattr(x, "detach"):  # a torch tensor (torch is loaded already: the caller made it)
            x = x.detach().cpu().numpy()
        if self.raw_input is not None:
            return {self.input_name: pictures_from_model_input(np.asarray(x), self.contract)}
        return {self.input_name: np.ascontiguousarray(x, dtype=self._graph_dtype)}

    def check_pictures(self, x) -> None:
        want = self.graph_input.sample_shape
        shape = tuple(getattr(x, "shape", ()))
        dtype = str(getattr(x, "dtype", "")).replace("torch.", "")
        if len(shape) != 3 or shape[1:] != want or 0 in shape or dtype != "uint8":
            raise InputError(f"pictures of shape {shape} and dtype {dtype or type(x).__name__} do not fit "
                             f"{self.contract.model}'s input: give (N, {want[0]}, {want[1]}) uint8")

    def check_input(self, x) -> None:
        """A preprocessed batch must have the contract's rank and fixed sizes: the runtimes' own
        errors for a wrong shape are multi-line C++ messages."""
        want = self.contract.input.shape
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, shape)) \
                or 0 in shape:
            raise InputError(f"input of shape {shape} does not fit {self.contract.model}'s input {list(want)} "
                             "(use predict() for pictures, numbers or text)")

    # -- user inputs -> raw samples --------------------------------------------------------------
    def prepare_one(self, item, raw: bool = False, name: str | None = None) -> np.ndarray:
        """One user input (path, PIL image, one array picture, number, CSV row or string) -> one
        raw sample as the training data holds it. Raises InputError."""
        kind = self.contract.kind
        if is_stream(item):
            item = read_stream(item, name or _describe(item))
            if kind is InputKind.IMAGE and isinstance(item, str):
                raise InputError(f"{name or 'stream'}: a text-mode file: open the picture with open(path, 'rb')")
        if kind is not InputKind.IMAGE and isinstance(item, BYTES):
            name = name or _describe(item)
            lines = self.text_lines(item, name)
            if len(lines) > 1:
                raise InputError(f"{name}: {len(lines)} lines; give one input, or pass it to predict(), which "
                                 "reads one per line")
            item = lines[0]
        if kind in (InputKind.NUMBER, InputKind.VECTOR):
            return self._parse_numbers(item)
        if kind is InputKind.TEXT:
            return encode_text(item, self.contract.encoding, self.contract.model)
        return prepare_picture(item, self.contract.picture, raw=raw, name=name)

    def text_lines(self, item, name: str) -> list[str]:
        """Bytes or a stream hold a text file for the models that do not take pictures: its
        non-blank lines, one input each (a CSV file's rows, header skipped, for feature rows)."""
        if is_stream(item):
            item = read_stream(item, name)
        text = item if isinstance(item, str) else decode_text(bytes(item), name, InputError)
        if self.contract.kind is InputKind.VECTOR:
            return csv_text_rows(text, name, self.contract.features)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise InputError(f"{name}: no text (empty or blank lines only)")
        return lines

    def _parse_numbers(self, item) -> np.ndarray:
        """A number, a CSV row ("6,148,72,...") or a sequence of numbers -> one float32 sample."""
        width = self.contract.sample_size
        features = ", ".join(self.contract.features)
        values = item.split(",") if isinstance(item, str) else np.atleast_1d(np.asarray(item, dtype=object))
        try:
            exact = np.array([float(v) for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{quoted(item)}: not {'a number' if width == 1 else f'{width} comma-separated numbers'} "
                             f"({self.contract.model} takes {features})") from None
        if exact.size != width:
            raise InputError(f"{quoted(item)}: {exact.size} values, {self.contract.model} takes {width} ({features})")
        if not np.isfinite(exact).all():
            raise InputError(f"{quoted(item)}: NaN or infinite values; {self.contract.model} needs finite numbers")
        with np.errstate(over="ignore"):
            sample = exact.astype(np.float32)
        if not np.isfinite(sample).all():  # 1e308 is finite, and infinite once made float32
            raise InputError(f"{quoted(item)}: values beyond float32's range (about ±3.4e38), which "
                             f"{self.contract.model} computes in; give smaller numbers")
        return sample

    # -- outputs -> predictions ---------------------------------------------------------------
    def interpret(self, outputs: np.ndarray, samples: np.ndarray,
                  sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """The model's outputs for raw ``samples`` -> predictions: labels, probabilities, values
        (``ptx serve`` runs batches itself and answers through this, as predict does)."""
        contract = self.contract
        logits = np.asarray(outputs, dtype=np.float32)
        sources = list(sources) if sources is not None else [None] * len(samples)
        labels = self.labels
        if contract.per_position:  # a label per position: the answer is a string
            return self._per_position(logits, samples, sources)
        if contract.task is Task.REGRESSION:
            return [Prediction(logits=row, value=float(row[0]), source=src) for row, src in zip(logits, sources)]
        if contract.task is Task.BINARY:  # the model's output is already P(label 1)
            probs = np.concatenate([1 - logits[:, :1], logits[:, :1]], axis=1)
        else:
            probs = softmax(logits)
        return [Prediction(logits=row, label=int(d), label_name=labels[int(d)], probability=float(p[d]),
                           probabilities=p, source=src, labels=labels)
                for row, p, d, src in zip(logits, probs, decisions(logits, contract), sources)]

    def _per_position(self, logits, samples, sources) -> list[Prediction]:
        probs = softmax(logits)  # (B, T, C)
        pad = self.contract.encoding.pad_id
        out = []
        for row, p, sample, src in zip(logits, probs, samples, sources):
            length = int((sample != pad).sum()) if pad is not None else len(sample)
            best = p[:length].argmax(-1)
            out.append(Prediction(logits=row[:length], label_name="".join(self.labels[i] for i in best),
                                  probability=float(p[:length].max(-1).min(initial=1.0)), source=src))
        return out

    def samples_of(self, inputs, raw: bool = False) -> tuple[list[np.ndarray], list[str]]:
        """What ``Model.predict`` takes (pictures: paths, an image file's bytes or binary file object,
        PIL images, numpy arrays, one picture or a batch by shape; numbers, CSV rows or strings, or a
        text file's bytes: one input per line) -> (raw samples, how each answer names its input).
        The first input without a sample raises its InputError."""
        pairs = []  # (input, how its result names it)
        for item in self._items(inputs):
            if self.contract.kind is not InputKind.IMAGE and (is_stream(item) or isinstance(item, BYTES)):
                pairs += [(line, _describe(line)) for line in self.text_lines(item, _describe(item))]
            else:
                pairs.append((item, _describe(item)))
        # Files and bytes are named in errors as their result names them; paths, images and arrays
        # keep the names the picture functions give them.
        samples = self.prepare_many([(item, source if is_stream(item) or isinstance(item, BYTES) else None)
                                     for item, source in pairs], raw=raw)
        for sample in samples:
            if isinstance(sample, InputError):
                raise sample
        return samples, [source for _, source in pairs]

    def prepare_many(self, pairs: Sequence[tuple[object, str | None]], raw: bool = False) -> list:
        """``prepare_one`` of each (input, name) pair: its raw sample, or the InputError that says why
        it has none. Pictures go through prepare_pictures together (the pipeline's form for many at
        once, the same samples); file objects and other kinds one by one."""
        if self.contract.kind is InputKind.IMAGE and not any(is_stream(item) for item, _ in pairs):
            return prepare_pictures(pairs, self.contract.picture, raw=raw)
        out: list = []
        for item, name in pairs:
            try:
                out.append(self.prepare_one(item, raw=raw, name=name))
            except InputError as exc:
                out.append(exc)
        return out

    def _items(self, inputs) -> list:
        kind = self.contract.kind
        if inputs is None:
            raise InputError(f"nothing to predict: give {self.contract.model} {kind.value} inputs, not None")
        if isinstance(inputs, np.ndarray):
            items = ARRAY_ITEMS.get(kind, lambda a: list(a.reshape(-1)))(inputs)  # text: one string each
        elif isinstance(inputs, (str, Path, Image.Image, *BYTES)) or is_stream(inputs) or not isinstance(inputs, Iterable):
            items = [inputs]
        else:
            items = list(inputs)
            if kind is InputKind.VECTOR and _one_row(items, self.contract.sample_size):
                # [6, 148, 72, ...]: one patient's row, as the same numbers in a 1-D array are. As a
                # batch it could only be refused: each of its numbers alone is no row.
                items = [items]
        if not items:
            raise InputError("nothing to predict: the input is empty")
        return items


class IdentityHead:
    """The head of a model without a contract (a user's file, a module): its named tensors as they
    are, no pipeline, labels or decision. A model is served through it as a tutorial model through
    its Head, so nothing asks which it has: no bytes route, no answers, no pads, no value checks."""

    contract = raw_input = user_input = None
    labels: tuple[str, ...] = ()

    def __init__(self, signature):
        self.endpoint, self.answers, self.pads = signature, {}, {}

    def scores_per_label(self, width: int) -> bool:
        return True  # no labels to count: whether an output is class scores at all is class_scores' test

    def check_values(self, feeds: dict[str, np.ndarray]) -> None:
        """Nothing beyond the signature's names, dtypes and shapes, which check_feeds checks."""


def _one_row(items: list, width: int) -> bool:
    """Whether ``items`` (a list or tuple given to a model of ``width`` features) is one row of plain
    numbers rather than a batch of rows."""
    return width > 1 and len(items) == width and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in items)


def prepare_picture(item, step, raw: bool = False, name: str | None = None) -> np.ndarray:
    """One picture (path, image file's bytes, PIL image, array) -> one raw sample by the picture
    ``step``: what prepare_one does for an image model, without the model. Raises InputError."""
    _check_picture(item)
    return picture_sample(item, step, raw=raw, name=_picture_name(item, name))


def prepare_pictures(items: Sequence[tuple[object, str | None]], step, raw: bool = False) -> list:
    """(picture, name) pairs -> each one's raw sample, or the InputError that says why it has none:
    ``prepare_picture`` of each, the same samples, with the picture pipeline run over all of them at
    once where it can be (ptx.contract.pictures.picture_samples); worker processes run it on a
    folder's chunks (infer/predict/stream.py)."""
    out: list = [None] * len(items)
    for i, (item, _) in enumerate(items):
        try:
            _check_picture(item)
        except InputError as exc:
            out[i] = exc
    todo = [i for i, made in enumerate(out) if made is None]
    made = picture_samples([items[i][0] for i in todo], step, raw=raw, names=[_picture_name(*items[i]) for i in todo])
    for i, sample in zip(todo, made):
        out[i] = sample
    return out


def _picture_name(item, name: str | None) -> str | None:
    """What a picture's errors call it: bytes have no name of their own, so say what they were."""
    return (name or _describe(item)) if isinstance(item, BYTES) else name


def _check_picture(item) -> None:
    if not isinstance(item, (str, Path, Image.Image, np.ndarray, *BYTES)):
        raise InputError(f"{_describe(item)}: not a picture (give a path, an image file's bytes or a binary "
                         "file object, a PIL image or a numpy array)")
    if isinstance(item, str) and len(item) > 4096:  # no path is this long: text given for a picture
        raise InputError(f"{quoted(item)}: not a picture path (give a path, bytes, a PIL image or a numpy array)")


def mark_low_confidence(results: list[Prediction], min_confidence: float | None) -> list[Prediction]:
    """Mark each answer whose probability is below ``min_confidence`` (a number in [0, 1]; None: no
    threshold). A regression's value has no probability and is never marked."""
    if min_confidence is None:
        return results
    if not 0.0 <= min_confidence <= 1.0:  # also refuses NaN
        raise InputError(f"min_confidence {min_confidence!r} is not a probability: give a number in [0, 1]")
    for r in results:
        r.low_confidence = r.probability is not None and r.probability < min_confidence
    return results


BYTES = (bytes, bytearray, memoryview)
MAX_STREAM_BYTES = 256 * 1024 * 1024  # a file object is read whole: no picture or text input is this large


def is_stream(item) -> bool:
    """A file object (open(..., "rb"), io.BytesIO, sys.stdin.buffer): something with read()."""
    return callable(getattr(item, "read", None)) and not isinstance(item, (str, Path, Image.Image, np.ndarray, *BYTES))


def read_stream(stream, name: str):
    """A file object's content (bytes; str for a text-mode one), refused when it cannot be read."""
    try:
        data = stream.read(MAX_STREAM_BYTES + 1)
    except (OSError, ValueError) as exc:  # closed, or not readable
        raise InputError(f"{name}: cannot read it ({exc})") from None
    if len(data) > MAX_STREAM_BYTES:
        raise InputError(f"{name}: over {MAX_STREAM_BYTES // 2**20} MiB: not one input")
    return data


def _describe(item) -> str:
    """How a result names its input: the path or text as given (shortened when long), else what
    kind of object it was."""
    if isinstance(item, np.ndarray):
        return f"array{tuple(item.shape)}"
    if isinstance(item, Image.Image):
        return f"image {item.width}x{item.height}"
    if isinstance(item, BYTES):
        return f"bytes ({len(item):,})"
    if is_stream(item):
        name = getattr(item, "name", None)  # an open file's path; sys.stdin's is '<stdin>'
        return str(name) if isinstance(name, (str, Path)) else type(item).__name__
    text = str(item)
    return text if len(text) <= 200 else quoted(text)
