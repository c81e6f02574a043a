"""The ground every model stands on: one runner per runtime, ``run({name: array}) -> {name: array}``.

A runner owns one runtime's handle on one model file (an ONNX Runtime session, an OpenVINO compiled
model, a torch module or AOTInductor package) and answers by tensor name. The tutorial models and a
user's own file get the same runner class of a runtime: a tutorial model is a runner plus a head
(ptx.infer.model.head), a user's file a runner alone (ptx.infer.model.model). numpy only here: each runtime's
runner lives in its own module (ort_runner, openvino_runner, torch_runner and their CUDA-graph
variants).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.names import model_name
from ptx.contract.tensor_inputs import ExactFeeds, check_feeds
from ptx.contract.tensors import Signature
from ptx.errors import InputError, ModelRunError, PtxError

from .memory_plan import give_back_freed


def as_array(value) -> np.ndarray:
    """An array of a value a runtime holds (an OrtValue, OpenVINO's HeldState): an array as it is, else its numpy():
    a copy from a device, but on the CPU a view of an OrtValue's memory, valid while that OrtValue lives (ONNX
    Runtime's outputs: the view keeps them alive; one made from a host array does not keep that array)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def _described(value) -> str:
    """``float32 [3, 8]``: an array's dtype and shape, or a runtime's held value's (an OrtValue's element type)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    dtype, shape = getattr(value, "data_type", None), getattr(value, "shape", None)
    return f"{dtype() if callable(dtype) else dtype} {list(shape() if callable(shape) else shape or [])}"


class Runner:
    """Subclasses set ``backend`` and ``device`` and implement ``_run`` (checked inputs -> every
    output by name). ``run`` is safe to call from several threads at once."""

    backend: str = "?"
    device: str = "cpu"
    precision: str = "f32"
    # Reused host buffers for batches bound for a GPU (page-locked where the runtime can): a caller
    # that writes a batch into ``host.lease(shape, dtype)`` spares the copy from pageable memory
    # (serve's batcher, bench). None where the model runs on the CPU.
    host = None
    # One line where an answer's shape contradicted the output shapes the model declares (a file
    # that says [1, seqlen] and returns [20, 1, 8210]): what verify and inspect say of the runner.
    # Only the first few answers are checked, so that bench's timed calls pay nothing for it.
    contradiction: str | None = None
    _shape_checks: int = 3

    def __init__(self, signature: Signature, path: Path | None, name: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        self.signature = signature
        self.path = Path(path) if path is not None else None
        self.name = name or (model_name(self.path) if self.path is not None else "model")
        self.metadata = dict(metadata or {})  # the file's ptx.* strings, prefix dropped
        self._exact = ExactFeeds(signature)
        # integer inputs whose values the model bounds (ids into an embedding of N rows, recorded or read
        # from the graph): a run that fails on an id past it says so in one line (_check_ids)
        self._id_ranges = [(t.name, int(t.value_range[0]), int(t.value_range[1])) for t in signature.inputs
                           if t.value_range is not None and t.dtype_info.is_integer]

    @classmethod
    def open(cls, path, device: str = "cpu", precision: str = "f32", opening=None, **options) -> "Runner":
        """The registry's one opener of this runtime: the model at ``path`` on ``device`` at
        ``precision``, its signature as ``opening`` (formats/signature.py) makes it of what the
        runtime reads."""
        return cls(path, device, precision, opening, **options)

    def run(self, feeds: Mapping[str, object], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Inputs by name -> the outputs asked for (all by default), by name. Inputs are checked
        first: a missing or unknown name, a wrong dtype (floats are cast to a float input), rank or
        fixed size is one InputError naming the input."""
        if self.closed:
            raise PtxError(f"{self.name} on {self.backend} was closed: open it again (ptx.infer.load)")
        checked = feeds if self._exact.fits(feeds) else check_feeds(self.signature, feeds, self.name)
        self._check_ids(checked, below_only=not self.ids_first)  # a negative id: ONNX Runtime's Gather wraps it
        if outputs is None:
            try:
                return self._checked(self._run(checked))
            except PtxError:  # where an id past its table is why, said so (a range never refuses what runs)
                self._check_ids(checked)
                raise
        wanted = list(outputs)
        unknown = [n for n in wanted if n not in self.signature.output_names]
        if unknown:
            raise InputError(f"{self.name} has no output {unknown[0]!r}; its outputs are "
                             f"{', '.join(self.signature.output_names)}")
        # a part of the answer asked for (locate's questions of a cut-out copy) is not held to the file's
        # declaration: that is the whole answer's check, and reading a copy's graph for it costs every question
        result = self._run(checked)
        return {n: result[n] for n in wanted}

    def new_cache(self, generation):
        """An empty key/value cache for a decoding of ``generation``'s decoder through this runner (cache.py): numpy
        arrays here, each present fed back as the next past (a fixed-length cache's buffer, its present taken as
        it); a runtime that keeps values of its own makes its own form (ONNX Runtime's OrtValues or its in-place
        buffer, OpenVINO's state)."""
        from .buffer_cache import cache_for

        return cache_for(self.run, self.signature, generation)

    # Whether ids are held to their tables before the run: where the compiled code reads past a table's
    # end rather than refuse (AOTInductor), or prints a page of native frames on its way to refusing.
    ids_first = False

    def _check_ids(self, feeds: Mapping[str, np.ndarray], below_only: bool = False) -> None:
        """One InputError for an integer input holding a value past the table it indexes (``below_only``:
        under its first row only, which no table takes, where the runtime says the rest itself)."""
        for name, low, high in self._id_ranges:
            values = np.asarray(feeds[name])
            if values.size and (values.min() < low or (values.max() > high and not below_only)):
                bad = values.min() if values.min() < low else values.max()
                raise InputError(f"input {name!r} of {self.name} holds {bad}; the model takes values in [{low}, {high}] "
                                 f"(ids into a table of {high - low + 1} rows)")

    def _checked(self, result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``result``, its shapes held against the declared ones while checks are left."""
        if self._shape_checks > 0 and self.contradiction is None:
            self._shape_checks -= 1
            self.contradiction = answer_contradicts(self.declared_outputs(), result, f"{self.name} on {self.backend}")
        return result

    def declared_outputs(self) -> Signature:
        """The signature as the model declares it, which answers are held to: the runner's own here."""
        return self.signature

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _failed(self, feeds: Mapping[str, np.ndarray], why: str) -> ModelRunError:
        """A run that failed in the runtime, said in one line with what it was given (``x float32 [3, 8]``)."""
        given = ", ".join(f"{n} {_described(a)}" for n, a in feeds.items())
        name = getattr(self, "name", "the model")  # a torch runner probing its outputs has none yet
        return ModelRunError(f"{self.backend} failed running {name} on inputs {given}: {why}")

    def bare(self, feeds: dict[str, np.ndarray]) -> tuple[str, Callable[[], object]]:
        """(label, call): the same model called straight through its runtime, for bench's peer row."""
        return f"bare {self.backend}", lambda: self._run(feeds)

    # The attributes through which the runtime holds its copy of the model (a session, a compiled
    # model): close() lets them go, so that a command walking several rows holds one at a time.
    holding: tuple[str, ...] = ()
    closed = False

    def __enter__(self) -> "Runner":
        """A runner held by a ``with`` block (Polygraphy's activate/deactivate): closed where the block ends."""
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, collect: bool = False) -> None:
        """Release what the runtime holds: the pinned buffers, and the model itself (the runner keeps
        its signature and metadata; running it afterwards is one error), and give the freed memory back
        (malloc_trim); a second close does nothing. ``collect``: the garbage collector's full pass first
        (memory_plan.give_back_freed, which says what a pass costs), for a runtime a reference cycle may
        hold; left out by default, since dropping the attributes frees a session, and the suite closes
        thousands of runners."""
        if self.closed:
            return
        if self.host is not None:
            self.host.close()
        for name in self.holding:
            if hasattr(self, name):
                setattr(self, name, None)
        self.closed = True
        if self.holding:
            give_back_freed(collect)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.backend} ({self.device})>"


def answer_contradicts(signature: Signature, result: Mapping[str, np.ndarray], who: str) -> str | None:
    """One line where an answer's shape contradicts the output's declared one: another rank, or
    another size where the declaration fixes one. An output declared with no axes (its rank unknown
    to the runtime, or a scalar) is not held to anything. Every command that sizes outputs from the
    declaration (serve's metadata, a Triton config, --output Parquet) would be wrong about it."""
    found = signature.contradicted_output(result)
    if found is None:
        return None
    t, shape = found
    return (f"{who} returned output {t.name!r} as {list(shape)}, but the model declares it {t.dims_text()}: "
            "its declared output shapes are wrong (trust the answers' shapes; a server's metadata and a "
            "Triton config made from the declaration will be too)")


def beyond_a_table(signature: Signature, feeds: Mapping[str, object], tables: Sequence[tuple[str, int]],
                   runs: Callable[[dict], bool]) -> str | None:
    """Where a run failed, the input axis that is longer than a table the model looks values up in
    (1,000 tokens into 512 position embeddings), said in a line; None where none is to blame. A
    suspect is confirmed by ``runs`` on the inputs cut to the table's rows (every axis of that size's
    symbol), and by their failing one row longer: a small table indexed by value (BERT's two token
    types) must not be blamed for another failure, nor for a longer table's limit (RoBERTa's 66
    positions, offset by 2, take 64 tokens: at 65 only the token types' 2 rows are shorter, and 3
    tokens run). The batch axis is never blamed: no table is indexed by it."""
    for t in signature.inputs:
        shape = getattr(feeds.get(t.name), "shape", ())
        for axis, (symbol, got) in enumerate(zip(t.shape, shape)):
            if not isinstance(symbol, str) or axis == t.batch_axis:
                continue
            for rows, name in sorted({(rows, name) for name, rows in tables if rows < got}, reverse=True):
                if runs(_cut(signature, feeds, symbol, rows)) and (
                        rows + 1 == got or not runs(_cut(signature, feeds, symbol, rows + 1))):
                    return (f"input {t.name!r} axis {axis} ({symbol}) is {got}, longer than the {rows} rows of "
                            f"{name!r} that the model looks up along it: give at most {rows}")
    return None


def _cut(signature: Signature, feeds: Mapping[str, object], symbol: str, size: int) -> dict:
    """``feeds`` with every axis of ``symbol`` cut to its first ``size`` entries."""
    return {n: np.asarray(x)[tuple(slice(0, size) if d == symbol else slice(None) for d in signature.input(n).shape)]
            for n, x in feeds.items()}
