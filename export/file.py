"""A user's own ONNX file -> its int8 twin: ``ptx export FILE.onnx --format onnx-int8|openvino-int8
[--calibration SAMPLES.npz] [--keep-f32 auto|NODE,NODE] [--max-drop X --metric M.py:FN] [--out DIR]``,
written as FILE.int8.onnx (onnxruntime's quantizer) or FILE.openvino-int8.onnx (NNCF's).

The format's one writer quantizes the file as it is (static QDQ, as for the tutorial models;
onnx-int8 dynamic for recurrent graphs and integer inputs), calibrated on the user's samples (the
npz layouts ``ptx verify FILE --inputs`` reads) or on inputs generated from the file's signature;
the line before the file's says which. Some of those inputs are held out, and the written file is
opened as ptx serves it (``load(path, BACKEND, precision="int8")``, the runtime floor's opener)
and judged on them against the f32 file by the rule a model without labels has
(ptx.contract.verdict.judge_tensors). A file that misses it is still written, with the
verdict recorded in it (``ptx.verdict``, one per runtime that reads it: export/pipeline.py) and said in one
line each, as a tutorial model's int8 is.

``--max-drop X --metric M.py:FN`` (export/bound.py): the user's own metric over their own data,
FN(run) -> float, called on the f32 file and on each candidate; the nodes kept in f32 are searched
for until it drops at most X, and the file records the bound and both values.

Torch-free for onnx-int8: onnx and onnxruntime only (NNCF, which openvino-int8 quantizes with,
imports torch where it is installed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ptx.atomic import ensure_writable_dir
from ptx.contract.cases import Case
from ptx.contract.generation import GENERATION_KEY
from ptx.contract.metadata import from_props
from ptx.contract.onnx_wire import read_onnx
from ptx.contract.tensor_inputs import load_input_file, make_feeds, plan_inputs
from ptx.contract.names import INT8_FORMATS, WEIGHT_ONLY_FORMATS, twin_name
from ptx.contract.tensors import Signature
from ptx.errors import PtxError
from ptx.files import file_sha256
from ptx.infer.formats.model_files import read_model_file
from ptx.infer.formats.onnx_files import load_structure
from ptx.infer.model.target import load

from . import formats
from .bound import Held, metric_bound
from .formats.onnx_int8 import quantized_statically, rows, take
from .metadata import module_strings
from .pipeline import ExportSource, atomic_file, check_options, export_files, guard
from .validate import ExportResult, tensor_evidence
from .weight_only import export_weight_only_decoder, options_for

GENERATED = (4, 2)  # generated cases: for calibration, then held out to judge
GENERATED_BATCH = 16


def export_int8_file(path: str | Path, fmt_name: str = "onnx-int8", *, out: str | Path | None = None,
                     calibration: str | Path | None = None, keep_f32=None, rank=None, max_drop: float | None = None,
                     metric: str | None = None, force: bool = False, weights: dict | None = None,
                     log: Callable[[str], None] = print, **open_options) -> ExportResult:
    """Quantize the ONNX file at ``path`` to int8 (``fmt_name``: onnx-int8 or openvino-int8) and judge
    it against the file; returns its ExportResult, whose ``judgement`` is the verdict (PASS or NOT
    USABLE, in the file too). ``max_drop`` and ``metric`` (FILE.py:FN): the user's bound.

    ``calibration``: an .npz/.npy/.json of real inputs by name (as ``ptx verify FILE --inputs``
    reads them); without it, seeded inputs are generated from the signature. ``keep_f32``: node
    names left in f32, or ``auto`` with ``rank`` (infer's triage, handed in). ``open_options``:
    what ptx.infer.load takes to open the file (batch_axes, ignore_metadata)."""
    path = Path(path)
    fmt = formats.get(fmt_name)
    foreign = _not_made_from(path, fmt.precision)
    if fmt.weight_only:
        fmt.check_options(**(weights or {}))
    if (max_drop is None) != (metric is None):
        raise PtxError("--max-drop X and --metric FILE.py:FN go together on a model file: the metric is what X bounds")
    check_options([fmt], keep_f32=keep_f32, rank=rank, max_drop=max_drop)  # refused for every file alike, not ignored
    if GENERATION_KEY in read_model_file(path, digest=False).metadata:  # its inputs are tied (the mask spans the
        # past and the new tokens): judged by its decoding, its weights alone reduced
        if not fmt.weight_only:
            raise PtxError(f"{path} is a decoder with its key/value cache: {fmt.name} quantizes its activations too, "
                           "calibrated on inputs one by one, which a decoder's tied past and mask refuse; its weights "
                           f"alone are: `ptx export {path} --format onnx-int8w` (or onnx-int4, openvino-int8w, "
                           "openvino-int4)")
        if calibration is not None:
            raise PtxError(f"--calibration: {path.name} is a decoder, whose weight-only formats read the prompts it "
                           "records (--data-aware for openvino-int4), not inputs given one by one: leave --calibration out")
        return export_weight_only_decoder(path, fmt, out=out, options=weights, force=force, foreign=foreign, log=log)
    if (weights or {}).get("data_aware") and calibration is None:
        raise PtxError(f"--data-aware reads the prompts a decoder records, and {path.name} is no decoder: give "
                       "--calibration SAMPLES.npz (your inputs), which NNCF reads the activations of")
    with load(path, "ort-cpu", "cpu", **open_options) as source:
        signature, metadata = source.signature, dict(source.metadata)
        if source.precision != "f32":
            raise PtxError(f"{path} is already {source.precision}: quantize the f32 file it was made from")
        final = Path(out or path.parent) / twin_name(path, fmt.name)
        guard(final, force, foreign)
        ensure_writable_dir(final.parent)
        # NNCF calibrates every graph; onnxruntime's quantizer only a static one (module docstring)
        static = fmt.name != "onnx-int8" or quantized_statically(load_structure(path), signature)
        calibrating, held = _inputs(path, signature, calibration, static, log, fmt.weight_only)
        # The reference the int8 file is judged against: the f32 file, on the held-out inputs.
        cases = [Case(f"held-out {_count(signature, [feeds])}", feeds, rows(signature, feeds), source.run(feeds))
                 for feeds in held]
        bound = None
        if max_drop is not None:  # the user's metric on the f32 file now, on each candidate in the search
            bound = metric_bound(metric, max_drop, source.run, lambda candidate, backend=None: load(
                candidate, backend or fmt.serving_backend, "cpu", **open_options))  # at its own precision: NNCF measures f32 too
            log(f"--metric {bound.metric}: {bound.reference:.6g} on {path.name} (f32); int8 may drop it by at most "
                f"{max_drop:g}")
    name = metadata.get("model") or path.name.split(".")[0]
    # The file's own ptx metadata where load() believed it (its weights are the ones it was written for).
    strings = {**metadata, **module_strings(name, signature, {"source": path.name, "source_sha256": file_sha256(path)})}
    if calibration is not None:  # as given, with its digest: verify --locate's export commands calibrate on it again
        strings.update(calibration=str(calibration), calibration_sha256=file_sha256(Path(calibration)))
    source = Int8FileSource(name, path, signature, strings, cases, f"{_count(signature, held)} held out",
                            calibrating=calibrating, given=calibration is not None, bound=bound, log=log,
                            search=dict(keep_f32=keep_f32, rank=rank) if fmt.name == "onnx-int8" else {},
                            weights=weights)
    [result] = export_files(source, [fmt], lambda fmt: atomic_file(final), log)
    return result


class Int8FileSource(ExportSource):
    """A user's f32 ONNX file as the one driver writes its int8 twin: calibrated on ``calibrating``, checked
    to run the held-out ``cases`` (the f32 file's answers), and judged on them by the rule a model without
    labels has (judge_tensors; ``seen`` says how many), and by the user's metric where ``bound`` holds it."""

    formats = (*INT8_FORMATS, *WEIGHT_ONLY_FORMATS)

    def __init__(self, name: str, path: Path, signature: Signature, strings: dict[str, str], cases: list[Case],
                 seen: str, *, calibrating: list[dict], given: bool, bound, search: dict, log,
                 weights: dict | None = None):
        super().__init__(name, path, None, signature, strings)
        self.serve_instead = f"(serve {path.name})"
        self._cases, self.seen, self.calibrating, self.given, self.bound = cases, seen, calibrating, given, bound
        self.search, self.log, self.weights = search, log, weights

    def cases(self, fmt) -> list[Case]:
        return self._cases

    def judge(self, fmt, candidate: Path, backend: str | None = None, answers=None):
        # a reduced precision is held to judge_tensors' rule, not to a tolerance
        return tensor_evidence(fmt, candidate, self.signature, self._cases, self.seen, answers, backend,
                               kind="inputs" if self.given else "generated")

    def options(self, fmt) -> dict:
        """What ``fmt``'s writer takes: an int8 format its calibration, judge and bound; a weight-only one its
        block, symmetry and (NNCF) the user's own samples, read for the activations, where they were given
        (generated ones would rank the layers by noise)."""
        if fmt.weight_only:
            return dict(log=self.log, **options_for(fmt, {**(self.weights or {}),
                                                          "calibration": self.calibrating if self.given else None}))
        return dict(calibration=self.calibrating, judge=lambda candidate, backend=None, answers=None: self.judge(
            fmt, candidate, backend, answers), bound=self.bound, log=self.log, **self.search)

    def evidence(self, fmt, tmp: Path, backend: str, answers, opened=None) -> list:  # the serving runtime's answers
        found = [self.judge(fmt, tmp, backend, answers)]  # stand in
        if self.bound is not None:  # the serving runtime's value is the writer's (its metric_int8); another's measured
            value = float(from_props(read_onnx(tmp, digest=False)[0])["metric_int8"]) \
                if backend == fmt.serving_backend else self.bound.measure_through(tmp, backend)
            found.append(Held(self.bound, value))
        return found


def _not_made_from(path: Path, precision: str) -> Callable[[Path], str | None]:
    """guard's ``foreign``: why a file where ``path``'s reduced twin goes is not an earlier one made from it."""
    def foreign(final: Path) -> str | None:
        try:
            made_from = from_props(read_onnx(final, digest=False)[0]).get("source")
        except PtxError:  # not an ONNX file
            made_from = None
        return None if made_from == path.name else (f"{final} is not an {precision} export of {path.name}: pass another "
                                                    "--out")
    return foreign


def _inputs(path: Path, signature: Signature, calibration, static: bool, log,
            weight_only: bool = False) -> tuple[list[dict], list[dict]]:
    """(calibration cases, held-out cases), and one line saying where they come from."""
    inputs = Signature(signature.inputs, ())
    if calibration is None:
        plan = plan_inputs(inputs)
        batch = GENERATED_BATCH if any(t.batch_axis is not None for t in signature.inputs) else None
        made = [make_feeds(inputs, plan, batch, seed=k) for k in range(sum(GENERATED))]
        calibrating, held = made[:GENERATED[0]], made[GENERATED[0]:]
        chosen = f"; {plan.describe_choices().split(' (')[0]}" if plan.chosen else ""
        where = f"generated from {path.name}'s signature (seeded{chosen})"
    else:
        where = f"from {Path(calibration).name}"
        calibrating, held = _hold_out(load_input_file(calibration, signature), signature, Path(calibration).name)
    if weight_only:
        log(f"{path.name}'s weights alone are quantized" + (f", NNCF reading the activations of "
            f"{_count(signature, calibrating)} {where}" if calibration is not None else "") + f"; "
            f"{_count(signature, held)} {where if calibration is None else 'held out'} judge the file")
    elif static:
        log(f"calibration: {_count(signature, calibrating)} {where}, and {_count(signature, held)} held out to judge "
            f"the int8 file" + ("" if calibration else ": give --calibration SAMPLES.npz to calibrate on real inputs"))
    else:
        log(f"calibration: none, {path.name} is quantized dynamically (it has recurrent nodes or integer inputs); "
            f"{_count(signature, held)} {where} judge the int8 file")
    return calibrating, held


def _hold_out(cases: list[dict], signature: Signature, file: str) -> tuple[list[dict], list[dict]]:
    """The last quarter of each case's rows (at least one) held out where the inputs have a batch,
    else the last case."""
    sizes = [rows(signature, case) for case in cases]
    if all(n is not None and n >= 2 for n in sizes):
        cuts = [(case, n, n - max(1, n // 4)) for case, n in zip(cases, sizes)]
        return ([take(signature, case, 0, cut) for case, _, cut in cuts],
                [take(signature, case, cut, n) for case, n, cut in cuts])
    if len(cases) >= 2:
        return cases[:-1], cases[-1:]
    raise PtxError(f"--calibration {file} holds one sample: ptx calibrates on some and holds the others out to judge "
                   "the int8 file, so give at least 2 (rows along the batch axis, or cases NAME:0, NAME:1)")


def _count(signature: Signature, cases: list[dict]) -> str:
    """``48 samples`` (rows along the batch axis), or ``3 cases`` where the inputs have no batch."""
    sizes = [rows(signature, case) for case in cases]
    n, unit = (len(cases), "case") if None in sizes else (sum(sizes), "sample")
    return f"{n:,} {unit}{'s' * (n != 1)}"
