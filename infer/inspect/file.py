"""ptx inspect PATH: what a model file (or a run folder's exports) is, and which backends can run it
on this machine, and if not, why.

Cheap by design: files are read and runtimes open them, but no model is run, except where a
TorchScript or pt2 file needs its two probe runs to learn its outputs (torch_runner.py). An ONNX
file's facts come from its graph (onnx_graph.py); what the CUDA backends would do with it is proven
without a GPU (cuda_placement.py), and never claimed beyond what those checks say.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ptx.contract.names import ARTIFACT_FILES, CHECKPOINT_FORMAT, FILE_PRECISIONS, int8_format
from ptx.contract.shape_certificate import CERTIFICATE_KEY, Certificate
from ptx.contract.structure import STRUCTURE_KEY, OutputStructure
from ptx.contract.tensors import ContractError, Signature
from ptx.contract.weights import SIGNATURE_KEY, WEIGHTS_KEY
from ptx.errors import ArtifactError, PtxError, first_line

from ..runtime import backends as registry
from ..formats.model_files import ONNX, TORCHSCRIPT, ModelFile
from ..formats.signature import recorded_signature
from ..model.opening import KIND_NAMES

RUNS_HERE, CANNOT, NOT_HERE = "runs here", "cannot run it", "not here"


@dataclass
class BackendLine:
    """Whether one backend can run the file on this machine, and if not, why (one line)."""

    label: str
    status: str  # RUNS_HERE, CANNOT, NOT_HERE
    detail: str = ""

    def text(self, width: int) -> str:
        return f"{self.label:<{width}}  {self.status}" + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict:
        return {"backend": self.label, "status": self.status, "detail": self.detail or None}


@dataclass
class FileInspection:
    path: Path
    kind: str
    size: int
    model: str | None = None  # a tutorial model's export: its name
    format: str | None = None  # its artifact format (onnx, onnx-int8, torchscript, pt2)
    signature: Signature | None = None
    source: str = ""  # where the signature came from
    graph: object | None = None  # onnx_graph.GraphFacts, for an ONNX file
    parameters: int | None = None
    digest: str | None = None
    recorded_digest: str | None = None
    backends: list[BackendLine] = field(default_factory=list)
    int8: str | None = None
    notes: list[str] = field(default_factory=list)
    certificate: object | None = None  # the shape certificate export recorded (ptx.shape_certificate), or None
    structure: object | None = None  # the outputs' structure export recorded (ptx.output_structure), or None

    @property
    def weights_match(self) -> bool | None:
        if not self.recorded_digest or not self.digest:
            return None
        return self.recorded_digest == self.digest

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "bytes": self.size, "model": self.model,
                "format": self.format, "signature": self.signature.to_dict() if self.signature else None,
                "signature_source": self.source, "batched": self.signature.batched if self.signature else None,
                "graph": self.graph.to_dict() if self.graph else None, "parameters": self.parameters,
                "weights_sha256": self.digest, "recorded_weights_sha256": self.recorded_digest,
                "weights_match": self.weights_match, "backends": [b.to_dict() for b in self.backends],
                "int8": self.int8, "notes": self.notes,
                "shape_certificate": self.certificate.to_dict() if self.certificate else None,
                "output_structure": self.structure.tree if self.structure else None}

    def text(self) -> str:
        what = KIND_NAMES[self.kind] + (f", {self.model}'s {self.format} export" if self.model else "")
        lines = [f"{self.path.name}: {what}, {_size(self.size)}" + _external(self.graph)]
        if self.graph is not None:
            opsets = ", ".join(f"{domain} {version}" for domain, version in self.graph.opsets.items())
            lines.append(f"opset: {opsets}" + (f"; made by {self.graph.producer}" if self.graph.producer else "")
                         + f"; IR version {self.graph.ir_version}")
        lines.append(f"contract: {self.source}")
        if self.signature is not None:
            lines += _tensor_lines(self.signature)
        if self.structure is not None and self.structure.nested:  # flat outputs: their names say it all
            lines.append(f"output structure (as the module returned them): {self.structure.describe()}")
        if self.graph is not None:
            ops = ", ".join(f"{op} {n}" for op, n in self.graph.operators.most_common())
            inside = f" ({self.graph.subgraph_nodes} of them inside If/Loop/Scan bodies)" if self.graph.subgraph_nodes \
                else ""
            lines.append(f"operators: {sum(self.graph.operators.values())} nodes{inside}: {ops}")
            lines.append(f"parameters: {self.graph.parameters:,} values in {self.graph.initializers} initializers "
                         f"and {self.graph.constants} Constant nodes")
        elif self.parameters is not None:
            lines.append(f"parameters: {self.parameters:,}")
        lines.append("weights: " + _weights(self))
        width = max((len(b.label) for b in self.backends), default=0)
        lines += ["backends on this machine:"] + [f"  {b.text(width)}" for b in self.backends]
        if self.int8:
            lines.append(f"int8: {self.int8}")
        if self.certificate is not None:
            lines.append(f"shape certificate (at export): {self.certificate.summary()}")
        return "\n".join(lines + self.notes)


@dataclass
class RunInspection:
    """A tutorial model's run folder: its checkpoint and each export, inspected alike."""

    folder: Path
    model: str | None
    files: list[FileInspection]
    checkpoint: int | None  # its size, when there is one
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run": str(self.folder), "model": self.model, "checkpoint_bytes": self.checkpoint,
                "files": [f.to_dict() for f in self.files], "notes": self.notes}

    def text(self) -> str:
        head = [f"run {self.folder}: " + (self.model or "model not recorded")]
        if self.checkpoint is not None:
            head.append(f"checkpoint.pt: {_size(self.checkpoint)}, the eager reference `ptx verify` holds every "
                        "export to")
        return "\n\n".join(["\n".join(head + self.notes), *(f.text() for f in self.files)])


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def _external(graph) -> str:
    if graph is None:
        return ""
    if not graph.external:
        return "; weights inside it (no external data)"
    files = "; ".join(f"{name}, {_size(size)}" if size is not None else f"{name}, MISSING"
                      for name, size in graph.external)
    return f"; external data: {files}"


def _tensor_lines(signature: Signature) -> list[str]:
    rows = []
    for kind, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        rows.append((f"{kind}:", "", "", ""))
        for t in tensors:
            rows.append((f"  {t.name}", t.dtype, t.dims_text(), "no batch axis" if t.batch_axis is None else
                         f"batch axis {t.batch_axis}" + (f", values in [{t.value_range[0]:g}, {t.value_range[1]:g}]"
                                                         if t.value_range else "")))
    widths = [max(len(r[i]) for r in rows if r[1]) for i in range(3)]
    lines = [r[0] if not r[1] else "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    if signature.detections is not None:  # ptx.contract.detections: one dict per image, exported flat
        det = signature.detections
        lines.append(f"detections: one dict per image ({', '.join(det.keys)}), each key's detections of every image one "
                     f"after another; {det.counts} says how many each image kept")
    if signature.batched:
        lines.append("batching: every input and output has a batch axis (requests can be joined into one batch)")
    else:
        unbatched = [t.name for t in (*signature.inputs, *signature.outputs) if t.batch_axis is None]
        lines.append(f"batching: none ({', '.join(unbatched)} {'has' if len(unbatched) == 1 else 'have'} no batch "
                     "axis): a server runs requests one by one")
    symbols = signature.symbols()
    if symbols:
        bounded = [f"{s} up to {signature.limit(s)}" for s in symbols if signature.limit(s) is not None]
        lines.append(f"symbolic dims: {', '.join(symbols)}"
                     + (f" ({', '.join(bounded)}: the model's own bound; larger inputs are refused)" if bounded else ""))
    if signature.sizes:  # where generated inputs are made (verify, bench): a user reading the file sees it too
        lines.append(f"sizes export validated at: {', '.join(f'{s}={n}' for s, n in signature.sizes)} (verify and "
                     "bench generate inputs at them; --shape gives others)")
    return lines


def _weights(found: FileInspection) -> str:
    if found.digest is None:
        return "no digest for this kind of file (a pt2 package's compiler checks its own)"
    beside = [name for name, _ in found.graph.external] if found.graph is not None else []
    text = f"sha256 {found.digest[:16]}..." + (f" of the graph and {', '.join(beside)}" if beside else "")
    match = found.weights_match
    if match is None:
        return text + (" (no digest recorded in its ptx metadata)" if not found.recorded_digest else "")
    return text + (" (matches its recorded ptx.weights_sha256)" if match else
                   f" (DIFFERS from its recorded ptx.weights_sha256 {found.recorded_digest[:16]}...: ptx refuses its "
                   "metadata; --ignore-metadata runs it as your own model)")


# -- one file -------------------------------------------------------------------------------------


def inspect_file(target, probe: bool = True) -> FileInspection:
    """What ``target``'s file is and which backends run it here: ``Target.of(path, options=...,
    verifying=True)``, ``options`` load()'s (inputs, batch_axes, ignore_metadata): a TorchScript or
    pt2 file's outputs are learned only with inputs. A tutorial model's export is a file like any
    other: its contract gives its signature, and each line opens it."""
    path = target.path
    found = target.as_recorded()
    # the user's own choice: a file changed since export, which verifying reads as the user's own
    # model (target.changed), still shows what its metadata records (the digest it DIFFERS from)
    options = {**target.options, "ignore_metadata": bool(target.options.get("ignore_metadata")) and not target.changed}
    if options["ignore_metadata"]:
        found.metadata = {}
    report = FileInspection(path, found.kind, path.stat().st_size, recorded_digest=found.metadata.get(WEIGHTS_KEY),
                            notes=list(target.notes))
    if found.has_contract:
        report.model = found.metadata.get("model")
        report.format = int8_format(found.metadata) if found.metadata.get("precision") in FILE_PRECISIONS else found.kind
    report.digest = found.weights
    if CERTIFICATE_KEY in found.metadata:
        report.certificate = Certificate.from_json(found.metadata[CERTIFICATE_KEY])
    if found.metadata.get(STRUCTURE_KEY):  # an unreadable one is said, and the rest still inspected
        try:
            report.structure = OutputStructure.from_json(found.metadata[STRUCTURE_KEY], f"ptx.{STRUCTURE_KEY}")
        except ContractError as exc:
            report.notes.append(f"output structure: not read ({first_line(exc)}): re-export the model to record it "
                                "again")
    variants = [v for v in target.variants() if v.precision == target.precision]
    if found.kind == ONNX:
        from ..formats.onnx_graph import graph_facts, graph_signature, read_graph

        proto = read_graph(path)
        report.graph = graph_facts(proto, path)
        declared = graph_signature(proto, path, options.get("batch_axes"))
        quantized = found.precision in FILE_PRECISIONS  # already: nothing to offer
        report.int8 = None if quantized else _int8(report.graph.operators)
    recorded = recorded_signature(found.metadata, path) is not None
    known = found.kind == ONNX or found.has_contract or bool(options.get("inputs")) or recorded
    runnable = [v for v in variants if not v.unavailable()] if known else []
    # the reference held open for what is read of it below; every other runtime opened in turn, only to say
    # whether it runs the file, and closed before the next (one copy of the weights at a time)
    mine = _reference_label(target)
    cannot: dict[str, str] = {}  # label -> why it does not open the file

    def skipped(skip) -> None:
        cannot[skip.variant.label] = skip.why

    with target.opened_together([v for v in runnable if v.label == mine], probe, skipped) as held:
        for _ in target.each_opened([v for v in runnable if v.label != mine], probe, skipped):
            pass  # it opens: that is what its line says
        _read(report, target, found, options, declared if found.kind == ONNX else None, known, recorded,
              held[0][1] if held else None, cannot.get(mine))
    report.backends = [_line(path, found, v, cannot, known) for v in variants]
    return report


def _read(report: FileInspection, target, found: ModelFile, options: Mapping, declared, known: bool, recorded: bool,
          model, failed: str | None) -> None:
    """What the reference (``model``, open; None where it did not open: ``failed`` says why) reads of the
    file, into ``report``: its signature and where it comes from, a TorchScript file's parameters, and an
    answer whose shape contradicts the declared one."""
    path = target.path
    if found.kind == ONNX:  # ONNX Runtime's signature (what verify and serve use), else the graph's, as opened
        if model is not None:
            report.signature, read_by = model.signature, "the graph"
        else:
            from ..model.opening import opening_of

            report.signature = opening_of(path, **target.options)[0].of_graph(declared, path)
            read_by = "the graph (read by onnx: ONNX Runtime cannot open the file)"
        report.source = _source(found, options, read_by, recorded)
        report.notes += _specialised(declared, report.signature)
    elif not known:
        report.source = (f"unknown: {KIND_NAMES[found.kind]} keeps no description of its inputs; declare them "
                         "with --input NAME=SHAPE:DTYPE (in forward()'s order) and ptx learns its outputs from two "
                         "probe runs")
    elif model is None:
        report.source = f"not read: {_reference_label(target)} cannot open it" + (f" ({failed})" if failed else "")
    else:
        report.signature = model.signature
        checked = "the inputs you declared (--input)" if options.get("inputs") else "a probe run of the file"
        report.source = _source(found, options, checked, recorded) + (
            "" if recorded or found.has_contract else ", outputs learned from two probe runs")
    if found.kind == TORCHSCRIPT:
        report.parameters = _torchscript_parameters(path, model)
    said = _answered(model)
    if said:
        report.notes.append(said)


def _answered(model) -> str | None:
    """The reference run once on seeded inputs (batch 2), so that an answer whose shape contradicts
    the declared one is said here as verify says it (issue 58: a file declaring [1, seqlen] that
    returns [20, 1, 8210] was never flagged). A run that fails says nothing: verify says why."""
    from ptx.contract.tensor_inputs import make_feeds, plan_inputs

    from ..model.model import answered_otherwise

    if model is None or not model.signature.outputs:
        return None
    try:
        model.run(make_feeds(model.signature, plan_inputs(model.signature), 2))
    except Exception:  # noqa: BLE001 - inspect says what a file is; verify says why it does not run
        return None
    return answered_otherwise([model])


def _reference_label(target) -> str:
    return registry.get(target.reference).label("cpu", target.precision)


def _source(found: ModelFile, options: Mapping, graph_word: str, recorded: bool) -> str:
    if found.has_contract:
        return f"the ptx contract of the tutorial model {found.metadata.get('model')} (one input, one output)"
    if recorded and not options.get("batch_axes"):
        return f"its ptx metadata (ptx.{SIGNATURE_KEY}), checked against {graph_word}"
    if options.get("inputs") and found.kind == ONNX:
        return f"{graph_word}, narrowed by your --input"
    return graph_word


def _line(path: Path, found: ModelFile, variant, cannot: Mapping[str, str], known: bool) -> BackendLine:
    """``variant``'s line: not here (and why), cannot open the file (``cannot``: why, by label), or runs here."""
    why = variant.unavailable()
    if why:
        return BackendLine(variant.label, NOT_HERE, why + _static(variant.backend, path, found))
    if not known:
        return BackendLine(variant.label, NOT_HERE, "declare the inputs (--input) to try it")
    return BackendLine(variant.label, CANNOT, cannot[variant.label]) if variant.label in cannot else \
        BackendLine(variant.label, RUNS_HERE)


def _specialised(declared: Signature, inferred: Signature) -> list[str]:
    """Outputs whose batch the graph declares symbolic but ONNX Runtime's shape inference finds
    fixed: the exporter may have baked its example's batch into the graph."""
    notes = []
    batch = {t.batch_symbol for t in declared.inputs if t.batch_axis is not None}
    for want in declared.outputs:
        got = next((t for t in inferred.outputs if t.name == want.name), None)
        if got is None or len(got.shape) != len(want.shape):
            continue
        for axis, (d, i) in enumerate(zip(want.shape, got.shape)):
            if d in batch and isinstance(i, int):
                notes.append(f"note: the graph declares output {want.name}'s axis {axis} as {d}, but ONNX Runtime "
                             f"infers it is always {i}: the exporter may have specialised the batch (`ptx verify` runs "
                             "two batch sizes to tell)")
    return notes


def _int8(operators: Counter) -> str:
    """What onnxruntime's quantizers have int8 operators for in this graph (their own registries)."""
    try:
        from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry
    except ImportError as exc:
        return f"not checked (onnxruntime.quantization does not import: {first_line(exc)})"
    total = sum(operators.values())

    def covered(registry_ops) -> str:
        hits = Counter({op: n for op, n in operators.items() if op in registry_ops})
        listed = ", ".join(f"{op} {n}" for op, n in hits.most_common())
        return f"{sum(hits.values())} of {total} nodes" + (f" ({listed})" if listed else "")

    return (f"onnxruntime's quantize_dynamic has integer kernels for {covered(IntegerOpsRegistry)}; "
            f"quantize_static (QDQ, with calibration inputs) for {covered(QDQRegistry)}")


def _torchscript_parameters(path: Path, model) -> int | None:
    """The parameters of the module the reference opened, else of the file loaded here."""
    if model is not None and hasattr(model.runner.module, "parameters"):
        return sum(p.numel() for p in model.runner.module.parameters())
    from ..runtime.torch_files import load_torchscript  # imports torch: only for a TorchScript file

    try:
        module, _ = load_torchscript(path)
    except Exception:  # noqa: BLE001 - the backend line says why it does not load
        return None
    return sum(p.numel() for p in module.parameters())


def _static(backend, path: Path, found: ModelFile) -> str:
    """What ``backend.static`` proves of the file without running it (ort-cuda's CUDA placement,
    ort-cuda-graph's capture), or ''."""
    if backend.static is None or found.kind != ONNX:
        return ""
    try:
        return f"; {backend.static(path)}"
    except Exception as exc:  # noqa: BLE001 - a check that cannot run says so
        return f"; static check failed ({first_line(exc)[:200]})"


# -- a run folder ---------------------------------------------------------------------------------


def inspect_run(folder: str | Path, files, probe: bool = True) -> RunInspection:
    """Each export in a tutorial model's run folder, inspected as a file: ``files`` are (path, its file
    Target, or the ArtifactError saying why it cannot be read), decided where the folder entered."""
    from ptx.contract.runs import run_model

    folder = Path(folder)
    checkpoint = folder / ARTIFACT_FILES[CHECKPOINT_FORMAT]
    report = RunInspection(folder, run_model(folder), [], checkpoint.stat().st_size if checkpoint.is_file() else None)
    if not files:
        report.notes.append(f"no export yet: `ptx export --run {folder}` writes model.onnx and model.torchscript.pt")
    for path, target in files:
        try:
            if isinstance(target, ArtifactError):
                raise target
            report.files.append(inspect_file(target, probe=probe))
        except ArtifactError as exc:
            report.notes.append(f"{path.name}: {exc}")
    return report


def inspect_path(argument, probe: bool = True) -> FileInspection:
    """A model file's Target (``Target.of(path, options=..., verifying=True)``, made where the
    argument entered) inspected; a run folder's exports are inspect_run's."""
    from ..model.target import Target

    if not isinstance(argument, Target):
        raise PtxError(f"inspect_path() takes a Target, not {type(argument).__name__} {str(argument)[:60]!r}: give "
                       "Target.of(path, verifying=True) (from ptx.infer.model.target import Target), or a run folder "
                       "to inspect_run")
    return inspect_file(argument, probe)
