"""``ptx verify FILE`` for a decoder: generation judged per prompt, step by step.

The reference is what the file records (ptx.generation's reference: eager's decoding of a few prompts, on
transformers' generate() tokens where the model generates, each step's largest logits kept), read by the
reference row. Every other row (each backend that opens the file, one open at a time) decodes the same
prompts teacher-forced on the reference's tokens, then free-running, and the one judge of a decoding
(ptx.contract.generation_judge, export's too; infer/model/generation_check.py runs it) holds it: a float32
row to the logits' tolerance at every step, a reduced one (bf16, an int8 or int4 file) to its precision's
bounds on each prompt's top-1 agreement and KL divergence (the file records them; --min-agreement, --max-kl
and --max-kl-p99 set them); a near-tie said, not failed; a prompt beyond its bounds fails the row, whatever
the others do; a NaN or an infinity in any step fails it.

A decoder without that record is judged for what it is: a file in Optimum's layout (past_key_values.N.key
in, present.N.key out), or one whose weights are not the ones its record was made for (edited after export:
an optimizer, a quantizer, a hand), which the report's first line says. It is decoded, an empty past then
steps, never fed generated inputs: the file's own decoding on its own runtime (ort-cpu for ONNX) is the
reference, each step's whole logits kept, and every other row is held to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import GENERATION_KEY, JUDGING_STEPS, judging_prompts, of_metadata
from ptx.contract.generation_judge import DecodingJudgement, bounds_for
from ptx.contract.reference_decoding import ReferenceDecoding, recorded_reference
from ptx.contract.names import FULL_PRECISION
from ptx.contract.schema import Tolerance
from ptx.contract.validated import recorded_tolerance
from ptx.contract.verdict import NOT_USABLE, PASS
from ptx.contract.weights import WEIGHTS_KEY
from ptx.errors import ArtifactError, MissingArtifactError, NothingToCompareError, PtxError

from ..formats.model_files import ModelFile, read_model_file
from ..runtime import backends as registry
from ..runtime.memory_plan import OutOfMemoryPlan
from ..model.generation_check import judge_decoding, reference_decoding
from ..model.target import Target, Variant, group_reasons
from .report import against_label

FAIL, SKIPPED, REFERENCE = "FAIL", "skipped", "reference"


@dataclass
class GenerationRow:
    """One runtime's decoding of the reference's prompts, judged: PASS, FAIL (a float32 row that parts from
    the reference), NOT USABLE (a reduced precision beyond its bounds), the reference (a decoder without a
    record: the file's own runtime), or skipped (with why)."""

    label: str
    status: str
    judgement: DecodingJudgement | None = None
    why: str = ""
    decode_ms_per_token: float | None = None
    named: bool = False  # the user's --backends named it: NOT USABLE then fails the verify, as a FAIL does

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
    reference: str = ""
    prompts: list[list[int]] = field(default_factory=list)
    steps: int = 0
    rows: list[GenerationRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    features: list[int] | None = None  # an encoder-decoder's prompts are features of this shape each (no ids)
    first: str | None = None  # said before anything: the file is not the one exported

    @property
    def failed(self) -> list[GenerationRow]:
        """FAIL rows, and NOT USABLE rows the user named: a reduced precision beyond its bounds is that
        precision's verdict on this model (said, and recorded as verify's other rows are), not a fault of the
        file, unless it was asked for."""
        return [r for r in self.rows if r.status == FAIL or (r.status == NOT_USABLE and r.named)]

    @property
    def unusable(self) -> list[GenerationRow]:
        return [r for r in self.rows if r.status == NOT_USABLE]

    @property
    def compared(self) -> list[GenerationRow]:
        return [r for r in self.rows if r.judgement is not None]

    def exit_code(self) -> int:
        return 1 if self.failed else 0 if self.compared else 2

    def lines(self) -> list[str]:
        width = max([len(r.label) for r in self.rows if r.status != SKIPPED] + [9])
        out = [self.first] if self.first else []
        given = (f"{len(self.prompts)} inputs of features {'x'.join(map(str, self.features))}" if self.features else
                 f"{len(self.prompts)} prompt{'s' * (len(self.prompts) != 1)} "
                 f"({', '.join(str(len(p)) for p in self.prompts)} tokens)")
        out.append(f"verify {self.name}: greedy generation, {given} x {self.steps} steps, teacher-forced then "
                   f"free-running, against {self.reference}")
        out += [f"  {r.label:<{width}}  {r.status:<10}  {r.describe()}" for r in self.rows if r.status != SKIPPED]
        # every CUDA row says "no GPU": one line per reason, as bench says them
        out += [f"  skipped {line}" for line in group_reasons({r.label: r.why for r in self.rows
                                                                 if r.status == SKIPPED})]
        out += [f"note: {n}" for n in self.notes]
        if self.failed:
            first = self.failed[0]
            # rows asked of that miss their precision's bounds and nothing else: that precision's verdict, as
            # verify's table of tensors says it (exit 1 all the same)
            word = NOT_USABLE if all(r.status == NOT_USABLE for r in self.failed) else FAIL
            out.append(f"{word}: {first.label}: {first.describe()}")
        elif self.compared:
            held = [r for r in self.compared if r.status == PASS]
            many = len(held) != 1
            out.append(f"OK: {len(held)} backend{'s' * many} decode{'s' * (not many)} as the reference"
                       + (" (near-ties and partings said above)" if any(
                           p.ties or p.parting for r in held for p in r.judgement.prompts) else "")
                       + (f"; NOT USABLE here: {', '.join(r.label for r in self.unusable)} (beyond its precision's "
                          "bounds: --backends LABEL to fail on it)" if self.unusable else ""))
        return out

    def to_dict(self) -> dict:
        given = {"features": self.features} if self.features else {"prompts": self.prompts}
        return {"model": self.name, "kind": "generation", "reference": self.reference, **given, "steps": self.steps,
                "rows": [r.to_dict() for r in self.rows], "notes": self.notes,
                "not_exported": self.first, "ok": not self.failed and bool(self.compared),
                "exit_status": self.exit_code()}


def decodes(target: Target) -> bool:
    """Whether ``target`` is a decoder verify judges by its decoding: a file that records its generation
    contract (also where it changed since export, read then without its metadata), or an ONNX file in
    Optimum's layout (its graph's names read, not its weights)."""
    if target.is_run or target.found is None:
        return False
    return target.generation is not None or GENERATION_KEY in read_model_file(target.path, digest=False).metadata


def not_exported(target: Target, found: ModelFile, judged_by_record: bool) -> str | None:
    """The report's first line where the file's weights (``found``: as recorded) are not the ones its record was
    made for: what it is judged as, and against what."""
    if not found.foreign:
        return None
    said = (f"{target.path.name} is not the file exported: its sha256 {found.weights[:12]}... is not the "
            f"{found.metadata[WEIGHTS_KEY][:12]}... its ptx.{WEIGHTS_KEY} records (changed since: an optimizer, a "
            "quantizer, an edit)")
    if judged_by_record:
        # a file made from the export (quantized, optimized) is still that model: the decoding its record holds
        # is what it must give, at the precision its graph has
        return (f"{said}; it is judged as {_what(target.precision)} made from it, against the decoding its record "
                "holds")
    return f"{said}, and its record holds no logits to judge it by: it is judged as a decoder of its own"


def _what(precision: str) -> str:
    return "an f32 file" if precision == FULL_PRECISION else f"an {precision} file (by its graph's weights)"


# A user's text is judged on its first TEXT_POSITIONS tokens (llama.cpp's perplexity reads a text in windows of
# 512 by default): each row holds its logits at every position of the text's pass, [positions, vocabulary]
# floats (a 152k vocabulary: 311 MB at 512), so a whole book is not read at once.
TEXT_POSITIONS = 512


@dataclass(frozen=True)
class UserText:
    """A user's text as token ids, and how the report names it (the file it came from)."""

    ids: Sequence[int]
    name: str


def verify_generation(target: Target, backends: Sequence[str] | None = None, steps: int | None = None,
                      atol: float | None = None, rtol: float | None = None,
                      bounds: Mapping[str, Mapping] | None = None, against: Target | None = None,
                      progress: Callable[[str], None] = lambda _: None, text: UserText | None = None
                      ) -> GenerationReport:
    """Judge each backend's decoding of ``target`` (a decoder file's Target) against its reference: the
    decoding the file records (also where the file changed since export: a quantizer's or an optimizer's
    file made from it is judged at the precision its graph has), else the file's own runtime's (a decoder
    without a record). ``against``: another decoder file of the same model, one more row on its own runtime
    at its own precision, held to the same reference (a file another tool made whose record is lost, named
    by the user). ``steps``: at most the reference's (default all). A float32 row is held to ``atol``/
    ``rtol``, else the tolerance export was given (the file records it), else the logits' dtype's default on
    the row's device; a reduced one to ``bounds`` ({min_agreement | max_kl | max_kl_p99: {precision or None:
    value}}), else the file's, else its precision's defaults. ``text``: a user's text, the one prompt every row
    is judged on instead of the recorded ones (its first TEXT_POSITIONS tokens, then ``steps``): the reference is
    then the f32 file's own runtime's decoding of it, every position of its pass and every step judged."""
    recorded = target.as_recorded() if target.changed else None
    metadata = recorded.metadata if recorded is not None else target.found.metadata
    report = GenerationReport(target.path.name)
    generation = of_metadata(metadata, f"{target.path.name}: ptx.{GENERATION_KEY}")
    reference = recorded_reference(generation)
    own_prompts = None
    if text is not None:  # the text's reference is made below, by the file's own runtime
        own_prompts, reference, recorded = _text_prompts(target, generation, text, steps, report), None, None
    if recorded is not None:
        report.first = not_exported(target, recorded, reference is not None and reference.logits is not None)
    if reference is not None and reference.logits is None:
        report.notes.append(f"{target.path.name} records its reference's tokens only (exported before each step's "
                            f"logits were recorded): every row is held to {target.reference}'s decoding of its prompts; "
                            "re-export it to hold them to eager's")
        reference = ReferenceDecoding(reference.prompts, reference.steps, None, reference.by)
    if reference is not None and reference.logits is not None:
        reference = reference.truncated(steps)
        _said(report, reference, f"{reference.by}, recorded at export")
    recorded_tol, unreadable = recorded_tolerance(metadata)
    if unreadable:
        report.notes.append(unreadable)
    given = {"atol": atol, "rtol": rtol} if atol is not None or rtol is not None else recorded_tol

    def tolerance_on(model) -> Tolerance:
        own = default_tolerance(model.signature.output(model.generation.logits).dtype, model.device)
        return Tolerance(given.get("atol") if given.get("atol") is not None else own.atol,
                         given.get("rtol") if given.get("rtol") is not None else own.rtol)

    runnable = _runnable(target, backends, report, own_first=reference is None or reference.logits is None)
    rows = [(target, runnable, lambda variant: variant.label)]
    if against is not None:
        own = Variant(registry.get(against.reference), "cpu", against.precision)
        rows.append((against, [own], lambda variant: against_label(against.path, variant.label)))
        report.notes.append(f"{against.path.name} ({own.label}) is {_what(against.precision)}, held to "
                            f"{target.path.name}'s reference")
    for source, variants, label_of in rows:
        def skipped(skip) -> None:
            # a row the user named that does not open (a stale int4 file) fails, as bench's does: exit 0 would
            # say it decodes; one on a runtime this machine lacks stays a skip, as do the rows that came along
            asked = bool(backends) and skip.variant.asked_by(backends) and not skip.unavailable
            report.rows.append(GenerationRow(label_of(skip.variant), FAIL if asked else SKIPPED,
                                             why=f"does not open: {skip.why}"))

        for variant, model in source.each_opened(variants, skipped=skipped):
            if model.generation is None:
                raise NothingToCompareError(f"{source.path.name} is not a decoder ptx can run: re-export it with `ptx "
                                            "export --module FILE.py:FACTORY --task text-generation`")
            if reference is None or reference.logits is None:
                if source is against:  # the reference is the verified file's: none of its rows decoded
                    raise NothingToCompareError(f"no backend here decodes {target.path.name}, whose decoding "
                                                f"{against.path.name} is held to")
                reference = _own_reference(model, variant, reference, steps, own_prompts,
                                           None if text is None else text.name)
                _said(report, reference, reference.by)
                report.rows.append(GenerationRow(label_of(variant), REFERENCE, why="its decoding is the reference"))
                continue
            row = _judged_row(variant, model, reference, tolerance_on(model), bounds, progress, label_of(variant),
                              generation.bounds if generation is not None else None)
            # named: --against's file, the precision a reduced file is (its rows are its verdict), or a row the
            # user's --backends named; a NOT USABLE row fails verify then
            row.named = (source is against or variant.precision == source.precision != FULL_PRECISION
                         or (bool(backends) and variant.asked_by(backends)))
            report.rows.append(row)
    if reference is None:
        raise NothingToCompareError(f"no backend here opens {target.path.name} to decode it"
                                    + (f": {'; '.join(r.why for r in report.rows)}" if report.rows else ""))
    return report


def _said(report: GenerationReport, reference: ReferenceDecoding, by: str) -> None:
    report.reference, report.prompts, report.steps = by, reference.prompts, reference.step_count
    if hasattr(reference.prompts, "shape"):  # an encoder's features, not ids: said by their shape
        report.features, report.prompts = list(reference.prompts.shape[1:]), [[] for _ in reference.prompts]


def _text_prompts(target: Target, generation, text: UserText, steps: int | None, report: GenerationReport
                  ) -> list[list[int]]:
    """The one prompt a user's text makes: its first TEXT_POSITIONS tokens (fewer where the model's positions end
    sooner), said in a note where cut; a reduced file's or a too-short text refused in one line."""
    if target.precision != FULL_PRECISION:
        raise PtxError(f"{target.path.name} is an {target.precision} file: its own decoding cannot be the reference "
                       f"for {text.name}; give the f32 file it was made from, and this one with --against")
    ids = [int(t) for t in text.ids]
    if len(ids) < 2:
        raise PtxError(f"{text.name} is {len(ids)} token{'s' * (len(ids) != 1)} long: give a text of two or more, "
                       "whose positions the rows are judged on")
    count = steps or JUDGING_STEPS
    room = TEXT_POSITIONS
    if generation is not None and generation.max_positions is not None:
        room = min(room, generation.max_positions - count)
    if len(ids) > room:
        report.notes.append(f"{text.name} is {len(ids):,} tokens: its first {room} are judged, and {count} steps after "
                            "them")
    return [ids[:room]]


def _own_reference(model, variant: Variant, recorded: ReferenceDecoding | None, steps: int | None,
                   prompts: list[list[int]] | None = None, text: str | None = None) -> ReferenceDecoding:
    """The file's own runtime's greedy decoding as the reference (whole logits): of ``prompts`` where given (a
    user's text, named ``text``), else of the prompts the file records where it records tokens only, else of
    short generated prompts (a file that records nothing may have few positions)."""
    generation = model.generation
    count = steps or (recorded.step_count if recorded is not None else JUDGING_STEPS)
    if prompts is not None:
        return reference_decoding(model.run, model.signature, generation, prompts, count,
                                  by=f"{variant.label}'s own decoding of {text}, whole logits", encoder=model.encoder)
    if recorded is not None:
        prompts = recorded.prompts
    else:
        vocab = model.signature.output(generation.logits).shape[-1]
        if not isinstance(vocab, int):
            raise PtxError(f"{model.path.name}: its logits' vocabulary is not a fixed size; ptx draws prompts within it")
        prompts = judging_prompts(vocab, generation.max_positions, count, long=False)
    return reference_decoding(model.run, model.signature, generation, prompts, count,
                              by=f"{variant.label}'s own decoding (whole logits)", encoder=model.encoder)


def _judged_row(variant: Variant, model, reference: ReferenceDecoding, tolerance: Tolerance, bounds, progress,
                label: str, recorded_bounds: Mapping | None) -> GenerationRow:
    """``model``'s decoding of the reference's prompts, judged: f32 by ``tolerance``, a reduced precision by
    its bounds (the user's, else the file's, else those its record holds, else its precision's defaults)."""
    progress(f"{label}: decoding {len(reference.prompts)} prompt{'s' * (len(reference.prompts) != 1)} x "
             f"{reference.step_count} steps, teacher-forced then free-running")
    reduced = variant.precision != FULL_PRECISION
    held = bounds_for(variant.precision, model.generation.bounds or recorded_bounds, bounds) if reduced else None
    try:
        judged, ms = judge_decoding(model.run, model.signature, model.generation, reference,
                                    precision=variant.precision, tolerance=tolerance, bounds=held,
                                    encoder=model.encoder, cache=model.runner.new_cache(model.generation))
    except OutOfMemoryPlan as exc:  # a row this machine cannot judge now, not a file that fails
        return GenerationRow(label, SKIPPED, why=str(exc))
    except PtxError as exc:
        return GenerationRow(label, NOT_USABLE if reduced else FAIL, why=f"does not decode: {exc}")
    status = PASS if judged.passed else (NOT_USABLE if reduced else FAIL)
    return GenerationRow(label, status, judged, decode_ms_per_token=ms)


def _runnable(target: Target, backends: Sequence[str] | None, report: GenerationReport, own_first: bool
              ) -> list[Variant]:
    """The variants that decode ``target`` here, unavailable ones said as skipped rows; a reduced precision's
    file (model.int8.onnx) comes along where it was exported. ``own_first``: the file's own runtime at f32
    first (its decoding is the reference)."""
    runnable = []
    for variant in target.variants(backends):
        why = variant.unavailable() or target.refuses(variant)
        if variant.precision != FULL_PRECISION and not (backends and variant.asked_by(backends)):
            try:
                target.file_for(variant)
            except MissingArtifactError:
                continue
            except ArtifactError as exc:  # a twin not made from this file (stale): its row, not the whole verify
                why = why or str(exc)
        if why:
            report.rows.append(GenerationRow(variant.label, SKIPPED, why=why))
        else:
            runnable.append(variant)
    if own_first:
        own = [v for v in runnable if v.backend.name == target.reference and v.precision == FULL_PRECISION]
        if not own and target.variants():
            own = [v for v in target.variants() if v.backend.name == target.reference and v.precision == FULL_PRECISION
                   and not v.unavailable()][:1]
        runnable = own[:1] + [v for v in runnable if v not in own[:1]]
    return runnable
