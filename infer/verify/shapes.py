"""verify's shape certificate of a model file (ptx.contract.shape_certificate): each dynamic axis
of its signature tried at 1, 2, 7 (or from --min-shape up, and --max-shape) through the file's own runtime, which must take
the size and return the declared output shapes; there is no eager here to hold the answers to, so
they are not compared (export's certificate, recorded in the file, compared them with eager's)."""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from ptx.contract.shape_certificate import (CERTIFICATE_KEY, Certificate, certify, constant_of, onnx_fixing_nodes,
                                             probes, recorded_bounds, refused_by_bound, shape_problem)
from ptx.errors import PtxError
from ptx.contract.tensor_inputs import VERIFY_BATCHES, make_feeds, plan_inputs
from ptx.contract.tensors import Signature


def certificate_notes(target, reference, plan: Mapping | None, max_sizes: Mapping[str, int] | None,
                      min_sizes: Mapping[str, int] | None = None) -> tuple[Certificate | None, list[str], list[str]]:
    """(the certificate of ``target``'s file through its ``reference`` model, the notes that say it and
    how it compares with the one export recorded, what fails verify: Certificate.failures at the sizes
    the user named), or (None, [], []) where the file has no dynamic axis."""
    signature = reference.signature
    if not signature.symbols():
        return None, [], []
    plan = plan_inputs(signature, **dict(plan or {}))
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}

    def where(symbol: str) -> str:
        # the size verify's own cases run at is the one a constant may hold
        size = None if symbol in batch_symbols else plan.size(symbol)
        if size and takes(symbol, 2 * size):  # it takes another size than that one: no constant fixed it (a
            return ""  # Reshape holding 8 heads is no blame on a model that takes no sequence under 8)
        try:
            nodes = onnx_fixing_nodes(target.path, size) if size and str(target.path).endswith(".onnx") else []
        except Exception:  # noqa: BLE001 - naming the node is a courtesy; the axis is said either way
            nodes = []
        return constant_of(size, nodes)

    def takes(symbol: str, size: int) -> bool:  # runs at ``size`` with the output shapes its inputs say
        feeds = make_feeds(Signature(signature.inputs, ()), replace(plan, bound={**plan.bound, symbol: size}),
                           VERIFY_BATCHES[0])
        try:
            return not shape_problem(signature, feeds, reference.run(feeds))[0]
        except Exception:  # noqa: BLE001 - any refusal: the size is not one it takes
            return False

    metadata = getattr(getattr(target, "found", None), "metadata", None) or {}
    recorded = Certificate.from_json(metadata[CERTIFICATE_KEY]) if CERTIFICATE_KEY in metadata else None
    # sizes eager refused at export: the model's bound, not tried again (--min-shape says where to start instead)
    bounds = {s: b for s, b in recorded_bounds(recorded).items() if s not in (min_sizes or {})}
    for axis in (recorded.axes if recorded else ()):
        size = (max_sizes or {}).get(axis.symbol)
        fix = refused_by_bound(axis, size) if axis.symbol in bounds and size is not None else ""
        if fix:  # a size the model itself refuses is its bound, which no file can take: not a verdict on the file
            raise PtxError(f"--max-shape {axis.symbol}={size}: the model itself refuses {axis.symbol}="
                           f"{', '.join(map(str, axis.refused))} (export's shape certificate, recorded in "
                           f"{target.path.name}): {fix}")
    tried = [p for p in probes(signature, plan, max_sizes=max_sizes, of=target.path.name, min_sizes=min_sizes)
             if p.size not in (bounds[p.symbol].refused if p.symbol in bounds else ())]
    certificate = certify(signature, tried, reference.run, where=where, bounds=bounds)
    notes = [f"shape certificate: {certificate.summary()}"]
    if recorded is not None and recorded.holds != certificate.holds:
        notes.append(f"note: export's shape certificate (recorded in the file) {recorded.summary()}")
    named = {s: [n for n in ((max_sizes or {}).get(s), (min_sizes or {}).get(s)) if n] for s in signature.symbols()}
    return certificate, notes, certificate.failures(named)


def recorded_rows(metadata) -> dict[str, str]:
    """{output: per row or why not} as the shape certificate export recorded in the file ({} where none)."""
    recorded = Certificate.from_json(metadata[CERTIFICATE_KEY]) if CERTIFICATE_KEY in (metadata or {}) else None
    return recorded.rows if recorded is not None else {}
