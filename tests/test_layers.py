"""The flow runs one way: contract -> models -> trainers -> the runtime floor (infer's formats, runtime and
model, and the ptx.infer package that opens models) -> export -> infer's commands (verify, predict, bench,
inspect, locate) -> serve -> cli (issue 67: export calls the runtime it validates on). Every import in
the package is read (static analysis, lazy imports inside functions included) and none may point to
a later stage; the contract imports no stage and no torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder -> the import package it installs as (pyproject's package-dir).
PACKAGES = {"ptx": "ptx", "models": "ptx.models", "trainers": "ptx.trainers", "export": "ptx.export",
            "infer": "ptx.infer", "serve": "ptx.serve"}
STAGES = ["contract", "models", "trainers", "floor", "export", "infer", "serve", "cli"]
# infer's subpackages beneath export: what a file is, one runner per runtime, a Model opened from a target
FLOOR = ("ptx.infer.formats", "ptx.infer.runtime", "ptx.infer.model")
# Modules of the ptx folder that every stage may use, with the contract: errors, file writes and reads,
# what the tutorial references mean, this machine's CPU, the optional extras, the scoped CUDA math
# settings (torch imported inside its functions only), a step run in a child process, and the
# silencing of torch's notices around torch.jit and Inductor (export writes, infer loads), and the
# pt2 package's pytree types (export records their modules, infer imports them).
BASE = {"ptx", "ptx.errors", "ptx.atomic", "ptx.files", "ptx.tutorials", "ptx.machine", "ptx.extras",
        "ptx.cuda_math", "ptx.child", "ptx.torch_quiet", "ptx.pytree_types"}


def stage_of(module: str) -> str | None:
    if module in BASE or module == "ptx.contract" or module.startswith("ptx.contract."):
        return "contract"
    if module == "ptx.infer" or any(module == f or module.startswith(f + ".") for f in FLOOR):
        return "floor"
    for stage in ("models", "trainers", "export", "infer", "serve"):
        if module == f"ptx.{stage}" or module.startswith(f"ptx.{stage}."):
            return stage
    if module == "ptx.cli" or module.startswith("ptx.cli.") or module in ("ptx.__main__", "ptx.models_table",
                                                                          "ptx.terminal"):
        return "cli"
    return None


def modules():
    """(module name, is package, file) for every source file of the installed package."""
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield ".".join([package, *parts]), is_package, path


def imports_of(module: str, is_package: bool, path: Path) -> set[str]:
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    return found


def test_every_source_file_belongs_to_a_stage():
    unplaced = [m for m, _, _ in modules() if stage_of(m) is None]
    assert unplaced == []


def test_no_stage_imports_a_later_one():
    back_arrows = []
    for module, is_package, path in modules():
        here = STAGES.index(stage_of(module))
        for target in imports_of(module, is_package, path):
            there = stage_of(target)
            if there is not None and STAGES.index(there) > here:
                back_arrows.append(f"{module} ({stage_of(module)}) imports {target} ({there})")
    assert back_arrows == []


def test_infer_and_serve_never_import_export():
    """Export sits on the runtime floor (infer's formats, runtime and model), which cannot import it (it
    is below), and infer's commands and serve have no reason to reach into it: what they share with
    export lies on the floor, in the contract or in a base module (ptx.child, the default formats,
    provenance). Lazy imports inside functions count (the walker reads every import node)."""
    reaching = sorted(f"{module} imports {target}" for module, is_package, path in modules()
                      if stage_of(module) in ("floor", "infer", "serve")
                      for target in imports_of(module, is_package, path)
                      if target == "ptx.export" or target.startswith("ptx.export."))
    assert reaching == []


def target_of_calls(path: Path) -> list[tuple[str | None, int]]:
    """(the enclosing top-level function or class, line) of every ``Target.of(...)`` call in ``path``."""
    found = []
    for top in ast.parse(path.read_text(), str(path)).body:
        for node in ast.walk(top):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "of":
                owner = node.func.value
                if (isinstance(owner, ast.Name) and owner.id == "Target") or \
                        (isinstance(owner, ast.Attribute) and owner.attr == "Target"):
                    found.append((getattr(top, "name", None), node.lineno))
    return found


def test_the_argument_is_decided_where_it_enters():
    """Issue 57: a command's argument becomes a Target once, where it enters (the CLI's commands and
    ptx.infer.load), and everything after (verify, bench, inspect, predict, serve, Target's own
    methods) receives that Target: a second Target.of anywhere else could decide the same argument
    another way."""
    elsewhere = [f"{module}:{line} ({where})" for module, _, path in modules() for where, line in target_of_calls(path)
                 if not module.startswith("ptx.cli.") and (module, where) != ("ptx.infer.model.target", "load")]
    assert elsewhere == []


def test_the_target_check_finds_a_call(tmp_path):
    bad = tmp_path / "engine.py"
    bad.write_text("def run(x):\n    from .target import Target\n    return [target.Target.of(x), Target.of(x)]\n")
    assert target_of_calls(bad) == [("run", 3), ("run", 3)]


def head_branches(path: Path) -> list[int]:
    """Lines of ``path`` that ask whether a model has a head (``model.head is None``, ``head is not None``)."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Is, ast.IsNot))
            and ((isinstance(node.left, ast.Attribute) and node.left.attr == "head")
                 or (isinstance(node.left, ast.Name) and node.left.id == "head"))]


def test_serving_and_predicting_treat_every_model_alike():
    """Issue 57 item 6: a model without a head is served through an identity head
    (ptx.infer.model.head.IdentityHead), so serve and predict never choose a code path by whether
    a model has one: what a head cannot mean (the bytes route, labels) is absent because it says so."""
    asked = [f"{module}:{line}" for module, _, path in modules() if module.startswith(("ptx.serve", "ptx.infer.predict"))
             for line in head_branches(path)]
    assert asked == []


def test_the_head_check_finds_a_branch(tmp_path):
    bad = tmp_path / "served.py"
    bad.write_text("def f(model, head):\n    return model.head is None or head is not None or model.x is None\n")
    assert head_branches(bad) == [2, 2]


def test_the_check_catches_a_back_arrow(tmp_path):
    """The walker itself works: a trainer importing infer is found."""
    bad = tmp_path / "loop.py"
    bad.write_text("def f():\n    from ptx.infer.model.opening import load\n")
    assert "ptx.infer.model.opening" in imports_of("ptx.trainers.loop", False, bad)
    relative = tmp_path / "x.py"
    relative.write_text("from ...infer import api\n")
    assert "ptx.infer.api" in imports_of("ptx.export.formats.x", False, relative)


# infer/'s subpackages by layer (docs/layout.md): a file says what it is < one runner per runtime <
# a Model opened from a target < the commands' engines < where two sides part. Peers of one layer may
# use each other, never in a circle.
INFER_LAYERS = {"formats": 0, "runtime": 1, "model": 2, "verify": 3, "predict": 3, "bench": 3, "inspect": 3,
                "locate": 4}


def infer_layer(module: str) -> int | None:
    parts = module.split(".")
    return INFER_LAYERS.get(parts[2]) if len(parts) > 2 and parts[:2] == ["ptx", "infer"] else None


def test_infer_is_subpackages_by_layer_with_few_modules_at_its_top():
    top = sorted(p.name for p in (ROOT / "infer").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 3, top
    assert {p.name for p in (ROOT / "infer").iterdir() if p.is_dir() and (p / "__init__.py").is_file()} \
        == set(INFER_LAYERS)
    for package in INFER_LAYERS:  # each says in one line what it is
        doc = ast.get_docstring(ast.parse((ROOT / "infer" / package / "__init__.py").read_text()))
        assert doc and "\n" not in doc.strip(), package


MAX_MODULE_LINES = 500  # issue 51: a module past this holds more than one job


def test_no_module_is_over_500_lines():
    long = {str(path.relative_to(ROOT)): n for _, _, path in modules()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these by job: {long}"


def test_no_infer_layer_imports_a_higher_one():
    upward = []
    for module, is_package, path in modules():
        here = infer_layer(module)
        if here is None:
            continue
        for target in imports_of(module, is_package, path):
            there = infer_layer(target)
            if there is not None and there > here:
                upward.append(f"{module} imports {target}")
    assert upward == []


def circles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of ``graph`` (module -> modules it imports) meets."""
    circles, state = [], {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return circles


def test_no_import_circle_of_any_length():
    """Imports inside functions count: a circle of lazy imports is still a circle of the house."""
    known = {m: (p, path) for m, p, path in modules()}
    graph = {}
    for module, (is_package, path) in known.items():
        # ``from pkg import name`` reads as pkg.name: keep the targets that are modules of the package;
        # a module's own package (its __init__) is not a circle with it
        targets = {t if t in known else t.rpartition(".")[0] for t in imports_of(module, is_package, path)}
        graph[module] = {t for t in targets if t in known and t != module and not module.startswith(t + ".")}
    assert circles_of(graph) == []
    assert circles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("module", ["ptx.contract", "ptx.contract.pictures", "ptx.infer", "ptx.serve", "ptx.cli",
                                    "ptx.cli.predict", "ptx.machine", "ptx.extras", "ptx.cuda_math"])
def test_light_modules_import_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch" not in result.stdout, f"{module} imported torch"
    if module.startswith("ptx.contract") or module in BASE:
        assert result.stdout.strip() == "[]", f"{module} imported {result.stdout.strip()}"


COMMAND_MODULES = sorted(f"ptx.cli.{p.stem}" for p in (ROOT / "ptx" / "cli").glob("*.py")
                         if p.stem not in ("__init__", "options", "targets"))


@pytest.mark.parametrize("argv", [[], ["--help"], ["predict", "--help"], ["data", "list", "--help"]])
def test_the_cli_imports_a_command_module_only_when_that_command_runs(argv):
    """`import ptx.cli` and `ptx --help` import no command's module; `ptx predict` imports predict's
    and no other command's (the trainers', exporters' and server's imports stay off its start-up)."""
    code = ("import sys\nfrom ptx.cli import main\n"
            f"sys.argv = ['ptx', *{argv!r}]\n"
            "if len(sys.argv) > 1:\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {COMMAND_MODULES!r} if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    wanted = [f"ptx.cli.{argv[0]}"] if argv and argv[0] != "--help" else []
    assert result.stderr.strip().splitlines()[-1] == repr(wanted)
    assert "ptx.cli.models" in COMMAND_MODULES and "ptx.cli.predict" in COMMAND_MODULES


def test_the_command_listing_known_without_imports_is_each_commands_own():
    """`ptx --help` lists each command from ptx.cli.COMMANDS without importing it: the same module
    and short help as the command itself gives, at every terminal width."""
    import click

    from ptx.cli import COMMANDS, _listing_stub, cli

    ctx = click.Context(cli)
    assert sorted(COMMANDS) == cli.list_commands(ctx)
    assert sorted(listed.module for listed in COMMANDS.values()) == COMMAND_MODULES
    for name, listed in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command.name == name
        assert command.callback.__module__ == listed.module
        for limit in range(20, 240, 3):
            assert _listing_stub(name, listed).get_short_help_str(limit) == command.get_short_help_str(limit), \
                (name, limit)


def test_serving_a_model_through_onnx_runtime_imports_no_torch(runs, tmp_path):
    """The server's ONNX Runtime path stays torch-free: load a model into it as `ptx serve` does,
    with verify and bench records naming torch backends too (auto must not import torch to rank them)."""
    import shutil

    from ptx.infer.bench.timing import BenchRow
    from ptx.infer.model.records import record_bench, record_verify
    from ptx.infer.verify.report import Report, Row

    run = tmp_path / "convnet"
    run.mkdir()
    for name in ("checkpoint.pt", "model.onnx", "model.torchscript.pt"):
        shutil.copy2(runs.trained("convnet") / name, run / name)
    rows = [Row(b, batch_sizes=[1, 7, 64], argmax_agreement=1.0, accuracy=0.9) for b in ("eager", "torchscript", "ort-cpu")]
    record_verify(Report("convnet", rows=rows), run)
    record_bench([BenchRow(label, "cpu", b, 1.0, 1.0, 1.0, speed * b, 10)
                  for label, speed in (("eager-cpu", 100.0), ("torchscript-cpu", 90.0), ("ort-cpu", 1000.0))
                  for b in (1, 64)], run)
    code = (f"import sys\nfrom ptx.serve.server import load\nfrom ptx.serve.service import ServeOptions, Service\n"
            f"from ptx.infer.model.target import Target\nservice = Service(ServeOptions())\n"
            f"load(service, [Target.of('convnet', root={str(tmp_path)!r})], backend='auto', precision=None, "
            f"device='cpu', log=lambda _: None)\n"
            f"print(service.models['convnet'].model.backend, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ort-cpu", "False"]


def test_every_package_folder_is_in_pyproject_so_a_wheel_holds_it():
    """pyproject lists packages one by one (the folders map onto ptx.*): a subpackage left out is
    missing from a built wheel, though an editable install hides it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, is_package, _ in modules() if is_package}
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_locate_asks_the_runners_and_measures_with_the_one_comparison():
    """Issue 57: locate runs its sides through infer/runtime's runners (no second runtime layer, no
    locate/sides.py with its own label dispatchers), and no module but ptx.contract.comparison
    defines a comparison of tensors (locate's TensorError and verdict's relative_error were two)."""
    assert not (ROOT / "infer" / "locate" / "sides.py").exists()
    runtimes = ("onnxruntime", "openvino", "onnx.reference")
    for path in sorted((ROOT / "infer" / "locate").glob("*.py")):
        module = "ptx.infer.locate." + path.stem
        found = [m for m in imports_of(module, False, path) if m.startswith(runtimes)]
        assert not found, f"{path.name} imports {found}: ask the row's runner (infer/runtime) instead"
    for package in ("infer", "serve", "export", "ptx"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            if path != ROOT / "ptx" / "contract" / "comparison.py":
                assert not defined & {"compare_output", "OutputAgreement", "TensorError",
                                      "relative_error"}, path


def test_export_opens_no_runtime_session_of_its_own():
    """Issue 67: export runs and times its files through the runtime floor's sessions
    (infer/runtime/ort_session.py), by the floor's one timer (infer/runtime/timing.py)."""
    own = [str(p.relative_to(ROOT)) for p in (ROOT / "export").rglob("*.py") if "InferenceSession(" in p.read_text()]
    assert own == []
