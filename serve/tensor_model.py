"""A user's own model behind the protocol: its own named inputs and outputs, nothing else.

A request sends the model's inputs by name, with the datatypes and shapes of its signature (the
v2 metadata says them: -1 for every symbolic dimension); it asks for any of its outputs by name
(all by default). A tensor that does not fit is refused before it is queued, with check_feeds'
message naming the input and what it takes, so it fails alone.

Requests are joined by the dynamic batcher only where every input and output has a batch axis
(``Signature.batched``): each input along its own batch axis, each output split along its own, and
only requests whose other dimensions agree share a batch. Any other model (a scalar input, a batch
fixed by the exporter) runs request by request, on the same inference threads.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ptx.contract.protocol import signature_config
from ptx.contract.comparison import class_scores
from ptx.contract.tensor_inputs import check_feeds
from ptx.contract.tensors import Signature
from ptx.errors import InputError, ModelRunError
from ptx.infer.model_files import ONNX, TORCHSCRIPT

from .batcher import Batcher
from .model import PLATFORMS, VERSION, InferRequest, RequestedOutput
from .tensors import BYTES, RequestError, Tensor

KIND_OF_BACKEND = {"ort-cpu": ONNX, "ort-cuda": ONNX, "torchscript": TORCHSCRIPT}


class TensorMerge:
    """How requests to a batched tensor model combine: inputs by name, each joined along its own
    batch axis; outputs split along each one's own. Requests share a batch only when every other
    dimension of every input agrees (a symbolic height, a sequence length: nothing is padded,
    since ptx cannot know what padding would change in a user's model)."""

    def __init__(self, signature: Signature):
        self.inputs = [(t.name, t.batch_axis) for t in signature.inputs]
        self.outputs = {t.name: t.batch_axis for t in signature.outputs}

    def rows(self, feeds: dict[str, np.ndarray]) -> int:
        name, axis = self.inputs[0]
        return feeds[name].shape[axis]

    def key(self, feeds: dict[str, np.ndarray]):
        return tuple(a.shape[:axis] + a.shape[axis + 1:] for a, axis in ((feeds[n], ax) for n, ax in self.inputs))

    def join(self, batch: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            return batch[0]
        return {name: np.concatenate([feeds[name] for feeds in batch], axis=axis) for name, axis in self.inputs}

    def split(self, out: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
        if len(rows) == 1:
            return [out]
        starts = np.cumsum([0, *rows])
        return [{name: np.take(value, np.arange(a, b), axis=self.outputs[name]) for name, value in out.items()}
                for a, b in zip(starts[:-1], starts[1:])]


class TensorServedModel:
    """A model without a head (ptx.infer.model: a user's own file) with the interface the REST and gRPC fronts use:
    ``name``, ``metadata()``, ``config_text()``, ``await infer(request)``, ``close()``."""

    def __init__(self, name: str, model, batcher_options: dict, on_batch=lambda rows: None):
        self.name, self.model = name, model
        self.signature: Signature = model.signature
        self.kind = KIND_OF_BACKEND.get(model.backend)
        self.max_batch_size = batcher_options["max_batch_size"]
        self.max_delay_s = batcher_options["max_delay_s"]
        # Requests are checked on arrival (_feeds) and a joined batch is made of checked requests: the
        # runtime is called through _run, not run, which would check every tensor again.
        self.batcher = (Batcher(model.runner._run, merge=TensorMerge(self.signature), on_batch=on_batch, **batcher_options)
                        if self.signature.batched else None)
        # Unbatched models still run off the event loop, on as many threads as --workers allows.
        self.executor = (None if self.batcher is not None else
                         ThreadPoolExecutor(batcher_options.get("workers", 1), thread_name_prefix="ptx-infer"))

    # -- what the protocol reports --------------------------------------------------------------
    def metadata(self) -> dict:
        """The v2 model metadata: the model's own tensors, datatypes by the protocol's names, -1 for
        every symbolic dimension."""
        def tensors(sigs):
            return [{"name": t.name, "datatype": t.dtype_info.v2, "shape": t.v2_shape()} for t in sigs]

        return {"name": self.name, "versions": [VERSION],
                "platform": PLATFORMS.get(self.model.backend, f"ptx_{self.model.backend}"),
                "inputs": tensors(self.signature.inputs), "outputs": tensors(self.signature.outputs)}

    def config_text(self) -> str:
        """Triton's config.pbtxt for this model as `ptx export PATH --format triton` writes it, with
        this server's batch size and queue delay, and the tensors named as this server takes them
        (a TorchScript file's too, where Triton would say INPUT__0...)."""
        how = ("ptx serve batches it along each tensor's batch axis" if self.signature.batched
               else "ptx serve runs it request by request (not every tensor has a batch axis)")
        return signature_config(self.name, self.signature, self.kind or ONNX, max_batch_size=self.max_batch_size,
                                max_queue_delay_us=round(self.max_delay_s * 1e6), positional=False,
                                comments=(f"Served by ptx serve from {self.model.path.name if self.model.path else self.name}"
                                          f" through {self.model.backend}; {how}.",))

    # -- one request -----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> list[Tensor]:
        wanted = self._wanted(request.outputs)
        feeds = self._feeds(request.inputs)
        try:
            if self.batcher is not None:
                out = await self.batcher.submit(feeds)
            else:
                out = await asyncio.get_running_loop().run_in_executor(self.executor, self.model.runner._run, feeds)
        except ModelRunError as exc:
            # The runtime refused inputs that fit the signature (a batch the exporter specialised, an
            # index past a table): about this request's tensors, so a 400 saying what the runtime said.
            # A joined batch that fails is run again request by request first (the batcher).
            raise RequestError(str(exc)) from None
        return [self._output(r, out[r.name]) for r in wanted]

    def _feeds(self, inputs: list[Tensor]) -> dict[str, np.ndarray]:
        """The request's tensors by name, checked against the signature: names, datatypes, ranks,
        fixed sizes, one size per symbol (check_feeds' rules and messages)."""
        sig = self.signature
        takes = ", ".join(f"{t.name} ({t.dtype_info.v2} {t.v2_shape()})" for t in sig.inputs)
        feeds: dict[str, np.ndarray] = {}
        for tensor in inputs:
            if tensor.name not in sig.input_names:
                raise RequestError(f"{self.name} has no input {tensor.name!r}; it takes {takes}")
            if tensor.name in feeds:
                raise RequestError(f"input {tensor.name!r} is sent twice")
            want = sig.input(tensor.name)
            if tensor.datatype != want.dtype_info.v2:
                raise RequestError(f"input {tensor.name!r} of {self.name} is {tensor.datatype}; it takes "
                                   f"{want.dtype_info.v2} {want.v2_shape()}")
            data = tensor.data
            if not want.shape and list(tensor.shape) == [1]:
                data = data.reshape(())  # a scalar as Triton's config has it: dims [1], reshaped to []
            feeds[tensor.name] = data
        try:
            return check_feeds(sig, feeds, self.name)
        except InputError as exc:
            raise RequestError(str(exc)) from None

    def _wanted(self, requested: list[RequestedOutput]) -> list[RequestedOutput]:
        if not requested:
            return [RequestedOutput(n) for n in self.signature.output_names]
        unknown = [r.name for r in requested if r.name not in self.signature.output_names]
        if unknown:
            raise RequestError(f"{self.name} has no output {unknown[0]!r}; its outputs are "
                               f"{', '.join(self.signature.output_names)}")
        return requested

    def _output(self, r: RequestedOutput, value: np.ndarray) -> Tensor:
        sig = self.signature.output(r.name)
        if r.classification:
            return self._classification(r, value, sig.batch_axis)
        return Tensor(r.name, sig.dtype_info.v2, list(value.shape), value, {"binary": r.binary})

    @staticmethod
    def _classification(r: RequestedOutput, value: np.ndarray, batch_axis: int | None) -> Tensor:
        """Triton's classification extension on an output of class scores: per row the top k as
        "value:index" (a user's model has no label file)."""
        if not class_scores(value, batch_axis):
            raise RequestError(f"output {r.name!r} is not class scores (floats, a batch axis, classes on the last "
                               "axis): classification does not apply")
        rows = np.moveaxis(value, batch_axis, 0).reshape(-1, value.shape[-1])
        k = min(r.classification, rows.shape[-1])
        order = np.argsort(-rows, axis=-1, kind="stable")[:, :k]
        items = [f"{rows[i, j]:f}:{j}".encode() for i in range(len(rows)) for j in order[i]]
        return Tensor(r.name, BYTES, [len(rows), k], items, {"binary": r.binary})

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.model.close()

