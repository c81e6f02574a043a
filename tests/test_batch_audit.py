"""An audit of issue 68's batch semantics and size search, as a new user meets them (audit-2).

Each test is a case the first version got wrong: a model whose every output spans the batch had its
composition check vanish without a word; a batch norm computing its own batch's statistics (which takes
no batch of one) kept its batch axis because no row could run alone, and verify then called the file a
disagreement with itself; the size search had no bound on its time; a model that refuses every size
said the cap on one line and the error on another. Plus the cases that held, kept: an output per row
along axis 1 ([T, B, H], seq-first), an integer output per row, a constant output, float noise within
tolerance not called "not per row".
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from ptx.contract.batch_rows import PER_ROW, probe_rows
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError
from ptx.export.module import export_module
from ptx_command import ptx


class AllSpan(torch.nn.Module):
    """Every output spans the batch: centred on the batch's mean, and a [batch, batch] similarity."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(4, 5)

    def forward(self, x):
        h = self.proj(x)
        return h - h.mean(0, keepdim=True), h @ h.T


class BatchStatistics(torch.nn.Module):
    """A batch norm on its batch's own statistics whatever eval() says, as a model that calls
    F.batch_norm(training=True) does: it takes no batch of one."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(4, 5)
        self.bn = torch.nn.BatchNorm1d(5)

    def forward(self, x):
        return torch.nn.functional.batch_norm(self.proj(x), None, None, self.bn.weight, self.bn.bias, training=True)


class Kinds(torch.nn.Module):
    """Per-row scores, their argmax (int64, per row), a parameter and a constant (no batch axis at all)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(4, 5)
        self.table = torch.nn.Parameter(torch.randn(10))

    def forward(self, x):
        y = self.proj(x)
        return y, y.argmax(-1), self.table * 1.0, torch.arange(10, dtype=torch.float32)


class SeqFirst(torch.nn.Module):
    """[T, B, H] out of [T, B, F], as a seq-first LSTM's: per row along axis 1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = torch.nn.LSTM(4, 6)

    def forward(self, x):
        return self.rnn(x)[0]


def exported(module, folder, inputs):
    lines: list[str] = []
    result = export_module(module, None, folder, formats=["onnx"], log=lines.append, inputs=inputs)
    return result, "\n".join(lines)


def test_a_model_whose_every_output_spans_the_batch_has_verify_say_it_checked_no_composition(tmp_path):
    result, said = exported(AllSpan(), tmp_path / "span", ["x=batchx4"])
    assert [t.batch_axis for t in result.signature.outputs] == [None, None]
    done = ptx("verify", tmp_path / "span" / "model.onnx", "--backends", "ort-cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("batch composition:")), None)
    assert line is not None, done.stdout
    assert line.startswith("batch composition: not checked: no output is per row as export found: output_0 "
                           "(depends on the other rows"), line
    assert "output_1 (spans the batch on axis 1 as well as axis 0)" in line, line
    doc = json.loads(ptx("verify", tmp_path / "span" / "model.onnx", "--backends", "ort-cpu", "--json").stdout)
    check = doc["rows"][0]["composition"]
    assert check["skipped"] and "output_1 (spans the batch" in check["left_out"] and check["ok"]


def test_batch_statistics_that_refuse_a_batch_of_one_are_probed_by_pairs_and_left_out(tmp_path):
    result, said = exported(BatchStatistics(), tmp_path / "bn", ["x=batchx4"])
    assert "output (depends on the other rows of its batch (rows 0, 1 and 3, 4 as batches of 2 differ" in said, said
    assert result.signature.outputs[0].batch_axis is None
    done = ptx("verify", tmp_path / "bn" / "model.onnx", "--backends", "ort-cpu")
    # it was "DISAGREE: ort-cpu vs itself, batch of 5": the model's design, not a fault of the file
    assert done.returncode == 0 and "DISAGREE" not in done.stdout, done.stdout + done.stderr
    assert "batch composition: not checked: no output is per row as export found: output (depends" in done.stdout


def test_the_same_batch_norm_in_eval_mode_is_per_row():
    bn = torch.nn.BatchNorm1d(5).eval()
    signature = Signature((TensorSig("x", "float32", ("batch", 5), 0),), (TensorSig("y", "float32", ("batch", 5), 0),))

    def run(feeds):
        with torch.no_grad():
            return {"y": bn(torch.from_numpy(feeds["x"])).numpy()}

    feeds = {"x": np.random.default_rng(0).random((5, 5), dtype=np.float32)}
    from ptx.contract.comparison import default_tolerance
    assert probe_rows(run, signature, feeds, run(feeds), lambda name: default_tolerance("float32", "cpu")) == \
        {"y": PER_ROW}


def test_integer_constant_and_seq_first_outputs_are_read_as_they_are(tmp_path):
    result, said = exported(Kinds(), tmp_path / "kinds", ["x=batchx4"])
    assert [t.batch_axis for t in result.signature.outputs] == [0, 0, None, None]
    assert "not every output is per row" not in said, said
    seq, said = exported(SeqFirst(), tmp_path / "seq", ["x=10xbatchx4"])
    assert seq.signature.outputs[0].batch_axis == 1 and "not every output is per row" not in said, said
    done = ptx("verify", tmp_path / "seq" / "model.onnx", "--backends", "ort-cpu")
    assert done.returncode == 0 and "batch composition: samples 0, 2, 4 alone = their rows" in done.stdout, done.stdout


def test_float_noise_of_a_batched_matmul_is_not_called_not_per_row(tmp_path):
    class Wide(torch.nn.Module):  # 512-wide sums at a scale of 50: a batched matmul rounds unlike a row's
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = torch.nn.Linear(512, 256), torch.nn.Linear(256, 256)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))) * 50

    result, said = exported(Wide(), tmp_path / "wide", ["x=batchx512"])
    assert result.signature.outputs[0].batch_axis == 0 and "not every output is per row" not in said, said


class Refuses(torch.nn.Module):
    """Refuses every size, and takes its time doing so (a model that fails late, after its heavy part)."""

    def __init__(self, seconds: float = 0.0):
        super().__init__()
        self.seconds, self.sizes = seconds, []

    def forward(self, x):
        self.sizes.append(x.shape[-1])
        time.sleep(self.seconds)
        raise ValueError("takes no such input")


def test_the_size_search_stops_at_its_time_bound_and_says_so_in_the_one_line_error(tmp_path, monkeypatch):
    import ptx.export.sizes as sizes

    monkeypatch.setattr(sizes, "SEARCH_SECONDS", 1.0)
    slow = Refuses(0.3)  # 11 doublings from 8 to 16384 would take 3.3 s or more
    with pytest.raises(PtxError, match=r"refuses the generated inputs at samples=8 .*doubling up to samples=16384; "
                       r"stopped after \d+ runs in \d+ s, before samples=\d+ \(the search's bound: 1 s\)") as refused:
        export_module(slow, None, tmp_path / "slow", formats=["onnx"], inputs=["x=batchxsamples"],
                      log=lambda line: None)
    searched = [n for n in slow.sizes if n > 8]
    assert searched and max(searched) < 16384, slow.sizes
    assert "\n" not in str(refused.value) and not (tmp_path / "slow").exists()


def test_a_model_that_refuses_every_size_is_one_line_exit_2_and_nothing_written(tmp_path):
    source = tmp_path / "never.py"
    source.write_text("import torch\n\nclass Never(torch.nn.Module):\n    def forward(self, x):\n"
                      "        raise ValueError('takes no such input')\n\ndef build():\n    return Never()\n")
    done = ptx("export", "--module", f"{source}:build", "--input", "x=batchxsamples", "--format", "onnx",
               "--out", tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "doubling up to samples=16384" in errors[0] and "--shape" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("record", ['{"atol": Infinity}', "{not json", '{"atol": "abc"}', "[1, 2]", '{"atol": -1}'])
def test_a_malformed_recorded_tolerance_is_said_in_one_note_and_not_used(tmp_path_factory, tmp_path, record):
    import onnx

    folder = tmp_path_factory.getbasetemp() / "tolerance"
    if not (folder / "model.onnx").exists():
        export_module(torch.nn.Linear(4, 3), None, folder, formats=["onnx"], inputs=["x=batchx4"],
                      atol=0.002, log=lambda line: None)
    model = onnx.load(str(folder / "model.onnx"))
    entry = next(p for p in model.metadata_props if p.key == "ptx.tolerance")
    assert json.loads(entry.value) == {"atol": 0.002}
    entry.value = record
    damaged = tmp_path / "model.onnx"
    onnx.save(model, str(damaged))
    done = ptx("verify", damaged, "--backends", "ort-cpu")
    # Infinity was read as --atol inf and refused as the user's option, which the user never gave
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    notes = [ln for ln in done.stdout.splitlines() if "ptx.tolerance" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: the file's ptx.tolerance") and "not used" in notes[0], notes
    assert "using the tolerance export validated at" not in done.stdout


def test_two_symbols_that_only_work_together_and_a_length_named_b(tmp_path):
    """y=batchxb read b as a second batch name, so y had no batch axis and export died of KeyError
    'batch'; the search then has to grow both lengths together, since neither alone is enough."""
    from ptx.contract.tensors import parse_declaration

    assert parse_declaration("y=batchxb").batch_axis == 0
    assert parse_declaration("y=bxn").batch_axis is None  # no name says which: as before, no batch axis

    class Both(torch.nn.Module):
        def forward(self, x, y):
            if x.shape[1] < 32 or y.shape[1] < 32:
                raise ValueError(f"needs both 32 long, got {x.shape[1]} and {y.shape[1]}")
            return x.sum(1, keepdim=True) + y.sum(1, keepdim=True)

    result, said = exported(Both(), tmp_path / "both", ["x=batchxa", "y=batchxb"])
    assert result.signature.sizes == (("a", 32), ("b", 32)), said
    assert "searched larger sizes, doubling up to a=16384, b=16384, and chose a=32, b=32" in said, said


def test_inspect_shows_the_sizes_export_found_and_a_user_s_shape_is_not_searched(tmp_path):
    class AtLeast100(torch.nn.Module):  # 8, 16, ... 64 refused: 128 is the first doubling it takes
        def forward(self, x):
            if x.shape[1] < 100:
                raise ValueError(f"needs 100 samples or more, got {x.shape[1]}")
            return x[:, :100] * 2

    result, said = exported(AtLeast100(), tmp_path / "long", ["x=batchxsamples"])
    assert result.signature.sizes == (("samples", 128),), said
    done = ptx("inspect", tmp_path / "long" / "model.onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sizes export validated at: samples=128 (verify and bench generate inputs at them" in done.stdout
    # the user's own size is theirs: refused as given, never searched past
    source = tmp_path / "long.py"
    source.write_text("import torch\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                      "        if x.shape[1] < 100:\n            raise ValueError(f'needs 100, got {x.shape[1]}')\n"
                      "        return x * 2\n\ndef build():\n    return M()\n")
    refused = ptx("export", "--module", f"{source}:build", "--input", "x=batchxsamples", "--shape", "samples=50",
                  "--format", "onnx", "--out", tmp_path / "mine")
    assert refused.returncode == 2 and "needs 100, got 50" in refused.stderr, refused.stdout + refused.stderr
    assert "sizes:" not in refused.stdout + refused.stderr and not (tmp_path / "mine").exists()
