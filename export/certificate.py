"""A written file's shape certificate (ptx.contract.shape_certificate), at export: each dynamic axis
tried at 1, 2, 7 (or from --min-shape up, and --max-shape) through the file as ptx serves it, its
answers held to eager's; an axis the export fixed refuses the file naming the node that fixed it, a
size eager itself refuses is the model's bound and said so, and the certificate of a file that holds
is written into it (ptx.shape_certificate), where ``ptx inspect`` shows it."""
from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Sequence

import numpy as np

from ptx.contract.shape_certificate import (CHANGES, Bound, Certificate, Probe, certify, constant_of,
                                             onnx_fixing_nodes, quote)
from ptx.contract.tensors import Signature
from ptx.errors import PtxError


def certify_model(fmt, model, path: Path, signature: Signature, shapes, tolerance) -> Certificate:
    """The certificate of the file at ``path`` (``fmt``'s), opened as ``model``: its answers on
    ``shapes.probes`` held to ``shapes.wants`` (eager's) where it is at full precision, each output by
    ``tolerance(its TensorSig)``."""
    full = fmt.precision == "f32"
    certificate = certify(signature, shapes.probes, model.run, wants=shapes.wants if full else None,
                          tolerance=(lambda name: tolerance(signature.output(name))) if full else None, against="eager",
                          where=lambda symbol: _where(fmt.name, path, shapes.example_sizes.get(symbol)),
                          bounds=shapes.bounds, reference_takes=True)  # eager took every probe's size
    certificate.rows = dict(shapes.rows)  # eager's per-row finding, which every file of the module shares
    return certificate


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
    return found[:limit]


def attributes_restorer(module):
    """A function that puts back every submodule's plain attributes as they are now. A forward may
    change the module on its way (transformers' Swin shrinks a layer's window_size and shift_size to an
    image no larger than its window, and keeps them): every later size would then be refused, or
    answered, by another model than the user's, and the exporters would trace that one."""
    kept = [(m, {k: v for k, v in vars(m).items() if not k.startswith("_")}) for m in module.modules()]

    def restore() -> None:
        for m, attributes in kept:
            for name, value in attributes.items():
                if getattr(m, name, None) is not value:
                    with suppress(AttributeError, TypeError):  # a property or slot: not the module's state to put back
                        setattr(m, name, value)

    return restore


def eager_bounds(module, signature: Signature, probes: Sequence[Probe], example: Sequence, restore=None
                 ) -> dict[str, Bound] | None:
    """What the eager ``module`` itself refuses among the probes' sizes: {symbol: the sizes and why, said
    as its bound, not the export's} where it takes other sizes of that axis (another probe's, or twice
    the example's: ConvNext's strided stages refuse 1, 2 and 7 pixels and take 128, BERT's 64
    positions refuse --max-shape seq=100); a PtxError, with the line of forward() that refused it,
    where it takes none but the example's size (``x.view(B, 8, -1)``): forward fixes the axis. None
    where it fails at every size of every axis: not a matter of sizes, and the caller's error says
    what fails. ``example``: the example inputs (tensors in the signature's order); ``restore``: puts the
    module's attributes back after each run (attributes_restorer, taken before any run changed them)."""
    import torch

    from .refusal import describe_refusal, user_files

    files = user_files(module)
    restore = restore or attributes_restorer(module)  # the module as the user made it, after every run

    def refusal(args) -> str:  # '' where the module takes them
        try:
            with torch.inference_mode():
                module(*args)
            return ""
        except Exception as exc:  # noqa: BLE001 - any failure at this size is the finding
            return describe_refusal(exc, files)
        finally:
            restore()

    refused: dict[str, list[int]] = {}
    why: dict[str, str] = {}
    for probe in probes:
        said = refusal([torch.from_numpy(probe.feeds[t.name]) for t in signature.inputs])
        if said:
            refused.setdefault(probe.symbol, []).append(probe.size)
            why.setdefault(probe.symbol, said)
    tried = {s: sum(p.symbol == s for p in probes) for s in {p.symbol for p in probes}}
    if refused and len(refused) == len(tried) and all(len(sizes) == tried[s] for s, sizes in refused.items()) \
            and refusal(list(example)):  # one that takes its example (a fixed batch, 64 pixels) is judged by axis
        return None
    sizes_of = signature.symbol_sizes({t.name: np.asarray(a) for t, a in zip(signature.inputs, example)})
    bounds, fixes = {}, []
    for symbol, sizes in refused.items():
        # every axis of the symbol twice the example's (the example repeated along it): a size on the other side of it
        twice = [torch.tile(a, [2 if d == symbol else 1 for d in t.shape]) for t, a in zip(signature.inputs, example)]
        if len(sizes) == tried[symbol] and refusal(twice):  # it takes only the example's size
            at = ", ".join(map(str, [*sizes, 2 * sizes_of[symbol]]))
            fixes.append(f"{symbol} is declared dynamic and {type(module).__name__}.forward fixes it: eager PyTorch "
                         f"refuses {symbol}={at} (the example's {symbol} is {sizes_of[symbol]}): {quote(why[symbol])}")
            continue
        # the sizes refused said again: a --min-shape already given that is still too small reads as such
        larger = (f": --min-shape {symbol}=SIZE tries sizes from SIZE up (a SIZE above {max(sizes)})"
                  if len(sizes) == tried[symbol] and max(sizes) < sizes_of[symbol] else "")
        bounds[symbol] = Bound(sizes, f"the model itself refuses {symbol}={', '.join(map(str, sizes))} "
                                      f"({quote(why[symbol])}): its bound, not the export's{larger}")
    if fixes:
        # a view with a number is the usual cause, not the only one (a check that raises on other sizes)
        raise PtxError("; ".join(fixes) + ": where the code turns that size into a constant (a view or reshape "
                       "with a number), use -1 or x.shape there; else declare the axis at its fixed size (--input "
                       "NAME=batchx8x...)")
    return bounds
