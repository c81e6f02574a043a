"""How `ptx verify` prints a report (infer/verify/report.py), one table for a tutorial model's run and a
model file alike: a heading (what against what, the cases, the gates of the rows that ran), the rows that
ran output by output (a head's label agreement and accuracy where there is a head), rows skipped for one
reason on one line, and a line per device this machine lacks; --all-rows lists all. (The tutorial layout's
tests, moved here from the two-table report of before issue 51.)"""
from __future__ import annotations

from ptx.contract import Tolerance
from ptx.contract.comparison import OutputAgreement
from ptx.infer.verify.report import Report, Row

CPU, CUDA = {"atol": 1e-4, "rtol": 1e-3}, {"atol": 1e-3, "rtol": 1e-2}
NO_GPU = "no CUDA GPU visible to torch"
NO_DRIVER = "no NVIDIA GPU or driver found on this machine"
NO_INT8 = "no model.int8.onnx for convnet in runs/convnet: run `ptx export convnet --format onnx-int8` first"


def row(backend, device, max_abs, max_rel, agreement, accuracy, precision="f32", against="eager-cpu") -> Row:
    logits = OutputAgreement("logits", Tolerance(1e30, 0.0), 1, max_abs, max_rel)
    return Row(backend, device, precision, against=against, batch_sizes=[1, 7, 64], outputs=[logits],
               argmax_agreement=agreement, accuracy=accuracy, cases=["real"])


def cpu_machine_report() -> Report:
    """What verify reports for convnet on a CPU-only machine with no int8 export: two rows ran."""
    ran = [row("eager", "cpu", 0.0, 0.0, 1.0, 0.981), row("ort-cpu", "cpu", 7.6e-6, 2.4e-3, 1.0, 0.981)]
    report = Report("convnet", rows=ran, samples=1000, data="mnist-sample", tolerances={"cpu": CPU, "cuda": CUDA},
                    head=True, inputs="1,000 real test samples (mnist-sample) + edge inputs, batch sizes 1, 7, 64")
    report.skipped = {"ort-cpu-int8": NO_INT8, "openvino-int8": NO_INT8, "eager-cuda": NO_GPU,
                      "eager-cuda-tf32": NO_GPU, "ort-cuda": NO_DRIVER, "ort-cuda-tf32": NO_DRIVER}
    report.unrunnable = {label: "cuda" for label in ("eager-cuda", "eager-cuda-tf32", "ort-cuda", "ort-cuda-tf32")}
    report.static = {"ort-cuda": "static placement: all 10 nodes on CUDA",
                     "ort-cuda-tf32": "static placement: all 10 nodes on CUDA"}
    return report


def test_rows_this_machine_cannot_run_are_one_line_per_device():
    lines = cpu_machine_report().table().splitlines()
    assert lines[0] == "ptx verify convnet's run, reference eager"
    assert lines[1] == "cases: 1,000 real test samples (mnist-sample) + edge inputs, batch sizes 1, 7, 64"
    # Only the CPU ran, so only the CPU's tolerance is the rule; no reduced precision ran, so no gate.
    assert lines[2] == "pass: f32 |diff| <= 0.0001 + 0.001 x the largest |reference| in its row (cpu)"
    assert f"ort-cpu-int8, openvino-int8: skipped: {NO_INT8}" in lines  # one reason, one line
    assert (f"4 CUDA rows: not run: {NO_GPU}; static placement: all 10 nodes on CUDA; --all-rows lists them"
            in lines)
    assert not any(line.startswith(("eager-cuda", "ort-cuda")) for line in lines)
    reference = next(line for line in lines if line.startswith("eager (cpu)"))
    assert reference.endswith("the reference: ran 1 case")
    ort = next(line for line in lines if line.startswith("ort-cpu (cpu)"))
    assert "100.0%" in ort and "0.9810" in ort and ort.endswith("PASS")
    assert lines[-1] == "all agree: ort-cpu (against eager-cpu)" and len(lines) == 10


def test_all_rows_lists_each_row_with_its_own_reason():
    lines = cpu_machine_report().table(all_rows=True).splitlines()
    assert f"eager-cuda-tf32: skipped: {NO_GPU}" in lines
    assert f"ort-cuda: not run: {NO_DRIVER}; static placement: all 10 nodes on CUDA" in lines
    assert f"openvino-int8: skipped: {NO_INT8}" in lines
    assert not any("CUDA rows" in line for line in lines)


def test_the_heading_names_a_reduced_precision_gate_only_when_such_rows_ran():
    report = cpu_machine_report()
    report.rows.append(row("openvino", "cpu", 0.1, 37.6, 0.996, 0.978, precision="bf16"))
    report.rows.append(row("ort-cuda", "cuda", 2e-5, 1e-3, 1.0, 0.981))
    lines = report.table().splitlines()
    assert lines[2] == ("pass: f32 |diff| <= 0.0001 + 0.001 x the largest |reference| in its row (cpu), 0.001 + 0.01 x "
                        "the largest |reference| in its row (cuda)")
    assert lines[3] == "bf16: labels agree on >= 99%, accuracy at most 0.005 lower"
    # the bf16 row's rule is the heading's, not an f32 atol it passes beside (max abs 0.1 "PASS" at atol 0.0001)
    assert " bf16 rule " in next(line for line in lines if line.startswith("openvino (cpu)"))
    assert " 1e+30 / 0 " in next(line for line in lines if line.startswith("ort-cuda (cuda)"))
    without_samples = Report("m.onnx", "onnx", "ort-cpu", rows=[row("openvino", "cpu", 0.1, 0.1, None, None, "bf16",
                                                                    "ort-cpu")], inputs="generated")
    assert ("bf16: class scores keep their argmax on >= 99% of rows, other outputs a relative error <= 0.02 (bf16)"
            in without_samples.table().splitlines())


def test_a_third_opinion_that_departs_is_a_note_unless_strict():
    report = cpu_machine_report()
    third = row("onnx.reference", "cpu", 0.11, 0.2, None, None)
    third.outputs = [OutputAgreement("logits", Tolerance(1e-4, 1e-3), 10, 0.11, 0.2, beyond=3)]
    third.advisory = True
    report.rows.append(third)
    assert third.status == "DIFFERS" and report.exit_status == 0
    assert report.summary().endswith("a third opinion differs: onnx.reference")
    third.advisory = False  # --strict
    assert third.status == "FAIL" and report.exit_status == 1
    assert report.summary().startswith("DISAGREE: onnx.reference vs eager-cpu, output logits")


def test_json_keeps_every_row_and_the_whole_rule():
    doc = cpu_machine_report().to_dict()
    assert set(doc["skipped"]) == {"ort-cpu-int8", "openvino-int8", "eager-cuda", "eager-cuda-tf32", "ort-cuda",
                                   "ort-cuda-tf32"}
    assert doc["unrunnable"]["ort-cuda"] == "cuda" and doc["tolerances"]["cuda"] == CUDA
    assert {"f32", "bf16/tf32/int8", "exit status"} <= set(doc["rule"])
    assert doc["model"] == "convnet" and doc["kind"] == "run" and doc["samples"] == 1000


# -- the summary is computed from the rows (issue 57 item 7) --------------------------------------

def _agreeing(summary: str) -> list[str]:
    """The labels the summary's "all agree:" names (empty where it names none)."""
    if not summary.startswith("all agree: "):
        return []
    named = summary[len("all agree: "):].split(" (against ")[0]
    return [] if named == "nothing else" else named.split(", ")


def file_report(*rows: Row) -> Report:
    reference = row("ort-cpu", "cpu", 0.0, 0.0, None, None, against="ort-cpu")
    return Report("m.onnx", "onnx", "ort-cpu", rows=[reference, *rows], inputs="generated, seed 0, batch 3 and batch 5")


def test_all_agree_names_only_rows_that_passed_on_a_case_they_compared():
    """Before: "onnx.reference ran on 0 of 2 cases" and then "all agree: ..., onnx.reference"; and
    "all agree: openvino, openvino-bf16; not usable at their precision: openvino-bf16"."""
    openvino = row("openvino", "cpu", 1e-6, 1e-6, None, None, against="ort-cpu")
    bf16 = row("openvino", "cpu", 0.3, 0.2, None, None, precision="bf16", against="ort-cpu")
    bf16.unusable = ["logits keeps its argmax on 60% of rows (< 99%)"]
    idle = Row("onnx.reference", against="ort-cpu", advisory=True,
               no_case="inputs over its limit of 100,000 values")
    report = file_report(openvino, bf16, idle)
    summary = report.summary()
    named = _agreeing(summary)
    assert named == ["openvino"]
    for r in report.rows:  # every row the line calls agreeing passed on at least one case; no other is called so
        assert (r.label in named) == (r.status == "PASS" and bool(r.cases) and r.no_case is None and not r.is_reference)
    assert "ran no case: onnx.reference (inputs over its limit of 100,000 values)" in summary
    assert "not usable at their precision: openvino-bf16" in summary
    # the row that ran nothing keeps a line of its own in the table, saying so (before: no line at all)
    line = next(ln for ln in report.table().splitlines() if ln.startswith("onnx.reference"))
    assert line.endswith("ran no case: inputs over its limit of 100,000 values")
    assert not idle.ok and report.to_dict()["rows"][-1]["agrees"] is False
    assert report.exit_status == 0


def test_no_row_agrees_when_the_only_rows_beside_the_reference_are_not_usable():
    bf16 = row("openvino", "cpu", 0.3, 0.2, None, None, precision="bf16", against="ort-cpu")
    bf16.unusable = ["logits keeps its argmax on 60% of rows (< 99%)"]
    summary = file_report(bf16).summary()
    assert _agreeing(summary) == [] and "openvino-bf16" in summary
    assert summary == "no row agrees with ort-cpu; not usable at their precision: openvino-bf16"


def test_a_report_whose_only_other_row_ran_no_case_compared_nothing():
    idle = Row("onnx.reference", against="ort-cpu", advisory=True, no_case="inputs over its limit of 100,000 values")
    report = file_report(idle)
    assert report.exit_status == 2 and "all agree" not in report.summary()
    assert "ran no case: onnx.reference (inputs over its limit of 100,000 values)" in report.summary()


def test_a_label_one_of_whose_rows_is_not_usable_is_not_said_to_agree_and_is_named_once():
    """Before: "all agree: ort-cpu-int8, ...; not usable at their precision: ort-cpu-int8, openvino-int8,
    ort-cpu-int8, openvino-int8" where the row against the stored reference missed the rule."""
    held = row("ort-cpu", "cpu", 0.01, 0.01, None, None, precision="int8", against="ort-cpu")
    stored = row("ort-cpu", "cpu", 0.3, 0.4, None, None, precision="int8", against="stored reference")
    stored.unusable = ["logits: relative error 0.447 (> 0.1 for int8)"]
    again = row("ort-cpu", "cpu", 0.3, 0.4, None, None, precision="int8", against="eager")
    again.unusable = list(stored.unusable)
    summary = file_report(held, stored, again).summary()
    assert "ort-cpu-int8" not in _agreeing(summary), summary
    assert summary.count("ort-cpu-int8") == 1 and "not usable at their precision: ort-cpu-int8" in summary, summary


def test_a_shape_certificate_fails_verify_at_a_size_the_user_named_and_is_a_note_elsewhere():
    """Without eager, verify cannot tell an axis the export fixed from the model's own bound (a stride-16
    network refuses 17; an exporter naming each input's batch apart is fed pairs no user sends): a size
    the user named (--max-shape, --min-shape) that the file refuses fails it; other failures are a note."""
    from ptx.contract.shape_certificate import REFUSED, AxisCheck, Certificate

    past = AxisCheck("seq", [1, 2, 7, 100], REFUSED, "the runtime refuses seq=100 (Gather: index out of range)",
                     failed_at=100)
    certificate = Certificate([AxisCheck("batch", [1, 2, 7]), past])
    assert certificate.failures({"seq": [100]}) == ["seq: the runtime refuses seq=100 (Gather: index out of range)"]
    assert certificate.failures({"seq": [64]}) == [] and certificate.failures({}) == []
    assert Certificate.from_json(certificate.to_json()).to_dict() == certificate.to_dict()
    report = file_report(row("openvino", "cpu", 1e-6, 1e-6, None, None, against="ort-cpu"))
    report.certificate, report.shape_failures = certificate, certificate.failures({"seq": [100]})
    assert report.exit_status == 1 and report.summary() == ("SHAPES: the shape certificate does NOT hold: seq: the "
                                                            "runtime refuses seq=100 (Gather: index out of range)")
    report.shape_failures = certificate.failures({})  # at sizes ptx chose: said in the summary, not failed
    assert report.exit_status == 0 and report.summary().startswith("all agree: openvino"), report.summary()
    assert "the shape certificate does not hold at sizes ptx chose (above): a note" in report.summary()


def test_a_named_reduced_row_fails_by_its_precisions_rule_not_by_f32s_atol():
    """`--backends ort-cpu-int8` makes the row required: below its rule it FAILs, and the last line says
    the rule it missed (before: "32 of 32 values beyond atol 0.0001 ... passes with atol >= 1.34e-01")."""
    named = row("ort-cpu", "cpu", 0.134, 3.28, None, None, precision="int8", against="ort-cpu")
    named.unusable, named.required = ["output: relative error 0.275 (> 0.1 for int8)"], True
    report = file_report(named)
    assert named.status == "FAIL" and report.exit_status == 1
    assert report.summary() == "NOT USABLE: ort-cpu-int8 vs ort-cpu: output: relative error 0.275 (> 0.1 for int8)"
    wrong = row("openvino", "cpu", 0.5, 3.0, None, None, against="ort-cpu")  # an f32 row beside it that fails
    wrong.error = "openvino stopped: out of memory"
    assert file_report(named, wrong).summary().startswith("DISAGREE: ort-cpu-int8 vs ort-cpu: "), "a real fault"
