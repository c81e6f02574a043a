"""One model behind the protocol: what a request may send it, checked before it is queued (so a bad
request fails alone), and what it answers.

Every model takes its named tensors, with the names, datatypes and dims its v2 metadata and its
config.pbtxt say (-1 for every symbolic dimension): a user's file its own signature; a tutorial
model the tensor `ptx export NAME --format triton` configures (``input``), so a tritonclient program
written for that Triton repository runs unchanged. It answers with its named outputs, with Triton's
classification extension (``class_count``) on an output of class scores.

A tutorial model's head adds what a user has: ``image`` (BYTES: encoded PNG/JPEG/... files) for
picture models, ``text`` (BYTES: UTF-8 strings: a number, a CSV row of features, a word) for the
others, prepared by the artifact's own pipeline exactly as `ptx predict` prepares a file; answered by
``label`` (BYTES, the label's name) and ``probabilities`` (FP32), or ``value`` (FP32) for a regression.

Requests are joined by the dynamic batcher only where every input and output has a batch axis
(``Signature.batched``); any other model (a scalar input, a batch fixed by the exporter) runs
request by request, on the same inference threads.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ptx.contract.pictures import picture_samples
from ptx.contract.protocol import TritonBackend, model_config, signature_config
from ptx.contract.comparison import class_scores
from ptx.contract.tensor_inputs import check_feeds
from ptx.contract.transforms import collate, length_groups, to_model_input
from ptx.errors import InputError, ModelRunError
from ptx.extras import MissingExtraError
from ptx.infer.model.embedding import Embedder
from ptx.infer.model.head import IMAGE_INPUT, LABEL_OUTPUT, PROBABILITIES_OUTPUT, Head, IdentityHead, Prediction
from ptx.infer.model.model import Model
from ptx.infer.predict.named_outputs import top_k

from .batcher import Batcher, Merge
from .generator import DEFAULT_MAX_TOKENS, Generator
from .tensors import BYTES, RequestError, Tensor

# How a PNG, JPEG, GIF, WebP (RIFF) and TIFF file begin once base64-encoded: no file begins so itself.
BASE64_PICTURES = (b"iVBORw0KGgo", b"/9j/", b"R0lGOD", b"UklGR", b"SUkq", b"TU0A")
VERSION = "1"
PLATFORMS = {"ort-cpu": "onnxruntime_onnx", "ort-cuda": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
TRITON_KINDS = {"onnxruntime_onnx": "onnx", "pytorch_libtorch": "torchscript"}  # a user's file's config, by platform


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    classification: int = 0  # Triton's classification extension: the top k as "value:index[:label]"

    def __post_init__(self):
        if not isinstance(self.classification, int) or self.classification < 0:
            raise RequestError(f"output {self.name!r}: classification must be a count >= 0")

    def answer(self, datatype: str, data, shape: list[int] | None = None) -> Tensor:
        """This output's tensor (a flat list of bytes for BYTES: its shape is its length unless given)."""
        return Tensor(self.name, datatype, list(np.shape(data)) if shape is None else shape, data,
                      {"binary": self.binary})


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    binary_output: bool = False  # the default for outputs that do not say (REST binary_data_output)


class ServedModel:
    """A model (a runner, and its head: a tutorial model's, or an IdentityHead for the others) behind
    a dynamic batcher, speaking in protocol tensors: ``name``, ``metadata()``, ``config_text()``,
    ``await infer(request)``, ``close()``."""

    def __init__(self, name: str, model: Model, batcher_options: dict, prepare_pool: Executor | None = None,
                 on_batch=lambda rows: None, max_tokens: int = DEFAULT_MAX_TOKENS, speculate: str | None = None):
        self.name, self.model, self.options, self.prepare_pool = name, model, batcher_options, prepare_pool
        # A file exported with its key/value cache also answers Triton's generate extension (generate.py).
        generation = model.generation
        self.generator = (Generator(name, model, generation, max_tokens, max_rows=batcher_options["max_batch_size"],
                                    speculate=speculate) if generation is not None else None)
        # Its tokenizer and chat template beside the file: the OpenAI API (openai_routes.py) takes text. Without the
        # text extra the model still serves token ids, and the API says what to install.
        self.text, self.no_text = None, None
        if self.generator is not None:
            try:
                self.text = model.text
            except MissingExtraError as exc:
                self.no_text = str(exc)
        # A file that embeds (ptx export of a sentence-transformers folder) answers OpenAI's /v1/embeddings.
        self.embedder = self._embedder(name, model)
        head: Head | IdentityHead = model.head or IdentityHead(model.signature)
        self.head, self.signature, self.user_input = head, head.endpoint, head.user_input
        model.runner.name = name  # the runtime's errors name the model as it is served, not as its file does
        # Requests are checked on arrival (_feeds), so a joined batch goes to the runner's _run unchecked.
        self.run = model.runner._run if head.raw_input is None else self._run_model_input
        batched = dict(on_batch=on_batch, host=model.host, **batcher_options)
        # texts of other lengths join one batch padded (an embedder's mask keeps its padding out of every vector)
        pads = head.pads or (self.embedder.pads if self.embedder is not None else {})
        self.batcher = Batcher(self.run, merge=Merge.of(self.signature, pads), **batched) \
            if self.signature.batched else None
        # Unbatched models still run off the event loop, on as many threads as --workers allows.
        self.executor = (None if self.batcher is not None else
                         ThreadPoolExecutor(batcher_options.get("workers", 1), thread_name_prefix="ptx-infer"))
        # An artifact exported with --input uint8 takes the pictures of `image` requests as they are,
        # batched by their own batcher: a quarter of the bytes, and no normalising on the host.
        self.picture_batcher = (Batcher(model.runner._run, merge=Merge.of(model.signature), **batched)
                                if head.raw_input is not None else None)

    def _embedder(self, name: str, model: Model) -> Embedder | None:
        """The texts of a model that embeds, with its tokenizer where the text extra reads it (else token ids only,
        and the API says what to install); None for any other model."""
        if model.embedding is None:
            return None
        try:
            text = model.text
        except MissingExtraError as exc:
            text, self.no_text = None, str(exc)
        return Embedder(name, model.embedding, text)

    async def embed(self, rows: list[list[int]]) -> np.ndarray:
        """The vectors of ``rows`` of token ids (the embedder's), through the batcher as any request's tensors: in
        parts of at most --max-batch-size rows of like lengths (little padding; one large request neither runs past
        the batch nor holds it whole), each part joining other requests' where they fit."""
        size = self.options["max_batch_size"]
        order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
        parts = [order[k:k + size] for k in range(0, len(order), size)]
        try:
            outs = await asyncio.gather(*(self.batcher.submit(self.embedder.feeds([rows[k] for k in part]))
                                          for part in parts))
        except ModelRunError as exc:  # about this request's tensors, as infer() says it
            raise RequestError(str(exc)) from None
        vectors = np.empty((len(rows), self.embedder.embedding.dimensions), np.float32)
        for part, out in zip(parts, outs):
            vectors[part] = out[self.embedder.embedding.output]
        return vectors

    def _run_model_input(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A model-layout batch for an --input uint8 export: the graph is fed the pictures it was made from."""
        return self.model.runner._run(self.head.feeds(feeds[self.signature.input_names[0]]))

    # -- what the protocol reports --------------------------------------------------------------
    def metadata(self) -> dict:
        """The v2 model metadata: the model's own tensors, datatypes by the protocol's names, -1 for
        every symbolic dimension; then the user-input tensors a tutorial model's head adds."""
        def tensors(sigs):
            return [{"name": t.name, "datatype": t.dtype_info.v2, "shape": t.v2_shape()} for t in sigs]

        inputs, outputs = tensors(self.signature.inputs), tensors(self.signature.outputs)
        inputs += [{"name": self.user_input, "datatype": BYTES, "shape": [-1]}] if self.user_input else []
        outputs += [{"name": n, "datatype": BYTES if n == LABEL_OUTPUT else "FP32", "shape": shape}
                    for n, shape in self.head.answers.items()]
        doc = {"name": self.name, "versions": [VERSION], "platform": self._platform(), "inputs": inputs,
               "outputs": outputs}
        if self.generator is not None:  # REST only: gRPC's ModelMetadataResponse has no field for it
            doc["generate"] = self.generator.describe()
        return doc

    def _platform(self) -> str:
        return PLATFORMS.get(self.model.backend, f"ptx_{self.model.backend}")

    def config_text(self) -> str:
        """Triton's config.pbtxt for this model as `ptx export ... --format triton` writes it, with
        this server's batch size and queue delay, and the tensors named as this server takes them
        (a TorchScript file's too, where Triton would say INPUT__0...)."""
        limits = dict(max_batch_size=self.options["max_batch_size"],
                      max_queue_delay_us=round(self.options["max_delay_s"] * 1e6))
        if self.head.contract is not None:  # a tutorial model's config is its contract's, as export writes it
            return model_config(self.name, self.head.contract, TritonBackend.ONNXRUNTIME, **limits)
        how = ("ptx serve batches it along each tensor's batch axis" if self.batcher is not None
               else "ptx serve runs it request by request (not every tensor has a batch axis)")
        served = self.model.path.name if self.model.path else self.name
        return signature_config(self.name, self.signature, TRITON_KINDS.get(self._platform(), "onnx"), positional=False,
                                comments=(f"Served by ptx serve from {served} through {self.model.backend}; {how}.",),
                                **limits)

    # -- one request -----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> list[Tensor]:
        if self.user_input is not None and any(t.name == self.user_input for t in request.inputs):
            if len(request.inputs) != 1:
                raise RequestError(f"{self.name} takes {self.user_input!r} (BYTES) alone; the request has "
                                   f"{len(request.inputs)} inputs")
            wanted = self._wanted(request.outputs, list(self.head.answers))
            samples = await asyncio.get_running_loop().run_in_executor(self.prepare_pool, self._samples,
                                                                       request.inputs[0])
            predictions = await self._predict_samples(samples)
            for i, prediction in enumerate(predictions):
                if not np.isfinite(prediction.logits).all():
                    # linreg of "3.4e38": a finite input whose answer overflowed float32 was answered
                    # 200 with null; it is no answer, as `ptx predict` says too.
                    raise RequestError(f"{self.user_input}[{i}]: the model's output is not a finite number: the "
                                       "input is too large for float32, which it computes in; send smaller numbers")
            return self._user_outputs(predictions, wanted)
        wanted = self._wanted(request.outputs, self.signature.output_names)
        feeds = self._feeds(request.inputs)
        try:
            if self.batcher is not None:
                out = await self.batcher.submit(feeds)
            else:
                out = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, feeds)
        except ModelRunError as exc:
            # The runtime refused inputs that fit the signature (a batch the exporter specialised, an
            # index past a table): about this request's tensors, so a 400 saying what the runtime said.
            # A joined batch that fails is run again request by request first (the batcher).
            raise RequestError(str(exc)) from None
        return [self._output(r, out[r.name]) for r in wanted]

    def _feeds(self, inputs: list[Tensor]) -> dict[str, np.ndarray]:
        """The request's tensors by name, checked against the signature: names, datatypes, ranks,
        fixed sizes, one size per symbol (check_feeds' rules and messages), then what its head says of
        the values (a tutorial model's input finite, its token ids inside the vocabulary)."""
        sig = self.signature
        feeds: dict[str, np.ndarray] = {}
        for tensor in inputs:
            if tensor.name not in sig.input_names:
                # said only when refused: built on every request it cost the hot path several microseconds
                takes = ", ".join(f"{t.name} ({t.dtype_info.v2} {t.v2_shape()})" for t in sig.inputs)
                takes += f", or {self.user_input} (BYTES)" if self.user_input else ""
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
            feeds = check_feeds(sig, feeds, self.name)
            self.head.check_values(feeds)
        except InputError as exc:
            raise RequestError(str(exc)) from None
        return feeds

    def _samples(self, tensor: Tensor) -> list[np.ndarray]:
        """BYTES elements -> raw samples through the artifact's own pipeline (in a worker thread:
        decoding pictures is real work)."""
        what = "encoded image files" if self.user_input == IMAGE_INPUT else "UTF-8 strings"
        if tensor.datatype != BYTES:
            raise RequestError(f"input {tensor.name!r} is BYTES ({what}), not {tensor.datatype}")
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1) or not tensor.data:
            raise RequestError(f"input {tensor.name!r} has shape {tensor.shape}; send [N] (or [N, 1]) elements, N >= 1")
        if self.user_input == IMAGE_INPUT:  # a request's pictures together, as a folder's chunk (the same samples)
            samples = picture_samples(tensor.data, self.head.contract.picture,
                                      names=[f"{tensor.name}[{i}]" for i in range(len(tensor.data))])
            for element, sample in zip(tensor.data, samples):
                if isinstance(sample, InputError):
                    # A file base64-encoded without the parameter that says so arrives as its text.
                    hint = ('; it looks like base64: add "parameters": {"content_type": "base64"} to the input'
                            if element.startswith(BASE64_PICTURES) else "")
                    raise RequestError(str(sample) + hint)
            return samples
        samples = []
        for i, element in enumerate(tensor.data):
            try:
                samples.append(self.head.prepare_one(element.decode("utf-8")))
            except UnicodeDecodeError:
                raise RequestError(f"{tensor.name}[{i}]: not UTF-8 text") from None
            except InputError as exc:
                raise RequestError(str(exc)) from None
        return samples

    async def _predict_samples(self, samples: list[np.ndarray]) -> list[Prediction]:
        """Raw samples -> predictions, each length group through the batcher."""
        contract = self.head.contract
        groups = length_groups(samples, contract)
        stacked = [collate([samples[i] for i in group], contract) for group in groups]
        outs = await asyncio.gather(*(self._submit_samples(batch) for batch in stacked))
        predictions: list[Prediction | None] = [None] * len(samples)
        for group, batch, out in zip(groups, stacked, outs):
            for i, prediction in zip(group, self.head.interpret(out[self.head.output_name], batch)):
                predictions[i] = prediction
        return predictions

    def _submit_samples(self, batch: np.ndarray):
        if self.picture_batcher is not None and batch.dtype == np.uint8:
            return self.picture_batcher.submit({self.head.input_name: batch})
        return self.batcher.submit({self.signature.input_names[0]: to_model_input(batch, self.head.contract)})

    # -- answers ---------------------------------------------------------------------------------
    def _wanted(self, requested: list[RequestedOutput], available: list[str]) -> list[RequestedOutput]:
        if not requested:
            return [RequestedOutput(name) for name in available]
        unknown = [r.name for r in requested if r.name not in available]
        if unknown:
            raise RequestError(f"{self.name} has no output {unknown[0]!r}; its outputs are {', '.join(available)}"
                               + (" for this input" if self.user_input is not None else ""))
        return requested

    def _output(self, r: RequestedOutput, value: np.ndarray) -> Tensor:
        sig = self.signature.output(r.name)
        if r.classification:
            return self._classification(r, value, sig.batch_axis)
        return r.answer(sig.dtype_info.v2, value)

    def _classification(self, r: RequestedOutput, value: np.ndarray, batch_axis: int | None = 0) -> Tensor:
        """Triton's classification extension on an output of class scores: per row the top k as
        "value:index", and ":label" where a tutorial model's head names its labels."""
        labels = self.head.labels
        if not self.head.scores_per_label(value.shape[-1]):
            raise RequestError(f"{self.name}'s output {r.name!r} is not one score per label: classification "
                               "does not apply")
        if not class_scores(value, batch_axis):
            raise RequestError(f"output {r.name!r} is not class scores (floats, a batch axis, classes on the last "
                               "axis): classification does not apply")
        best = top_k(value, batch_axis, r.classification)
        items = [f"{score:f}:{j}{f':{labels[j]}' if labels else ''}".encode() for row in best for j, score in row]
        return r.answer(BYTES, items, [len(best), len(best[0])])

    def _user_outputs(self, predictions: list[Prediction], wanted: list[RequestedOutput]) -> list[Tensor]:
        tensors = []
        for r in wanted:
            if r.name == LABEL_OUTPUT:
                tensors.append(r.answer(BYTES, [p.label_name.encode("utf-8") for p in predictions]))
            elif r.name == PROBABILITIES_OUTPUT:
                probs = np.stack([np.asarray(p.probabilities, dtype=np.float32) for p in predictions])
                tensors.append(self._classification(r, probs) if r.classification else r.answer("FP32", probs))
            else:
                tensors.append(r.answer("FP32", np.array([p.value for p in predictions], dtype=np.float32)))
        return tensors

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
        for batcher in (self.batcher, self.picture_batcher):
            if batcher is not None:
                batcher.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        if self.generator is not None and hasattr(self.generator.speculate, "close"):
            self.generator.speculate.close()  # a draft model (--speculate FILE), closed as the model is
        self.model.close()
