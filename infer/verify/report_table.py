"""The table `ptx verify` prints from a Report (infer/verify/report.py): what was verified against what, each
row output by output (with a head's label agreement and accuracy), what did not run, batch composition, and the
verdict's last line."""
from __future__ import annotations

from ptx.contract.comparison import MAX_RELATIVE_ERROR, SCALE_WORDS, OutputAgreement, needed_atol_text
from ptx.contract.accuracy_rule import MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT
from ptx.contract.names import FULL_PRECISION

from ..runtime import backends as registry
from .comparator import short_reason
from .tables import text_table

# Report and Row in the annotations are report.py's, never evaluated (from __future__): report.py imports
# this module for Report.table(), so importing it back would close a circle.

# What an offered --locate command also does with --repro DIR, said before the command, whose line
# ends with it so that it runs as printed.
REPRO_NOTE = " (add --repro DIR for a repro to file)"


# -- the table: heading, each row output by output, what did not run, batch composition, the verdict --

def _heading(report: Report) -> list[str]:
    """What was verified against what, on which cases, and (a head's) the rule for the rows that ran."""
    from ..model.opening import KIND_NAMES

    what = f"{report.name}'s run" if report.is_run else f"{report.path.name}: {KIND_NAMES[report.kind]}"
    lines = [f"ptx verify {what}, reference {report.reference}", f"cases: {report.inputs}"]
    if not report.is_run and report.signature is not None:
        lines.insert(1, "inputs: " + "; ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in report.signature.inputs))
    devices = list(dict.fromkeys(r.device.partition(":")[0] for r in report.rows))
    if report.tolerances:
        bounds = ", ".join(f"{t['atol']:g} + {t['rtol']:g} x {SCALE_WORDS} ({device})"
                           for device, t in report.tolerances.items() if device in devices)
        lines.append(f"pass: f32 |diff| <= {bounds}" if bounds else "pass: see --help")
    reduced = list(dict.fromkeys(r.precision for r in report.rows if r.precision != FULL_PRECISION))
    if reduced:
        gate = (f"labels agree on >= {100 * MIN_LABEL_AGREEMENT:.0f}%, accuracy at most {MAX_ACCURACY_DROP:g} lower"
                if report.samples else f"class scores keep their argmax on >= {100 * MIN_LABEL_AGREEMENT:.0f}% of "
                f"rows, other outputs a relative error <= {', '.join(f'{MAX_RELATIVE_ERROR[p]:g} ({p})' for p in reduced)}")
        lines.append(f"{'/'.join(reduced)}: {gate}")
        # what decided each reduced row, where it is not that gate on these cases: the bound its file was
        # made to hold, or what export measured on stronger evidence than verify has here (read from the file)
        lines += list(dict.fromkeys(f"{r.label}: {r.verdict.describe()}" for r in report.rows  # once per row label
                                    if r.verdict is not None and (r.verdict.evidence == "bound" or not r.verdict.rechecked)))
    return lines + report.notes


def _cells(report: Report, row: Row) -> list[list[str]]:
    """The table's rows for ``row``: one per output (a head's labels and accuracy on its first), or
    one saying why it has none; then its batch composition's where the samples did not answer alone
    as inside a batch."""
    head = report.head
    blank = [""] * (6 + head)
    name, precision = (f"{row.backend} ({row.device})" if row.backend in registry.list_backends() else row.backend,
                       row.precision)
    not_run = "FAIL" if report.strict else "could not run"
    if row.is_reference:
        recorded = f"; {row.verdict.describe()}" if row.verdict is not None and row.status != "PASS" else ""
        ran = f"the reference: ran {len(row.cases)} case{'s' * (len(row.cases) != 1)}{recorded}"  # what predict warns of
        return [[name, precision, row.against, *blank, f"FAIL: {row.error}" if row.error else ran]]
    if row.error:
        verdict = f"{not_run}: {short_reason(row.error, report.path)}" if row.could_not_run else f"FAIL: {row.error}"
        return [[name, precision, row.against, *blank, verdict]]
    if row.no_case is not None:  # without a line of its own it would vanish from the table
        return [[name, precision, row.against, *blank, f"ran no case: {row.no_case}"]]
    cells = []
    for k, o in enumerate(row.outputs):
        if head and row.argmax_agreement is not None:
            argmax = f"{100 * row.argmax_agreement:.1f}%" if k == 0 else ""
        else:
            argmax = f"{o.same_decisions}/{o.decisions}" if o.decisions else "-"
        accuracy = ([f"{row.accuracy:.4f}" if row.accuracy is not None and k == 0 else "-"] if head else [])
        whole = len(row.outputs) == 1 or row.precision != FULL_PRECISION
        verdict = (row.describe() if k == 0 else "") if whole else _output_verdict(o)
        cells.append([name if k == 0 else "", precision if k == 0 else "", row.against if k == 0 else "",
                      *_output_cells(o, row.precision), argmax, *accuracy, verdict])
    if len(row.outputs) > 1 and row.precision == FULL_PRECISION and row.status != "PASS" and not row.disagreeing:
        cells.append([""] * (len(cells[0]) - 1) + [row.describe()])
    return cells + _alone_cells(report, row, name, precision)


def _alone_cells(report: Report, row: Row, name: str, precision: str) -> list[list[str]]:
    """Where the row's samples did not answer alone as inside its largest batch, or could not run
    alone: its rows against "itself, batch of N", output by output (the verdict's own words)."""
    check = row.composition
    if check is None or (check.ok and not check.error):
        return []
    against, blank = f"itself, batch of {check.batch}", [""] * (6 + report.head)
    if check.error:
        verdict = "FAIL" if report.strict else "could not run"
        return [[name, precision, against, *blank, f"{verdict}: {short_reason(check.error, report.path)}"]]
    return [[name, precision, against, *_output_cells(o), "-", *(["-"] if report.head else []), _output_verdict(o)]
            for o in check.outputs]


def _output_cells(o: OutputAgreement, precision: str = FULL_PRECISION) -> list[str]:
    """An output's numbers as a table row shows them: name, max abs, max rel, needed atol, atol / rtol (a
    reduced row is judged by its precision's rule, which the heading states, never by f32's atol; an embedding's
    vectors by their cosine and length: ptx.contract.embedding)."""
    rule = o.rule or f"{o.tolerance.atol:g} / {o.tolerance.rtol:g}"
    return [o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", needed_atol_text(o),
            rule if precision == FULL_PRECISION else f"{precision} rule"]


def _output_verdict(o: OutputAgreement) -> str:
    return "PASS" if o.ok else "FAIL: " + (o.problem or o.differs or f"{o.beyond:,} of {o.compared:,} beyond")


def table_lines(report: Report, all_rows: bool) -> list[str]:
    columns = ["backend", "precision", "against", "output", "max abs", "max rel", "needed atol", "atol / rtol",
               "argmax", *(["accuracy"] if report.head else []), "verdict"]
    cells = [columns] + [c for row in report.rows for c in _cells(report, row)]
    numeric = {columns.index(c) for c in ("max abs", "max rel", "needed atol", "argmax", *(["accuracy"] * report.head))}
    lines = [*_heading(report), *text_table(cells, numeric)]
    machine = {} if all_rows else report.unrunnable
    # Rows skipped for the same reason (ort-cpu-int8 and openvino-int8 both lack model.int8.onnx) share
    # a line, except with all_rows: one line each. ``static``: what a check found without running the row.
    shared: dict[tuple, list[str]] = {}
    for label, why in report.skipped.items():
        if label not in machine:
            shared.setdefault((why, report.static.get(label)) + ((label,) if all_rows else ()), []).append(label)
    lines += [f"{', '.join(labels)}: " + (f"not run: {why}; {checked}" if checked else f"skipped: {why}")
              for (why, checked, *_), labels in shared.items()]
    lines += _device_lines(report, machine)
    # One line for every row whose samples answered alone as inside the largest batch; a row where they
    # did not has table rows of its own (_alone_cells), its verdict FAIL with the same words.
    same = [r for r in report.rows if r.composition is not None and r.composition.checked and r.composition.ok]
    if same:
        first = same[0].composition
        worst = max(o.max_abs for r in same for o in r.composition.outputs)
        lines.append(f"batch composition: samples {', '.join(map(str, first.alone))} alone = their rows in a "
                     f"batch of {first.batch} on {len(same)} row{'s' * (len(same) != 1)} (max abs {worst:.2e})"
                     + (f"; left out, not per row as export found: {first.left_out}" if first.left_out else ""))
    else:  # no output per row (a contrastive or set model): the check had nothing to compare, said with why
        spans = next((r.composition for r in report.rows if r.composition is not None and r.composition.skipped
                      and r.composition.left_out), None)
        if spans is not None:
            lines.append(f"batch composition: not checked: no output is per row as export found: {spans.left_out}")
    # --locate traces f32 rows (a reduced row's offer is its triage, report.offers): the one line a
    # DISAGREE verdict of a file's verify offers, the files as they were given and the options that
    # made the verdict (--atol, --inputs, ...), so that it runs as printed
    if report.kind == "onnx" and any(r.traceable for r in report.failed if not r.is_reference
                                     and r.precision == FULL_PRECISION):
        more = (f" --against {report.against}" if report.against else "") + "".join(f" {g}" for g in report.given)
        lines.append(f"where it is born{REPRO_NOTE}: ptx verify {report.path} --locate{more}")
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
        line = f"{what}: not run: {report.skipped[labels[0]]}"  # the other reasons: --all-rows
        if len(checks) == 1:
            line += f"; {checks[0]}"
        lines.append(line + "; --all-rows lists them")
    return lines
