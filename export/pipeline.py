"""The one export driver: every file an export writes (a tutorial model's checkpoint, a user's
nn.Module, a user's ONNX file made int8, a decoder with its key/value cache) goes through the same
steps, in this order:

1. its format's one writer (export/formats/) writes it under a temporary name;
2. the file is opened once, as ptx will serve it, where the memory plan says it fits, and checked
   as its source checks it: run on the cases its source's reference answered (export/validate.py's
   check) and, for a module, on the shape certificate's probes (export/certificate.py); a decoder's
   by decoding prompts (export/decoder.py);
3. a reduced-precision file is judged on every runtime that reads it, not only the one it was
   made for: an int8 file is a Q/DQ graph that ONNX Runtime and OpenVINO both run, and NNCF's file
   through ONNX Runtime (or onnxruntime's through OpenVINO) may miss a bound its own runtime holds;
4. what was found (the certificate, each runtime's verdict, so that whichever runtime opens it
   later reads its own) is written into the file, beside what it holds, its model not written again;
5. one line says the file, then the certificate, then each runtime's verdict.

A source (export/api.py, module.py, file.py, decoder.py) is an ``ExportSource``: it says its inputs
and eager reference (the cases), the formats it is written to and each one's writer options, how
a written file is checked and what a reduced one is judged on, and how its line is worded. The
guards that keep an export from replacing what is not its own, and the one check of the options
every source shares, are here too. A deployment folder (export/sources.py) holds a file exported
here, or a user's own file copied as it is (not written, so not checked again).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ptx.atomic import atomic_with_companions, final_of
from ptx.contract import Tolerance
from ptx.contract.cases import Case
from ptx.contract.comparison import OutputAgreement, default_tolerance
from ptx.contract.shape_certificate import CERTIFICATE_KEY, Bound, Certificate, Probe
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.verdict import Verdict, decide, does_not_run, in_one_line, verdict_strings
from ptx.errors import BackendUnavailableError, DataError, PtxError, ValidationError
from ptx.infer.formats import onnx_files
from ptx.infer.runtime import backends as registry
from ptx.infer.runtime.memory_plan import (OutOfMemoryPlan, file_size_text, opening_need, require_room, size_text,
                                          weights_bytes)
from ptx.machine import describe_cpu

from . import formats
from .certificate import certify_model, findings
from .validate import ExportResult, check_model, open_checked


@dataclass
class Shapes:
    """A module's shape certificate, made at export: the probes, eager's answers on them, each
    symbol's size in the example the exporters were called with, and the sizes eager itself refuses
    (export/certificate.py's eager_bounds: not probed, said as the model's bound); ``rows``: which
    outputs eager answers per row (ptx.contract.batch_rows), recorded with the certificate."""

    probes: Sequence[Probe]
    wants: Sequence[dict]
    example_sizes: dict[str, int]
    bounds: dict[str, Bound]
    rows: dict[str, str] = field(default_factory=dict)


@dataclass
class Checked:
    """What a written file's check found: the worst agreement per output, the file's answers on the
    cases (a reduced file's verdict may rest on them), its shape certificate where one was made, and
    what the check says in words where its source words its line from it (a decoder's steps and tokens)."""

    agreements: dict[str, OutputAgreement]
    answers: list[dict] = field(default_factory=list)
    certificate: Certificate | None = None
    detail: str = ""


class ExportSource:
    """One model, ready to be written in each of its formats: what a source hands the one driver.
    ``subject`` is what the writers take (an nn.Module, a decoder, an ONNX file's path), ``example`` the
    inputs a module is written with (None: a file), ``signature`` and ``strings`` what every file records.
    A source overrides what differs: its cases, tolerance, writer options, check, evidence and line."""

    formats: tuple[str, ...] | None = None  # the formats it can be written as (None: every one of the registry)
    serve_instead = "(serve model.onnx)"  # what a NOT USABLE line says to do instead
    shapes: Shapes | None = None  # the shape certificate, where the source makes one (a module)
    unreported: Sequence[Case] = ()  # checked after ``cases``, not reported: a module's own example
    overlap = False  # True: no check runs ``subject`` (export_files checks a file while the next is written)
    compare: Callable[..., OutputAgreement] | None = None  # a head's comparison (validate.check_model's default)

    def __init__(self, name: str, subject: object, example: tuple | None, signature: Signature,
                 strings: dict[str, str]):
        self.name = name  # the model's name, as a NOT USABLE line advises against it
        self.subject, self.example, self.signature, self.strings = subject, example, signature, strings

    def cases(self, fmt) -> list[Case]:
        """The cases ``fmt``'s file is checked on, and its result and line report."""
        return []

    def beside(self, fmt, path: Path) -> list[Path]:
        """The files ``write`` puts beside ``fmt``'s file at ``path`` (an encoder-decoder's encoder file): opened
        with it, counted in its size and named in its line, and removed with it where it is not kept."""
        return []

    def tolerance(self, sig: TensorSig, on: str) -> Tolerance:
        """What a full-precision file's output ``sig`` is held to on device ``on``."""
        return default_tolerance(sig.dtype, on)

    def options(self, fmt) -> dict:
        """``fmt``'s writer's options (a compiled format's ``device`` among them)."""
        return {}

    def write(self, fmt, path: Path, options: dict):
        """``fmt``'s file of the subject at ``path``, by the format's one writer: its Written."""
        return fmt.write(self.subject, self.example, path, self.signature, self.strings, **options)

    def check(self, fmt, model, path: Path, cases: list[Case], on: str, hint: str) -> Checked:
        """The written file, opened as ptx serves it (``model``), checked: its shape certificate (where the
        source makes one) and its answers on ``cases`` (``hint``: why a file may fail, for its line)."""
        return _check(self, fmt, model, path, cases, on, hint)

    def evidence(self, fmt, path: Path, backend: str, answers, opened=None) -> list:
        """A reduced file's Evidence records on ``backend`` (``answers``: the serving runtime's on the checked
        cases, None on another runtime; ``opened``: the serving runtime's model as the check opened it)."""
        raise PtxError(f"{self.name}: {fmt.name} is a reduced precision, which this export does not judge")

    def describe(self, result: ExportResult, tolerance: Tolerance) -> str:
        """The file's line, after its format, path and size."""
        return result.method

    def not_kept(self, fmt, exc: PtxError) -> str | None:
        """Why ``fmt``'s file is left out rather than failing the export (one whose check cannot fit in the
        memory available), or None: ``exc`` fails the export."""
        return str(exc) if isinstance(exc, OutOfMemoryPlan) else None

    def none_kept(self, reasons: Sequence[str]) -> PtxError:
        """The export's failure where every format was left out (``reasons``: "format: why" each)."""
        return PtxError(f"no file could be checked in the memory available: {'; '.join(reasons)}")


def export_files(source: ExportSource, chosen: Sequence,
                 place: Callable[[object], AbstractContextManager], log: Callable[[str], None],
                 more_to_come: bool = False) -> list[ExportResult]:
    """Write, check, judge and record ``source`` in each format of ``chosen``, in turn. ``place(fmt)``
    is a context manager giving (the temporary path to write, the path the file will have): it keeps
    the file only where the block ends without an exception (ptx.atomic). A format the source leaves
    out (``source.not_kept``: a check that cannot fit in memory, a decoder's trace that cannot carry
    its cache) is said in one line and the next written; where every one is, the export fails (unless
    ``more_to_come``: files the caller writes next, a decoder's weight-only ones).

    Where the source's checks never run its subject (``source.overlap``: a module's, whose checks compare
    with eager's answers taken before), each written file is checked on a second thread while the next
    is written (_overlapped)."""
    other = [f.name for f in chosen if source.formats is not None and f.name not in source.formats]
    if other:
        raise PtxError(f"format {other[0]}: {source.name} is written as {', '.join(source.formats)}")
    if source.overlap:
        return _overlapped(source, chosen, place, log)
    results, short = [], []
    for fmt in chosen:
        tmp = None
        try:
            with place(fmt) as (tmp, final):
                made, on = _write(source, fmt, tmp, log)
                result, said = _checked(source, fmt, tmp, final, made, on)
        except PtxError as exc:  # a file that cannot be checked is not kept: said, and the next written
            why = source.not_kept(fmt, exc)
            if why is None:
                raise
            for left in ([f for t in [tmp, *source.beside(fmt, tmp)] for f in (t, t.with_name(onnx_files.data_name(t)))]
                         if tmp is not None else []):
                left.unlink(missing_ok=True)  # a module's folder keeps what its place gives until it is renamed
            short.append(f"{fmt.name}: {exc}")
            log(f"{fmt.name:<11} not kept: {why}")
            continue
        for line in said:
            log(line)
        results.append(result)
    if short and not results and not more_to_come:
        raise source.none_kept(short)
    return results


def _overlapped(source: ExportSource, chosen: Sequence, place: Callable[[object], AbstractContextManager],
                log: Callable[[str], None]) -> list[ExportResult]:
    """export_files with each written file checked on a second thread while the next is written, the
    formats quick to write first (``writes_quickly``: TorchScript's trace takes a second, torch.onnx.export
    ten, mostly on one core), and the lines said in ``chosen``'s order. Its files are kept together
    (``place`` entered for every format, left once all are checked)."""
    order = sorted(chosen, key=lambda f: not f.writes_quickly)  # stable: otherwise as chosen
    checking: dict[str, Future] = {}
    with ExitStack() as places, ThreadPoolExecutor(1, thread_name_prefix="ptx-check") as checker:
        try:
            for fmt in order:
                if any(f.done() and f.exception() for f in checking.values()):
                    break  # a file already failed its checks: the export fails, and the rest are not written
                tmp, final = places.enter_context(place(fmt))
                made, on = _write(source, fmt, tmp, log)
                checking[fmt.name] = checker.submit(_checked, source, fmt, tmp, final, made, on)
            # each result in chosen's order; the first failure raised
            done = [checking[fmt.name].result() for fmt in chosen if fmt.name in checking]
        except BaseException:  # a writer's refusal, a failed check, Ctrl-C: every file is dropped, so the checks
            for future in checking.values():  # not begun are not begun (the one running ends before its file goes)
                future.cancel()
            raise
    for line in (line for _, said in done for line in said):
        log(line)
    return [result for result, _ in done]


def _write(source: ExportSource, fmt, tmp: Path, log: Callable[[str], None]):
    """``fmt``'s file of ``source`` written at ``tmp``: (what its writer says, the device it is checked on)."""
    options = source.options(fmt)
    on = options.get("device", "cpu")  # a compiled format (pt2) is checked on the device it is compiled for
    if fmt.progress:
        log(f"{fmt.name:<11} {fmt.progress.format(**options)} ...")
    made = source.write(fmt, tmp, options)
    if made.note:
        log(f"{fmt.name:<11} {made.note}")
    return made, on


def _checked(source: ExportSource, fmt, tmp: Path, final: Path, made, on: str) -> tuple[ExportResult, list[str]]:
    """The file ``fmt``'s writer made at ``tmp`` checked, judged where it is reduced, and what was found
    written into it: (its result, the lines that say it)."""
    said: list[str] = []
    reported = source.cases(fmt)
    # The file opened once on its serving runtime: checked, then (reduced) judged on it, then closed before
    # another runtime opens it to judge it too.
    with _open_to_check(fmt, tmp, on, source.beside(fmt, tmp)) as model:
        checked = source.check(fmt, model, tmp, [*reported, *source.unreported], on, made.hint)
        found, verdicts = _judged(source, fmt, tmp, on, model, checked.answers, said)
    certificate = checked.certificate
    batches = tuple(sorted({c.batch for c in reported if c.batch is not None}))
    sizes = {s: tuple(sorted({c.sizes[s] for c in reported})) for s in (reported[0].sizes if reported else ())}
    written = [tmp, *source.beside(fmt, tmp)]  # a large graph's weights count too, and an encoder file
    beside = [name for f in written for name in ([f.name] if f != tmp else []) +
              (onnx_files.companions(f) if f.suffix == ".onnx" else [])]
    size = sum((tmp.parent / f).stat().st_size for f in [tmp.name, *beside])
    result = ExportResult(fmt.name, final, size, made.method, batches, checked.agreements,
                          fmt.precision == "f32", sizes, certificate=certificate, detail=checked.detail)
    if verdicts:
        result.judgement, result.judged_by, result.verdicts = verdicts[0], verdicts[0].label, verdicts
    if certificate is not None:
        found[CERTIFICATE_KEY] = certificate.to_json()
    if found:  # by the format's own writer, beside what the file holds, the model not written again
        fmt.add_metadata(tmp, found)
    worst = source.signature.output(result.worst.name) if result.agreements else source.signature.outputs[0]
    lines = [f"{fmt.name:<11} {result.path}{''.join(f' + {name}' for name in beside)}  "
             f"{file_size_text(result.size_bytes)}  "
             f"{source.describe(result, source.tolerance(worst, on))}"]
    if certificate is not None:
        lines.append(f"{'':<11} shape certificate: {certificate.summary()}")
    lines += verdict_lines(result.verdicts, fmt.precision, source.name, source.serve_instead)
    return result, [*said, *lines]


def verdict_lines(verdicts, precision: str, model: str, instead: str) -> list[str]:
    """A reduced file's verdicts as export says them, one per runtime that reads it: what decided it, and for a
    NOT USABLE one what to do instead (``instead``: "(serve model.onnx)")."""
    lines = []
    for verdict in verdicts:
        advice = f": {in_one_line(verdict.reasons)}: do not use {precision} for {model} {instead}"
        lines.append(f"{'':<11} {verdict.label} on {describe_cpu()}, {verdict.measured}: {verdict.status}"
                     f"{advice if verdict.reasons else ''}")
    return lines


@contextmanager
def atomic_file(final: Path):
    """``place`` for a file kept on its own: (its temporary path, ``final``), renamed into place
    where the block ends without an exception (ptx.atomic). The temporary path has ``final``'s own
    name, in a staging folder, so that a writer that puts the weights beside it (a large ONNX file's
    model.onnx.data) names them by their final name; they are renamed in with it, and an earlier
    file's that the new one does not bring are removed."""
    with atomic_with_companions(final, onnx_files.companions(final) if final.suffix == ".onnx" else ()) as tmp:
        yield tmp, final


def _open_to_check(fmt, path: Path, on: str, beside: Sequence[Path] = ()):
    """The written file (and the files opened with it, ``beside``) opened as ptx serves it, where memory holds
    it (OutOfMemoryPlan, a skip, where not)."""
    backend = registry.get(fmt.serving_backend)
    files = [path, *beside]
    require_room(f"checking {path.name} ({size_text(sum(map(weights_bytes, files)))} of weights) on {backend.name}",
                 sum(opening_need(backend, f, fmt.precision) for f in files))
    return open_checked(path, fmt, on)


def _judged(source: ExportSource, fmt, path: Path, on: str, model, answers, said: list[str]
            ) -> tuple[dict, list[Verdict]]:
    """(the verdicts' strings, the verdicts) of a reduced file on every runtime that reads it; its serving
    runtime judges through ``model``, the check's own opening, closed once it has (the next runtime opens
    the file beside nothing); nothing for a full-precision file."""
    if fmt.precision == "f32":
        return {}, []

    def evidence(backend: str) -> list:
        if backend != fmt.serving_backend:
            return source.evidence(fmt, path, backend, None)
        try:
            return source.evidence(fmt, path, backend, answers, opened=model if on == "cpu" else None)
        finally:
            model.close()

    try:
        verdicts = judge_on_runtimes(fmt, evidence, said.append, staged=path)
    except DataError as exc:  # the run's data is not on this machine: verify cannot judge either
        said.append(f"{fmt.name:<11} not judged here: {exc}")
        return {}, []
    return dict(verdict_strings(verdicts)), verdicts  # the verdicts travel in the file


def _check(source: ExportSource, fmt, model, path: Path, cases: list[Case], on: str, hint: str) -> Checked:
    """ExportSource.check's: the shape certificate (where the source makes one) and the answers on
    ``cases``, checked by the one check (validate.check_model)."""
    certificate = None if source.shapes is None else certify_model(
        fmt, model, path, source.signature, source.shapes, lambda s: source.tolerance(s, on))
    try:
        agreements, answers = check_model(fmt, model, source.signature, cases, lambda s: source.tolerance(s, on),
                                          compare=source.compare, hint=hint)
    except ValidationError as exc:  # the certificate says which axis, and what fixed it; one that holds, an
        # axis whose every size tried was the model's bound, never tried through the file (--min-shape tries it)
        untried = certificate is not None and any(a.refused and not a.sizes for a in certificate.axes)
        if certificate is None or (certificate.holds and not untried):
            raise
        said = certificate.summary() if certificate.holds else findings(certificate, cases_failed=True)
        raise ValidationError(f"{exc}; shape certificate: {said}") from None
    if certificate is not None and not certificate.holds:  # at sizes the cases do not try (1, 2, 7, --max-shape)
        raise ValidationError(f"{fmt.name}: a declared dynamic axis does not hold: {findings(certificate)}")
    return Checked(agreements, answers, certificate)


# -- a reduced file's verdict on every runtime that reads it --------------------------------------


def judge_on_runtimes(fmt, evidence: Callable[[str], list], log: Callable[[str], None],
                      staged: Path | None = None) -> list[Verdict]:
    """One Verdict per runtime that reads ``fmt``'s file here on the CPU, ``evidence(backend)`` giving
    its Evidence records: the serving runtime's first, then the other formats' of the same precision
    (an int8 file is read by ort-cpu and openvino alike). A runtime this machine lacks is said and
    skipped; one that cannot run the file is NOT USABLE through it (its own runtime's failure stops
    the export, as any validation failure does), its reason naming the file where it will be, not
    ``staged``, where it is judged (the record outlives the staging folder)."""
    others = [f.serving_backend for f in map(formats.get, formats.list_formats())
              if f.precision == fmt.precision and f.name != fmt.name]
    verdicts = []
    for backend in dict.fromkeys([fmt.serving_backend, *others]):
        label = f"{backend}-{fmt.precision}"
        try:
            verdicts.append(decide(label, evidence(backend), by="export"))
        except PtxError as exc:
            if backend == fmt.serving_backend:
                raise
            if isinstance(exc, BackendUnavailableError):
                log(f"{'':<11} {label}: not judged here ({exc})")
                continue
            # judged on what the file's own runtime was judged on, which this runtime could not run
            why = str(exc) if staged is None else str(exc).replace(str(staged.parent), str(final_of(staged).parent))
            verdicts.append(does_not_run(label, verdicts[0].evidence, why, by="export"))
    return verdicts


# -- the one guard set: an export replaces only what is its own, unless --force -------------------


def guard(final: Path, force: bool, foreign: Callable[[Path], str | None]) -> None:
    """Refuse to replace what is at ``final`` where ``foreign(final)`` says why it is not this
    source's own: another model's file under --out, a folder holding other files, an int8 twin of
    another file. ``force`` replaces it anyway."""
    why = None if force or not final.exists() else foreign(final)
    if why:
        raise PtxError(f"{why}, or --force to replace it")


# -- the one check of the options every source shares ---------------------------------------------


def check_options(chosen: Sequence, options: dict[str, dict] | None = None, *, spec=None, device: str = "cpu",
                  keep_f32=None, rank=None, max_drop: float | None = None) -> None:
    """The options every source refuses alike, before any work: --device for portable formats only,
    --keep-f32 with onnx-int8 alone, --max-drop with calibrated formats and without a --keep-f32
    list, the triage ranking they need handed in; then each format's own check of its writer's
    ``options`` ({format: options}: an opset, a device) and of a tutorial model ``spec`` it cannot express."""
    from .bound import check_max_drop

    names = [f.name for f in chosen]
    if device != "cpu" and "pt2" not in names:  # refused, not ignored: the portable formats have no device
        raise PtxError(f"--device {device} is the device pt2 compiles for; {', '.join(names)} "
                       f"{'is' if len(names) == 1 else 'are'} portable: add --format pt2 or drop --device")
    if keep_f32 and names != ["onnx-int8"]:
        raise PtxError(f"--keep-f32 leaves nodes of the int8 file in f32: give --format onnx-int8 alone (not "
                       f"{', '.join(names)})")
    if (keep_f32 == "auto" or (max_drop is not None and "onnx-int8" in names)) and rank is None:
        raise PtxError("--keep-f32 auto and --max-drop need the triage's ranking (rank=): ptx export hands it in")
    if max_drop is not None:
        check_max_drop(max_drop)
        if not all(f.calibrated for f in chosen):
            raise PtxError(f"--max-drop bounds what int8 may lose: give --format onnx-int8 or openvino-int8 (not "
                           f"{', '.join(f.name for f in chosen if not f.calibrated)})")
        if keep_f32 not in (None, "auto"):
            raise PtxError("--max-drop chooses the nodes kept in f32 itself: leave out --keep-f32 "
                           f"{','.join(keep_f32)}")
    for fmt in chosen:
        why = fmt.unsupported(spec) if fmt.unsupported and spec is not None else None
        if why:
            raise PtxError(why)
        if fmt.check_options and options is not None:
            fmt.check_options(**options.get(fmt.name, {}))
