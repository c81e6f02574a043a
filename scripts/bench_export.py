#!/usr/bin/env python3
"""How much slower `ptx export --module` is than a bare exporter, and where its time goes (docs/benchmarks/export.md).

1. Whole processes, side by side in one run: `ptx export --module scripts/export_shapes.py:FACTORY`
   of a ResNet-50-shaped and a ViT-B/16-shaped module (random weights), with the default formats
   (onnx, torchscript) and with `--format onnx`, against the bare route a user would write without
   ptx: `torch.onnx.export(dynamo=True)` with a dynamic batch, then an ONNX Runtime session checked
   against eager at batches 3 and 5 (`python scripts/bench_export.py --bare FACTORY`). The three
   commands run in turn, the order reversed every round (a machine that grows busier favours none),
   and each keeps its best wall time of ``--rounds``; the ratios to the bare route are the measure
   (the machine is shared: absolute seconds vary with what else runs).
2. Where ptx's time goes: one default-formats export per module under cProfile, its cumulative
   seconds gathered into the steps of an export (the module's own runs, each format's writer, each
   file's opening, shape certificate and validation cases, the metadata written back in, the
   reference), printed as a table.

Usage: python scripts/bench_export.py [--modules resnet50,vit_b_16] [--rounds 2] [--no-profile]
Goals: default formats at most 1.6x the bare route, --format onnx at most 1.25x.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = HERE / "export_shapes.py"
MODULES = ("resnet50", "vit_b_16")
TARGETS = {"default": 1.6, "onnx": 1.25}


# -- the bare route: what a user writes without ptx ------------------------------------------------


def bare(factory: str, out: Path) -> None:
    """torch.onnx.export(dynamo=True) with a dynamic batch, then ONNX Runtime checked against eager at
    batches 3 and 5: the whole route, as one process."""
    import numpy as np
    import onnxruntime
    import torch

    sys.path.insert(0, str(HERE))
    import export_shapes

    module, example = getattr(export_shapes, factory)()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    torch.onnx.export(module, example, str(out), dynamo=True, input_names=["x"], output_names=["output"],
                      dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (3, 5):
        x = torch.rand(n, *example[0].shape[1:])
        with torch.inference_mode():
            want = module(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    print(f"bare: {out.name} holds at batches 3 and 5")


# -- whole processes, side by side ------------------------------------------------------------------


def timed(command: list[str], env: dict, root: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of ``command`` as a whole process (with ptx's packages from
    ``root`` where given: PTX_ROOT); exits where it fails."""
    env = {**env, "PTX_ROOT": root} if root else env
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def commands(factory: str, work: Path) -> dict[str, list[str]]:
    ptx = [sys.executable, "-m", "ptx", "export", "--module", f"{SHAPES}:{factory}", "--force"]
    return {"default": [*ptx, "--out", str(work / f"{factory}-default")],
            "onnx": [*ptx, "--format", "onnx", "--out", str(work / f"{factory}-onnx")],
            "bare": [sys.executable, str(Path(__file__).resolve()), "--bare", factory, str(work / f"{factory}.onnx")]}


def side_by_side(factory: str, rounds: int, work: Path, env: dict, before: str | None
                 ) -> dict[str, list[tuple[float, float]]]:
    """Each command's (wall, CPU) per round; with ``before`` (another checkout's root), ptx's two
    commands run from it too, as default-before and onnx-before."""
    runs = {k: (c, None) for k, c in commands(factory, work).items()}
    if before:
        runs.update({f"{k}-before": (c, before) for k, (c, _) in list(runs.items()) if k != "bare"})
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for r in range(rounds):
        for kind in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            command, root = runs[kind]
            times[kind].append(timed(command, env, root))
            print(f"  {factory} round {r + 1} {kind}: {times[kind][-1][0]:.1f} s wall, {times[kind][-1][1]:.1f} s CPU",
                  file=sys.stderr, flush=True)
    return times


def ratio_rows(factory: str, times: dict) -> list[str]:
    best = {k: min(w for w, _ in v) for k, v in times.items()}
    cpu = {k: min(c for _, c in v) for k, v in times.items()}
    rows = []
    labels = (("default-before", "onnx, torchscript (before)"), ("default", "onnx, torchscript"),
              ("onnx-before", "--format onnx (before)"), ("onnx", "--format onnx"))
    kinds = [(k, label) for k, label in labels if k in times]
    for kind, label in kinds:
        ratio = best[kind] / best["bare"]
        target = TARGETS[kind.split("-")[0]]
        held = "met" if ratio <= target else "not met"
        rows.append(f"| {factory} | {label} | {best[kind]:.1f} s | {best['bare']:.1f} s | **{ratio:.2f}x** "
                    f"| {cpu[kind] / cpu['bare']:.2f}x | {target}x: {held} |")
    return rows


# -- where the time goes ------------------------------------------------------------------------------

# (step, file suffix, function name[, caller's file suffix, caller's name]): the cumulative seconds of
# that function in one profiled export (only its calls from that caller, where one is named). Indented
# rows are parts of the row above them.
STEPS = [
    ("the module run on its example for its limits (examples.probe)", "export/examples.py", "probe"),
    ("the eager reference opened (infer.load: outputs learned by running the validation cases' inputs)",
     "infer/model/target.py", "load", "export/module.py", "export_module"),
    ("eager on the certificate's probes", "export/module.py", "_answer"),
    ("eager on the validation cases (answered by the opening's runs)", "export/module.py",
     "_validation_cases"),
    ("eager on the example (answered by the limits' run)", "export/module.py", "_case_of"),
    ("onnx: write (export, check, save, digest)", "export/formats/onnx.py", "write"),
    ("  torch.onnx.export", "torch/onnx/__init__.py", "export"),
    ("  saved with its metadata and digest", "export/formats/onnx.py", "save_with_metadata",
     "export/formats/onnx.py", "write"),
    ("onnx.checker full check (every onnx save, write's and add_metadata's)", "onnx/checker.py", "check_model",
     "export/formats/onnx.py", "save_with_metadata"),
    ("torchscript: write (trace, save, digest)", "export/formats/torchscript.py", "write"),
    ("  torch.jit.trace", "torch/jit/_trace.py", "trace"),
    ("  saved in memory (torch.jit.save, once)", "export/formats/torchscript.py", "_archive",
     "export/formats/torchscript.py", "write"),
    ("each file opened as ptx serves it (open_checked)", "export/validate.py", "open_checked"),
    ("each file's shape certificate (certify_model)", "export/certificate.py", "certify_model"),
    ("each file's validation cases (check_model)", "export/validate.py", "check_model"),
    ("onnx: certificate written in (add_metadata)", "export/formats/onnx.py", "add_metadata"),
    ("torchscript: certificate written into its ptx.json (add_metadata)", "export/formats/torchscript.py",
     "add_metadata"),
    ("torchscript: saved again with certificate and digest (Written.finish, before 2026-11-26)",
     "export/formats/torchscript.py", "save_with_metadata", "export/formats/torchscript.py", "finish"),
    ("reference written (save_reference)", "contract/reference.py", "save_reference"),
]


def step_seconds(stats: dict, suffix: str, name: str, caller: tuple[str, str] | None = None) -> float:
    """Cumulative seconds of ``name`` in a file ending ``suffix`` (its calls from ``caller`` alone)."""
    found = 0.0
    for (file, _, fn), (_, _, _, ct, callers) in stats.items():
        if fn != name or not file.endswith(suffix):
            continue
        if caller is None:
            found += ct
        else:
            found += sum(t[3] for (cfile, _, cfn), t in callers.items() if cfile.endswith(caller[0]) and cfn == caller[1])
    return found


def profile(factory: str, work: Path, env: dict, root: str | None = None) -> tuple[float, list[tuple[str, float]]]:
    """One default-formats export under cProfile (ptx from ``root`` where given): (its wall seconds,
    [(step, cumulative seconds)])."""
    import pstats

    out = work / f"{factory}-{'before' if root else 'after'}.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ptx", "export", "--module",
               f"{SHAPES}:{factory}", "--force", "--out", str(work / f"{factory}-profiled")]
    wall, _ = timed(command, env, root)
    stats = pstats.Stats(str(out)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = step_seconds(stats, "export/module.py", "export_module")
    rows = [("start: Python, imports, the module's file and its building", wall - total)]
    for step, suffix, name, *caller in STEPS:
        rows.append((step, step_seconds(stats, suffix, name, tuple(caller) or None)))
    rows.append(("export_module in all", total))
    return wall, rows


def breakdown_table(factory: str, runs: list[tuple[str, float, list[tuple[str, float]]]]) -> list[str]:
    """``runs``: (label, wall seconds, rows) of one or more profiled exports, side by side."""
    walls = ", ".join(f"{label} {wall:.1f} s" for label, wall, _ in runs)
    lines = [f"`ptx export --module {SHAPES.name}:{factory}` (onnx, torchscript) under cProfile, wall {walls} "
             "(cProfile adds its own overhead; read the shares):", "",
             "| step | " + " | ".join(f"{label} s | {label} share" for label, _, _ in runs) + " |",
             "| --- |" + " ---: | ---: |" * len(runs)]
    for k, (step, _) in enumerate(runs[0][2]):
        cells = " | ".join(f"{rows[k][1]:.1f} | {100 * rows[k][1] / wall:.0f}%" for _, wall, rows in runs)
        lines.append(f"| {step.replace('  ', '&nbsp;&nbsp;')} | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--rounds", type=int, default=2, help="whole processes of each command (best kept)")
    parser.add_argument("--no-profile", action="store_true", help="leave out the breakdown")
    parser.add_argument("--profile-modules", help="the modules profiled for the breakdown (default: --modules)")
    parser.add_argument("--no-times", action="store_true", help="only the breakdown")
    parser.add_argument("--before", help="another checkout's root (its PTX_ROOT): its ptx timed in the same rounds")
    parser.add_argument("--bare", nargs=2, metavar=("FACTORY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(args.bare[0], Path(args.bare[1]))
        return
    env = dict(os.environ)
    factories = args.modules.split(",")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="ptx-bench-export-") as tmp:
        work = Path(tmp)
        lines = []
        if not args.no_times:
            lines += ["| module | ptx formats | ptx export | bare route | wall ratio | CPU ratio | target |",
                      "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
            for factory in factories:
                rows = ratio_rows(factory, side_by_side(factory, args.rounds, work, env, args.before))
                lines += rows
                print("\n".join(rows), flush=True)
        for factory in ([] if args.no_profile else (args.profile_modules or args.modules).split(",")):
            runs = ([("before", *profile(factory, work, env, args.before))] if args.before else [])
            runs.append(("after" if args.before else "ptx", *profile(factory, work, env)))
            lines += ["", *breakdown_table(factory, runs)]
            print("\n".join(lines[-len(runs[0][2]) - 4:]), flush=True)
    load = os.getloadavg()
    print(f"\nRun of {started}, load average {load[0]:.1f} at the end; best of {args.rounds} whole processes each, "
          "alternated:\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
