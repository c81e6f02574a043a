"""A served model as a runner: ``run({name: array}) -> {name: array}`` answered by a server over the
Open Inference Protocol (oip_transport), so that verify and bench hold it to a reference as they hold
any backend. Its signature is the server's model metadata (datatypes, -1 dims); a batch is cut to the
server's ``max_batch_size`` (from its model config, where it gives one) and the pieces sent a few at a
time (``Connection.concurrency``). No torch.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

import numpy as np

from ptx.contract.protocol import V2_TYPES
from ptx.contract.tensor_inputs import ExactFeeds
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError

from .oip_transport import Connection, Endpoint, open_transport
from .runner import Runner

BACKEND = "served"


class ServedRunner(Runner):
    """One model on a server, its tensors as its metadata gives them (a leading -1 is the batch) until
    hold_to names them as the reference's (a ptx server's head adds a picture route and a label,
    which are left out) and says which axis of each is the batch."""

    backend = BACKEND

    def __init__(self, endpoint: Endpoint, connection: Connection, say: Callable[[str], None] | None = None):
        self.endpoint, self.connection = endpoint, connection
        self.transport = open_transport(endpoint, connection, say)  # say: a line about how it talks
        self._metadata = self.transport.metadata()
        config = self.transport.config() or {}
        self.max_batch_size = int(config.get("max_batch_size") or 0)
        self.platform = self._metadata.get("platform") or ""
        self.versions = [str(v) for v in self._metadata.get("versions") or []]
        signature, self.left_out, self.notes = served_signature(self._metadata, self.max_batch_size, None, endpoint)
        super().__init__(signature, None, name=endpoint.model)
        self._pool = ThreadPoolExecutor(max(1, connection.concurrency), thread_name_prefix="ptx-served")

    def hold_to(self, like: Signature) -> None:
        """Read the served model as ``like`` names its tensors (verify's reference, known once it opened)."""
        self.signature, self.left_out, self.notes = served_signature(self._metadata, self.max_batch_size, like,
                                                                     self.endpoint)
        self._exact = ExactFeeds(self.signature)

    @property
    def batch(self) -> int | None:
        """The largest batch one request carries: --max-batch, else the server's max_batch_size."""
        return self.connection.max_batch or self.max_batch_size or None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.signature.output_names
        pieces = self._pieces(feeds)
        if len(pieces) == 1:
            return self._infer(pieces[0])
        answers = list(self._pool.map(self._infer, pieces))
        return {n: np.concatenate([a[n] for a in answers], axis=self.signature.output(n).batch_axis) for n in names}

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.transport.infer(feeds, self.signature.output_names)

    def _pieces(self, feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The batch cut into requests of at most ``self.batch`` samples along each input's batch axis
        (whole where every output cannot be put back together along one)."""
        size = self.batch
        axes = {t.name: t.batch_axis for t in self.signature.inputs}
        if not size or None in axes.values() or any(t.batch_axis is None for t in self.signature.outputs):
            return [feeds]
        n = feeds[self.signature.input_names[0]].shape[axes[self.signature.input_names[0]]]
        if n <= size:
            return [feeds]
        return [{k: np.take(v, range(start, min(start + size, n)), axis=axes[k]) for k, v in feeds.items()}
                for start in range(0, n, size)]

    def bare(self, feeds):
        return f"served {self.endpoint.url}", lambda: self._run(feeds)

    def close(self, collect: bool = False) -> None:  # a client: no runtime here to collect
        self._pool.shutdown(wait=False)
        channel = getattr(self.transport, "channel", None)
        if channel is not None:
            channel.close()

    def describe(self) -> str:
        """``model 'convnet' at http://...: onnxruntime_onnx, version 1, max_batch_size 64``; what the
        server's metadata leaves out (KServe's Python server gives no platform or versions) is not said."""
        known = [self.platform] if self.platform else []
        if self.versions:
            known.append(f"version{'s' * (len(self.versions) != 1)} {', '.join(self.versions)}")
        known.append(f"max_batch_size {self.max_batch_size}" if self.max_batch_size
                     else "no max_batch_size given (batches sent whole)")
        if self.connection.max_batch:
            known.append(f"requests of at most {self.batch}")
        return f"{self.endpoint.what} at {self.endpoint.url}: {', '.join(known)}"


def served_signature(metadata: Mapping, max_batch_size: int, like: Signature | None,
                     endpoint: Endpoint) -> tuple[Signature, list[str], list[str]]:
    """(the signature compared, the served tensors left out, notes): the server's numeric tensors
    (BYTES ones, a picture or text route, are left out), named and ordered as ``like``'s where given."""
    listed = [metadata.get(kind) or [] for kind in ("inputs", "outputs")]
    inputs, outputs = ({t["name"]: t for t in tensors if t.get("datatype") in V2_TYPES} for tensors in listed)
    skipped = [t["name"] for tensors in listed for t in tensors if t.get("datatype") not in V2_TYPES]
    if like is None:
        batched = max_batch_size > 0 or all(t["shape"][:1] == [-1] for t in [*inputs.values(), *outputs.values()])
        return Signature(tuple(_tensor(t, 0 if batched else None) for t in inputs.values()),
                         tuple(_tensor(t, 0 if batched else None) for t in outputs.values())), skipped, []
    missing = [n for n in like.input_names if n not in inputs]
    if missing:
        raise PtxError(f"{endpoint.url}: the served model takes input{'s' * (len(inputs) != 1)} "
                       f"{', '.join(inputs) or 'none'}, the reference takes {', '.join(like.input_names)}: not the "
                       "same model (give --against the file it serves)")
    extra = [n for n in inputs if n not in like.input_names]
    if extra:
        raise PtxError(f"{endpoint.url}: the served model takes input {extra[0]!r} as well, which the reference does "
                       "not: not the same model (give --against the file it serves)")
    common = [n for n in like.output_names if n in outputs]
    if not common:
        raise PtxError(f"{endpoint.url}: the served model answers {', '.join(outputs) or 'nothing numeric'}, the "
                       f"reference {', '.join(like.output_names)}: no output to compare")
    kept, notes = [], []
    for ref in [*(like.input(n) for n in like.input_names), *(like.output(n) for n in common)]:
        served = inputs.get(ref.name) or outputs[ref.name]
        dtype = V2_TYPES[served["datatype"]]
        if len(served["shape"]) != len(ref.shape) or any(
                isinstance(r, int) and s not in (-1, r) for r, s in zip(ref.shape, served["shape"])):
            raise PtxError(f"{endpoint.url}: {ref.name!r} is {served['shape']} on the server and "
                           f"{ref.v2_shape()} in the reference: not the same model")
        if dtype != ref.dtype:
            notes.append(f"note: the server takes {ref.name!r} as {served['datatype']}, the reference as {ref.dtype}")
        kept.append(TensorSig(ref.name, dtype, ref.shape, ref.batch_axis, ref.value_range, ref.axes))
    n_in = len(like.input_names)
    left_out = skipped + [n for n in outputs if n not in common]
    return Signature(tuple(kept[:n_in]), tuple(kept[n_in:])), left_out, notes


def _tensor(doc: Mapping, batch_axis: int | None) -> TensorSig:
    shape = tuple(("batch" if i == batch_axis else f"{doc['name']}_{i}") if d == -1 else int(d)
                  for i, d in enumerate(doc["shape"]))
    return TensorSig(doc["name"], V2_TYPES[doc["datatype"]], shape, batch_axis if shape[:1] == ("batch",) else None)
