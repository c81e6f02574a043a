"""Each command's help shows the options and defaults that apply to what it was given (issue 43, item
5): `ptx verify model.onnx --help` is a model file's help, `ptx verify convnet --help` a tutorial
model's, plain `--help` every option."""
from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from ptx.cli import cli


@pytest.fixture(scope="module")
def relu(tmp_path_factory):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path_factory.mktemp("help") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return str(path)


def help_of(*args) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="ptx")
    assert result.exit_code == 0, result.output
    return result.output


def options_of(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.startswith("  --")}


@pytest.mark.parametrize("command, file_batches, tutorial_batches", [("verify", "3,5", "1,7,64"),
                                                                     ("bench", "1,8", "1,64")])
def test_help_after_a_model_file_shows_a_files_options_and_defaults(relu, command, file_batches, tutorial_batches):
    everything, for_file, for_name = help_of(command), help_of(command, relu), help_of(command, "convnet")
    assert f"Options for a model file (`ptx {command} --help` lists every option)" in for_file
    # where the formatter wraps "[default: 1,7,64]" does not matter: read it with whitespace normalised
    flat = lambda text: " ".join(text.split())  # noqa: E731
    assert f"[default: {file_batches}]" in flat(for_file) and f"[default: {tutorial_batches}]" not in flat(for_file)
    assert f"[default: {tutorial_batches}]" in flat(for_name) and f"[default: {tutorial_batches}]" in flat(everything)
    assert "--root" in options_of(everything) and "--root" not in options_of(for_file)
    assert "--input" in options_of(for_file) and "--input" not in options_of(for_name)
    assert options_of(for_file) | options_of(for_name) == options_of(everything)


def test_an_option_of_the_other_kind_is_still_refused_in_one_line(relu):
    result = CliRunner().invoke(cli, ["verify", relu, "--samples", "3"])
    assert result.exit_code == 2 and "--samples counts real test samples, which only a tutorial model's contract" \
        in result.output


@pytest.mark.parametrize("command", ["export", "verify", "bench"])
def test_the_input_options_help_says_what_generated_inputs_are_and_that_shape_binds_a_symbol(command):
    # issue 58: --shape binds a symbolic dim by its name (seq=5), and generated masks and token types
    # are made as a tokenizer makes them; the help said only input=DIMS and random 0/1 masks.
    flat = " ".join(help_of(command).split())
    assert "Bind a symbolic dim by its name, e.g. seq=5" in flat
    assert "0 or 1 where the input is named like a mask" not in flat
    assert "ones then padding per row" in flat
    assert "below the rows of the embedding they index where ptx export found it or an ONNX graph's Gather shows it" \
        in flat
