"""``ptx verify FILE`` for a decoder exported with its key/value cache: generation judged step by step.

The reference is eager PyTorch's own cached greedy decoding of a few prompts, as export made it and the
file records it (ptx.generation's reference): the reference row reads its record. Every other row (each
backend that opens the file, one open at a time) decodes the same prompts for as many steps, left-padded
in one batch, and the one judge of tokens (ptx.contract.generation.judge_tokens, export's too) compares
them: the first step where a prompt parts is named with both tokens and the reference's top-2 margin; a
parting at a near-tie is said, not failed; a reduced precision is judged by the share of steps agreeing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import TokenJudgement, judge_tokens, of_metadata
from ptx.contract.names import FULL_PRECISION
from ptx.contract.schema import Tolerance
from ptx.contract.validated import recorded_tolerance
from ptx.contract.verdict import NOT_USABLE, PASS
from ptx.errors import MissingArtifactError, NothingToCompareError, PtxError

from ..model.target import group_reasons

FAIL, SKIPPED = "FAIL", "skipped"


@dataclass
class GenerationRow:
    """One runtime's greedy decoding of the recorded prompts, judged: PASS, FAIL (f32 parting off a tie),
    NOT USABLE (a reduced precision below the agreement it must hold), or skipped (with why)."""

    label: str
    status: str
    judgement: TokenJudgement | None = None
    why: str = ""
    decode_ms_per_token: float | None = None

    def describe(self) -> str:
        if self.judgement is None:
            return self.why
        speed = f"; {self.decode_ms_per_token:.2f} ms per decoding step" if self.decode_ms_per_token else ""
        return self.judgement.describe() + speed

    def to_dict(self) -> dict:
        return {"backend": self.label, "status": self.status, "detail": self.describe(),
                **({"judgement": self.judgement.to_dict()} if self.judgement else {}),
                "decode_ms_per_token": self.decode_ms_per_token}


@dataclass
class GenerationReport:
    name: str
    reference: str
    prompts: list[list[int]]
    steps: int
    rows: list[GenerationRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[GenerationRow]:
        return [r for r in self.rows if r.status in (FAIL, NOT_USABLE)]

    @property
    def compared(self) -> list[GenerationRow]:
        return [r for r in self.rows if r.judgement is not None]

    def exit_code(self) -> int:
        return 1 if self.failed else 0 if self.compared else 2

    def lines(self) -> list[str]:
        width = max([len(r.label) for r in self.rows if r.status != SKIPPED] + [9])
        out = [f"verify {self.name}: greedy generation, {len(self.prompts)} prompts "
               f"({', '.join(str(len(p)) for p in self.prompts)} tokens) x {self.steps} steps, against "
               f"{self.reference}"]
        out += [f"  {r.label:<{width}}  {r.status:<10}  {r.describe()}" for r in self.rows if r.status != SKIPPED]
        # every CUDA row says "no GPU": one line per reason, as bench says them
        out += [f"  skipped {line}" for line in group_reasons({r.label: r.why for r in self.rows
                                                                 if r.status == SKIPPED})]
        out += [f"note: {n}" for n in self.notes]
        if self.failed:
            first = self.failed[0]
            out.append(f"FAIL: {first.label}: {first.describe()}")
        elif self.compared:
            many = len(self.compared) != 1
            out.append(f"OK: {len(self.compared)} backend{'s' * many} generate{'s' * (not many)} the reference's tokens"
                       + (" (where one parts, said above)" if any(r.judgement.partings for r in self.compared) else ""))
        return out

    def to_dict(self) -> dict:
        return {"model": self.name, "kind": "generation", "reference": self.reference, "prompts": self.prompts,
                "steps": self.steps, "rows": [r.to_dict() for r in self.rows], "notes": self.notes,
                "ok": not self.failed and bool(self.compared)}


def verify_generation(target, backends: Sequence[str] | None = None, steps: int | None = None,
                      atol: float | None = None, rtol: float | None = None,
                      progress: Callable[[str], None] = lambda _: None) -> GenerationReport:
    """Judge each backend's greedy tokens on the prompts the file records against the recorded reference's
    (``target``: a model file's Target whose metadata records ptx.generation). ``steps``: at most the
    recorded ones (default all). A tie's width comes from ``atol``/``rtol``, else the tolerance export was
    given (the file records it), else the logits' dtype's default on the row's device."""
    metadata = target.found.metadata
    generation = of_metadata(metadata, f"{target.path.name}: ptx.generation")
    recorded = generation.recorded() if generation else None
    if recorded is None:
        raise NothingToCompareError(f"{target.path.name} records no reference decoding: re-export it with "
                                    "`ptx export --module FILE.py:FACTORY --task text-generation`")
    prompts, reference, by = recorded
    most = len(reference.tokens[0])
    steps = most if steps is None else min(steps, most)
    if steps < most:
        reference = type(reference)([t[:steps] for t in reference.tokens], [m[:steps] for m in reference.margins],
                                    [t[:steps] for t in reference.tops])
    report = GenerationReport(target.path.name, f"{by}, recorded at export", prompts, steps)
    recorded_tol, unreadable = recorded_tolerance(metadata)
    if unreadable:
        report.notes.append(unreadable)
    given = {"atol": atol, "rtol": rtol} if atol is not None or rtol is not None else recorded_tol

    def tolerance_on(model) -> Tolerance:
        own = default_tolerance(model.signature.output(generation.logits).dtype, model.device)
        return Tolerance(given.get("atol") if given.get("atol") is not None else own.atol,
                         given.get("rtol") if given.get("rtol") is not None else own.rtol)
    variants = target.variants(backends)
    runnable = []
    for variant in variants:
        why = variant.unavailable()
        if variant.precision != FULL_PRECISION and not (backends and variant.asked_by(backends)):
            try:  # a reduced precision's file (model.int8.onnx) comes along where it was exported
                target.file_for(variant)
            except MissingArtifactError:
                continue
        if why:
            report.rows.append(GenerationRow(variant.label, SKIPPED, why=why))
        else:
            runnable.append(variant)
    def skipped(skip) -> None:
        report.rows.append(GenerationRow(skip.variant.label, SKIPPED, why=f"does not open: {skip.why}"))

    for variant, model in target.each_opened(runnable, skipped=skipped):
        progress(f"{variant.label}: decoding {len(prompts)} prompts x {steps} steps")
        reduced = variant.precision != FULL_PRECISION
        tolerance = tolerance_on(model)
        try:
            decoded = model.decode(prompts, steps, eos=())
        except PtxError as exc:
            report.rows.append(GenerationRow(variant.label, FAIL if not reduced else NOT_USABLE,
                                             why=f"does not decode: {exc}"))
            continue
        judged = judge_tokens(reference, decoded.steps, tolerance, reduced=reduced)
        status = PASS if judged.passed else (NOT_USABLE if reduced else FAIL)
        report.rows.append(GenerationRow(variant.label, status, judged, decode_ms_per_token=decoded.decode_ms_per_token))
    return report
