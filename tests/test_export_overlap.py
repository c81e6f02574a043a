"""Issue 67: a module's files are checked on a second thread while the next is written (export/pipeline.py),
the quick writer first, the lines said in the order the formats were asked for, every file dropped where
one fails; and the overlap is taken only where memory has room for it (export/module.py)."""
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ptx.errors import ValidationError
from ptx.export import pipeline
from ptx.export.formats import ExportFormat, Written


def fake_format(name: str, seconds: float, events: list, quick: bool = False) -> ExportFormat:
    def write(subject, example, path, signature, strings, **_):
        events.append((f"write {name} starts", time.perf_counter()))
        time.sleep(seconds)
        Path(path).write_text(name)
        events.append((f"write {name} ends", time.perf_counter()))
        return Written(name)

    return ExportFormat(name=name, description=name, serving_backend="ort-cpu", write=write, writes_quickly=quick)


def plan(overlap: bool) -> pipeline.ExportSource:
    source = pipeline.ExportSource("m", object(), (), None, {})
    source.overlap = overlap
    return source


@pytest.fixture
def checks(monkeypatch):
    """The check of each file replaced by one that takes 0.3 s, says where it ran, and fails for 'bad'."""
    events: list = []

    def checked(plan, fmt, tmp, final, made, on):
        events.append((f"check {fmt.name} starts on {threading.current_thread().name}", time.perf_counter()))
        time.sleep(0.3)
        events.append((f"check {fmt.name} ends", time.perf_counter()))
        if fmt.name == "bad":
            raise ValidationError("bad: its answers differ")
        return fmt.name, [f"{fmt.name} line"]

    monkeypatch.setattr(pipeline, "_checked", checked)
    return events


def placed(tmp_path: Path, kept: list):
    @contextmanager
    def place(fmt):
        tmp = tmp_path / f"{fmt.name}.tmp"
        yield tmp, tmp_path / fmt.name
        kept.append(fmt.name)  # reached only where the block ends without an exception

    return place


def at(events, what: str) -> float:
    return next(t for name, t in events if name.startswith(what))


def test_a_file_is_checked_while_the_next_is_written_and_said_in_the_order_asked(checks, tmp_path):
    slow, quick = fake_format("slow", 0.6, checks), fake_format("quick", 0.05, checks, quick=True)
    lines, kept = [], []
    results = pipeline.export_files(plan(True), [slow, quick], placed(tmp_path, kept), lines.append)
    assert at(checks, "write quick starts") < at(checks, "write slow starts")  # the quick writer first
    assert at(checks, "check quick starts") < at(checks, "write slow ends")  # its check overlaps the slow write
    assert all("ptx-check" in name for name, _ in checks if name.startswith("check") and "starts" in name)
    assert results == ["slow", "quick"] and lines == ["slow line", "quick line"] and sorted(kept) == ["quick", "slow"]


def test_in_turn_where_the_plan_says_its_checks_run_the_subject(checks, tmp_path):
    slow, quick = fake_format("slow", 0.1, checks), fake_format("quick", 0.05, checks, quick=True)
    lines, kept = [], []
    pipeline.export_files(plan(False), [slow, quick], placed(tmp_path, kept), lines.append)
    assert [name.split(" on ")[0] for name, _ in checks] == [
        "write slow starts", "write slow ends", "check slow starts", "check slow ends",
        "write quick starts", "write quick ends", "check quick starts", "check quick ends"]
    assert "MainThread" in next(name for name, _ in checks if name.startswith("check slow starts"))
    assert lines == ["slow line", "quick line"] and kept == ["slow", "quick"]


def test_a_check_that_fails_while_the_next_is_written_keeps_no_file(checks, tmp_path):
    bad, slow = fake_format("bad", 0.05, checks, quick=True), fake_format("slow", 0.6, checks)
    lines, kept = [], []
    with pytest.raises(ValidationError, match="bad: its answers differ"):
        pipeline.export_files(plan(True), [slow, bad], placed(tmp_path, kept), lines.append)
    assert kept == [] and lines == []


def test_the_overlap_is_taken_only_where_memory_holds_more_copies_of_the_weights(monkeypatch):
    from ptx.export import module as module_export
    from ptx.infer.runtime import memory_plan

    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights
    weights = 1000 * 1000 * 4 + 1000 * 4
    for room, expected in ((None, False), (memory_plan.OVERLAP_ROOM * weights - 1, False),
                           (memory_plan.OVERLAP_ROOM * weights + 1, True)):
        monkeypatch.setattr(memory_plan, "available_memory", lambda room=room: room)
        assert module_export._room_to_overlap(model) is expected


def test_a_file_that_failed_its_checks_stops_the_writing(checks, tmp_path):
    bad, slow = fake_format("bad", 0.05, checks, quick=True), fake_format("slow", 0.6, checks)
    late = fake_format("late", 0.05, checks)
    with pytest.raises(ValidationError, match="bad: its answers differ"):
        pipeline.export_files(plan(True), [slow, bad, late], placed(tmp_path, []), lambda _: None)
    assert not any(name.startswith("write late") for name, _ in checks)  # bad had failed by the time slow was written


def _stderr_file() -> tuple[int, int]:
    info = os.fstat(2)
    return info.st_dev, info.st_ino


@pytest.mark.parametrize("check_first", [False, True])
def test_a_check_beside_the_onnx_writer_leaves_descriptor_2_and_the_warnings_as_they_were(check_first):
    """The ONNX writer (main thread) and the shape certificate's held stderr and torch.jit's quiet load (the
    check thread) each save descriptor 2 or warnings.filters and restore them: interleaved, the one leaving
    last restored the other's redirect (stderr on /dev/null, every warning ignored, for the rest of the process)."""
    from ptx.contract.shape_certificate import _held_stderr
    from ptx.export.formats.onnx import _quiet_exporter
    from ptx.torch_quiet import quiet_jit

    stderr, filters = _stderr_file(), list(warnings.filters)

    def check():
        with quiet_jit():
            _held_stderr(lambda feeds: time.sleep(0.4) or {}, {})

    thread = threading.Thread(target=check)
    if check_first:
        thread.start()
        time.sleep(0.1)
    with _quiet_exporter():
        if not check_first:
            thread.start()
        time.sleep(0.6 if check_first else 0.1)  # the check leaves first, or last
    thread.join()
    assert _stderr_file() == stderr and warnings.filters == filters


def test_ctrl_c_while_a_file_is_written_begins_no_more_checks(checks, tmp_path):
    quick, second = fake_format("quick", 0.01, checks, quick=True), fake_format("second", 0.01, checks)

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    third = ExportFormat(name="third", description="third", serving_backend="ort-cpu", write=interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_files(plan(True), [quick, second, third], placed(tmp_path, []), lambda _: None)
    assert not any(name.startswith("check second") for name, _ in checks)  # queued behind quick's, not begun
