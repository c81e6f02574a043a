"""How `ptx verify` prints its report: a short heading, the rows that ran, the rows skipped (those
sharing a reason on one line), and one line per device this machine lacks (a CPU machine has a dozen
CUDA rows that all say "no GPU").

Presentation only: the report (infer/verify.py) holds every row and reason, and `--json` carries
them all with the whole rule; `--all-rows` prints one line per row as before."""
from __future__ import annotations

from ptx.contract.comparison import MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT

COLUMNS = (f"{'backend':<18} {'precision':<9} {'batch sizes':<14} {'max abs':>9} {'max rel':>9} {'argmax':>8} "
           f"{'accuracy':>9}  verdict")


def heading(report: VerifyReport) -> list[str]:
    """Two lines: what was compared, then the rule for the rows that ran, in brief (`ptx verify --help`
    states it whole, --json carries it with every device's tolerance)."""
    devices = list(dict.fromkeys(v.device.partition(":")[0] for v in report.verdicts))
    # Where eager ran on the row's own device the reference goes without saying; say it where it did not.
    references = "; ".join(f"{device} rows: {ref}" for device, ref in report.references.items()
                           if device in devices and ref != f"eager-{device}")
    first = (f"ptx verify {report.model}: {report.samples:,} real test samples ({report.data}) + edge inputs, "
             "each row against eager" + (f" ({references})" if references else ""))
    bounds = ", ".join(f"{t['atol']:g} + {t['rtol']:g} x |eager| ({device})"
                       for device, t in report.tolerances.items() if device in devices)
    rule = f"pass: f32 |diff| <= {bounds}"
    reduced = list(dict.fromkeys(v.precision for v in report.verdicts if v.precision != "f32"))
    if reduced:
        rule += (f"; {'/'.join(reduced)}: labels agree on >= {100 * MIN_LABEL_AGREEMENT:.0f}%, "
                 f"accuracy at most {MAX_ACCURACY_DROP:g} lower")
    return [first, rule]


def ran_row(verdict) -> str:
    agree = "-" if verdict.argmax_agreement is None else f"{100 * verdict.argmax_agreement:.1f}%"
    accuracy = "-" if verdict.accuracy is None else f"{verdict.accuracy:.4f}"
    sizes = ",".join(map(str, verdict.batch_sizes))
    name = f"{verdict.backend} ({verdict.device})"
    return (f"{name:<18} {verdict.precision:<9} {sizes:<14} {verdict.max_abs:>9.2e} {verdict.max_rel:>9.2e} "
            f"{agree:>8} {accuracy:>9}  {verdict.describe()}")


def skipped_row(labels: str, why: str, checked: str | None) -> str:
    """A skipped row; ``checked`` is what a static check found without running it (ort-cuda's placement)."""
    return f"{labels:<18} " + (f"not run: {why}; {checked}" if checked else f"skipped: {why}")


def table(report: VerifyReport, all_rows: bool = False) -> str:
    """The report as text; ``all_rows`` lists every row this machine cannot run instead of one line per device."""
    lines = [*heading(report), COLUMNS, "-" * len(COLUMNS), *(ran_row(v) for v in report.verdicts)]
    machine = {} if all_rows else report.unrunnable
    # Rows skipped for the same reason (ort-cpu-int8 and openvino-int8 both lack model.int8.onnx) share
    # a line, except with all_rows: one line each.
    shared: dict[tuple, list[str]] = {}
    for label, why in report.skipped.items():
        if label not in machine:
            shared.setdefault((why, report.static.get(label)) + ((label,) if all_rows else ()), []).append(label)
    lines += [skipped_row(", ".join(labels), key[0], key[1]) for key, labels in shared.items()]
    lines += unrunnable_lines(report, machine)
    lines += composition_lines(report)
    lines.append(report.summary())
    return "\n".join(lines)


def unrunnable_lines(report: VerifyReport, machine: dict[str, str]) -> list[str]:
    """One line per device whose rows this machine cannot run: how many, the first reason, and what the
    static checks found where every row that had one agrees (ort-cuda's CUDA placement)."""
    lines = []
    for device in dict.fromkeys(machine.values()):
        labels = [label for label, d in machine.items() if d == device]
        reasons = [report.skipped[label] for label in labels]
        # The first clause of each (ort-cuda-graph adds whether it can be captured), where all agree.
        checks = list(dict.fromkeys(report.static[label].split("; ")[0] for label in labels if label in report.static))
        what = f"{len(labels)} {device.upper() if device.startswith('cuda') else device} row{'s' * (len(labels) != 1)}"
        line = f"{what:<18} not run: {reasons[0]}"  # the other reasons: --all-rows
        if len(checks) == 1:
            line += f"; {checks[0]}"
        lines.append(line + "; --all-rows lists them")
    return lines


def composition_lines(report: VerifyReport) -> list[str]:
    """One line for every f32 row whose samples answered alone as inside the largest batch; a line of
    its own for each row where they did not (its verdict says FAIL with the same words)."""
    checked = [v for v in report.verdicts if v.composition is not None and v.composition.skipped is None]
    if not checked:
        return []
    same = [v for v in checked if v.composition.ok]
    first = checked[0].composition
    lines = []
    if same:
        worst = max(o.max_abs for v in same for o in v.composition.outputs)
        lines.append(f"{'batch composition':<18} samples {', '.join(map(str, first.alone))} alone = their rows in a "
                     f"batch of {first.batch} on {len(same)} row{'s' * (len(same) != 1)} (max abs {worst:.2e})")
    lines += [f"{'batch composition':<18} {v.label}: {v.composition.summary()}" for v in checked
              if not v.composition.ok]
    return lines
