"""How `ptx verify` prints a tutorial model's report (infer/verify/report.py): a two-line heading, the rows that ran, rows
skipped for one reason on one line, and a line per device this machine lacks; --all-rows lists all."""
from __future__ import annotations

from ptx.contract import Tolerance
from ptx.contract.comparison import OutputAgreement
from ptx.infer.verify.report import Report, Row

CPU, CUDA = {"atol": 1e-4, "rtol": 1e-3}, {"atol": 1e-3, "rtol": 1e-2}
NO_GPU = "no CUDA GPU visible to torch"
NO_DRIVER = "no NVIDIA GPU or driver found on this machine"
NO_INT8 = "no model.int8.onnx for convnet in runs/convnet: run `ptx export convnet --format onnx-int8` first"


def row(backend, device, max_abs, max_rel, agreement, accuracy, precision="f32") -> Row:
    logits = OutputAgreement("logits", Tolerance(1e30, 0.0), 1, max_abs, max_rel)
    return Row(backend, device, precision, batch_sizes=[1, 7, 64], outputs=[logits], argmax_agreement=agreement,
               accuracy=accuracy)


def cpu_machine_report() -> Report:
    """What verify reports for convnet on a CPU-only machine with no int8 export: two rows ran."""
    ran = [row("eager", "cpu", 0.0, 0.0, 1.0, 0.981), row("ort-cpu", "cpu", 7.6e-6, 2.4e-3, 1.0, 0.981)]
    report = Report("convnet", rows=ran, samples=1000, data="mnist-sample", tolerances={"cpu": CPU, "cuda": CUDA},
                    references={"cpu": "eager-cpu", "cuda": "eager-cpu for torch-free rows"})
    report.skipped = {"ort-cpu-int8": NO_INT8, "openvino-int8": NO_INT8, "eager-cuda": NO_GPU,
                      "eager-cuda-tf32": NO_GPU, "ort-cuda": NO_DRIVER, "ort-cuda-tf32": NO_DRIVER}
    report.unrunnable = {label: "cuda" for label in ("eager-cuda", "eager-cuda-tf32", "ort-cuda", "ort-cuda-tf32")}
    report.static = {"ort-cuda": "static placement: all 10 nodes on CUDA",
                     "ort-cuda-tf32": "static placement: all 10 nodes on CUDA"}
    return report


def test_rows_this_machine_cannot_run_are_one_line_per_device():
    lines = cpu_machine_report().table().splitlines()
    assert lines[0] == ("ptx verify convnet: 1,000 real test samples (mnist-sample) + edge inputs, each row "
                        "against eager")
    # Only the CPU ran, so only the CPU's tolerance is the rule; no reduced precision ran, so no gate.
    assert lines[1] == "pass: f32 |diff| <= 0.0001 + 0.001 x |eager| (cpu)"
    assert f"ort-cpu-int8, openvino-int8 skipped: {NO_INT8}" in lines  # one reason, one line
    assert (f"4 CUDA rows        not run: {NO_GPU}; static placement: all 10 nodes on CUDA; --all-rows lists them"
            in lines)
    assert not any(line.startswith(("eager-cuda", "ort-cuda")) for line in lines)
    assert lines[-1] == "all backends agree" and len(lines) == 9


def test_all_rows_lists_each_row_with_its_own_reason():
    lines = cpu_machine_report().table(all_rows=True).splitlines()
    assert f"eager-cuda-tf32    skipped: {NO_GPU}" in lines
    assert f"ort-cuda           not run: {NO_DRIVER}; static placement: all 10 nodes on CUDA" in lines
    assert f"openvino-int8      skipped: {NO_INT8}" in lines
    assert not any("CUDA rows" in line for line in lines)


def test_the_heading_names_a_reduced_precision_gate_and_another_reference_only_when_such_rows_ran():
    report = cpu_machine_report()
    report.rows.append(row("openvino", "cpu", 0.1, 37.6, 0.996, 0.978, precision="bf16"))
    report.rows.append(row("ort-cuda", "cuda", 2e-5, 1e-3, 1.0, 0.981))
    first, rule = report.table().splitlines()[:2]
    assert first.endswith("each row against eager (cuda rows: eager-cpu for torch-free rows)")
    assert rule == ("pass: f32 |diff| <= 0.0001 + 0.001 x |eager| (cpu), 0.001 + 0.01 x |eager| (cuda); "
                    "bf16: labels agree on >= 99%, accuracy at most 0.005 lower")


def test_json_keeps_every_row_and_the_whole_rule():
    doc = cpu_machine_report().to_dict()
    assert set(doc["skipped"]) == {"ort-cpu-int8", "openvino-int8", "eager-cuda", "eager-cuda-tf32", "ort-cuda",
                                   "ort-cuda-tf32"}
    assert doc["unrunnable"]["ort-cuda"] == "cuda" and doc["tolerances"]["cuda"] == CUDA
    assert {"f32", "bf16/tf32/int8", "exit status"} <= set(doc["rule"])
