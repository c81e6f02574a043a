"""What ptx wrote before a contract's tensors were the tensor layer's (issue 43: TensorSpec went,
TensorSig is every tensor) still loads, writes back the strings it was, and predicts and verifies.

data/contracts-56b5ab3.json holds the ptx.* contract strings (model, description, labels, contract,
checksums, signature; raw_input for "convnet --input uint8") that ptx at commit 56b5ab3 wrote for
every tutorial model: ``ptx.export.metadata.artifact_strings(get(name).contract(), {}, "0" * 64)``,
the provenance keys left out. data/run-56b5ab3/rnn-hello is a run folder that ptx made then:
``ptx train rnn-hello --epochs 1 --offline --device cpu`` and ``ptx export rnn-hello`` (curves.png
left out): a token model, batch on axis 1, with a sequence axis."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptx import cli
from ptx.contract.metadata import from_strings, to_strings
from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import Signature
from ptx.infer import load
from ptx.models import get, list_models

DATA = Path(__file__).resolve().parent / "data"
CONTRACTS = json.loads((DATA / "contracts-56b5ab3.json").read_text())


def test_every_model_and_a_uint8_export_are_in_the_old_strings():
    assert set(CONTRACTS) == {*list_models(), "convnet --input uint8"}


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_old_contract_strings_load_and_write_back_what_they_were(name):
    strings = CONTRACTS[name]
    info = from_strings(strings)
    assert to_strings(info.contract, raw_input=info.raw_input) == {k: v for k, v in strings.items() if k != "signature"}
    # The signature an export writes now is the one recorded then: tensors, not the axes' names.
    assert Signature.from_json(strings["signature"], name) == signature_of_contract(info.contract, info.raw_input)
    model = name.split()[0]
    assert info.contract == get(model).contract()
    doc = json.loads(strings["contract"])
    for kind, tensor in (("input", info.contract.input), ("output", info.contract.output)):
        assert tensor.axes == tuple(doc[kind]["axes"]) and tensor.shape[tensor.batch_axis] == "batch"


def test_old_tensors_are_the_tensor_layer_with_their_batch_and_sequence_axes():
    lstm, rnn = from_strings(CONTRACTS["lstm"]).contract, from_strings(CONTRACTS["rnn-hello"]).contract
    assert (lstm.input.batch_axis, lstm.input.sample_shape) == (1, (28, 28))
    assert lstm.input.axes == ("row", "batch", "column")
    assert (rnn.input.batch_axis, rnn.input.seq_axis, rnn.output.seq_axis) == (1, 0, 1)
    raw = from_strings(CONTRACTS["convnet --input uint8"]).raw_input
    assert (raw.name, raw.dtype, raw.shape, raw.batch_axis) == ("picture", "uint8", ("batch", 28, 28), 0)


@pytest.fixture(scope="module")
def old_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run-56b5ab3")
    shutil.copytree(DATA / "run-56b5ab3" / "rnn-hello", root / "rnn-hello")  # verify records into the run folder
    return root


@pytest.mark.parametrize("backend", ["eager", "torchscript", "ort-cpu"])
def test_an_old_run_folder_predicts_through_each_backend(old_root, backend):
    predictor = load("rnn-hello", backend=backend, root=old_root)
    (answer,) = predictor.predict(["hello"])
    assert len(answer.label_name) == 5 and set(answer.label_name) <= set(predictor.labels)
    eager = load("rnn-hello", backend="eager", root=old_root).predict(["hello"])[0]
    assert answer.label_name == eager.label_name


def test_an_old_run_folder_verifies(old_root):
    result = CliRunner().invoke(cli.cli, ["verify", "rnn-hello", "--root", str(old_root),
                                          "--backends", "eager,torchscript,ort-cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("all agree: torchscript-cpu, ort-cpu (against eager-cpu)")
