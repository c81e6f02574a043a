"""The reference a verify holds its rows to, chosen once: a run's eager; a file's own runtime, unless the
file records that runtime NOT USABLE (its ptx.verdict, what predict warns of), then the next runtime it
records PASS, else the f32 file it was made from (issue 76: a user who follows predict's pointer reads in
verify what predict said)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ptx.contract.names import FULL_PRECISION
from ptx.contract.verdict import NOT_USABLE, PASS, in_one_line, recorded_verdicts
from ptx.errors import PtxError

from ..model.opening import DEFAULT_FILE_BACKEND, KIND_NAMES
from ..model.target import Target, Variant
from ..runtime import backends as registry
from .offers import f32_source, source_beside
from .report import against_label


@dataclass(frozen=True)
class ReferenceChoice:
    """What a verify's rows are held to: a run's eager; a file's own runtime (``backend`` at ``precision``), or,
    where the file records that runtime NOT USABLE (its ptx.verdict, what predict warns of), the next runtime
    it records PASS, else the f32 file it was made from (``path``), else its own runtime all the same, whose
    row then carries that verdict (``recorded``). ``note``: the choice in words, where it is not the default."""

    backend: str
    precision: str
    path: Path | None = None
    recorded: object | None = None  # the file's NOT USABLE verdict on the reference's own row
    note: str | None = None

    @property
    def label(self) -> str:
        """How rows name it in their ``against``: ort-cpu-int8, or ``net.onnx (ort-cpu)`` for the f32 file."""
        own = registry.get(self.backend).label("cpu", self.precision)
        return against_label(self.path, own) if self.path is not None else own


def reference_choice(target: Target, against: Path | None = None) -> ReferenceChoice:
    """The reference ``target``'s rows are held to (ReferenceChoice): the file's own runtime, unless the file
    records it NOT USABLE; a verify that held every row to it would call PASS what `ptx predict` warns of.
    ``against``: the --against file, which is its own row (held to itself, it would say nothing)."""
    default = ReferenceChoice(target.reference, target.precision)
    records = recorded_verdicts(target.found.metadata) if not target.is_run and target.found is not None else {}
    own = records.get(default.label)
    if own is None or own.status != NOT_USABLE:
        return default
    said = (f"note: {target.path.name} records {default.label} NOT USABLE (ptx {own.by}: "
            f"{in_one_line(own.reasons) or own.measured})")
    for variant in target.variants():  # in the registry's order: the next runtime the file records PASS
        if variant.device == "cpu" and variant.precision == target.precision and not variant.backend.third_opinion \
                and variant.label != default.label and getattr(records.get(variant.label), "status", None) == PASS \
                and not variant.unavailable():
            return ReferenceChoice(variant.backend.name, target.precision,
                                   note=f"{said}: every row is held to {variant.label}, which it records PASS")
    source = f32_source(target)
    if source is not None and not (against is not None and Path(source).resolve() == Path(against).resolve()):
        return ReferenceChoice(DEFAULT_FILE_BACKEND["onnx"], FULL_PRECISION, Path(source),
                               note=f"{said}: every row is held to {Path(source).name}, the f32 file it was made from")
    other = source_beside(target)
    f32 = "the f32 file it was made from is --against's row" if source is not None else \
        f"nor is the f32 file it was made from beside it ({other} there holds other bytes than it records)" if other \
        else "nor is the f32 file it was made from beside it"
    return replace(default, recorded=own, note=f"{said}; no runtime it records PASS runs here, {f32}: {default.label} is "
                                               "the reference all the same, and its row says what the file records")


def open_reference(target: Target, choice: ReferenceChoice, progress):
    """The reference's Model on the CPU: one line, exit 2, when it cannot open the model."""
    variant = Variant(registry.get(choice.backend), "cpu", choice.precision)
    opened = target if choice.path is None else target.beside(choice.path)
    progress(f"opening {opened.name} with {variant.label} (the reference)")
    try:
        why = None if target.is_run else opened.room_for(variant)
        if why:  # nothing can be judged without it: one line, not a process the kernel kills
            raise PtxError(f"{why}; the reference must run to judge any row: free memory, or verify on a larger machine")
        return opened.open(variant, probe=True)
    except PtxError as exc:
        if target.is_run:
            raise
        raise PtxError(f"{choice.label}, the reference for {KIND_NAMES[target.kind]}, cannot open it: {exc}") from None
