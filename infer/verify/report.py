"""What `ptx verify` found, for a tutorial model (infer/verify/tutorial.py) and a model file
(infer/verify/reference.py) alike: one Row per backend held to a reference, one verdict rule, one
Report; its table prints a tutorial model's head-judged rows and a file's output by output."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ptx.contract.comparison import (HISTOGRAM_EDGES, MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT, OutputAgreement,
                                    needed_atol_text)
from ptx.contract.names import FULL_PRECISION
from ptx.contract.tensors import Signature
from ptx.errors import PtxError

from ..runtime import backends as registry
from .batch_composition import CompositionCheck
from .comparator import short_reason
from ..model.readers import group_reasons

REFERENCE = "eager"  # a tutorial model's reference
TUTORIAL = "tutorial"  # a Report's kind for a tutorial model's run; a file's is its kind (onnx, ...)
STORED = "stored reference"

# What verify judges and what its exit status means: `ptx verify --help`, the table's heading and
# the JSON's "rule" all print this, so the three cannot drift apart.
RULE = {
    "f32": "every output within atol + rtol x |eager| of eager's, finite, with the same decisions; a decision "
           "that flips between two outputs closer than that tolerance is a tie (counted, not a failure)",
    "bf16/tf32/int8": f"outputs of the right shape with no NaN/Inf (else FAIL); then labels agree with eager's on >= "
                 f"{100 * MIN_LABEL_AGREEMENT:.0f}% of the real samples and accuracy at most {MAX_ACCURACY_DROP:g} "
                 "below eager's, else NOT USABLE: that precision is not for this model (bench and serve never pick "
                 "it), a FAIL only when you named the row (--backends ort-cpu-int8, openvino-bf16, ort-cuda-tf32)",
    "reference": "CPU rows: eager on the CPU; CUDA rows: eager on the same GPU at f32, TF32 off (ptx.cuda_math), "
                 "or eager on the CPU for ort-cuda where torch has no CUDA; tf32 rows (CUDA's "
                 "TensorFloat-32 math on the f32 file) are judged like bf16 against that f32 reference",
    "FAIL": "an f32 row outside the tolerance; an artifact that does not load, or was exported from another "
            "checkpoint or contract (stale); a reduced-precision row with wrong shapes or NaN/Inf",
    "exit status": "0 when every compared backend passes (ties and NOT USABLE rows noted); 1 when any row FAILs; "
                   "2 when nothing could be compared (no export yet, or no backend runs here) or on a usage error",
}


@dataclass
class Row:
    """One backend, at one device and precision, held to one reference over the cases both ran."""

    backend: str  # a backend's name (eager, ort-cpu), or a file's row (onnx.reference, "m.pt (torchscript-cpu)")
    device: str = "cpu"
    precision: str = FULL_PRECISION  # f32 rows are judged by atol; bf16/tf32/int8 rows by labels and accuracy
    against: str = REFERENCE  # the reference's label, or "stored reference"; the reference's own row: itself
    cases: list[str] = field(default_factory=list)  # the cases both sides ran
    batch_sizes: list[int] = field(default_factory=list)
    outputs: list[OutputAgreement] = field(default_factory=list)  # each output, over those cases
    error: str | None = None  # it did not load or stopped running: the row FAILs, the others go on
    provenance: list[str] = field(default_factory=list)  # exported from another checkpoint or contract
    # A reduced-precision row that missed its label/accuracy gate: the artifact works, the precision
    # does not suit this model. A failure only when the user named the row (``required``).
    unusable: list[str] = field(default_factory=list)
    required: bool = False
    argmax_agreement: float | None = None  # a head's labels against the reference's, on the real samples
    accuracy: float | None = None
    # A few samples alone against their rows in the largest batch, by the row's tolerance: an answer
    # that depends on its batch-mates is a failure of the row.
    composition: CompositionCheck | None = None
    # A backend of this machine's that ran no case of a file: it cannot run the file, which says
    # nothing about the file's answers; it fails only under --strict.
    optional: bool = False
    worst_case: int | None = None  # index of the case that disagrees most (what --locate traces)

    @property
    def label(self) -> str:
        """How verify, bench and the records name it: ort-cpu-int8, eager-cuda; a file's row as it is."""
        try:
            return registry.get(self.backend).label(self.device, self.precision)
        except PtxError:
            return self.backend

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=math.inf)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=math.inf)

    @property
    def ties(self) -> int:
        """Decisions that flipped on a tie within tolerance (f32 rows): not failures."""
        return sum(o.ties for o in self.outputs) if self.precision == FULL_PRECISION else 0

    @property
    def failures(self) -> list[str]:
        """Why the row FAILs (empty: it passed, or is only not usable). Reduced precision cannot meet
        the f32 atol: only its shapes and finiteness fail it."""
        found = [self.error] if self.error else []
        found += self.provenance
        found += [f for o in self.outputs for f in o.failures
                  if self.precision == FULL_PRECISION or "shape" in f or "NaN" in f]
        if self.composition is not None and not self.composition.ok:
            found.append(f"batch composition: {self.composition.summary()}")
        return found

    @property
    def status(self) -> str:
        """PASS, FAIL (a real disagreement), or NOT USABLE (a reduced precision below its gate)."""
        if self.failures or (self.unusable and self.required):
            return "FAIL"
        return "NOT USABLE" if self.unusable else "PASS"

    @property
    def ok(self) -> bool:
        """Passed: the backend at this precision may be used (bench and serve choose only these)."""
        return self.status == "PASS"

    @property
    def reasons(self) -> list[str]:
        return self.failures + self.unusable

    @property
    def could_not_run(self) -> bool:
        return self.optional and self.error is not None and not self.cases

    @property
    def alone_error(self) -> str | None:
        """Why its samples could not run alone (not judged without --strict)."""
        return self.composition.error if self.composition is not None else None

    @property
    def is_reference(self) -> bool:
        """The reference's own row (eager against eager, a file's runtime against itself)."""
        return self.backend == self.against

    @property
    def disagreeing(self) -> OutputAgreement | None:
        """The first output that disagrees with the reference (not the composition's)."""
        return next((o for o in self.outputs if not o.ok), None)

    @property
    def traceable(self) -> bool:
        """Whether ``--locate`` can trace it: it ran and disagrees with another side that ran (not a
        sample alone against its batch, nor the stored tensors, which keep no intermediates)."""
        return self.disagreeing is not None and not self.error and self.against != STORED

    def problems(self) -> list[str]:
        """The row's failures in words for the verdict line: what it was compared with, the output
        and its error; its batch composition's, as a row of its own."""
        found = [f"{self.backend}{' (the reference)' * self.is_reference}: {self.error}"] if self.error else []
        if self.disagreeing is not None and not self.error:
            found.append(f"{self.backend} vs {self.against}, output {self.disagreeing.summary()}")
        check = self.composition
        if self.alone_error:
            found.append(f"{self.backend}: {self.alone_error}")
        elif check is not None and not check.ok:
            bad = next(o for o in check.outputs if not o.ok)
            found.append(f"{self.backend} vs itself, batch of {check.batch}, output {bad.summary()}")
        return found

    def describe(self) -> str:
        if self.status == "PASS":
            return "PASS" + (f" ({self.ties} tie{'s' * (self.ties != 1)} within tolerance)" if self.ties else "")
        detail = "; ".join(self.reasons)
        if self.status == "NOT USABLE":
            return f"NOT USABLE: {detail}: do not use {self.precision} for this model"
        return f"FAIL: {detail}"

    def to_dict(self) -> dict:
        """JSON-safe: a row that did not run has no max abs/rel (null, never Infinity)."""
        doc = {k: getattr(self, k) for k in ("backend", "label", "device", "precision", "against", "cases",
                                             "batch_sizes", "max_abs", "max_rel", "argmax_agreement", "accuracy",
                                             "ties", "error", "failures", "unusable", "required", "status", "ok",
                                             "could_not_run")}
        return {**doc, "max_abs": doc["max_abs"] if math.isfinite(doc["max_abs"]) else None,
                "max_rel": doc["max_rel"] if math.isfinite(doc["max_rel"]) else None,
                "composition": self.composition.to_dict() if self.composition else None,
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass
class Report:
    """`ptx verify`'s answer: a tutorial model's rows against eager (``kind`` TUTORIAL), or a model
    file's against its own runtime (``kind`` onnx, torchscript, pt2)."""

    name: str  # the tutorial model's name, or the file's path
    kind: str = TUTORIAL
    reference: str = REFERENCE  # what the rows are held to: eager, "ort-cpu (onnxruntime 1.31.1)"
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why that row did not run
    # Skipped rows this machine cannot run: label -> device. A tutorial model's table sums up each
    # non-CPU device in one line (a CPU machine's dozen CUDA rows); a file's says "not run".
    unrunnable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    strict: bool = False  # a backend that cannot run the file fails, as a disagreement does
    # A tutorial model's: its real samples, each device's tolerance and reference in words, and what
    # a static check proved of rows it could not run (ort-cuda's CUDA placement).
    samples: int = 0
    data: str = ""
    tolerances: dict[str, dict] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)
    # A file's: its signature, where its inputs came from, and the cases (what --locate feeds again).
    signature: Signature | None = None
    inputs: str = ""
    cases: list[str] = field(default_factory=list)
    fed: list = field(default_factory=list, repr=False)
    against: str | Path | None = None  # --against's file (named in the --locate offer)
    # A tutorial model's: for each failing row, the command that says where it parts (--locate).
    offers: list[str] = field(default_factory=list)
    # A file's: the options that shaped its verdict (--atol, --inputs, ...), which its --locate offer repeats.
    given: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.name)

    @property
    def reference_row(self) -> Row | None:
        return next((r for r in self.rows if r.is_reference), None)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if (r.status == "FAIL" and (self.strict or not r.could_not_run))
                or (self.strict and r.alone_error)]

    @property
    def could_not_run(self) -> list[str]:
        """The backends that could not run the file, or a sample alone (not judged without --strict)."""
        return list(dict.fromkeys(r.backend for r in self.rows if r.could_not_run or r.alone_error))

    @property
    def compared(self) -> list[Row]:
        """The rows that compared anything: a backend with a reference, or samples alone with their
        batch (the reference against itself alone proves nothing)."""
        return [r for r in self.rows if not r.could_not_run and (not r.is_reference or
                                                                  (r.composition is not None and r.composition.checked))]

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0 if self.compared else 2

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def summary(self) -> str:
        """The last line: the verdict, with what passed only on a tie or is not usable (a tutorial
        model), or naming the backend, the output and its error where one disagrees (a file)."""
        return _tutorial_summary(self) if self.kind == TUTORIAL else _file_summary(self)

    def table(self, all_rows: bool = False) -> str:
        """The report as `ptx verify` prints it; ``all_rows`` lists every row this machine cannot run
        instead of one line per device."""
        return "\n".join(_tutorial_table(self, all_rows) if self.kind == TUTORIAL else _file_table(self))

    def to_dict(self) -> dict:
        doc = {"rows": [r.to_dict() for r in self.rows], "skipped": self.skipped, "unrunnable": self.unrunnable,
               "notes": self.notes, "ok": self.ok, "exit_status": self.exit_status, "summary": self.summary()}
        if self.kind == TUTORIAL:
            return {"model": self.name, "samples": self.samples, "data": self.data, "tolerances": self.tolerances,
                    "references": self.references, "static": self.static, "rule": RULE, "locate_commands": self.offers,
                    **doc}
        reference = self.reference_row
        not_run = {label: self.skipped[label] for label in self.unrunnable}
        return {"path": self.name, "kind": self.kind, "reference": self.reference,
                "signature": self.signature.to_dict() if self.signature else None, "inputs": self.inputs,
                "cases": self.cases, "reference_error": reference.error if reference else None,
                "not_run": not_run, "not_run_summary": group_reasons(not_run),
                "histogram_edges": [e if math.isfinite(e) else "inf" for e in HISTOGRAM_EDGES], **doc}


# -- a tutorial model's table: heading, rows, skipped rows by reason, a line per missing device -------

COLUMNS = (f"{'backend':<18} {'precision':<9} {'batch sizes':<14} {'max abs':>9} {'max rel':>9} {'argmax':>8} "
           f"{'accuracy':>9}  verdict")


def _tutorial_summary(report: Report) -> str:
    if report.failed:
        return f"backends DISAGREE: {', '.join(r.label for r in report.failed)} failed"
    notes = []
    ties = sum(r.ties for r in report.rows)
    if ties:
        notes.append(f"{ties} tie{'s' * (ties != 1)} within tolerance")
    unusable = [r.label for r in report.rows if r.status == "NOT USABLE"]
    if unusable:
        notes.append(f"not usable at their precision: {', '.join(unusable)}")
    return "all backends agree" + (f" ({'; '.join(notes)})" if notes else "")


def _tutorial_heading(report: Report) -> list[str]:
    """Two lines: what was compared, then the rule for the rows that ran, in brief (`ptx verify --help`
    states it whole, --json carries it with every device's tolerance)."""
    devices = list(dict.fromkeys(r.device.partition(":")[0] for r in report.rows))
    # Where eager ran on the row's own device the reference goes without saying; say it where it did not.
    references = "; ".join(f"{device} rows: {ref}" for device, ref in report.references.items()
                           if device in devices and ref != f"eager-{device}")
    first = (f"ptx verify {report.name}: {report.samples:,} real test samples ({report.data}) + edge inputs, "
             "each row against eager" + (f" ({references})" if references else ""))
    bounds = ", ".join(f"{t['atol']:g} + {t['rtol']:g} x |eager| ({device})"
                       for device, t in report.tolerances.items() if device in devices)
    rule = f"pass: f32 |diff| <= {bounds}"
    reduced = list(dict.fromkeys(r.precision for r in report.rows if r.precision != FULL_PRECISION))
    if reduced:
        rule += (f"; {'/'.join(reduced)}: labels agree on >= {100 * MIN_LABEL_AGREEMENT:.0f}%, "
                 f"accuracy at most {MAX_ACCURACY_DROP:g} lower")
    return [first, rule]


def _ran_row(row: Row) -> str:
    agree = "-" if row.argmax_agreement is None else f"{100 * row.argmax_agreement:.1f}%"
    accuracy = "-" if row.accuracy is None else f"{row.accuracy:.4f}"
    sizes = ",".join(map(str, row.batch_sizes))
    name = f"{row.backend} ({row.device})"
    return (f"{name:<18} {row.precision:<9} {sizes:<14} {row.max_abs:>9.2e} {row.max_rel:>9.2e} "
            f"{agree:>8} {accuracy:>9}  {row.describe()}")


def _tutorial_table(report: Report, all_rows: bool) -> list[str]:
    lines = [*_tutorial_heading(report), COLUMNS, "-" * len(COLUMNS), *map(_ran_row, report.rows)]
    machine = {} if all_rows else report.unrunnable
    # Rows skipped for the same reason (ort-cpu-int8 and openvino-int8 both lack model.int8.onnx) share
    # a line, except with all_rows: one line each. ``checked``: what a static check found without
    # running the row (ort-cuda's placement).
    shared: dict[tuple, list[str]] = {}
    for label, why in report.skipped.items():
        if label not in machine:
            shared.setdefault((why, report.static.get(label)) + ((label,) if all_rows else ()), []).append(label)
    lines += [f"{', '.join(labels):<18} " + (f"not run: {why}; {checked}" if checked else f"skipped: {why}")
              for (why, checked, *_), labels in shared.items()]
    lines += _device_lines(report, machine)
    lines += _composition_lines(report)
    return lines + report.offers + [report.summary()]


def _device_lines(report: Report, machine: dict[str, str]) -> list[str]:
    """One line per device whose rows this machine cannot run: how many, the first reason, and what the
    static checks found where every row that had one agrees (ort-cuda's CUDA placement)."""
    lines = []
    for device in dict.fromkeys(machine.values()):
        labels = [label for label, d in machine.items() if d == device]
        # The first clause of each (ort-cuda-graph adds whether it can be captured), where all agree.
        checks = list(dict.fromkeys(report.static[label].split("; ")[0] for label in labels if label in report.static))
        what = f"{len(labels)} {device.upper() if device.startswith('cuda') else device} row{'s' * (len(labels) != 1)}"
        line = f"{what:<18} not run: {report.skipped[labels[0]]}"  # the other reasons: --all-rows
        if len(checks) == 1:
            line += f"; {checks[0]}"
        lines.append(line + "; --all-rows lists them")
    return lines


def _composition_lines(report: Report) -> list[str]:
    """One line for every f32 row whose samples answered alone as inside the largest batch; a line of
    its own for each row where they did not (its verdict says FAIL with the same words)."""
    checked = [r for r in report.rows if r.composition is not None and r.composition.skipped is None]
    same = [r for r in checked if r.composition.checked and r.composition.ok]
    lines = []
    if same:
        first = same[0].composition
        worst = max(o.max_abs for r in same for o in r.composition.outputs)
        lines.append(f"{'batch composition':<18} samples {', '.join(map(str, first.alone))} alone = their rows in a "
                     f"batch of {first.batch} on {len(same)} row{'s' * (len(same) != 1)} (max abs {worst:.2e})")
    return lines + [f"{'batch composition':<18} {r.label}: {r.composition.summary()}" for r in checked if r not in same]


# -- a model file's table: heading, each row output by output, what did not run, the --locate offer --
FILE_COLUMNS = ["backend", "against", "output", "max abs", "max rel", "needed atol", "atol / rtol", "argmax",
                "verdict"]


def _file_summary(report: Report) -> str:
    problems = [p for r in report.failed for p in r.problems()]
    if problems:
        more = (f" (and {len(problems) - 1} more table row{'s' * (len(problems) > 2)} fail"
                f"{'s' * (len(problems) == 2)})" if problems[1:] else "")
        return f"DISAGREE: {problems[0]}{more}"
    could_not = (f"; could not run: {', '.join(report.could_not_run)} (not a disagreement; --strict fails it)"
                 if report.could_not_run else "")
    ran = report.compared
    if not ran:
        others = "; ".join(group_reasons({label: report.skipped[label] for label in report.unrunnable})) or \
            "no other backend reads this kind of file"
        return (f"nothing compared: only {report.reference_row.backend} ran ({others}); give --reference FILE or "
                f"--against OTHER to compare with{could_not}")
    held = [r for r in ran if not r.is_reference]
    compared = ", ".join(dict.fromkeys(r.backend for r in held))
    against = ", ".join(dict.fromkeys(r.against for r in held))
    alone = [r.backend for r in ran if r.composition is not None and r.composition.checked]
    first = (f"all agree: {compared} (against {against})" if held else
             f"only {report.reference_row.backend} ran; nothing else compared with it")
    return first + (f"; each alone as inside a batch: {', '.join(alone)}" if alone else "") + could_not


def _file_cells(report: Report, row: Row) -> list[list[str]]:
    """The table's rows for ``row``: one per output, or one saying why it has none; then its batch
    composition's, against "itself, batch of N"."""
    blank, check, not_run = [""] * 6, row.composition, "FAIL" if report.strict else "could not run"
    compared = [(row.against, o) for o in row.outputs]
    if row.is_reference:
        ran = f"ran {len(report.cases)} case{'s' * (len(report.cases) != 1)}"
        cells = [[row.backend, "(the reference)", *blank, f"FAIL: {row.error}" if row.error else ran]]
    elif row.error:
        verdict = f"{not_run}: {short_reason(row.error, report.path)}" if row.could_not_run else f"FAIL: {row.error}"
        cells, compared = [[row.backend, row.against, *blank, verdict]], []
    else:
        cells = []
    if row.alone_error:
        alone = [[row.backend, f"itself, batch of {check.batch}", *blank,
                  f"{not_run}: {short_reason(row.alone_error, report.path)}"]]
    else:
        alone = []
        compared += [(f"itself, batch of {check.batch}", o) for o in check.outputs] if check is not None else []
    for against, o in compared:
        argmax = f"{o.same_decisions}/{o.decisions}" if o.decisions else "-"
        verdict = "PASS" if o.ok else "FAIL" + (f": {o.problem}" if o.problem else f": {o.beyond:,} of {o.compared:,} beyond")
        cells.append([row.backend, against, o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", needed_atol_text(o),
                      f"{o.tolerance.atol:g} / {o.tolerance.rtol:g}", argmax, verdict])
    return cells + alone


def _file_table(report: Report) -> list[str]:
    from ..model.opening import KIND_NAMES

    lines = [f"ptx verify {report.path.name}: {KIND_NAMES[report.kind]}, reference {report.reference}",
             "inputs: " + "; ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in report.signature.inputs),
             f"cases: {report.inputs}", *report.notes]
    cells = [FILE_COLUMNS] + [c for row in report.rows for c in _file_cells(report, row)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(FILE_COLUMNS) - 1)]
    text = ["  ".join(c.rjust(w) if 3 <= i <= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            + "  " + r[-1] for r in cells]
    lines += [text[0], "-" * len(text[0]), *text[1:]]
    lines += [f"not run: {line}" for line in group_reasons({label: report.skipped[label] for label in report.unrunnable})]
    lines += [f"skipped: {label}: {why}" for label, why in report.skipped.items() if label not in report.unrunnable]
    if any(r.traceable for r in report.failed if not r.is_reference) and report.kind == "onnx":
        lines.append(locate_offer(report.path, report.against, report.given))
    return lines + [report.summary()]


LOCATE_HINT = "where it is born: ptx verify {file} --locate{more}"


def locate_offer(path: Path, against: str | Path | None = None, given: Sequence[str] = ()) -> str:
    """The one line a DISAGREE verdict of a file's verify offers: the files as they were given and
    the options that made the verdict (``given``: --atol, --inputs, ...), so it runs as printed."""
    more = (f" --against {against}" if against else "") + "".join(f" {g}" for g in given)
    return LOCATE_HINT.format(file=path, more=more) + " [--repro DIR]"
