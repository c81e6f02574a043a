"""What `ptx verify` found, for a tutorial model's run and a model file alike (infer/verify/verify.py):
one Row per variant held to a reference, one verdict rule, one Report, one table (output by output,
with a head's label agreement and accuracy where the model has a head: report_table.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ptx.contract.comparison import HISTOGRAM_EDGES, OutputAgreement
from ptx.contract.names import FULL_PRECISION
from ptx.contract.tensors import Signature
from ptx.contract.verdict import TOLERANCE, Verdict, in_one_line
from ptx.errors import PtxError

from ..runtime import backends as registry
from .batch_composition import CompositionCheck
from ..model.target import group_reasons
from .rule import RULE  # its own module; the JSON and `ptx verify --help` read it

REFERENCE = "eager"  # a tutorial model's reference
RUN = "run"  # a Report's kind for a tutorial model's run; a file's is its kind (onnx, ...)
STORED = "stored reference"
SERVED = "served "  # a served model's row: "served URL" (verify/served.py)

def against_label(other: Path, variant_label: str) -> str:
    """The row label of an --against file: ``other.onnx (ort-cpu-int8)``."""
    return f"{other.name} ({variant_label})"


def is_against_row(label: str, against) -> bool:
    """Whether ``label`` (a row's or a triaged row's) is the --against file ``against``'s (against_label)."""
    return against is not None and label.startswith(f"{Path(against).name} (")


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
    reference_accuracy: float | None = None  # its reference's accuracy on the same real samples
    max_drop: float | None = None  # the bound its file was exported to hold (accuracy points), judged instead of the gate
    # A few samples alone against their rows in the largest batch, by the row's tolerance: an answer
    # that depends on its batch-mates is a failure of the row.
    composition: CompositionCheck | None = None
    # A backend of this machine's that ran no case of a file: it cannot run the file, which says
    # nothing about the file's answers; it fails only under --strict.
    optional: bool = False
    worst_case: int | None = None  # index of the case that disagrees most (what --locate traces)
    # A third opinion (onnx.reference): where it alone departs, a note, not a verdict (--strict).
    advisory: bool = False
    # A reduced precision's verdict (ptx.contract.verdict): by which evidence, measuring what (reasons: ``unusable``).
    verdict: object | None = None
    # Why it opened and ran but compared no case (a third opinion whose inputs are all over its
    # limit): it agrees with nothing, so the summary says so instead of counting it as agreeing.
    no_case: str | None = None
    kinds: list[str] = field(default_factory=list)  # a served row's kinds of difference (verify/drift.py)

    def of_file(self, against) -> bool:
        """Whether this is the row of the --against file ``against`` (None: there is none)."""
        return is_against_row(self.backend, against)

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

    def as_verdict(self) -> Verdict:
        """The row's judgement as records keep it (verdict.stored): a reduced row's verdict, else its tolerance's."""
        if self.verdict is not None:
            return replace(self.verdict, status=self.kept_status, reasons=list(self.reasons))
        if self.error or not self.outputs:
            measured = f"did not run: {self.error}" if self.error else (self.no_case or "compared no case")
        else:
            worst = max(self.outputs, key=lambda o: o.max_abs)
            measured = (f"worst |diff| {worst.max_abs:.2e} ({worst.name}) on {len(self.cases)} case"
                        f"{'s' * (len(self.cases) != 1)} against {self.against}")
        return Verdict(self.label, self.kept_status, TOLERANCE, measured, list(self.reasons), "verify")

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
        """PASS, FAIL (a real disagreement), NOT USABLE (a reduced precision below its gate), or
        DIFFERS (a third opinion that departs: a note, not a verdict)."""
        if self.failures or (self.unusable and self.required):
            return "DIFFERS" if self.advisory and not self.error else "FAIL"
        return "NOT USABLE" if self.unusable else "PASS"

    @property
    def kept_status(self) -> str:
        """The status kept with the file it judged (verify.json: predict's and serve's warning, bench's
        column, `ptx runs`): the verdict by its precision's rule, whether or not the user named the row.
        Naming a reduced row that misses its rule makes verify exit 1 (FAIL); the file is NOT USABLE all
        the same, as export and a verify that did not name it say."""
        return "NOT USABLE" if self.unusable and not self.failures else self.status

    @property
    def ok(self) -> bool:
        """Passed: the backend at this precision may be used (bench and serve choose only these); a
        row that compared no case passed nothing."""
        return self.status == "PASS" and self.no_case is None

    @property
    def reasons(self) -> list[str]:
        return self.failures + self.unusable

    @property
    def could_not_run(self) -> bool:
        return self.optional and self.error is not None and not self.cases

    @property
    def agrees(self) -> bool:
        """PASS on at least one case compared: what the summary may call agreeing (a row that ran no
        case passed nothing, and a NOT USABLE or DIFFERS row is not PASS)."""
        return self.ok and bool(self.cases)

    @property
    def alone_error(self) -> str | None:
        """Why its samples could not run alone (not judged without --strict)."""
        return self.composition.error if self.composition is not None else None

    @property
    def is_reference(self) -> bool:
        """The reference's own row (eager against eager, a file's runtime against itself): held to
        its own label (eager-cuda to eager-cuda), or to its backend by name (a Row's default). A
        reduced precision of the reference's backend (ort-cpu-int8 against ort-cpu) is judged, never it."""
        return self.against == self.label or (self.against == self.backend and self.precision == FULL_PRECISION)

    @property
    def disagreeing(self) -> OutputAgreement | None:
        """The first output that disagrees with the reference (not the composition's)."""
        return next((o for o in self.outputs if not o.ok), None)

    @property
    def traceable(self) -> bool:
        """Whether ``--locate`` can trace it: it ran and disagrees with another side that ran (not a
        sample alone against its batch, nor the stored tensors, which keep no intermediates)."""
        return self.disagreeing is not None and not self.error and self.against != STORED \
            and not self.backend.startswith(SERVED) and not self.disagreeing.other_shape

    def problems(self) -> list[str]:
        """The row's failures in words for the verdict line: what it was compared with, the output
        and its error; its batch composition's, as a row of its own."""
        # a reduced row by its label (ort-cpu-int8): "ort-cpu vs ort-cpu" said nothing of which row departed
        name = self.backend if self.precision == FULL_PRECISION else self.label
        found = [f"{name}{' (the reference)' * self.is_reference}: {self.error}"] if self.error else []
        if self.precision != FULL_PRECISION and self.unusable and not self.failures:
            # named, so required: failed by its precision's rule, which f32's atol says nothing of
            found.append(f"{name} vs {self.against}: {'; '.join(self.unusable)}")
        elif self.disagreeing is not None and not self.error:
            found.append(f"{name} vs {self.against}, output {self.disagreeing.summary()}")
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
            return f"NOT USABLE: {in_one_line(self.reasons)}: do not use {self.precision} for this model"
        if self.status == "DIFFERS":
            return f"DIFFERS (a third opinion, not a verdict; --strict fails it): {detail}"
        return f"FAIL: {detail}"

    def to_dict(self) -> dict:
        """JSON-safe: a row that did not run has no max abs/rel (null, never Infinity)."""
        doc = {k: getattr(self, k) for k in ("backend", "label", "device", "precision", "against", "cases",
                                             "batch_sizes", "max_abs", "max_rel", "argmax_agreement", "accuracy",
                                             "ties", "error", "failures", "unusable", "required", "status", "ok",
                                             "could_not_run", "advisory", "reference_accuracy", "max_drop",
                                             "no_case", "agrees", "kinds")}
        return {**doc, **{k: doc[k] if math.isfinite(doc[k]) else None for k in ("max_abs", "max_rel")},
                "composition": self.composition.to_dict() if self.composition else None,
                "verdict": self.verdict.to_dict() if self.verdict is not None else None,
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass
class Report:
    """`ptx verify`'s answer for one model: a tutorial model's run (``kind`` RUN) held to eager, or a
    model file (``kind`` onnx, torchscript, pt2) held to its own runtime."""

    name: str  # the tutorial model's name, or the file's path
    kind: str = RUN
    reference: str = REFERENCE  # what the rows are held to: eager, "ort-cpu (onnxruntime 1.31.1)"
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why that row did not run
    # Skipped rows this machine cannot run: label -> device. The table sums up each device in one line
    # (a CPU machine's dozen CUDA rows) unless asked for all rows.
    unrunnable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    strict: bool = False  # a backend that cannot run the file, and a third opinion, fail as a disagreement does
    head: bool = False  # the model has a head: its rows show label agreement and accuracy
    samples: int = 0  # real test samples a head judged on (0: none)
    data: str = ""
    tolerances: dict[str, dict] = field(default_factory=dict)  # a head's contract tolerance per device
    static: dict[str, str] = field(default_factory=dict)  # what a static check proved of rows not run
    signature: Signature | None = None
    inputs: str = ""  # where the cases came from, in words
    cases: list[str] = field(default_factory=list)
    fed: list = field(default_factory=list, repr=False)  # the cases (what --locate feeds again)
    against: str | Path | None = None  # --against's file (named in the --locate offer)
    # For each failing row, the command that says where it parts (--locate).
    offers: list[str] = field(default_factory=list)
    # The options that shaped the verdict (--atol, --inputs, ...), which a file's --locate offer repeats.
    given: list[str] = field(default_factory=list)
    certificate: object | None = None  # a model file's shape certificate (ptx.contract.shape_certificate)
    shape_failures: list[str] = field(default_factory=list)  # its failures at sizes the user named: fail verify

    @property
    def path(self) -> Path:
        return Path(self.name)

    @property
    def reference_row(self) -> Row | None:
        return next((r for r in self.rows if r.is_reference), None)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if (r.status == "FAIL" and (self.strict or not r.could_not_run))
                or (self.strict and (r.alone_error or r.status == "DIFFERS"))]

    @property
    def could_not_run(self) -> list[str]:
        """The backends that could not run the file, or a sample alone (not judged without --strict)."""
        return list(dict.fromkeys(r.label for r in self.rows if r.could_not_run or r.alone_error))

    @property
    def compared(self) -> list[Row]:
        """The rows that compared anything: a backend with a reference, or samples alone with their
        batch (the reference against itself alone proves nothing)."""
        return [r for r in self.rows if not r.could_not_run and r.no_case is None
                and (not r.is_reference or (r.composition is not None and r.composition.checked))]

    @property
    def exit_status(self) -> int:  # a size the user named that the file refuses (shape_failures) fails it too
        return 1 if self.failed or self.shape_failures else 0 if self.compared else 2

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def is_run(self) -> bool:  # a tutorial model's run, not a model file
        return self.kind == RUN

    def summary(self) -> str:
        """The last line: the verdict naming the row, the output and its error (NOT USABLE: rows asked of that miss
        only their precision's rule); else what passed only on a tie, is not usable, or differs as a third opinion."""
        problems = [p for r in self.failed for p in r.problems()]
        if problems:
            more = (f" (and {len(problems) - 1} more table row{'s' * (len(problems) > 2)} fail"
                    f"{'s' * (len(problems) == 2)})" if problems[1:] else "")
            return f"{'NOT USABLE' if all(r.kept_status == 'NOT USABLE' for r in self.failed) else 'DISAGREE'}: " \
                   f"{problems[0]}{more}"
        if self.shape_failures:  # every row may agree at the sizes compared, and the file refuse one named
            return f"SHAPES: the shape certificate does NOT hold: {'; '.join(self.shape_failures)}"
        ran = self.compared
        held = [r for r in ran if not r.is_reference]
        idle = [f"{r.label} ({r.no_case})" for r in self.rows if r.no_case is not None]
        if not ran:
            others = "; ".join(group_reasons(self.skipped) + [f"ran no case: {', '.join(idle)}"] * bool(idle)) \
                or "no other backend reads this kind of model"
            return (f"nothing compared: only {self.reference_row.backend if self.reference_row else self.reference} "
                    f"ran ({others})" + ("" if self.kind == RUN else "; give --reference FILE or --against OTHER to "
                                                                      "compare with"))
        notes = []
        ties = sum(r.ties for r in self.rows)
        if ties:
            notes.append(f"{ties} tie{'s' * (ties != 1)} within tolerance")
        if idle:
            notes.append(f"ran no case: {', '.join(idle)}")
        for status, words in (("NOT USABLE", "not usable at their precision"), ("DIFFERS", "a third opinion differs")):
            found = list(dict.fromkeys(r.label for r in self.rows if r.status == status))
            if found:
                notes.append(f"{words}: {', '.join(found)}")
        alone = [r.label for r in ran if r.composition is not None and r.composition.checked]
        if alone:
            notes.append(f"each alone as inside a batch: {', '.join(alone)}")
        if self.could_not_run:
            notes.append(f"could not run: {', '.join(self.could_not_run)} (not a disagreement; --strict fails it)")
        if self.certificate is not None and not self.certificate.holds:  # at sizes ptx chose: said, not failed
            notes.append("the shape certificate does not hold at sizes ptx chose (above): a note; --max-shape is a verdict")
        # Only rows that passed on a case they compared agree: a NOT USABLE row, a third opinion that
        # differs and a row that ran no case are each named in a note of their own, never here too.
        failing = {r.label for r in self.rows if not r.agrees and not r.is_reference}  # a label with any row that did not
        agreeing = [r for r in held if r.agrees and r.label not in failing]
        compared = ", ".join(dict.fromkeys(r.label for r in agreeing)) or "nothing else"
        against = ", ".join(dict.fromkeys(r.against for r in agreeing or held)) or self.reference
        lead = f"no row agrees with {against}" if held and not agreeing else f"all agree: {compared} (against {against})"
        return lead + (f"; {'; '.join(notes)}" if notes else "")

    def table(self, all_rows: bool = False) -> str:
        """The report as `ptx verify` prints it; ``all_rows`` lists every row this machine cannot run
        instead of one line per device."""
        from .report_table import table_lines  # the table's own module (it reads this one's rows)

        return "\n".join(table_lines(self, all_rows))

    def to_dict(self) -> dict:
        return {"model" if self.kind == RUN else "path": self.name, "kind": self.kind, "reference": self.reference,
                "rows": [r.to_dict() for r in self.rows], "skipped": self.skipped, "unrunnable": self.unrunnable,
                "notes": self.notes, "ok": self.ok, "exit_status": self.exit_status, "summary": self.summary(),
                "rule": RULE, "signature": self.signature.to_dict() if self.signature else None,
                "inputs": self.inputs, "cases": self.cases, "samples": self.samples, "data": self.data,
                "tolerances": self.tolerances, "static": self.static, "locate_commands": self.offers,
                "not_run_summary": group_reasons({label: self.skipped[label] for label in self.unrunnable}),
                "histogram_edges": [e if math.isfinite(e) else "inf" for e in HISTOGRAM_EDGES],
                "shape_certificate": self.certificate.to_dict() if self.certificate is not None else None,
                "reference_error": self.reference_row.error if self.reference_row else None}
