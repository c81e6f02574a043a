"""A written file's shape certificate (ptx.contract.shape_certificate), at export: each dynamic axis
tried at 1, 2, 7 (and --max-shape) through the file as ptx serves it, its answers held to eager's;
an axis the export fixed refuses the file naming the node that fixed it, and the certificate of a
file that holds is written into it (ptx.shape_certificate), where ``ptx inspect`` shows it."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract.comparison import compare_output
from ptx.contract.shape_certificate import CHANGES, Certificate, Probe, certify, constant_of, onnx_fixing_nodes
from ptx.contract.tensors import Signature


def certify_model(fmt, model, path: Path, signature: Signature, shapes, tolerance) -> Certificate:
    """The certificate of the file at ``path`` (``fmt``'s), opened as ``model``: its answers on
    ``shapes.probes`` held to ``shapes.wants`` (eager's) where it is at full precision."""
    def compare(name: str, got, want) -> str:
        sig = signature.output(name)
        agreement = compare_output(name, got, want, tolerance(sig), sig.batch_axis)
        return agreement.summary() if agreement.problem or not agreement.ok else ""

    full = fmt.precision == "f32"
    return certify(signature, shapes.probes, model.run, wants=shapes.wants if full else None,
                   compare=compare if full else None, against="eager",
                   where=lambda symbol: _where(fmt.name, path, shapes.example_sizes.get(symbol)))


def findings(certificate: Certificate, cases_failed: bool = False) -> str:
    """What a certificate that does not hold found, in words, and what to do about it. Where the
    validation cases failed too (``cases_failed``) and every axis only changed the answers (none
    refused a size or moved an output's shape), no size is to blame: the answers differ at the
    cases' own sizes (GPT-2 fed random 0/1 masks, whose fully masked rows no two runtimes need agree on)."""
    fixed = "; ".join([*(a.line() for a in certificate.bad()), *filter(None, [certificate.outputs])])
    if cases_failed and not certificate.outputs and all(a.status == CHANGES for a in certificate.bad()):
        return (f"{fixed}: the answers differ at the validation cases' own sizes too, so no axis is to blame: look at "
                "what the model was fed (the 'validation inputs' line; --inputs takes real samples)")
    return (f"{fixed}: the module's code turns that size into a constant (a view or reshape with a number, "
            "int(x.size(1))): use -1 or x.shape there, or declare the axis at that fixed size (--input NAME=batchx8x...)")


def _where(fmt: str, path: Path, size: int | None) -> str:
    """The nodes of the file whose shape constant holds the example's ``size``, where the file says."""
    if size is None:
        return ""
    nodes = (onnx_fixing_nodes(path, size) if fmt.startswith("onnx") else
             _torchscript_nodes(path, size) if fmt == "torchscript" else [])
    return constant_of(size, nodes, "the example's size ")


def _torchscript_nodes(path: Path, size: int, limit: int = 2) -> list[str]:
    """A traced file's view/reshape whose size list holds ``size`` as a constant, with its module."""
    import torch

    from ptx.torch_quiet import quiet_jit

    with quiet_jit():
        graph = torch.jit.load(str(path), map_location="cpu").inlined_graph
    found = []
    for node in graph.nodes():
        if node.kind() not in ("aten::view", "aten::reshape", "aten::expand"):
            continue
        sizes = node.inputsAt(1).node()
        if sizes.kind() != "prim::ListConstruct":
            continue
        constants = [i.node().i("value") for i in sizes.inputs()
                     if i.node().kind() == "prim::Constant" and i.node().hasAttribute("value")
                     and i.node().kindOf("value") == "i"]
        if size in constants:
            scope = node.scopeName().split("/")[-1].split("::")[-1] or "forward"
            found.append(f"{node.kind()[6:]} in {scope} (sizes holding {size})")
        if len(found) >= limit:
            break
    return found


def module_fixes(module, signature: Signature, probes: Sequence[Probe], example: Mapping[str, int]) -> str:
    """Why the eager ``module`` itself cannot keep a declared dynamic axis, or '': it refuses a size
    of the probes (``x.view(B, 8, -1)`` takes only the example's sequence length), said with the
    line of forward() that refused it. Run where the module fails on inputs of other sizes than its
    example's, so that the failure names the axis, not only the shapes that did not multiply."""
    import torch

    from .refusal import describe_refusal, user_files

    files = user_files(module)
    refused: dict[str, list[int]] = {}
    why: dict[str, str] = {}
    for probe in probes:
        args = [torch.from_numpy(probe.feeds[t.name]) for t in signature.inputs]
        try:
            with torch.inference_mode():
                module(*args)
        except Exception as exc:  # noqa: BLE001 - any failure at this size is the finding
            refused.setdefault(probe.symbol, []).append(probe.size)
            why.setdefault(probe.symbol, describe_refusal(exc, files))
    if not refused or len(refused) == len({p.symbol for p in probes}) and all(
            len(sizes) == sum(p.symbol == s for p in probes) for s, sizes in refused.items()):
        return ""  # it fails at every size: not an axis it fixes, and the caller's error says what fails
    name = type(module).__name__
    return "; ".join(
        f"{symbol} is declared dynamic and {name}.forward fixes it: eager PyTorch refuses {symbol}="
        f"{', '.join(map(str, sizes))}" + (f" (the example's {symbol} is {example[symbol]})" if symbol in example else "")
        + f": {why[symbol]}" for symbol, sizes in refused.items()) + (
        ": the code turns that size into a constant (a view or reshape with a number): use -1 or x.shape there, or "
        "declare the axis at its fixed size (--input NAME=batchx8x...)")
