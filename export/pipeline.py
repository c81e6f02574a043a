"""The one export driver: every file any export writes (a tutorial model's checkpoint, a user's
nn.Module, a user's ONNX file made int8) goes through the same steps, in this order:

1. its format's one writer (export/formats/) writes it under a temporary name;
2. the file is opened once, as ptx will serve it, and run on the cases its source's reference
   answered (export/validate.py's check) and, for a module, on the shape certificate's probes
   (export/certificate.py), through that one opened model;
3. a reduced-precision file is judged on every runtime that reads it, not only the one it was
   made for: an int8 file is a Q/DQ graph that ONNX Runtime and OpenVINO both run, and NNCF's file
   through ONNX Runtime (or onnxruntime's through OpenVINO) may miss a bound its own runtime holds;
4. what was found (the certificate, each runtime's verdict, so that whichever runtime opens it
   later reads its own) is written into the file, beside what it holds, its model not written again;
5. one line says the file, then the certificate, then each runtime's verdict.

A source (export/api.py, module.py, file.py) only prepares what differs between them: the cases,
the tolerance, the writer's options, the evidence a reduced verdict rests on, and how its line is
worded, handed in as a ``Plan``. The guards that keep an export from replacing what is not its own,
and the one check of the options every source shares, are here too.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ptx.atomic import atomic_with_companions
from ptx.contract import Tolerance
from ptx.contract.cases import Case
from ptx.contract.shape_certificate import CERTIFICATE_KEY, Bound, Certificate, Probe
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.verdict import Verdict, decide, does_not_run, verdict_strings
from ptx.errors import BackendUnavailableError, DataError, PtxError, ValidationError
from ptx.infer.formats import onnx_files
from ptx.infer.runtime import backends as registry
from ptx.infer.runtime.memory_plan import OutOfMemoryPlan, opening_need, require_room, size_text, weights_bytes
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
class Plan:
    """What a source hands the driver: one model, ready to be written in any of its formats."""

    name: str  # the model's name, as a NOT USABLE line advises against it
    subject: object  # what the writers take: the nn.Module, or the ONNX file's path
    example: tuple | None  # the example inputs a module is written with (None: a file)
    signature: Signature
    strings: dict[str, str]  # the metadata every file carries
    cases: Callable[[object], list[Case]]  # fmt -> the cases the file is checked on, and its result and line report
    tolerance: Callable[[TensorSig, str], Tolerance]  # (output, device) -> what a full-precision file is held to
    options: Callable[[object], dict]  # fmt -> its writer's options (a compiled format's ``device`` among them)
    # (fmt, path, backend, the serving runtime's answers on the checked cases or None, opened=the serving runtime's
    # model as the check opened it, or None) -> [Evidence]
    evidence: Callable[..., list]
    describe: Callable[[ExportResult, Tolerance], str]  # the file's line, after its format, path and size
    serve_instead: str  # what a NOT USABLE line says to do instead: "(serve model.onnx)"
    compare: Callable | None = None  # a head's comparison, where it has one (validate.check_model's default)
    shapes: Shapes | None = None  # the shape certificate, where the source makes one (a module)
    unreported: Sequence[Case] = ()  # checked after ``cases``, not reported: a module's own example
    overlap: bool = False  # True: no check runs ``subject`` (export_files checks a file while the next is written)


def export_files(plan: Plan, chosen: Sequence,
                 place: Callable[[object], AbstractContextManager], log: Callable[[str], None]) -> list[ExportResult]:
    """Write, check, judge and record ``plan`` in each format of ``chosen``, in turn. ``place(fmt)``
    is a context manager giving (the temporary path to write, the path the file will have): it keeps
    the file only where the block ends without an exception (ptx.atomic).

    Where the plan's checks never run its subject (``plan.overlap``: a module's, whose checks compare
    with eager's answers taken before), each written file is checked on a second thread while the next
    is written, the formats quick to write first (``writes_quickly``: TorchScript's trace takes a second,
    torch.onnx.export ten, mostly on one core), and the lines are said in ``chosen``'s order. Its files
    are kept together (``place`` entered for every format, left once all are checked)."""
    if not plan.overlap:
        results, short = [], []
        for fmt in chosen:
            tmp = None
            try:
                with place(fmt) as (tmp, final):
                    made, on = _write(plan, fmt, tmp, log)
                    result, said = _checked(plan, fmt, tmp, final, made, on)
            except OutOfMemoryPlan as exc:  # a file that cannot be checked is not kept: said, and the next written
                for left in ([tmp, tmp.with_name(onnx_files.data_name(tmp))] if tmp is not None else []):
                    left.unlink(missing_ok=True)  # a module's folder keeps what its place gives until it is renamed
                short.append(f"{fmt.name}: {exc}")
                log(f"{fmt.name:<11} not kept: {exc}")
                continue
            for line in said:
                log(line)
            results.append(result)
        if short and not results:
            raise PtxError(f"no file could be checked in the memory available: {'; '.join(short)}")
        return results
    order = sorted(chosen, key=lambda f: not f.writes_quickly)  # stable: otherwise as chosen
    checking: dict[str, Future] = {}
    with ExitStack() as places, ThreadPoolExecutor(1, thread_name_prefix="ptx-check") as checker:
        try:
            for fmt in order:
                if any(f.done() and f.exception() for f in checking.values()):
                    break  # a file already failed its checks: the export fails, and the rest are not written
                tmp, final = places.enter_context(place(fmt))
                made, on = _write(plan, fmt, tmp, log)
                checking[fmt.name] = checker.submit(_checked, plan, fmt, tmp, final, made, on)
            # each result in chosen's order; the first failure raised
            done = [checking[fmt.name].result() for fmt in chosen if fmt.name in checking]
        except BaseException:  # a writer's refusal, a failed check, Ctrl-C: every file is dropped, so the checks
            for future in checking.values():  # not begun are not begun (the one running ends before its file goes)
                future.cancel()
            raise
    for line in (line for _, said in done for line in said):
        log(line)
    return [result for result, _ in done]


def _write(plan: Plan, fmt, tmp: Path, log: Callable[[str], None]):
    """``fmt``'s file of ``plan`` written at ``tmp``: (what its writer says, the device it is checked on)."""
    options = plan.options(fmt)
    on = options.get("device", "cpu")  # a compiled format (pt2) is checked on the device it is compiled for
    if fmt.progress:
        log(f"{fmt.name:<11} {fmt.progress.format(**options)} ...")
    made = fmt.write(plan.subject, plan.example, tmp, plan.signature, plan.strings, **options)
    if made.note:
        log(f"{fmt.name:<11} {made.note}")
    return made, on


def _checked(plan: Plan, fmt, tmp: Path, final: Path, made, on: str) -> tuple[ExportResult, list[str]]:
    """The file ``fmt``'s writer made at ``tmp`` checked, judged where it is reduced, and what was found
    written into it: (its result, the lines that say it)."""
    said: list[str] = []
    reported = plan.cases(fmt)
    # The file opened once on its serving runtime: checked, then (reduced) judged on it, then closed before
    # another runtime opens it to judge it too.
    with closing(_open_to_check(fmt, tmp, on)) as model:
        certificate, agreements, answers = _check(plan, fmt, model, tmp, [*reported, *plan.unreported], on, made.hint)
        found, verdicts = _judged(plan, fmt, tmp, on, model, answers, said)
    batches = tuple(sorted({c.batch for c in reported if c.batch is not None}))
    sizes = {s: tuple(sorted({c.sizes[s] for c in reported})) for s in reported[0].sizes}
    beside = onnx_files.companions(tmp) if tmp.suffix == ".onnx" else []  # a large graph's weights count too
    size = tmp.stat().st_size + sum((tmp.parent / f).stat().st_size for f in beside)
    result = ExportResult(fmt.name, final, size, made.method, batches, agreements,
                          fmt.precision == "f32", sizes, certificate=certificate)
    if verdicts:
        result.judgement, result.judged_by, result.verdicts = verdicts[0], verdicts[0].label, verdicts
    if certificate is not None:
        found[CERTIFICATE_KEY] = certificate.to_json()
    if found:  # by the format's own writer, beside what the file holds, the model not written again
        fmt.add_metadata(tmp, found)
    worst = plan.signature.output(result.worst.name) if result.agreements else plan.signature.outputs[0]
    lines = [f"{fmt.name:<11} {result.path}{''.join(f' + {name}' for name in beside)}  "
             f"{result.size_bytes / 1024:,.1f} KiB  "
             f"{plan.describe(result, plan.tolerance(worst, on))}"]
    if certificate is not None:
        lines.append(f"{'':<11} shape certificate: {certificate.summary()}")
    for verdict in result.verdicts:  # one per runtime that reads it: what decided it, what to do if NOT USABLE
        advice = f": {'; '.join(verdict.reasons)}: do not use {fmt.precision} for {plan.name} {plan.serve_instead}"
        lines.append(f"{'':<11} {verdict.label} on {describe_cpu()}, {verdict.measured}: {verdict.status}"
                     f"{advice if verdict.reasons else ''}")
    return result, [*said, *lines]


@contextmanager
def atomic_file(final: Path):
    """``place`` for a file kept on its own: (its temporary path, ``final``), renamed into place
    where the block ends without an exception (ptx.atomic). The temporary path has ``final``'s own
    name, in a staging folder, so that a writer that puts the weights beside it (a large ONNX file's
    model.onnx.data) names them by their final name; they are renamed in with it, and an earlier
    file's that the new one does not bring are removed."""
    with atomic_with_companions(final, onnx_files.companions(final) if final.suffix == ".onnx" else ()) as tmp:
        yield tmp, final


def _open_to_check(fmt, path: Path, on: str):
    """The written file opened as ptx serves it, where memory holds it (OutOfMemoryPlan, a skip, where not)."""
    backend = registry.get(fmt.serving_backend)
    require_room(f"checking {path.name} ({size_text(weights_bytes(path))} of weights) on {backend.name}",
                 opening_need(backend, path, fmt.precision))
    return open_checked(path, fmt, on)


def _judged(plan: Plan, fmt, path: Path, on: str, model, answers, said: list[str]) -> tuple[dict, list[Verdict]]:
    """(the verdicts' strings, the verdicts) of a reduced file on every runtime that reads it; its serving
    runtime judges through ``model``, the check's own opening, closed once it has (the next runtime opens
    the file beside nothing); nothing for a full-precision file."""
    if fmt.precision == "f32":
        return {}, []

    def evidence(backend: str) -> list:
        if backend != fmt.serving_backend:
            return plan.evidence(fmt, path, backend, None)
        try:
            return plan.evidence(fmt, path, backend, answers, opened=model if on == "cpu" else None)
        finally:
            model.close()

    try:
        verdicts = judge_on_runtimes(fmt, evidence, said.append)
    except DataError as exc:  # the run's data is not on this machine: verify cannot judge either
        said.append(f"{fmt.name:<11} not judged here: {exc}")
        return {}, []
    return dict(verdict_strings(verdicts)), verdicts  # the verdicts travel in the file


def _check(plan: Plan, fmt, model, path: Path, cases: list[Case], on: str, hint: str
           ) -> tuple[Certificate | None, dict, list[dict]]:
    """The written file, opened as ptx serves it (``model``): its shape certificate (where the plan makes
    one) and its answers on ``cases``, checked; (certificate, worst agreement per output, answers)."""
    certificate = None if plan.shapes is None else certify_model(
        fmt, model, path, plan.signature, plan.shapes, lambda s: plan.tolerance(s, on))
    try:
        agreements, answers = check_model(fmt, model, plan.signature, cases, lambda s: plan.tolerance(s, on),
                                          compare=plan.compare, hint=hint)
    except ValidationError as exc:  # the certificate says which axis, and what fixed it; one that holds, an
        # axis whose every size tried was the model's bound, never tried through the file (--min-shape tries it)
        untried = certificate is not None and any(a.refused and not a.sizes for a in certificate.axes)
        if certificate is None or (certificate.holds and not untried):
            raise
        said = certificate.summary() if certificate.holds else findings(certificate, cases_failed=True)
        raise ValidationError(f"{exc}; shape certificate: {said}") from None
    if certificate is not None and not certificate.holds:  # at sizes the cases do not try (1, 2, 7, --max-shape)
        raise ValidationError(f"{fmt.name}: a declared dynamic axis does not hold: {findings(certificate)}")
    return certificate, agreements, answers


# -- a reduced file's verdict on every runtime that reads it --------------------------------------


def judge_on_runtimes(fmt, evidence: Callable[[str], list], log: Callable[[str], None]) -> list[Verdict]:
    """One Verdict per runtime that reads ``fmt``'s file here on the CPU, ``evidence(backend)`` giving
    its Evidence records: the serving runtime's first, then the other formats' of the same precision
    (an int8 file is read by ort-cpu and openvino alike). A runtime this machine lacks is said and
    skipped; one that cannot run the file is NOT USABLE through it (its own runtime's failure stops
    the export, as any validation failure does)."""
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
            verdicts.append(does_not_run(label, verdicts[0].evidence, str(exc), by="export"))
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
