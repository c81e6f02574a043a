"""Outputs of any structure, probed as a user would break them (an audit of issue 68, 1): a recorded
structure that cannot be read (malformed, or nested deeper than any module returns) is one line, exit 2,
where it is needed (predict, load().nest) and a note where it is not (inspect); `ptx inspect` says the
structure in one line; an answer that holds itself is refused in one line, not a RecursionError."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from ptx.contract.structure import flatten
from ptx.contract.tensors import ContractError
from ptx.errors import PtxError
from ptx.export.module import export_module
from ptx.infer import load
from ptx_command import ptx

STRUCTURE = "ptx.output_structure"
UNREADABLE = {"malformed": "{bad", "too deep": "[" * 100_000 + "]" * 100_000,
              "deep but valid": '{"list":' * 5_000 + '"a"' + "}" * 5_000}


class Pairs(torch.nn.Module):
    """A named tuple whose second field nests a tuple and a list: (a, (b, [c]))."""

    def forward(self, x):
        from collections import namedtuple

        return namedtuple("Pair", "logits extra")(x + 1, (x * 2, [x * 3]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    export_module(Pairs(), None, folder / "p", inputs=["x=batchx4"], formats=["onnx"],
                  log=lambda _: None)
    inputs = folder / "x.npz"
    np.savez(inputs, x=np.arange(8, dtype=np.float32).reshape(2, 4))
    return folder / "p" / "model.onnx", inputs


def with_structure(source, target, text):
    model = onnx.load(source)
    entry = next(p for p in model.metadata_props if p.key == STRUCTURE)
    entry.value = text
    onnx.save(model, target)
    return target


def test_inspect_says_the_structure_in_one_line_and_json_gives_it(exported):
    onnx_file, _ = exported
    done = ptx("inspect", onnx_file)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "structure" in line]
    assert lines == ["output structure (as the module returned them): Pair(logits=logits, extra=(extra_0, "
                     "[extra_1_0]))"], done.stdout
    doc = json.loads(ptx("inspect", onnx_file, "--json").stdout)
    assert doc["output_structure"] == {"namedtuple": {"logits": "logits", "extra": {"tuple": [
        "extra_0", {"list": ["extra_1_0"]}]}}, "type": "Pair"}, doc["output_structure"]


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_an_unreadable_structure_is_one_line_where_it_is_needed_and_a_note_where_not(exported, tmp_path, kind):
    onnx_file, inputs = exported
    broken = with_structure(onnx_file, tmp_path / "broken.onnx", UNREADABLE[kind])
    done = ptx("predict", broken, inputs)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and STRUCTURE in errors[0] and "re-export the model" in errors[0], done.stderr
    model = load(broken)  # the flat answer still comes; nest() says in one line why it cannot
    answer = model.run({"x": np.ones((1, 4), np.float32)})
    assert list(answer) == ["logits", "extra_0", "extra_1_0"]
    with pytest.raises(ContractError) as refused:
        model.nest(answer)
    assert "\n" not in str(refused.value) and STRUCTURE in str(refused.value), refused.value
    inspected = ptx("inspect", broken)  # inspect reads the rest of the file and says the structure is not read
    assert inspected.returncode == 0, inspected.stderr
    assert any(line.startswith("output structure: not read (") for line in inspected.stdout.splitlines()), \
        inspected.stdout


def test_an_answer_that_holds_itself_is_refused_in_one_line():
    t = np.zeros(1)
    looped = [t]
    looped.append(looped)
    with pytest.raises(PtxError, match=r"^the model returned a list nested deeper than ptx can walk \(or holding "
                                       r"itself\)"):
        flatten(looped, lambda v: isinstance(v, np.ndarray), lambda key, value: False)


@dataclasses.dataclass
class Parts:
    scores: torch.Tensor
    levels: list


class Dataclassed(torch.nn.Module):
    """Returns a plain dataclass (no ModelOutput, no pytree node), one field a list holding None."""

    def forward(self, x):
        return Parts(x.sum(1, keepdim=True), [x * 2, None])


def test_a_live_module_that_returns_a_dataclass_answers_as_its_file(tmp_path):
    """export names a dataclass's tensors by its fields; load(module) refused it ("returned Parts")."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    live = load(Dataclassed(), inputs=["x=batchx4"]).run({"x": x})
    export_module(Dataclassed(), None, tmp_path / "d", inputs=["x=batchx4"], formats=["onnx"],
                  log=lambda _: None)
    exported = load(tmp_path / "d" / "model.onnx")
    assert list(live) == exported.signature.output_names == ["scores", "levels_0"], list(live)
    filed = exported.run({"x": x})
    for name, want in (("scores", x.sum(1, keepdims=True)), ("levels_0", x * 2)):
        np.testing.assert_allclose(live[name], want, rtol=1e-6)
        np.testing.assert_allclose(filed[name], want, rtol=1e-6)
    assert exported.nest(filed)["levels"][1] is None
