"""A model's ONNX graph traced without its weights (DESIGN.md 19; torch.onnx's way for a model larger than
memory: fake tensors, the weights applied after): the module's parameters swapped for fake tensors of their
shapes while torch.onnx's torch.export-based exporter traces it, so that no weight is read, copied or held, and
each initializer of the graph then named as the transformers folder's tensor it is (export/folder_weights.py's
lazy initializer), read from the folder only by whoever needs its values: a quantizer, one tensor at a time, or
the writer of the f32 file, tensor by tensor into its data file.

The exporter's optimizer runs as torch.onnx runs it (onnxscript's optimize_ir, then its ONNX fusions), with one
exception: it folds a Transpose of a weight into a new constant (every Linear's), which would read every weight
and hold its transposed copy; here that Transpose is folded into a lazy initializer of the same name instead,
the folder's tensor read transposed. So the graph's nodes and names are the ones the exporter writes with the
weights in hand, and a quantized file made from either is the same.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ptx.errors import PtxError

from .folder_weights import FolderWeights, Stored, lazy_initializer, read_stored
from .slice_pairs import sibling_slices


@contextmanager
def fake_parameters(module: torch.nn.Module):
    """Every parameter of ``module`` replaced, inside the block, by a fake float32 tensor of its shape on the CPU
    (torch's FakeTensorMode: shapes and dtypes, no storage), a parameter several modules share by one fake; the
    real (or meta) ones put back after."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes: dict[int, torch.nn.Parameter] = {}
    swapped = []
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is None:
                continue
            if id(param) not in fakes:
                with mode:
                    fake = torch.empty(tuple(param.shape), dtype=torch.float32, device="cpu")
                fakes[id(param)] = torch.nn.Parameter(fake, requires_grad=False)
            owner._parameters[name] = fakes[id(param)]
            swapped.append((owner, name, param))
    try:
        yield
    finally:
        for owner, name, param in swapped:
            owner._parameters[name] = param


def _folder_tensor_class():
    import onnx_ir as ir

    class FolderTensor(ir.ExternalTensor):
        """An initializer's values as a folder tensor (``stored``, read transposed where ``transposed``): read
        where the optimizer asks for a small one's values (a norm's weight it deduplicates), never otherwise."""

        def __init__(self, stored: Stored, transposed: bool, name: str):
            shape = stored.shape[::-1] if transposed else stored.shape
            super().__init__(str(stored.path), stored.offset, stored.length, ir.DataType.FLOAT, shape=ir.Shape(shape),
                             name=name)
            self.stored, self.transposed = stored, transposed

        def numpy(self):
            values = read_stored(self.stored)
            return values.T.copy() if self.transposed else values

        def __array__(self, dtype=None, copy=None):
            values = self.numpy()
            return values if dtype is None else values.astype(dtype)

        def tobytes(self) -> bytes:
            return self.numpy().tobytes()

    return FolderTensor


def lazy_graph(program, keys: dict[str, str], weights: FolderWeights):
    """The ONNX ModelProto of ``program`` (an ONNXProgram exported unoptimized from a module whose parameters
    were fakes; ``keys``: the folder tensor of each parameter's name, streamed_module.folder_keys), optimized as
    torch.onnx optimizes it, every weight a lazy initializer of ``weights``' tensors."""
    import onnx_ir as ir
    import onnxscript
    from torch._subclasses.fake_tensor import FakeTensor

    folder_tensor = _folder_tensor_class()
    model = program.model
    for name, value in list(model.graph.initializers.items()):
        raw = getattr(value.const_value, "raw", None)
        if not isinstance(raw, FakeTensor):
            continue  # a buffer (rotary frequencies) or a constant the trace made: its values are in the graph
        key = keys.get(name)  # the exporter names a parameter's initializer by its attribute path
        if key is None:
            raise PtxError(f"the traced graph's weight {name} is no tensor of {weights.folder} that ptx can name")
        value.const_value = folder_tensor(weights.tensors[key], False, name)

    def keep_weights_unread(node):
        # a Transpose of a folder tensor is folded below, lazily: the optimizer would read and hold it
        if node.op_type == "Transpose" and node.inputs and node.inputs[0] is not None and \
                isinstance(node.inputs[0].const_value, folder_tensor):
            return False
        return None

    with sibling_slices():  # export/slice_pairs.py: the same rewrites, without a search that is quadratic
        onnxscript.optimizer.optimize_ir(model, should_fold=keep_weights_unread)
        onnxscript.rewriter.onnx_fusions.fuse(model)  # as torch.onnx's optimize() does after optimize_ir
    _fold_transposes(model, folder_tensor)
    proto = ir.to_proto(model)
    lazy = {v.name: v.const_value for v in model.graph.initializers.values() if isinstance(v.const_value, folder_tensor)}
    for index, tensor in enumerate(proto.graph.initializer):
        if tensor.name in lazy:
            made = lazy[tensor.name]
            proto.graph.initializer[index].CopyFrom(lazy_initializer(tensor.name, made.stored, made.transposed))
    return proto


def _fold_transposes(model, folder_tensor) -> None:
    """Each Transpose of a 2-D folder tensor that only it reads (the optimizer's own rule for folding one)
    replaced by a lazy initializer of the Transpose's output name: the folder tensor read transposed."""
    graph = model.graph
    for node in list(graph):
        if node.op_type != "Transpose" or not node.inputs or node.inputs[0] is None:
            continue
        source = node.inputs[0]
        tensor = source.const_value
        perm = node.attributes.get("perm")
        if not isinstance(tensor, folder_tensor) or tensor.transposed or len(tensor.stored.shape) != 2 or \
                (perm is not None and list(perm.as_ints()) != [1, 0]) or len(source.uses()) != 1:
            continue
        output = node.outputs[0]
        import onnx_ir as ir

        folded = ir.Value(name=output.name, shape=output.shape, type=output.type,
                          const_value=folder_tensor(tensor.stored, True, output.name))
        was_output = output in graph.outputs
        output.replace_all_uses_with(folded)
        graph.remove(node, safe=True)
        if source.name in graph.initializers and not source.uses():
            graph.initializers.pop(source.name)
        graph.register_initializer(folded)
        if was_output:
            graph.outputs[graph.outputs.index(output)] = folded
