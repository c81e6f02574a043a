"""`ptx export --module FILE.py:FACTORY` and ptx.export.export_module: a user's own nn.Module (the test
zoo, tests/own_models.py, reached from a FILE.py written here as a user would write it) exported to
ONNX and TorchScript, each file validated through ptx.infer.load at two batch sizes, its contract
(signature, weights digest) written in, reference tensors beside it; and the refusals, one line each.

Each torch.export-based ONNX export takes seconds: the exports are shared through module-scoped
fixtures, a few models per test."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import own_models as zoo
from ptx.contract.metadata import from_props
from ptx.contract.reference import load_reference
from ptx.contract.comparison import compare_output, default_tolerance
from ptx.contract.tensors import Signature
from ptx.contract.weights import digest_of
from ptx.errors import PtxError, ValidationError
from ptx.export import export_module
from ptx.infer.runtime.torch_files import load_pt2, load_torchscript
from ptx.export.factory import load_factory, load_state_dict_file
from ptx.infer import load
from ptx_command import ptx

TESTS = Path(__file__).resolve().parent

# A user's FILE.py: factories that return the module, or (module, example inputs).
ZOO_FILE = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    import torch
    import torch.nn as nn
    import own_models as zoo


    def residual():
        m = zoo.catalog()["residual"]
        return m.module, m.example


    def mobile():  # no example: --input declares it, with a dynamic height and width
        return zoo.MobileBlockNet().eval()


    def stateful():
        m = zoo.catalog()["stateful"]
        return m.module, m.example


    def specialised():  # reads its batch as a Python int: exported at batch 3, it runs at 3 only
        m = zoo.catalog()["specialised"]
        return m.module, m.example


    @torch.library.custom_op("userlib::wobble", mutates_args=())
    def wobble(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2


    @wobble.register_fake
    def _(x):
        return torch.empty_like(x)


    class Wobbly(nn.Module):  # a custom operator neither ONNX exporter can translate
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return wobble(self.fc(x))


    def wobbly():
        return Wobbly(), torch.rand(3, 4)


    def raises():
        raise ValueError("no weights here")


    def not_a_module():
        return 42
""")


def one_line(result, code: int) -> str:
    """The single error line of a refused command, after checking its exit code."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def metadata(path: Path) -> dict[str, str]:
    if path.suffix == ".onnx":
        return from_props({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    return json.loads(load_torchscript(path)[1])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("module-export")
    (folder / "zoo.py").write_text(ZOO_FILE)
    return folder


@pytest.fixture(scope="module")
def cli_exports(work) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Three zoo modules through the CLI: one with example inputs, one declared by --input with a
    dynamic height and width and a named output, the GRU with a state and a branch, scripted."""
    runs = {
        "residual": [],
        "mobile": ["--input", "image=batchx3xheightxwidth", "--output", "scores"],
        "stateful": ["--input", "x=stepsxbatchx6", "--input", "h0=1xbatchx12", "--input", "mode=:int64",
                     "--output", "scores", "--output", "h", "--torchscript-mode", "script"],
    }
    return {name: (ptx("export", "--module", f"zoo.py:{name}", *args, "--out", f"out/{name}", cwd=work),
                   work / "out" / name) for name, args in runs.items()}


@pytest.fixture(scope="module")
def library_exports(work) -> dict[str, Path]:
    """Two more through the library: two inputs (a dict of examples) and two outputs; float16."""
    catalog = zoo.catalog()
    two_io, half = catalog["two_io"], catalog["half"]
    out = {}
    example = dict(zip(two_io.input_names, two_io.example))
    export_module(two_io.module, example, work / "lib" / "two_io", output_names=two_io.output_names,
                  inputs=["picture=batchx1x16x16", "ids=batchxtokens:int64"], log=lambda _: None)
    out["two_io"] = work / "lib" / "two_io"
    export_module(half.module, half.example, work / "lib" / "half", log=lambda _: None)
    out["half"] = work / "lib" / "half"
    return out


def test_the_cli_exports_each_module_and_says_what_it_checked(cli_exports):
    for name, (result, out) in cli_exports.items():
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no exporter chatter, no deprecation warnings
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"module: {name} (") and "parameters); inputs " in lines[0]
        files = [ln for ln in lines if re.search(r"\d (kB|MB|GB)  ", ln) or ln.startswith("reference ")]
        assert [ln.split()[0] for ln in files] == ["onnx", "torchscript", "reference"], lines
        assert all("worst |diff| vs eager" in ln and "batches 3, 5" in ln for ln in files[:2]), files
        assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.reference.npz", "model.torchscript.pt"]
    stateful = cli_exports["stateful"][0].stdout
    # torch.export cannot branch on mode's value: the fallback is said in one line, naming the user's line.
    assert "the torch.export-based exporter refused (data-dependent control flow" in stateful
    assert "own_models.py:" in stateful and ": used the TorchScript-based one" in stateful


@pytest.mark.parametrize("name", ["residual", "mobile", "stateful", "two_io", "half"])
def test_every_file_loads_by_its_contract_and_answers_as_the_reference(cli_exports, library_exports, name):
    out = cli_exports[name][1] if name in cli_exports else library_exports[name]
    reference = load_reference(out / "model.reference.npz")
    assert reference.produced_by == f"eager PyTorch (torch {torch.__version__})" and len(reference.cases) == 2
    for file in ("model.onnx", "model.torchscript.pt"):
        strings = metadata(out / file)
        assert strings["weights_sha256"] == digest_of(out / file, "onnx" if file.endswith(".onnx") else "torchscript")
        assert Signature.from_json(strings["signature"], file) == reference.signature
        assert strings["model"] == (name if name in cli_exports else type(zoo.catalog()[name].module).__name__)
        model = load(out / file)  # no --input needed: the file records its signature
        assert model.signature == reference.signature
        for case in reference.cases:
            got = model.run(case.feeds)
            for sig in reference.signature.outputs:
                assert compare_output(sig.name, got[sig.name], case.outputs[sig.name], default_tolerance(sig.dtype),
                                      sig.batch_axis).ok, (file, sig.name)
    batches = sorted(case.feeds[reference.signature.inputs[0].name].shape[reference.signature.inputs[0].batch_axis]
                     for case in reference.cases)
    assert batches == [3, 5]


def test_the_signature_says_where_each_batch_is(cli_exports, library_exports):
    stateful = load_reference(cli_exports["stateful"][1] / "model.reference.npz").signature
    assert [(t.name, t.batch_axis) for t in stateful.inputs] == [("x", 1), ("h0", 1), ("mode", None)]
    assert [(t.name, t.shape, t.batch_axis) for t in stateful.outputs] == [("scores", ("batch", 3), 0),
                                                                          ("h", (1, "batch", 12), 1)]
    graph = onnx.load(str(cli_exports["stateful"][1] / "model.onnx")).graph
    assert any(node.op_type == "If" for node in graph.node)  # scripted: the branch on mode survives
    mobile = load(cli_exports["mobile"][1] / "model.onnx")
    assert mobile.signature.inputs[0].shape == ("batch", 3, "height", "width")
    assert mobile.run({"image": np.zeros((2, 3, 40, 56), np.float32)})["scores"].shape == (2, 7)
    half = load_reference(library_exports["half"] / "model.reference.npz")
    assert half.signature.inputs[0].dtype == "float16" and half.cases[0].outputs["output"].dtype == np.float16
    assert load_reference(library_exports["two_io"] / "model.reference.npz").signature.input_names == ["picture", "ids"]


def test_a_batch_the_exporter_specialised_is_refused_and_nothing_is_written(work):
    result = ptx("export", "--module", "zoo.py:specialised", "--out", "out/spec", cwd=work)
    line = one_line(result, 1)
    assert line.startswith("error: onnx: batch 5 does not run") and "fixed x's axis 0 (batch) to 3" in line, line
    assert not (work / "out" / "spec").exists()
    assert not [p for p in work.rglob(".*") if p.is_dir()]  # no staging folder left


def test_an_operator_neither_exporter_takes_is_one_line_naming_it(work):
    line = one_line(ptx("export", "--module", "zoo.py:wobbly", "--out", "out/wobbly", cwd=work), 2)
    assert "torch.export-based exporter refused (operator userlib::wobble has no ONNX translation)" in line, line
    assert "TorchScript-based exporter refused (operator userlib::wobble" in line
    assert not (work / "out" / "wobbly").exists()


def test_a_traced_branch_is_refused_with_the_way_to_export_it():
    """The GRU branches on its scalar mode: torch.export refuses, and tracing for the TorchScript-based
    exporter freezes one branch (and drops the input). Refused, saying how: script it, or torch.cond."""
    model = zoo.catalog()["stateful"]
    with pytest.raises(ValidationError) as caught:
        export_module(model.module, model.example, Path("never-written"), formats=["onnx"],
                      inputs=["x=stepsxbatchx6", "h0=1xbatchx12", "mode=:int64"], log=lambda _: None)
    message = str(caught.value)
    assert "left input 'mode' out of the graph" in message and "--torchscript-mode script" in message
    assert "own_models.py:" in message and "if bool(mode > 0)" in message
    assert not Path("never-written").exists()
    with pytest.raises(ValidationError, match=r"torchscript: batch 3: output_0: max abs .*tracing warned at "
                                              r"own_models.py:\d+"):
        export_module(model.module, model.example, Path("never-written"), formats=["torchscript"],
                      inputs=["x=stepsxbatchx6", "h0=1xbatchx12", "mode=:int64"], log=lambda _: None)


class OptionalBias(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x, bias=None):
        y = self.fc(x)
        return y if bias is None else y + bias


def test_a_scripted_module_torch_jit_save_refuses_is_one_line_saying_what_to_change(tmp_path):
    """`ptx export --module net.py:build --torchscript-mode script` of a forward(self, x, bias=None)
    printed a Python traceback ending in torch.jit.save's "strides() called on an undefined Tensor"."""
    with pytest.raises(PtxError, match=r"torchscript: torch.jit.save could not save the scripted net \(strides\(\) "
                                       r"called on an undefined Tensor\); annotate a forward\(\) parameter that "
                                       r"defaults to None as Optional\[torch.Tensor\], or try --torchscript-mode "
                                       r"trace"):
        export_module(OptionalBias().eval(), None, tmp_path / "out", formats=["torchscript"],
                      inputs=["x=batchx4"], name="net", torchscript_mode="script", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_an_input_declared_twice_is_said_so(tmp_path):
    """`--input x=batchx4 --input x=batchx4` was answered "takes its inputs by position, so the
    parameters before x need declaring too: add --input for " with no parameter named."""
    with pytest.raises(PtxError, match=r"^--input x is given twice: declare each of OptionalBias.forward\(x, bias\)'s "
                                       r"inputs once$"):
        export_module(OptionalBias().eval(), None, tmp_path / "out", formats=["onnx"],
                      inputs=["x=batchx4", "x=batchx4"], log=lambda _: None)


class CondGRU(zoo.StatefulGRU):
    """The stateful GRU with its branch written as torch.cond: torch.export takes it."""

    def forward(self, x, h0, mode):
        y, h = self.gru(x, h0)
        last = torch.cond(mode > 0, lambda t: torch.tanh(t) * 2.0, lambda t: t + 1.0, (y[-1],))
        return self.out(last), h


def test_torch_cond_exports_through_the_torch_export_based_exporter(tmp_path):
    """The torch.export-based exporter unrolls nn.GRU over the example's steps, so a dynamic step
    count would not survive it (validation refuses that export at batch 3, whose steps differ): the
    steps are fixed here, the batch and the branch stay dynamic."""
    module = CondGRU().eval()
    example = (torch.rand(5, 2, 6), torch.zeros(1, 2, 12), torch.tensor(1))
    with pytest.raises(ValidationError, match="onnx: batch 3 does not run"):
        export_module(module, example, tmp_path / "cond", formats=["onnx"],
                      inputs=["x=stepsxbatchx6", "h0=1xbatchx12", "mode=:int64"], log=lambda _: None)
    lines = []
    result = export_module(module, example, tmp_path / "cond", formats=["onnx"],
                           inputs=["x=5xbatchx6", "h0=1xbatchx12", "mode=:int64"], log=lines.append)
    assert "refused" not in "\n".join(lines)
    assert metadata(result.files[0].path)["exporter"] == "dynamo"
    assert any(n.op_type == "If" for n in onnx.load(str(result.files[0].path)).graph.node)


def test_a_failed_export_keeps_the_older_folder_whole(cli_exports, work):
    out = cli_exports["residual"][1]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    specialised = zoo.catalog()["specialised"]
    # another model's export there is refused before any work (replacing the folder would delete its files) ...
    with pytest.raises(PtxError, match=r"holds residual's export, not \w+'s; .*or --force to replace it"):
        export_module(specialised.module, specialised.example, out, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # ... and with --force, an export that fails keeps it whole
    with pytest.raises(ValidationError, match="batch 5"):
        export_module(specialised.module, specialised.example, out, force=True, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    (work / "mine").mkdir(exist_ok=True)
    (work / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PtxError, match=r"holds other files \(notes.txt\).*or --force"):
        export_module(specialised.module, specialised.example, work / "mine", log=lambda _: None)
    assert (work / "mine" / "notes.txt").read_text() == "keep me"


def test_a_checkpoint_with_a_prefix_on_every_key_loads_without_it(tmp_path):
    """A Lightning checkpoint ({'state_dict': {'model.l.weight': ...}}) or a DDP one ('module.')
    was refused: "does not fit opt: missing key 'l.weight' (and 1 more); unexpected key
    'model.l.weight'", with nothing said of what to do. The prefix is taken off, and said; keys that
    fit neither way are still refused as saved."""
    trained = torch.nn.Sequential(torch.nn.Linear(4, 2))
    torch.nn.init.constant_(trained[0].bias, 0.5)
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}, "epoch": 3}, lightning)
    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    assert load_state_dict_file(module, lightning, "net").endswith("without the prefix 'model.' on every key)")
    assert torch.equal(module[0].bias, trained[0].bias)
    ddp = tmp_path / "ddp.pt"
    torch.save({f"module.model.{k}": v for k, v in trained.state_dict().items()}, ddp)
    assert "without the prefix 'module.model.'" in load_state_dict_file(module, ddp, "net")
    partial = tmp_path / "partial.pt"
    torch.save({"model.0.weight": trained[0].weight}, partial)
    with pytest.raises(PtxError, match=r"does not fit net: missing key '0.weight' \(and 1 more\); unexpected key "
                                       r"'model.0.weight'"):
        load_state_dict_file(module, partial, "net")


def test_a_checkpoint_loads_strictly_and_a_wrong_one_is_one_line(work, tmp_path):
    module = zoo.ResidualCNN()
    good = tmp_path / "good.pt"
    trained = zoo.ResidualCNN()
    torch.nn.init.constant_(trained.fc.bias, 0.5)
    torch.save(trained.state_dict(), good)
    assert "loaded strictly" in load_state_dict_file(module, good, "residual")
    assert torch.equal(module.fc.bias, trained.fc.bias)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, wrapped)
    assert "['state_dict']" in load_state_dict_file(zoo.ResidualCNN(), wrapped, "residual")
    other = tmp_path / "other.pt"
    torch.save(zoo.MobileBlockNet().state_dict(), other)
    with pytest.raises(PtxError, match=r"does not fit residual: missing key '[\w.]+' \(and \d+ more\); unexpected key"):
        load_state_dict_file(zoo.ResidualCNN(), other, "residual")
    narrow = tmp_path / "narrow.pt"
    torch.save(zoo.ResidualCNN(classes=3).state_dict(), narrow)
    with pytest.raises(PtxError, match="size mismatch for fc.weight"):
        load_state_dict_file(zoo.ResidualCNN(), narrow, "residual")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PtxError, match="not a state_dict torch loads safely"):
        load_state_dict_file(zoo.ResidualCNN(), tmp_path / "junk.pt", "residual")
    line = one_line(ptx("export", "--module", "zoo.py:residual", "--checkpoint", other, "--out", "out/ckpt", cwd=work),
                    2)
    assert "--checkpoint" in line and "does not fit residual: missing key" in line
    assert not (work / "out" / "ckpt").exists()


def test_a_factory_not_found_names_the_close_one_and_says_how_many_more(tmp_path):
    """`--module mods.py:squeez` listed the first 8 names in file order (classes and functions
    mixed) as if they were all, hiding the factory meant; now functions come first, the rest are
    counted, and a near miss is named."""
    classes = "".join(f"class Net{i}:\n    pass\n" for i in range(8))
    (tmp_path / "many.py").write_text(classes + "def squeeze():\n    pass\ndef tiny():\n    pass\n")
    with pytest.raises(PtxError) as caught:
        load_factory(f"{tmp_path / 'many.py'}:squeez")
    assert str(caught.value).endswith("many.py defines no squeez (did you mean squeeze?); it defines squeeze, tiny, "
                                      "Net0, Net1, Net2, Net3, Net4, Net5 and 2 more"), str(caught.value)


def test_bad_files_and_factories_are_one_line_each(work):
    (work / "broken.py").write_text("def build(:\n    pass\n")
    (work / "needs.py").write_text("import not_a_package_anyone_has\n")
    cases = {
        "absent.py:build": "no such file absent.py",
        "zoo.py": "write FILE.py:FACTORY",
        "broken.py:build": "broken.py:1: syntax error",
        "needs.py:build": "importing needs.py raised ModuleNotFoundError: No module named 'not_a_package_anyone_has' "
                          "(at needs.py:1)",
        "zoo.py:nothing_here": "zoo.py defines no nothing_here; it defines residual, mobile",
        "zoo.py:raises": "raises() raised ValueError: no weights here (at zoo.py:",
        "zoo.py:not_a_module": "not_a_module() returned int; return an nn.Module, or (module, example inputs)",
    }
    for spec, message in cases.items():
        with pytest.raises(PtxError) as caught:
            load_factory(str(work / spec) if spec.startswith(("broken", "needs", "zoo.py:")) else spec)
        assert message in str(caught.value) and "\n" not in str(caught.value), (spec, str(caught.value))
    line = one_line(ptx("export", "--module", "zoo.py:raises", "--out", "out/raises", cwd=work), 2)
    assert "raises() raised ValueError: no weights here" in line
    assert not (work / "out" / "raises").exists()
    with pytest.raises(PtxError, match=r"declare each input in forward\(\)'s order with --input NAME=SHAPE\[:DTYPE\]"):
        export_module(zoo.MobileBlockNet(), None, work / "never", log=lambda _: None)
    assert not (work / "never").exists()


def test_declarations_are_checked_against_the_examples():
    module, example = zoo.catalog()["residual"].module, zoo.catalog()["residual"].example
    for inputs, message in [(["image=batchx3x32x32:int64"], "declares int64; the example tensor is float32"),
                            (["image=batchx3x16x16"], "disagree: input 'image' of the example has shape .*axis 2 must be 16"),
                            (["image=batchx3x32x32", "extra=batchx2"],  # two names for forward(x): neither is its parameter
                             r"--input image: \w+\.forward\(x\) has no parameter 'image'")]:
        with pytest.raises(PtxError, match=message):
            export_module(module, example, Path("never-written"), inputs=inputs, log=lambda _: None)
    assert not Path("never-written").exists()


def test_an_example_batch_of_one_is_raised_to_two_and_the_batch_stays_dynamic(tmp_path):
    fixed1 = zoo.catalog()["fixed1"]  # its example has batch 1, which torch.export would fix
    lines = []
    result = export_module(fixed1.module, fixed1.example, tmp_path / "f", formats=["onnx"],
                           log=lines.append)
    assert any(line.startswith("examples: batch of 1 repeated to 2") for line in lines)
    assert result.files[0].batches == (3, 5)
    assert load(tmp_path / "f" / "model.onnx").run({"x": np.zeros((7, 12), np.float32)})["output"].shape == (7, 4)


def test_pt2_and_int8_on_request(tmp_path):
    """pt2 compiles for ~20 s here: one small module."""
    module = zoo.HalfMLP().eval()  # float32 here
    result = export_module(module, torch.rand(4, 16), tmp_path / "p", formats=["pt2", "onnx-int8"],
                           output_names=["y"], log=lambda _: None)
    pt2, int8 = result.files
    assert (pt2.format, pt2.judged, int8.format, int8.judged) == ("pt2", True, "onnx-int8", False)
    _, strings, device = load_pt2(pt2.path)
    assert strings["weights_sha256"] == digest_of(pt2.path, "pt2") and device == "cpu"
    assert load(pt2.path).run({"x": np.ones((5, 16), np.float32)})["y"].shape == (5, 5)
    int8_strings = metadata(int8.path)
    assert int8_strings["precision"] == "int8" and int8_strings["weights_sha256"] == digest_of(int8.path, "onnx")
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in onnx.load(str(int8.path)).graph.node)
    # the one verdict, as any reduced file gets, by the generated cases alone (a module comes without samples)
    recorded = json.loads(int8_strings["verdict"])
    assert recorded["ort-cpu-int8"]["evidence"] == "generated" and int8.judgement.label == "ort-cpu-int8"
    assert int8.judgement.status == recorded["ort-cpu-int8"]["status"] and "judgement" not in int8_strings


def test_one_weight_changed_after_export_is_caught_by_the_kept_reference_and_against_torchscript(cli_exports,
                                                                                                  tmp_path):
    """Issue 36's acceptance: a module exported by ptx, one weight of its ONNX changed afterwards.
    predict and serve refuse the file (its weights no longer match its contract); verify says so and
    judges it by its outputs: against the reference tensors kept at export, and --against the
    TorchScript file of the same export, it exits 1 naming the output and its error."""
    from onnx import numpy_helper

    _, folder = cli_exports["residual"]
    proto = onnx.load(str(folder / "model.onnx"))
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    changed = numpy_helper.to_array(weight).copy()
    changed.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(changed, weight.name))
    copy = tmp_path / "model.onnx"
    onnx.save(proto, str(copy))
    shutil.copy(folder / "model.reference.npz", tmp_path / "model.reference.npz")
    with pytest.raises(PtxError, match="weights are not the ones"):
        load(copy)
    for extra in ([], ["--against", str(folder / "model.torchscript.pt")]):
        result = ptx("verify", str(copy), *extra, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        last = result.stdout.strip().splitlines()[-1]
        assert last.startswith("DISAGREE: ort-cpu vs stored reference, output output: max abs"), last
        assert "weights are not the ones it was exported with" in result.stdout
    against = ptx("verify", str(copy), "--against", str(folder / "model.torchscript.pt"), cwd=tmp_path).stdout
    assert re.search(r"model\.torchscript\.pt \(torchscript-cpu\)\s+f32\s+ort-cpu\s+output .*FAIL", against), against


def test_the_kept_reference_checks_a_deployment_where_torch_cannot_be_imported(cli_exports, tmp_path):
    """Issue 36, item 9: the export's ONNX and its reference tensors, copied to a machine without
    PyTorch (here: `import torch` made to fail), are checked against eager PyTorch's outputs there."""
    _, folder = cli_exports["residual"]
    for name in ("model.onnx", "model.reference.npz"):
        shutil.copy(folder / name, tmp_path / name)
    code = ("import sys; sys.modules['torch'] = None  # any import of torch now raises ImportError\n"
            "from ptx.cli import main; sys.argv = ['ptx', 'verify', 'model.onnx', '--json']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    stored = [r for r in doc["rows"] if r["against"] == "stored reference"]
    assert doc["ok"] and {r["backend"] for r in stored} >= {"ort-cpu", "openvino"} and all(r["ok"] for r in stored)
    produced = load_reference(tmp_path / "model.reference.npz").produced_by
    assert produced.startswith("eager PyTorch") and produced in result.stderr + json.dumps(doc)


class _MaskedIds(torch.nn.Module):
    """A BERT-like forward(input_ids, attention_mask): swapping the two still runs, and answers wrongly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, 4)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids) * attention_mask.unsqueeze(-1).float()


class _StarArgs(torch.nn.Module):
    def forward(self, *args):
        return args[0] - 2 * args[1]


def test_inputs_are_matched_to_forward_by_name_not_by_position(tmp_path):
    lines = []
    export_module(_MaskedIds(), None, tmp_path / "m", formats=["torchscript"], log=lines.append,
                  inputs=["attention_mask=batchxseq:int64", "input_ids=batchxseq:int64"])
    assert "inputs: in _MaskedIds.forward's order: input_ids, attention_mask" in lines
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.int64)
    want = _MaskedIds()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).detach().numpy()
    got = load(tmp_path / "m" / "model.torchscript.pt").run({"attention_mask": mask, "input_ids": ids})
    np.testing.assert_allclose(got["output"], want, rtol=1e-6)


def test_an_input_name_forward_does_not_take_is_refused_naming_its_parameters(tmp_path):
    with pytest.raises(PtxError, match=r"^--input ids: _MaskedIds.forward\(input_ids, attention_mask\) has no "
                                       r"parameter 'ids': name each --input as one of forward\(\)'s parameters"):
        export_module(_MaskedIds(), None, tmp_path / "m", formats=["torchscript"],
                      inputs=["ids=batchxseq:int64", "attention_mask=batchxseq:int64"], log=lambda _: None)
    with pytest.raises(PtxError, match=r"parameters before attention_mask need declaring too: add --input for "
                                       r"input_ids"):
        export_module(_MaskedIds(), None, tmp_path / "m", formats=["torchscript"],
                      inputs=["attention_mask=batchxseq:int64"], log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_a_forward_taking_star_args_keeps_the_declared_order_and_says_so(tmp_path):
    lines = []
    export_module(_StarArgs(), None, tmp_path / "s", formats=["torchscript"], log=lines.append,
                  inputs=["b=batchx3", "a=batchx3"])
    assert any("takes *args, so --input's order is forward()'s: b, a go in by position" in line for line in lines)
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    assert (load(tmp_path / "s" / "model.torchscript.pt").run({"a": a, "b": b})["output"] == -2).all()


def test_the_summary_names_every_symbolic_size_it_checked_not_only_the_batch(tmp_path):
    lines = []
    export_module(_MaskedIds(), None, tmp_path / "m", formats=["torchscript"], log=lines.append,
                  inputs=["input_ids=batchxseq:int64", "attention_mask=batchxseq:int64"])
    line = next(ln for ln in lines if ln.startswith("torchscript "))
    assert "; batches 3, 5; seq 8, 10; traced)" in line, line


def test_inspect_of_an_exported_torchscript_without_input_says_what_checked_its_metadata(cli_exports):
    """Issue 43: inspect of `ptx export --module`'s TorchScript file, with no --input given, said its
    metadata was "checked against the inputs you declared"; none were declared."""
    folder = cli_exports["residual"][1]
    text = ptx("inspect", str(folder / "model.torchscript.pt"), cwd=folder).stdout
    assert "contract: its ptx metadata (ptx.signature), checked against a probe run of the file" in text, text
    assert "you declared" not in text


class _Positions(torch.nn.Module):
    """Token ids looked up in 100 rows, positions in 16 (a position embedding), token types in 10
    (ptx's generated integers lie in [0, 10))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tokens, self.positions, self.types = (torch.nn.Embedding(100, 4), torch.nn.Embedding(16, 4),
                                                   torch.nn.Embedding(10, 4))

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        return (self.tokens(input_ids) + self.positions(positions) + self.types(token_type_ids)).mean(1)


def _exported_ids_model(module, tmp_path):
    """``module`` (input_ids, token_type_ids) exported to ONNX and opened as ptx serves it."""
    export_module(module, None, tmp_path / "p", formats=["onnx"], log=lambda _: None,
                  inputs=["input_ids=batchxseq:int64", "token_type_ids=batchxseq:int64"])
    return load(tmp_path / "p" / "model.onnx")


def test_an_input_longer_than_a_table_the_model_looks_up_is_named_with_its_limit(tmp_path):
    """Issue 43: 1,000 tokens into 512 position embeddings ended in ONNX Runtime's message about an
    internal node; the run's error names the input, its axis, the size given and the table's rows.
    A failure the 10-row token-type table does not cause (a token type of 50 in a sequence of 12) is
    not blamed on it."""
    model = _exported_ids_model(_Positions(), tmp_path)
    zeros = np.zeros((1, 40), np.int64)
    with pytest.raises(PtxError) as long:
        model.run({"input_ids": zeros, "token_type_ids": zeros})
    assert str(long.value).endswith("input 'input_ids' axis 1 (seq) is 40, longer than the 16 rows of "
                                    "'positions.weight' that the model looks up along it: give at most 16"), long.value
    with pytest.raises(PtxError) as bad_type:
        model.run({"input_ids": zeros[:, :12], "token_type_ids": np.full((1, 12), 50, np.int64)})
    # said as the value it holds (the table's rows are recorded with the model), not as a length
    assert "input 'token_type_ids' of _Positions holds 50; the model takes values in [0, 9] (ids into a table of " \
        "10 rows)" in str(bad_type.value) and "longer than" not in str(bad_type.value), bad_type.value
    # a negative id, which ONNX Runtime's Gather wraps to the table's last row where eager refuses it
    with pytest.raises(PtxError, match=r"input 'input_ids' of _Positions holds -1; the model takes values in \[0, 99\]"):
        model.run({"input_ids": np.full((1, 12), -1, np.int64), "token_type_ids": zeros[:, :12]})


class _OffsetPositions(_Positions):
    """RoBERTa's way: positions start after the padding index (2), so 16 rows take 14 tokens."""

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0) + 2
        return (self.tokens(input_ids) + self.positions(positions) + self.types(token_type_ids)).mean(1)


def test_a_limit_no_shorter_table_sets_is_not_blamed_on_the_token_types(tmp_path):
    """RoBERTa (66 positions from 2 on) at 65 tokens was told 'longer than the 2 rows of
    token_type_embeddings: give at most 2': the only table shorter than 65 is the token types', and
    2 tokens run. A table is blamed only where one row more than it holds fails."""
    model = _exported_ids_model(_OffsetPositions(), tmp_path)
    zeros = np.zeros((1, 15), np.int64)
    with pytest.raises(PtxError) as long:
        model.run({"input_ids": zeros, "token_type_ids": zeros})
    assert "rows of" not in str(long.value) and "Gather" in str(long.value), long.value


class Remembering(torch.nn.Module):
    """Keeps a digest of every input it is run on outside the exporters' tracing."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.seen: list[bytes] = []

    def forward(self, x):
        if type(x) is torch.Tensor and not torch.jit.is_tracing():  # the exporters trace with fake tensors
            self.seen.append(bytes(x.shape) + x.detach().numpy().tobytes())
        return self.linear(x)


def test_export_runs_the_module_once_per_input(tmp_path):
    """Issue 67 item 3: the module's eager answers are computed once each. The runs that teach the eager
    runner its outputs are the validation cases, and the example's answer is the run that found its limits;
    before, export ran the module again on both cases and on the example (12 runs where 9 are now)."""
    module = Remembering()
    result = export_module(module, (torch.rand(2, 4),), tmp_path / "out", formats=["onnx"], log=lambda _: None)
    assert result.files[0].batches == (3, 5)
    assert len(module.seen) == len(set(module.seen)) == 9, len(module.seen)


def test_a_scripted_module_exports(tmp_path):
    """A torch.jit.script'ed module takes no forward hook (RuntimeError: register_forward_hook is not
    supported on ScriptModules): the eager opening that puts a module's attributes back after each of its
    learning runs must not refuse it with a traceback; it exported before issue 67's hook."""
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
    result = export_module(module, (torch.rand(2, 4),), tmp_path / "out", formats=["torchscript"], log=lambda _: None,
                           reference=False)
    assert result.files[0].batches == (3, 5)
    extra = {"ptx.json": ""}
    torch.jit.load(str(result.files[0].path), _extra_files=extra)
    assert json.loads(extra["ptx.json"])["weights_sha256"] == digest_of(result.files[0].path, "torchscript")
