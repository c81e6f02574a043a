"""Reference tensors kept beside a file (``ptx verify --save-reference`` writes them, ``ptx export
--module`` too): read once, and every row held to them while its runtime is open, so that no row is
opened a second time for them."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ptx.contract.cases import Case
from ptx.contract.reference import Reference, load_reference, reference_path, save_reference
from ptx.contract.tensor_inputs import check_feeds
from ptx.contract.verdict import as_evidence
from ptx.errors import InputError, PtxError

from .comparator import match_outputs, run_until_failure
from .report import STORED, Row


@dataclass
class Stored:
    """Reference tensors kept beside a file (``--save-reference``), read once: the cases they feed
    and the outputs they hold, by this file's output names."""

    where: Path
    reference: Reference
    cases: list[Case]
    want: dict[int, dict]


def stored_reference(this, given, save: bool) -> Stored | None:
    """Reference tensors kept beside a file (or given), which every row is held to as well while it is
    open (held_to_stored); ``save`` writes the reference's outputs there instead (None then)."""
    target, report, signature = this.target, this.report, this.signature
    if target.is_run:
        return None
    where = Path(given) if given else reference_path(target.path)
    digest = target.found.weights
    if save:
        want, error = this.reference_on("cpu")
        if error or not want:
            report.notes.append(f"reference tensors not written: the reference failed ({error})")
            return None
        kept = [replace(this.cases[i], outputs=want[i]) for i in sorted(want)]
        save_reference(where, Reference(kept, report.reference, signature, digest, this.source))
        report.notes.append(f"wrote {where} ({len(kept)} cases from {report.reference})")
        return None
    if not (given or where.is_file()):
        return None
    stored = load_reference(where)
    if sorted(stored.signature.input_names) != sorted(signature.input_names):
        raise PtxError(f"{where}: its cases feed inputs {', '.join(stored.signature.input_names)}, and "
                       f"{target.path.name} takes {', '.join(signature.input_names)}: not reference tensors of this model")
    names = match_outputs(signature.output_names, stored.signature.output_names, "the stored reference", report.notes)
    try:
        stored_cases = [Case(case.label, check_feeds(signature, case.feeds, f"{where.name} case {k}", from_file=True))
                        for k, case in enumerate(stored.cases)]
    except InputError as exc:
        raise PtxError(f"{where}: {exc}") from None
    stored_want = {i: {ours: case.outputs[theirs] for ours, theirs in names.items()} for i, case in enumerate(stored.cases)}
    if stored.weights_sha256 and digest and stored.weights_sha256 != digest:
        report.notes.append(f"note: {where.name} was made for other weights than {target.path.name}'s (sha256 "
                            f"{stored.weights_sha256[:12]} vs {digest[:12]}): the file changed since")
    report.notes.append(f"stored reference: {where.name}, {len(stored_cases)} case{'s' * (len(stored_cases) != 1)} "
                        f"from {stored.produced_by}")
    return Stored(where, stored, stored_cases, stored_want)


def held_to_stored(this, stored: Stored, row: Row, model) -> Row:
    """``row``'s model, still open, run on the stored reference's cases and judged against them."""
    got, error = run_until_failure(this.run_on(model), stored.cases)
    held = Row(row.backend, row.device, row.precision, against=STORED, error=error, optional=not row.is_reference,
               required=row.required)  # a row the user named is required against every reference
    # a reduced row by the one rule, with what the row's own verdict rests on: the bound the file records (or
    # measured again), a head's labels, your --inputs outrank the stored cases where stronger
    words = f"{len(got)} stored reference cases"  # each case it ran is compared: all are stored
    this.held_to(held, got, stored.want, stored.cases, None, None, (stored.reference.inputs, words),
                 model.metadata, lambda: row.verdict and as_evidence(row.verdict))
    return held
