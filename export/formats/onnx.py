"""ONNX: every symbolic size of the signature dynamic (the batch, a sequence, a picture's height), metadata
inside, checker-clean."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from ptx.contract import DEFAULT_OPSET
from ptx.contract.metadata import to_props
from ptx.contract.names import METADATA_PREFIX
from ptx.atomic import atomic_path
from ptx.contract.onnx_wire import read_onnx, serialized_digest, write_without_metadata
from ptx.contract.schema import ValueEnum
from ptx.contract.tensors import Signature
from ptx.contract.weights import WEIGHTS_KEY
from ptx.errors import PtxError, ValidationError
from ptx.infer.formats import onnx_files
from ptx.torch_quiet import process_output, quiet_jit

from ..onnx_graph import default_opset, omit_zero_initial_states, rsqrt_as_division
from ..refusal import CONTROL_FLOW, DATA_DEPENDENT, describe_refusal, ptx_s_own, user_files
from ..slice_pairs import sibling_slices
from ..translation_table import one_table_per_opset
from . import ExportFormat, Written, bind_weights, description, register

DYNAMO_MIN_OPSET = 18  # torch.export's ONNX translation starts at opset 18
# A range torch.export finds that ends below this is the model's own bound (a position table's rows), recorded
# with the signature (formats/pt2.py); the dimensions themselves are exported unbounded (dynamic_dims).
MAX_DIM = 1 << 20


class Exporter(ValueEnum):
    # dynamo is PyTorch's maintained exporter (the default since 2.9; the TorchScript-based one is
    # deprecated). Measured here: both give the same numbers on convnet/lstm/mlp (max |diff| ~1e-7),
    # dynamo takes 0.7-3.7 s per model against 0.06 s, a one-off cost worth the supported path.
    DYNAMO = "dynamo"
    LEGACY = "legacy"


DEFAULT_EXPORTER = Exporter.DYNAMO
EXPORTERS = {Exporter.DYNAMO: "torch.export-based", Exporter.LEGACY: "TorchScript-based"}


@contextmanager
def _quiet_exporter():
    """The exporters log registration notices and deprecations that say nothing to a ptx user;
    the legacy one also prints C++ shape-inference warnings straight to file descriptor 2, and on a
    failure the whole TorchScript graph to descriptor 1 ("Torch IR graph at exception"), which only
    descriptor-level redirects keep off the terminal; Python-level ones too, for an app whose
    sys.stdout/sys.stderr are not those descriptors (a notebook, a test runner) and where a logger
    without handlers falls back to writing to sys.stderr. Errors still arrive as exceptions."""
    with process_output(wait=True):  # descriptors 1 and 2 and warnings.filters are the process's (torch_quiet)
        with _exporter_quiet():
            yield


@contextmanager
def _exporter_quiet():
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings(), \
                contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
            for fd in saved:
                os.dup2(devnull.fileno(), fd)
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        logger.setLevel(level)


def check_opset(opset: int, exporter: Exporter | str | None = None, **_) -> None:
    """Refuse an ``opset`` that ``exporter`` (None: the default) cannot write with the installed torch
    and onnx: the ONNX formats' check of their writer's options (the others are not its to check)."""
    import onnx.defs

    exporter = Exporter(exporter or DEFAULT_EXPORTER)
    try:  # torch's own bounds; private, so fall back to those of torch 2.13
        from torch.onnx import _constants

        legacy = (_constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
        newest = _constants.ONNX_MAX_OPSET
    except (ImportError, AttributeError):
        legacy, newest = (7, 20), 23
    low, high = legacy if exporter is Exporter.LEGACY else (DYNAMO_MIN_OPSET, newest)
    high = min(high, onnx.defs.onnx_opset_version())
    if not low <= opset <= high:
        raise PtxError(f"--opset {opset}: the {exporter.value} exporter writes opsets {low} to {high} here")


def dynamic_dims(signature: Signature) -> tuple[dict | None, ...]:
    """torch.export's dynamic_shapes: one Dim per symbol, shared by every input that has it. No upper
    bound: a decoder's mask spans past + seq positions, and equal bounds on the three (MAX_DIM each) made
    torch.export refuse its first trace (past + seq cannot reach the bound when seq >= 1) and trace the
    model a second time with the bounds it suggested, a fifth of a small Llama's export."""
    import torch

    dims = {s: torch.export.Dim(s, min=1) for s in signature.symbols()}
    return tuple({axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str)} or None
                 for t in signature.inputs)


def dynamic_axes(signature: Signature) -> dict[str, dict[int, str]]:
    """torch.onnx's dynamic_axes (the TorchScript-based exporter): {tensor name: {axis: symbol}}."""
    return {t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)}
            for t in (*signature.inputs, *signature.outputs) if t.symbols}


def write(model, example: tuple, path: Path, signature: Signature, strings: dict[str, str], *,
          opset: int = DEFAULT_OPSET, exporter: Exporter | str | None = None, mode: str = "trace",
          weights=None, lazy: bool = False, lazy_copy: Path | None = None) -> Written:
    """Export ``model`` called on ``example`` with every symbolic size of ``signature`` dynamic (each
    example size must be 2 or more: torch.export specializes sizes 0 and 1): the torch.export-based
    exporter (dynamo) with a ``torch.export.Dim`` per dynamic axis, or the TorchScript-based one
    (legacy) with ``dynamic_axes``, quietly. ``exporter`` None tries dynamo and falls back to legacy
    where it refuses, saying so in the note; ``mode`` "script" hands legacy a scripted module, so
    that Python control flow becomes an ONNX If. The file kept has zero recurrent states dropped,
    the opset the exporter really wrote, the metadata and the weights digest.

    ``weights``: the transformers folder (export/folder_weights.FolderWeights) whose tensors ``model``'s
    parameters are: the graph is traced without them (export/weightless.py: the torch.export-based exporter
    alone) and each weight read from the folder as the file's data is written, one tensor at a time; ``lazy``:
    none is read, the graph is written alone with each initializer naming its folder tensor (the scratch a
    weight-only writer quantizes from, never a file a runtime opens: not checked, no digest); ``lazy_copy``: where
    ``weights`` is given and ``lazy`` is not, that graph is also saved there, as ``lazy`` would save it (the weight-only
    formats asked beside the f32 file are made from it, not from a second trace)."""
    import onnx

    from .torchscript import MADE_BY

    tries, operators = _exporters(model, strings["model"], exporter, weights)
    check_opset(opset, tries[0])
    proto, which, refusals, how = _traced(model, example, path, signature, strings["model"], tries, operators,
                                          opset=opset, mode=mode, weights=weights)
    note = f"{refusals[0]}: used the {EXPORTERS[which]} one" if refusals else None
    legacy = which is Exporter.LEGACY
    if legacy:
        proto = _legacy_proto(path)
    lost = [n for n in signature.input_names if n not in {i.name for i in proto.graph.input}]
    if lost:  # tracing turns an input the module only branches on (or reads as a Python number) into a constant
        why = [*refusals, *([CONTROL_FLOW] if legacy and mode == "trace" else [])]
        raise ValidationError(f"onnx: the {EXPORTERS[which]} exporter left input {', '.join(map(repr, lost))} out of "
                              f"the graph: it became a constant (the module branches on it, or reads it as a Python "
                              f"number){''.join(f'; {w}' for w in why)}")
    # Zero RNN/GRU/LSTM states built from the input's shape would keep ort-cuda off the GPU.
    omit_zero_initial_states(proto)
    rsqrt_as_division(proto)  # an RMS norm as ONNX Runtime fuses it (export/onnx_graph.py says why)
    # The dynamo exporter may raise a too-low opset to the version it implements: record the truth.
    used = default_opset(proto, missing=opset)
    # said now, so that the proto (the weights, a second time in memory) can go before the file is checked
    hint = "; ".join(filter(None, [_fixed_symbols(proto.graph, signature), note and f"{refusals[0]}: the "
                                   f"{EXPORTERS[which]} one {MADE_BY[mode]} the module"]))
    strings = {**strings, "opset": str(used), "exporter": which.value, **({"torchscript_method": mode} if legacy else {})}
    method = f"{EXPORTERS[which]} exporter, opset {used}" + (f", {MADE_BY[mode]}" if legacy else "")
    if weights is not None and lazy:  # the scratch a weight-only writer reads: the graph alone
        _save_lazy(proto, path, strings, description(strings))
        return Written(f"{method}, traced without its weights", note, hint, traced=how)
    if weights is not None:
        if lazy_copy is not None:
            _save_lazy(proto, lazy_copy, strings, description(strings))
        _read_from_folder(proto, path)
        method += (f", traced without its weights{f' ({how})' if how else ''} and written from "
                   f"{weights.folder.name}'s {weights.dtype} tensors")
    save_with_metadata(proto, path, strings, description(strings), checked=False)
    del proto  # the checker reads the file back: the proto and the checker's parse are not alive together
    onnx.checker.check_model(str(path), full_check=True)
    return Written(method, note, hint)


def _exporters(model, name: str, exporter, weights) -> tuple[list[Exporter], str | None]:
    """(the exporters to try in turn, what in the model only the torch.export-based one writes, or None)."""
    tries = [Exporter(exporter)] if exporter else [Exporter.DYNAMO, Exporter.LEGACY]
    operators = getattr(model, "onnx_operators", None)  # ONNX Runtime's, in ptx's decoder (export/ort_attention.py)
    if weights is not None:  # a trace without the weights is torch.export's (fake tensors)
        operators = operators or "weights read from its folder as they are written"
    if operators and tries != [Exporter.DYNAMO]:  # which the TorchScript-based exporter does not write
        if exporter:
            raise PtxError(f"onnx: {name} computes with {operators}, which only the torch.export-based "
                           "exporter writes: leave out --exporter legacy")
        tries = [Exporter.DYNAMO]
    return tries, operators


def _traced(model, example, path: Path, signature: Signature, name: str, tries: list[Exporter], operators, *,
            opset: int, mode: str, weights) -> tuple[object, Exporter, list[str], str]:
    """(the ModelProto of the first exporter of ``tries`` that takes ``model``, which one, the refusals before it,
    how a decoder traced without its weights had its layers traced: export/repeated_layers.py, else '');
    one PtxError naming every refusal where none does (ptx's own check's, as it is, where it said why)."""
    import torch

    keys, how = None, ""
    if weights is not None:
        from ..streamed_module import folder_keys

        keys = folder_keys(model, weights, getattr(model, "folder_prefix", ""))
    files, refusals, own = user_files(model), [], None
    names = dict(input_names=list(signature.input_names), output_names=list(signature.output_names))
    for which in tries:
        try:
            with _quiet_exporter(), torch.no_grad():
                if which is Exporter.DYNAMO and weights is not None:
                    proto, how = _weightless_proto(model, example, signature, opset, keys, weights)
                elif which is Exporter.DYNAMO:
                    with one_table_per_opset(), sibling_slices():
                        program = torch.onnx.export(model, tuple(example), None, dynamo=True, opset_version=opset,
                                                    verbose=False, dynamic_shapes=dynamic_dims(signature),
                                                    **names)
                    proto = _dynamo_proto(program, path)
                    del program  # a large model's weights are in its file now, and torch's parameters
                else:
                    with quiet_jit():
                        target = torch.jit.script(model) if mode == "script" else model
                    torch.onnx.export(target, tuple(example), str(path), dynamo=False, opset_version=opset,
                                      dynamic_axes=dynamic_axes(signature) or None, **names)
                    proto = None  # read back from the file (_legacy_proto)
            return proto, which, refusals, how
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types; described in one line
            own = own or ptx_s_own(exc)  # raised in the module it traced (--ort-attention's check)
            refusals.append(f"the {EXPORTERS[which]} exporter refused ({describe_refusal(exc, files)})")
    if own:  # every exporter refused, and ptx's own check said why: that, as it is
        raise own from None
    other = "legacy" if tries[0] is Exporter.DYNAMO else "dynamo"
    raise PtxError(f"onnx: {name} cannot be exported to ONNX: {'; '.join(refusals)}"
                   + (f"; {CONTROL_FLOW}" if any(DATA_DEPENDENT in r for r in refusals) and mode != "script" else "")
                   + (f"; try --exporter {other}" if len(tries) == 1 and not operators else ""))


def _weightless_proto(model, example, signature: Signature, opset: int, keys: dict, weights):
    """(the graph of ``model`` traced with fake parameters, each initializer naming its folder tensor
    (export/weightless.py), optimized as torch.onnx optimizes its own; how its layers were traced: a decoder's
    from a trace of two where its layers prove the same, export/repeated_layers.py)."""
    import torch

    from ..repeated_layers import traced_by_two_layers
    from ..weightless import fake_parameters, lazy_graph

    def trace(module, example, signature):
        return torch.onnx.export(module, tuple(example), None, dynamo=True, opset_version=opset, verbose=False,
                                 dynamic_shapes=dynamic_dims(signature), optimize=False,
                                 input_names=list(signature.input_names), output_names=list(signature.output_names))

    with fake_parameters(model), one_table_per_opset():
        program, how = traced_by_two_layers(model, example, signature, trace)
        if program is None:
            how = how and f"every layer traced: {how}"
            program = trace(model, example, signature)
    return lazy_graph(program, keys, weights), how


def _read_from_folder(proto, path: Path) -> None:
    """``proto``'s folder tensors read into the file at ``path``: inside it where the whole fits one file (as a
    traced model's is written), else each tensor in turn into its data file beside it."""
    from ..folder_weights import lazy_bytes, read_lazy_inside, resolve_lazy

    if lazy_bytes(proto) + proto.ByteSize() <= onnx_files.ONE_FILE_BYTES:
        read_lazy_inside(proto)
        return
    (path.parent / onnx_files.data_name(path)).unlink(missing_ok=True)
    resolve_lazy(proto, path.parent, onnx_files.data_name(path))


def _save_lazy(proto, path: Path, strings: dict[str, str], about: str) -> None:
    """The graph whose initializers name folder tensors saved at ``path`` with ptx's strings, none of its weights
    read (a weight-only writer's scratch: export/formats/weight_only.py)."""
    import onnx

    del proto.metadata_props[:]
    for key, value in to_props({k: v for k, v in strings.items() if k != WEIGHTS_KEY}).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = about
    onnx.save_model(proto, str(path))


def _dynamo_proto(program, path: Path):
    """The dynamo exporter's model as a ModelProto: kept in memory (f=None), not saved by torch and
    loaded back, where its weights fit one file (the proto its save would have written, initializers
    inside); else saved at ``path`` by torch's own external-data writer (``path``.data beside it,
    written from the IR, whose tensors share torch's parameters) and its graph alone read back."""
    import onnx

    weights = sum(v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None)
    if weights <= onnx_files.ONE_FILE_BYTES:
        return program.model_proto
    (path.parent / onnx_files.data_name(path)).unlink(missing_ok=True)
    program.save(str(path), external_data=True)  # the data file: onnx_files.data_name(path), as torch names it
    return onnx.load(str(path), load_external_data=False)


def _legacy_proto(path: Path):
    """The legacy exporter's file at ``path`` as a ModelProto, its weights inside. Past 2 GiB that
    exporter writes one file per tensor beside the model: read in, and removed, so that the save
    after puts them in one ``path``.data (onnx_files.save_model)."""
    import onnx

    scattered = onnx_files.companions(path)
    proto = onnx.load(str(path))
    for location in scattered:
        (path.parent / location).unlink(missing_ok=True)
    return proto


def _fixed_symbols(graph, signature: Signature) -> str:
    """Which dynamic input sizes the ONNX ``graph`` holds fixed (an exporter specialised them to the
    example's), or ''."""
    fixed = []
    for value, sig in zip(graph.input, signature.inputs):
        dims = value.type.tensor_type.shape.dim
        for axis, d in enumerate(sig.shape):
            if isinstance(d, str) and axis < len(dims) and dims[axis].HasField("dim_value"):
                fixed.append(f"{sig.name}'s axis {axis} ({d}) to {dims[axis].dim_value}")
    return ("the exporter fixed " + ", ".join(fixed) + ": the module's code turns that size into a constant "
            "(int(x.size(0)), a shape read as a Python number)") if fixed else ""


def save_with_metadata(proto, path: Path, strings: dict[str, str], description: str = "", *,
                       checked: bool = True) -> str:
    """Replace the graph's metadata_props by ptx's strings, check the model in full, save it, and
    write in the digest of its weights (ptx.contract.weights): the metadata_props lie outside the
    graph, so adding the digest (appended: ``_props_message``) leaves it unchanged. Taken on the bytes
    in memory and written with them, where the weights are inside and fit one file; else (weights in
    ``path``.data: onnx_files) on the saved files, and checked there. Returns the digest. ``checked``
    False: the caller checks the file (``onnx.checker.check_model(str(path), full_check=True)``) once it
    has let its proto go."""
    import onnx

    strings = {k: v for k, v in strings.items() if k != WEIGHTS_KEY}
    del proto.metadata_props[:]
    for key, value in to_props(strings).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = description
    if onnx_files.holds_external(proto) or onnx_files.too_big(proto):
        return _save_split(proto, path, checked)
    key = f"{METADATA_PREFIX}{WEIGHTS_KEY}"
    # Written with its digest, and the bytes let go before the checker reads the file back (a file it refuses
    # is the caller's to drop: written under a temporary name, as every writer's file is until it is checked).
    # The checker took the bytes in memory on the first core while the file was written on the second: the
    # proto, its bytes and the checker's parse of them were three copies of the weights at once (a 783 MB
    # Qwen2's export peaked 1.3 GB higher), for 0.4 s of a ViT-B/16's export.
    data = proto.SerializeToString()
    digest = _write_bound(data, path, key)
    del data
    if checked:
        onnx.checker.check_model(str(path), full_check=True)
    if digest is not None:
        proto.metadata_props.add(key=key, value=digest)  # the proto as the file holds it
        return digest
    return _bind(proto, path)


def _save_split(proto, path: Path, checked: bool = True) -> str:
    """``proto`` saved as a graph file and its weights' file (onnx_files.save_model: never serialized
    whole), checked in full on the path (``checked``), as ONNX Runtime will read it, and bound to its digest."""
    import onnx

    onnx_files.save_model(proto, path)
    if checked:
        onnx.checker.check_model(str(path), full_check=True)
    return _bind(proto, path)


def _bind(proto, path: Path) -> str:
    """The digest of the file at ``path`` (its graph and external data) written into it."""
    import onnx

    key = f"{METADATA_PREFIX}{WEIGHTS_KEY}"

    def write_digest(digest: str) -> None:
        _append_props(path, {key: digest})
        proto.metadata_props.add(key=key, value=digest)  # the proto as the file holds it

    # (the digest would change only where the file's graph were written anew)
    return bind_weights(path, "onnx", write_digest, f"the graph's digest changed when ptx wrote it in (onnx "
                        f"{onnx.__version__})")


def _write_bound(data: bytes, path: Path, key: str) -> str | None:
    """The serialized model ``data`` written to ``path`` with the digest of its graph appended as the
    entry ``key`` (the graph is the one in these bytes: the entry after it is no part of it); its
    digest, or None where its weights live in external files (written without it)."""
    digest = serialized_digest(data)
    with open(path, "wb") as handle:
        handle.write(data)
        if digest is not None:
            handle.write(_props_message({key: digest}))
    return digest


def _append_props(path: Path, props: dict[str, str]) -> None:
    """``props`` added to the metadata_props of the ONNX file at ``path`` without reading or writing
    its graph again: a protobuf parser merges concatenated messages, a repeated field's entries
    appended to those before (https://protobuf.dev/programming-guides/encoding/#last-one-wins), so
    the serialized ModelProto holding only these entries is appended to the file. Keys the file
    holds already are the caller's to leave out (a reader keeps one of two entries of a key)."""
    with open(path, "ab") as handle:
        handle.write(_props_message(props))


def _props_message(props: dict[str, str]) -> bytes:
    """A serialized ModelProto holding only ``props`` as metadata_props: appended to a model's bytes,
    a protobuf parser merges them into its entries."""
    import onnx

    entries = onnx.ModelProto()
    for key, value in props.items():
        entries.metadata_props.add(key=key, value=value)
    return entries.SerializeToString()


def add_metadata(path: Path, strings: dict[str, str]) -> None:
    """``strings`` written into the ONNX file at ``path`` beside the ptx metadata it holds (a verdict,
    a shape certificate: what export learns of a file after writing it). Its graph, checked and bound to
    its digest when it was written, is not read or written again, so the digest it holds stays true,
    and its external data is not touched: new keys are appended to the file as it is; a key it holds
    already has the file's other fields copied as their bytes are, and its metadata written anew."""
    held, _ = read_onnx(path, digest=False)
    props = to_props(strings)
    if not held.keys() & props.keys():
        _append_props(path, props)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write_without_metadata(path, handle)
        handle.write(_props_message({**held, **props}))


def symbolic_dims(path) -> tuple[list, list]:
    """The input's and output's dimensions as stored: names where dynamic, sizes where fixed."""
    graph = onnx_files.load_structure(path).graph
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim] for t in (graph.input[0], graph.output[0])]
    return dims[0], dims[1]


register(ExportFormat(name="onnx", description="ONNX (onnxruntime, OpenVINO, Triton, ...)", serving_backend="ort-cpu",
                      write=write, raw_pictures=True, add_metadata=add_metadata, check_options=check_opset))
