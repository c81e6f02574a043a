"""What `ptx predict MODEL.onnx INPUTS` does with named tensors: input files read into cases, each
run through the model, its outputs summarised, printed as JSON, or written to .npz (arrays by name)
or Parquet (one row per sample). A tutorial model's predict (pictures, text, rows -> Predictions)
is its head's (ptx.infer.model.head, ptx.infer.model.model).

numpy only (pyarrow for Parquet): the ONNX Runtime path never imports torch. Each input file is
read and checked against the model's signature first (``load_input_file``: .npz arrays by input
name or ``NAME:K`` keys for several cases, a .npy for a one-input model, .json); a file that does
not fit is one line naming the file and the input, and the other files still run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ptx.atomic import atomic_path
from ptx.contract.cases import Case, run_cases
from ptx.contract.comparison import class_scores
from ptx.contract.tensor_inputs import load_input_file
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError

from ..model.inputs import IMAGE_SUFFIXES

OUTPUT_SUFFIXES = (".npz", ".parquet")
JSON_VALUES = 10_000  # an output of more values is summarised in --json, not listed
ARGMAX_SHOWN = 16  # rows whose argmax the text summary lists


def read_inputs(signature: Signature, paths: Iterable[str], model: str) -> tuple[list[Case], list[str]]:
    """Every input file read and checked: (one Case per set of inputs (a file, or case K of a file
    that holds several), without outputs yet; one error line per file that cannot be read or does not
    fit)."""
    cases, errors = [], []
    for path in map(Path, paths):
        if str(path) == "-":  # the tutorial models' standard input: said, not "-: no such file"
            errors.append(f"-: standard input is read for the tutorial models; {model} is your own model: give its "
                          "inputs as .npz (arrays by input name), .npy (one input) or .json files")
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            takes = ", ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in signature.inputs)
            errors.append(f"{path}: a picture; {model} is your own model and takes tensors ({takes}): save them as "
                          ".npz (arrays by input name), .npy (one input) or .json")
            continue
        try:
            feeds = load_input_file(path, signature)
        except InputError as exc:
            errors.append(str(exc) if path.name in str(exc) else f"{path}: {exc}")
            continue
        if not feeds:
            errors.append(f"{path}: holds no inputs")
            continue
        several = len(feeds) > 1
        cases += [Case(f"{path.name}:{k}" if several else path.name, case) for k, case in enumerate(feeds)]
    return cases, errors


def answer_cases(model, cases: list[Case], outputs: list[str] | None = None) -> Iterator[Case]:
    """Each case through the model by ptx's one run loop (ptx.contract.cases.run_cases): its
    ``outputs`` set to the model's and its ``feeds`` dropped (no longer needed, and not kept in memory
    beside the outputs), or its ``error`` set when the runtime refuses them (the other cases still run)."""
    for case, answers, error in run_cases(lambda feeds: model.run(feeds, outputs), cases, refused=InputError):
        case.feeds, case.outputs = None, answers
        if error is not None:
            case.error = f"{case.label}: {error}"
        yield case


# -- what a user reads -----------------------------------------------------------------------------


def may_hold_scores(tensor) -> bool:
    """An output whose signature allows a score vector: floats whose last axis is not fixed below 2."""
    last = tensor.shape[-1] if tensor.shape else 1
    return tensor.dtype.startswith(("float", "bfloat")) and (isinstance(last, str) or last >= 2)


def check_topk(topk: int, signature: Signature, model: str) -> None:
    """--topk for your own model: refused in one line before anything runs where no output can be a
    score vector (issue 58: it was refused for every model file, a classifier's too)."""
    if topk and not any(may_hold_scores(t) for t in signature.outputs):
        outputs = ", ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in signature.outputs)
        raise PtxError(f"--topk {topk}: no output of {model} is a score vector (floats whose last axis holds 2 or more "
                       f"scores): it answers {outputs}; leave --topk out")


def top_k(value: np.ndarray, batch_axis: int | None, k: int) -> list[list[list]] | None:
    """The ``k`` highest scores of each row of a score vector (floats, the last axis the scores, 2 or
    more of them, and not the batch axis), batch first: per row ``[[index, score], ...]``, highest
    first. A file of your own carries no labels, so a score is named by its index. None where the
    output is no score vector."""
    value = np.asarray(value)
    if value.dtype.kind != "f" or value.ndim == 0 or value.shape[-1] < 2 or batch_axis == value.ndim - 1:
        return None
    rows = (np.moveaxis(value, batch_axis, 0) if batch_axis is not None else value).reshape(-1, value.shape[-1])
    k = min(k, rows.shape[1])
    # argpartition first: an LM's rows hold tens of thousands of scores, of which k are wanted
    best = np.argpartition(-rows, k - 1, axis=-1)[:, :k] if k < rows.shape[1] else np.tile(np.arange(k), (len(rows), 1))
    best = np.sort(best, axis=-1)  # equal scores in index order, as Triton's classification extension lists them
    order = (-np.take_along_axis(rows, best, -1)).argsort(-1, kind="stable")
    best = np.take_along_axis(best, order, -1)
    return [[[int(i), float(row[i])] for i in picked] for row, picked in zip(rows, best)]


def summarize(value: np.ndarray, batch_axis: int | None, topk: int = 0) -> dict:
    """dtype and shape; for what looks like class scores (comparison.class_scores) the argmax of
    each row, batch first; with ``topk``, each row's ``topk`` highest scores where the output is a
    score vector; the min, mean and max of the finite values, and how many are not finite.
    (An embedding looks like scores too: its argmax is shown beside its range, not instead of it.)"""
    value = np.asarray(value)
    doc: dict = {"dtype": str(value.dtype), "shape": list(value.shape)}
    if class_scores(value, batch_axis):
        rows = np.moveaxis(value, batch_axis, 0).reshape(-1, value.shape[-1])
        doc["argmax"] = rows.argmax(-1).tolist()
    best = top_k(value, batch_axis, topk) if topk else None
    if best is not None:
        doc["topk"] = best
    numbers = value.astype(np.float64, copy=False)
    finite = numbers[np.isfinite(numbers)]
    if finite.size:
        doc.update(min=float(finite.min()), mean=float(finite.mean()), max=float(finite.max()))
    if finite.size != numbers.size:
        doc["non_finite"] = int(numbers.size - finite.size)
    return doc


def summary_line(source: str, name: str, doc: Mapping) -> str:
    """``in.npz: scores float32 [3, 4], argmax per row 1 0 3, min -1.2, mean 0.03, max 2.1``; for
    scores with more axes than batch and scores (an LM's ``[batch, seq, vocab]``), one per position."""
    head = f"{source}: {name} {doc['dtype']} {doc['shape']}"
    unit = "row" if len(doc["shape"]) <= 2 else "position"  # a [batch, seq, vocab] "row" is one token's
    parts = []
    if "argmax" in doc:
        more = f" ... ({len(doc['argmax']):,} {unit}s)" if len(doc["argmax"]) > ARGMAX_SHOWN else ""
        parts.append(f"argmax per {unit} {' '.join(map(str, doc['argmax'][:ARGMAX_SHOWN]))}{more}")
    if "topk" in doc:
        rows = doc["topk"]
        more = f" ... ({len(rows):,} {unit}s)" if len(rows) > ARGMAX_SHOWN else ""
        shown = " | ".join(" ".join(f"{i}:{score:.6g}" for i, score in row) for row in rows[:ARGMAX_SHOWN])
        parts.append(f"top {len(rows[0])} per {unit} (index:score) {shown}{more}")
    parts += [f"{k} {doc[k]:.6g}" for k in ("min", "mean", "max") if k in doc]
    if doc.get("non_finite"):
        parts.append(f"{doc['non_finite']:,} NaN or infinite")
    return f"{head}, {', '.join(parts)}" if parts else head


def case_json(case: Case, signature: Signature, topk: int = 0) -> dict:
    """A case as --json gives it: per output its summary, and its values as nested lists when they
    are at most JSON_VALUES (else ``values_omitted`` says so)."""
    outputs = {}
    for name, value in case.outputs.items():
        doc = summarize(value, signature.output(name).batch_axis, topk)
        if value.size <= JSON_VALUES:
            doc["values"] = _json_values(value)
        else:
            doc["values_omitted"] = (f"{value.size:,} values, over the {JSON_VALUES:,} --json lists: --output "
                                     "FILE.npz writes them all")
        outputs[name] = doc
    return {"input": case.label, "outputs": outputs}


def _json_values(value: np.ndarray):
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        # JSON has no NaN or infinity: they are written as the strings numpy prints ("nan", "inf").
        return np.where(np.isfinite(value), value.astype(object), value.astype(str)).tolist()
    return value.tolist()


# -- files of outputs ------------------------------------------------------------------------------


def check_output_path(path: str, signature: Signature) -> str:
    """The format ``path`` asks for (npz, parquet), refused in one line before anything runs where
    it cannot hold this model's outputs."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise PtxError(f"--output {path}: your own model's outputs are written to .npz (arrays by output name) or "
                       ".parquet (one row per sample)")
    if suffix == ".parquet":
        unbatched = [t.name for t in signature.outputs if t.batch_axis is None]
        if unbatched:
            raise PtxError(f"--output {path}: Parquet holds one row per sample, and output {unbatched[0]!r} has no "
                           "batch axis; write --output FILE.npz instead")
        if Path(path).exists():
            raise PtxError(f"--output {path} exists: remove it or name another")
    return suffix[1:]


def write_npz(path: str, cases: list[Case]) -> list[str]:
    """All outputs by name (one case), or ``NAME:K`` for case K in input order (several), written
    whole or not at all. Returns the keys."""
    arrays = (dict(cases[0].outputs) if len(cases) == 1 else
              {f"{n}:{k}": v for k, case in enumerate(cases) for n, v in case.outputs.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add .npz to the temporary name
            np.savez(handle, **arrays)
    return list(arrays)


def write_parquet(path: str, cases: list[Case], signature: Signature) -> int:
    """One row per sample (each case's outputs split along their batch axes): columns ``input``
    (the case), ``row`` (the sample's index in it) and one per output, nested lists of the
    sample's values. Written by the streaming Parquet writer (part files, each renamed in whole).
    Returns the rows written."""
    from .outputs import open_output

    import pyarrow as pa

    columns = ("input", "row", *signature.output_names)
    schema = pa.schema([("input", pa.string()), ("row", pa.int64()),
                        *((t.name, _arrow_type(t.dtype, len(t.shape) - 1)) for t in signature.outputs)])
    writer = open_output(path, columns, schema=schema)
    rows = 0
    try:
        for case in cases:
            per_output = {n: np.moveaxis(v, signature.output(n).batch_axis, 0) for n, v in case.outputs.items()}
            count = len(next(iter(per_output.values())))
            for i in range(count):
                writer.write({"input": case.label, "row": i, **{n: v[i].tolist() for n, v in per_output.items()}})
                rows += 1
    finally:
        writer.close()
    return rows


def _arrow_type(dtype: str, rank: int):
    import pyarrow as pa

    kind = pa.from_numpy_dtype(np.dtype(dtype))
    for _ in range(rank):
        kind = pa.list_(kind)
    return kind
