"""A decoder's cache kept inside OpenVINO between steps: its stateful form.

A decoder file takes each layer's past as an input and gives its present as an output, so a stateless run
copies the whole cache out of OpenVINO after every step (its outputs are copies) and hands it back in at
the next. OpenVINO's MakeStateful transformation turns each past/present pair into a variable the infer
request keeps (ReadValue for the past, Assign for the present), as optimum-intel and OpenVINO GenAI run
decoders: a step then feeds the new ids, the mask and the positions alone. Measured on SmolLM2-135M's
published config (ptx's f32 file, AMD EPYC Zen 4, 2 cores, 2026-11-27, a bare loop of 48 steps alternated
with the stateless one, medians of 5): 21.45 against 23.89 ms a token (0.90x), the same tokens.

A decoding's cache (StateCache, the runner's new_cache) holds its own infer request (StatefulRequest, one per
cache, so that two decodings on one runner never share a variable; a judge's decodings of its prompts, one after
another through one cache, share one) and feeds back HeldState values, which stay in OpenVINO; a past given as an
array (rows that joined or left a server's decoding) sets its variable first (a copy). A run that feeds its whole
past as arrays each time (verify's teacher forcing, an encoder-decoder's steps) runs the model as written instead
(openvino_runner.py): setting the variables from arrays at every step cost 1.4x to 1.6x a stateless run of
SmolLM2's batch of 4 at 500 positions. numpy and openvino only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .cache import Cache, FedBackCache


def cache_pairs(generation, input_names: Sequence[str], output_names: Sequence[str]) -> dict[str, str]:
    """{past input: present output} of ``generation``'s cache (ptx.contract.generation.Generation, or None),
    the pairs whose two tensors the model has."""
    if generation is None:
        return {}
    inputs, outputs = set(input_names), set(output_names)
    return {past: present for past, present in generation.cache if past in inputs and present in outputs}


def make_stateful(model, pairs: Mapping[str, str]) -> None:
    """``model`` (an openvino.Model) with each past/present pair of ``pairs`` made a variable, in place."""
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(model, dict(pairs))


class HeldState:
    """A present that a StatefulRequest keeps in its variable, to be fed back as the next run's past without
    leaving OpenVINO; ``numpy()`` copies it out (runner.as_array), for a caller that needs the array."""

    def __init__(self, request: "StatefulRequest", past: str, version: int):
        self.request, self.past, self.version = request, past, version

    def numpy(self) -> np.ndarray:
        if self.request.version != self.version:  # the variable has moved on since: its value here is gone
            raise PtxError(f"the cache of {self.past} was overwritten by a later run of its decoding")
        return self.request.read(self.past)

    @property
    def shape(self) -> list[int]:
        return list(self.request.variables[self.past].state.shape)

    @property
    def data_type(self) -> str:
        return np.dtype(self.request.variables[self.past].state.element_type.to_dtype()).name


class StatefulRequest:
    """One infer request of a stateful compiled model (make_stateful's), run by name as a runner's run is:
    ``run(feeds, held)`` sets each variable whose past the feeds give as an array (a HeldState of this request's
    last run is its variable already), runs the other feeds, and answers the outputs with each present from its
    variable: a HeldState where ``held`` names it, else a copy."""

    def __init__(self, compiled, pairs: Mapping[str, str], output_names: Sequence[str]):
        import openvino

        self._tensor = openvino.Tensor
        self.request = compiled.create_infer_request()
        self.pairs = dict(pairs)
        states = {state.name: state for state in self.request.query_state()}
        # MakeStateful names each variable after its pair: the past's name, then the present's
        self.variables = {past: states[past + present] for past, present in self.pairs.items()}
        ports = [set(port.get_names()) for port in compiled.outputs]
        kept = [name for name in output_names if name not in self.pairs.values()]
        # ONNX outputs keep their names in OpenVINO; the graph's order stands in where one was renamed
        self.order = {name: next((i for i, names in enumerate(ports) if name in names), k)
                      for k, name in enumerate(kept)}
        self.version = 0

    def read(self, past: str) -> np.ndarray:
        """The variable of ``past`` now, copied out."""
        return np.array(self.variables[past].state.data, copy=True)

    def run(self, feeds: Mapping[str, object], held: Sequence[str] = (),
            into: Mapping[str, np.ndarray] | None = None) -> dict[str, object]:
        if into:
            raise PtxError("openvino writes no output into a given array: run it without into")
        for past, variable in self.variables.items():
            value = feeds[past]
            if isinstance(value, HeldState) and value.request is self and value.version == self.version:
                continue  # the variable holds it already
            array = np.ascontiguousarray(value.numpy() if isinstance(value, HeldState) else value)
            variable.state = self._tensor(array)  # copied into the variable
        result = self.request.infer({n: v for n, v in feeds.items() if n not in self.variables}, share_inputs=True)
        self.version += 1
        out: dict[str, object] = {name: np.asarray(result[index]) for name, index in self.order.items()}
        kept = set(held)
        for past, present in self.pairs.items():
            out[present] = HeldState(self, past, self.version) if present in kept else self.read(past)
        return out

    def release(self) -> None:
        """Let the variables' values (the cache) go; the request stays for a next decoding, whose first run sets
        them from its feeds (a judge decodes its prompts one after another through one request)."""
        self.request.reset_state()
        self.version += 1  # a HeldState of the run before is no longer there


class StateCache(FedBackCache):
    """A decoding's cache in OpenVINO's variables (cache.py says the interface): an infer request of its own
    (StatefulRequest, made at its first run, kept after release for a next decoding through this cache), each
    present a HeldState fed back as the next past; a past set from arrays (rows joined, left, fitted) is copied
    into the variables at the next run. ``runner``: an OpenVinoRunner with its stateful form."""

    def __init__(self, runner, signature, generation):
        super().__init__(signature, generation)
        self._runner = runner
        self._request: StatefulRequest | None = None

    def _run_with(self, feeds):
        if self._request is None:
            self._request = self._runner.stateful_request()
        return self._runner.run_stateful(self._request, feeds, self.presents)

    def _new(self) -> "StateCache":
        return StateCache(self._runner, self.signature, self.generation)

    def _copied(self, value) -> np.ndarray:
        return value.numpy() if isinstance(value, HeldState) else value

    def _adopt(self, other: Cache) -> None:
        if self._request is not None and other._request is not self._request:
            self._request.release()
        self._request, other._request = other._request, None
        super()._adopt(other)

    def release(self) -> None:
        super().release()
        if self._request is not None:
            self._request.release()
