"""One model behind the protocol: what a request may send it, checked before it is queued (so a bad
request fails alone), and what it answers.

Each model takes either of two inputs:

- its own tensor (``input`` for most models), with the names, datatypes and dims of the config.pbtxt
  that `ptx export NAME --format triton` writes: a tritonclient program written for that Triton
  repository runs unchanged; answered by the model's output (``logits``), with Triton's
  classification extension (``class_count``) when asked;
- what a user has: ``image`` (BYTES: encoded PNG/JPEG/... files) for picture models, ``text``
  (BYTES: UTF-8 strings: a number, a CSV row of features, a word) for the others, prepared by the
  artifact's own pipeline exactly as `ptx predict` prepares a file; answered by ``label`` (BYTES,
  the label's name) and ``probabilities`` (FP32), or ``value`` (FP32) for a regression.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ptx.contract import Contract, DType, InputKind, Task
from ptx.contract.names import BATCH, SEQ
from ptx.contract.pictures import picture_samples
from ptx.contract.protocol import CLIENT_TYPES, TritonBackend, model_config, tensor_names
from ptx.contract.transforms import collate, length_groups, to_model_input
from ptx.errors import InputError
from ptx.infer.head import Prediction
from ptx.infer.model import Model

from .batcher import Batcher, Merge
from .tensors import BYTES, RequestError, Tensor

IMAGE_INPUT, TEXT_INPUT = "image", "text"
LABEL_OUTPUT, PROBABILITIES_OUTPUT, VALUE_OUTPUT = "label", "probabilities", "value"
VERSION = "1"
PLATFORMS = {"ort-cpu": "onnxruntime_onnx", "ort-cuda": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    classification: int = 0  # Triton's classification extension: the top k as "value:index:label"


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    binary_output: bool = False  # the default for outputs that do not say (REST binary_data_output)


class ServedModel:
    """A tutorial model (a runner and its head) behind a dynamic batcher, speaking in protocol tensors."""

    def __init__(self, name: str, predictor: Model, batcher_options: dict, prepare_pool: Executor,
                 on_batch=lambda rows: None):
        self.name, self.predictor = name, predictor
        self.contract: Contract = predictor.contract
        contract = self.contract
        self.input_name, self.output_name = tensor_names(contract, TritonBackend.ONNXRUNTIME)
        self.input_datatype = CLIENT_TYPES[contract.input.dtype]
        self.user_input = IMAGE_INPUT if contract.kind is InputKind.IMAGE else TEXT_INPUT
        self.prepare_pool = prepare_pool
        self.max_batch_size = batcher_options["max_batch_size"]
        self.max_delay_s = batcher_options["max_delay_s"]
        # predictor.host: on a GPU, requests are joined into page-locked buffers the runtime copies by DMA
        self.batcher = Batcher(predictor.predict_array, merge=self._merge(), on_batch=on_batch, host=predictor.host,
                               **batcher_options)
        # An artifact exported with --input uint8 takes the pictures of `image` requests as they are,
        # batched by their own batcher: a quarter of the bytes, and no normalising on the host.
        self.picture_batcher = (Batcher(predictor.predict_pictures, merge=Merge(0), on_batch=on_batch,
                                        host=predictor.host, **batcher_options)
                                if predictor.info.raw_input is not None else None)

    def _merge(self) -> Merge:
        contract = self.contract
        seq = contract.input.seq_axis
        pad = contract.encoding.pad_id if contract.encoding is not None else None
        # Padding changes nothing only when the output has no position axis (gru-classifier reads
        # each word at its last real character); rnn-hello answers per position: equal lengths only.
        padded = pad if SEQ not in contract.output.shape else None
        return Merge(contract.input.batch_axis, seq, padded)

    # -- what the protocol reports --------------------------------------------------------------
    @property
    def user_outputs(self) -> list[str]:
        if self.contract.task is Task.REGRESSION:
            return [VALUE_OUTPUT]
        if self.contract.per_position:
            return [LABEL_OUTPUT]
        return [LABEL_OUTPUT, PROBABILITIES_OUTPUT]

    def metadata(self) -> dict:
        """The v2 model metadata: the model's own tensors first (as the triton export's config has
        them), then the user-input tensors ptx adds."""
        contract = self.contract
        dims = lambda shape: [-1 if isinstance(d, str) else d for d in shape]  # noqa: E731
        classes = len(contract.labels) if contract.task is not Task.REGRESSION else 1
        user_out = {LABEL_OUTPUT: {"datatype": BYTES, "shape": [-1]},
                    PROBABILITIES_OUTPUT: {"datatype": "FP32", "shape": [-1, 2 if contract.task is Task.BINARY
                                                                         else classes]},
                    VALUE_OUTPUT: {"datatype": "FP32", "shape": [-1]}}
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORMS.get(self.predictor.backend, f"ptx_{self.predictor.backend}"),
            "inputs": [{"name": self.input_name, "datatype": self.input_datatype, "shape": dims(contract.input.shape)},
                       {"name": self.user_input, "datatype": BYTES, "shape": [-1]}],
            "outputs": [{"name": self.output_name, "datatype": CLIENT_TYPES[contract.output.dtype],
                         "shape": dims(contract.output.shape)},
                        *({"name": n, **user_out[n]} for n in self.user_outputs)],
        }

    def config_text(self) -> str:
        """Triton's config.pbtxt for this model as served: the triton export's, with this server's
        batch size and queue delay."""
        return model_config(self.name, self.contract, TritonBackend.ONNXRUNTIME, max_batch_size=self.max_batch_size,
                            max_queue_delay_us=round(self.max_delay_s * 1e6))

    # -- one request -----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> list[Tensor]:
        tensor = self._the_input(request.inputs)
        if tensor.name == self.input_name:
            x = self._checked_tensor(tensor)
            out = await self.batcher.submit(x)
            return self._tensor_outputs(out, request.outputs)
        samples = await asyncio.get_running_loop().run_in_executor(self.prepare_pool, self._samples, tensor)
        predictions = await self._predict_samples(samples)
        return self._user_outputs(predictions, request.outputs)

    def _the_input(self, inputs: list[Tensor]) -> Tensor:
        accepted = f"{self.input_name!r} ({self.input_datatype}, the model's tensor) or {self.user_input!r} (BYTES)"
        if len(inputs) != 1:
            raise RequestError(f"{self.name} takes one input, {accepted}; the request has {len(inputs)}")
        if inputs[0].name not in (self.input_name, self.user_input):
            raise RequestError(f"{self.name} has no input {inputs[0].name!r}; send {accepted}")
        return inputs[0]

    def _checked_tensor(self, tensor: Tensor) -> np.ndarray:
        """The model's own input, checked against its contract: datatype, rank, fixed dims, a batch
        of at least one, finite values, token ids inside the vocabulary."""
        contract = self.contract
        want = contract.input.shape
        if tensor.datatype != self.input_datatype:
            raise RequestError(f"input {tensor.name!r} of {self.name} is {self.input_datatype}, not {tensor.datatype}")
        shown = "[" + ", ".join(str(-1 if isinstance(d, str) else d) for d in want) + "]"
        if len(tensor.shape) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, tensor.shape)):
            raise RequestError(f"input {tensor.name!r} has shape {tensor.shape}; {self.name} takes {shown} "
                               f"({', '.join(contract.input.axes)})")
        if any(s < 1 for w, s in zip(want, tensor.shape) if w in (BATCH, SEQ)):
            raise RequestError(f"input {tensor.name!r} has shape {tensor.shape}: every batch and sequence "
                               "dimension needs at least 1")
        x = np.ascontiguousarray(tensor.data)
        if contract.input.dtype is DType.FLOAT32 and not np.isfinite(x).all():
            raise RequestError(f"input {tensor.name!r} holds NaN or infinite values")
        if contract.encoding is not None and x.size and (x.min() < 0 or x.max() >= contract.encoding.vocab_size):
            raise RequestError(f"input {tensor.name!r} holds token ids outside 0..{contract.encoding.vocab_size - 1}")
        return x

    def _samples(self, tensor: Tensor) -> list[np.ndarray]:
        """BYTES elements -> raw samples through the artifact's own pipeline (in a worker thread:
        decoding pictures is real work)."""
        if tensor.datatype != BYTES:
            raise RequestError(f"input {tensor.name!r} is BYTES ({'encoded image files' if self.user_input == IMAGE_INPUT else 'UTF-8 strings'}), "
                               f"not {tensor.datatype}")
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1) or not tensor.data:
            raise RequestError(f"input {tensor.name!r} has shape {tensor.shape}; send [N] (or [N, 1]) elements, N >= 1")
        if self.user_input == IMAGE_INPUT:  # a request's pictures together, as a folder's chunk (the same samples)
            samples = picture_samples(tensor.data, self.contract.picture,
                                      names=[f"{tensor.name}[{i}]" for i in range(len(tensor.data))])
            for sample in samples:
                if isinstance(sample, InputError):
                    raise RequestError(str(sample))
            return samples
        samples = []
        for i, element in enumerate(tensor.data):
            try:
                text = element.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"{tensor.name}[{i}]: not UTF-8 text") from None
            try:
                samples.append(self.predictor.prepare_one(text))
            except InputError as exc:
                raise RequestError(str(exc)) from None
        return samples

    async def _predict_samples(self, samples: list[np.ndarray]) -> list[Prediction]:
        """Raw samples -> predictions, each length group through the batcher."""
        groups = length_groups(samples, self.contract)
        stacked = [collate([samples[i] for i in group], self.contract) for group in groups]
        outs = await asyncio.gather(*(self._submit_samples(batch) for batch in stacked))
        predictions: list[Prediction | None] = [None] * len(samples)
        for group, batch, out in zip(groups, stacked, outs):
            for i, prediction in zip(group, self.predictor.interpret(out, batch)):
                predictions[i] = prediction
        return predictions

    def _submit_samples(self, batch: np.ndarray):
        if self.picture_batcher is not None and batch.dtype == np.uint8:
            return self.picture_batcher.submit(batch)
        return self.batcher.submit(to_model_input(batch, self.contract))

    # -- answers ---------------------------------------------------------------------------------
    def _wanted(self, requested: list[RequestedOutput], available: list[str]) -> list[RequestedOutput]:
        if not requested:
            return [RequestedOutput(name) for name in available]
        unknown = [r.name for r in requested if r.name not in available]
        if unknown:
            raise RequestError(f"{self.name} has no output {', '.join(map(repr, unknown))} for this input; "
                               f"it answers {', '.join(available)}")
        return requested

    def _tensor_outputs(self, out: np.ndarray, requested: list[RequestedOutput]) -> list[Tensor]:
        tensors = []
        for r in self._wanted(requested, [self.output_name]):
            if r.classification:
                tensors.append(self._classification(out, r))
            else:
                tensors.append(Tensor(r.name, CLIENT_TYPES[self.contract.output.dtype], list(out.shape),
                                      np.asarray(out, dtype=np.float32), {"binary": r.binary}))
        return tensors

    def _classification(self, out: np.ndarray, r: RequestedOutput) -> Tensor:
        """Triton's classification extension: per sample the top k as "value:index:label", by value
        (of the logits, or of ``probabilities``)."""
        if self.contract.task is Task.REGRESSION or self.contract.per_position \
                or out.shape[-1] != len(self.contract.labels):
            raise RequestError(f"{self.name}'s output {r.name!r} is not one score per label: classification "
                               "does not apply")
        k = min(r.classification, out.shape[-1])
        order = np.argsort(-out, axis=-1, kind="stable")[:, :k]
        labels = self.contract.labels
        items = [f"{out[row, i]:f}:{i}:{labels[i]}".encode() for row in range(len(out)) for i in order[row]]
        return Tensor(r.name, BYTES, [len(out), k], items, {"binary": r.binary})

    def _user_outputs(self, predictions: list[Prediction], requested: list[RequestedOutput]) -> list[Tensor]:
        tensors = []
        for r in self._wanted(requested, self.user_outputs):
            if r.name == LABEL_OUTPUT:
                tensors.append(Tensor(r.name, BYTES, [len(predictions)],
                                      [p.label_name.encode("utf-8") for p in predictions], {"binary": r.binary}))
            elif r.name == PROBABILITIES_OUTPUT:
                probs = np.stack([np.asarray(p.probabilities, dtype=np.float32) for p in predictions])
                tensors.append(self._classification(probs, r) if r.classification else
                               Tensor(r.name, "FP32", list(probs.shape), probs, {"binary": r.binary}))
            else:
                values = np.array([p.value for p in predictions], dtype=np.float32)
                tensors.append(Tensor(r.name, "FP32", [len(values)], values, {"binary": r.binary}))
        return tensors

    def close(self) -> None:
        self.batcher.close()
        if self.picture_batcher is not None:
            self.picture_batcher.close()
