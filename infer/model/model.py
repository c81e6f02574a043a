"""The one model type: a runner (named tensors on one runtime) and, for a tutorial model, a head.

``ptx.infer.load`` returns a Model for a tutorial name, a run folder, a model file or an
nn.Module. ``run({name: array})`` is the runner's, for every model; ``predict(pictures | text |
rows)`` is the head's, for the models whose contract says what their tensors mean. numpy only here.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.detections import per_image
from ptx.contract.embedding import EMBEDDING_KEY, Embedding
from ptx.contract.embedding import of_metadata as embedding_of
from ptx.contract.generation import GENERATION_KEY, Generation, layout_of, of_metadata
from ptx.contract.sampling import Sampling
from ptx.contract.transforms import collate, length_groups, to_model_input
from ptx.contract.structure import STRUCTURE_KEY, OutputStructure
from ptx.contract.tensors import ContractError
from ptx.errors import ArtifactError, InputError, PtxError

from .generation import Decoded, Decoding, chooser_of
from .head import Head, Prediction, mark_low_confidence
from ..runtime.runner import Runner


def _runner_attr(name: str) -> property:
    """A Model's attribute that is its runner's."""
    return property(lambda self: getattr(self.runner, name))


def _head_attr(name: str, what: str) -> property:
    """A Model's attribute that is its head's (refused in one line for a model without one)."""
    return property(lambda self: getattr(self._head(what), name))


class Model:
    """A runner, and the head above it where the model has one. ``stale`` says why a tutorial
    export is not its run's current weights, ``unusable`` why its precision failed verify here,
    ``elsewhere`` that its reduced precision was timed on another kind of CPU, ``opened`` which file
    runs where it is not the one given (int8 asked of an f32 file runs the int8 file beside it)."""

    stale: str | None = None
    opened: str | None = None
    unusable: str | None = None
    elsewhere: str | None = None
    # An encoder-decoder's encoder file, opened beside its decoder file by the same backend (opening.py):
    # its runner, which the decoding runs once per decoding; None for every other model.
    encoder: Runner | None = None

    def __init__(self, runner: Runner, head: Head | None = None):
        self.runner, self.head = runner, head
        if head is not None:
            runner.name = head.contract.model  # what its errors call it
            self._input, self._output = head.input_name, head.output_name

    # -- the runner: every model -----------------------------------------------------------------
    signature = _runner_attr("signature")
    backend = _runner_attr("backend")
    device = _runner_attr("device")
    precision = _runner_attr("precision")
    host = _runner_attr("host")
    path = _runner_attr("path")
    name = _runner_attr("name")
    metadata = _runner_attr("metadata")
    bare = _runner_attr("bare")  # (label, call): the model called straight, bench's peer row

    def close(self) -> None:
        """Close its runtime (and its encoder's, where it has one); a second close does nothing."""
        try:
            self.runner.close()
        finally:
            if self.encoder is not None:
                self.encoder.close()

    def __enter__(self) -> "Model":
        """``with load(...) as model:``: the model's runtime is closed where the block ends."""
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, feeds: Mapping[str, object], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Inputs by name -> the outputs asked for (all by default), by name; see Runner.run."""
        return self.runner.run(feeds, outputs)

    @functools.cached_property
    def generation(self) -> Generation | None:
        """The generation contract the file records (which tensors are the ids, mask, positions, logits
        and cache: ptx.contract.generation), checked against its signature; else, for a file in Optimum's
        layout without ptx's record (past_key_values.N.key in, present.N.key out), the one its names say;
        None for a file exported without its cache. Read once: its recorded reference decoding is the
        largest of a file's strings, and a server asks for the contract at every request."""
        where = f"{self.path.name if self.path else self.name}: ptx.{GENERATION_KEY}"
        generation = of_metadata(self.metadata, where)
        if generation is not None:
            generation.check(self.signature.input_names, self.signature.output_names, where)
            return generation
        return layout_of(self.signature)

    @functools.cached_property
    def embedding(self) -> Embedding | None:
        """The embedding contract the file records (ptx.contract.embedding: its vectors' output, pooling, longest
        input), checked against its signature; None for a file that embeds nothing."""
        where = f"{self.path.name if self.path else self.name}: ptx.{EMBEDDING_KEY}"
        embedding = embedding_of(self.metadata, where)
        if embedding is not None:
            embedding.check(self.signature, where)
        return embedding

    def embed(self, inputs, *, tokenizer=None) -> np.ndarray:
        """The vectors of ``inputs`` (a text, or a list of texts or of token-id lists), one row each, [N,
        dimensions] float32, as sentence-transformers' encode() gives them, from a file ``ptx export`` made of a
        sentence-transformers folder (its tokenizer beside it, or ``tokenizer``: a folder). Each text at most the
        model's longest input (InputError beyond it, as the server's 400)."""
        from .embedding import embed

        return embed(self, inputs, tokenizer)

    def decoding(self, ids, max_new_tokens: int = 32, eos: Sequence[int] | None = None,
                 sampling: Sampling | None = None, *, keep_prompt_logits: bool = False,
                 speculate=None) -> Decoding:
        """The decoding of ``ids`` (one prompt or several) through this model, to pull step by step
        (ptx.infer.model.generation.Decoding): the prompts checked, a file without its cache refused, and
        ``sampling``'s stop ids ending a prompt beside ``eos`` (default the file's). Its tokens are the
        caller's to choose: ``chooser_of(sampling)``. An encoder-decoder's ``ids`` are what its encoder reads:
        source token ids, or features (an array: Whisper's log-mel frames); its decoder starts from the
        contract's start ids (infer/model/encoder_decoding.py). ``keep_prompt_logits``: the prompt's run keeps
        its logits at every position (``Decoding.prompt_logits``: the prompt's own log-probabilities), for a
        decoder-only model. ``speculate``: a drafter (infer/model/speculative.py) whose guesses each step runs, kept
        as far as the choice confirms them (Decoding.take)."""
        generation = self.generation
        stops = eos
        if sampling is not None and sampling.stop_ids:
            stops = (*((generation.eos if generation else ()) if eos is None else eos), *sampling.stop_ids)
        if generation is not None and generation.encoder is not None:
            from .encoder_decoding import EncoderDecoding, encoder_not_open

            if self.encoder is None:
                raise encoder_not_open(generation, f"{self.name}'s")
            if keep_prompt_logits:
                raise InputError(f"{self.name} is an encoder-decoder: its prompt is its encoder's source, which the "
                                 "decoder gives no log-probabilities; ask for the answer's only")
            return EncoderDecoding(self.encoder.run, self.encoder.signature, self.runner.run, self.signature,
                                   generation, ids, max_new_tokens, stops, name=self.name)
        return Decoding(self.runner.run, self.signature, generation, ids, max_new_tokens, stops, name=self.name,
                        keep_prompt_logits=keep_prompt_logits,
                        cache=self.runner.new_cache(generation) if generation is not None else None,
                        speculate=speculate)

    def decode(self, ids, max_new_tokens: int = 32, eos: Sequence[int] | None = None,
               sampling: Sampling | None = None, speculate=None) -> Decoded:
        """``generate``'s decoding to its end with its record: each step's top-2 margin, and the time of the
        prompt's run and of the steps after it. ``sampling``: how each token is chosen (default greedy);
        ``speculate``: a drafter (infer/model/speculative.py) whose guesses greedy keeps where it confirms them, and
        sampling by speculative sampling (its distribution kept)."""
        return self.decoding(ids, max_new_tokens, eos, sampling, speculate=speculate).to_end(chooser_of(sampling))


    def generate(self, ids, max_new_tokens: int = 32, eos: Sequence[int] | None = None, *, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 seed: int | None = None) -> list[list[int]]:
        """Decoding of one prompt (a list of token ids) or several (a list of lists, of any lengths: one
        left-padded batch, each prompt's tokens as if it ran alone) -> each prompt's new token ids, at
        most ``max_new_tokens``, up to and with an end-of-sequence id (``eos``, default the file's; ``()``
        runs every step). For a file exported with its cache (``--task text-generation``).

        Greedy by default; ``temperature`` above 0 samples, with ``top_k``, ``top_p``, ``min_p`` and
        ``repetition_penalty`` as transformers' generate() applies them, and ``seed`` for the draws: the
        same seed gives the same tokens on every backend whose logits agree (ptx.contract.sampling).
        Text in and out: ``ptx.infer.model.text.generate_text``."""
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repetition_penalty=repetition_penalty, seed=seed, max_new_tokens=max_new_tokens)
        return self.decode(ids, max_new_tokens, eos, sampling).tokens

    @property
    def text(self):
        """The tokenizer, chat template and generation config kept beside the file (``ptx export`` of a
        transformers folder, or ``--tokenizer DIR``: ptx.infer.model.text.Text), or None."""
        from .text import Text

        return Text.beside(self.path)

    def generate_text(self, prompt, max_new_tokens: int = 32, *, tokenizer=None, **sampling) -> str:
        """Text in, text out, with the tokenizer beside the file (or ``tokenizer``: a folder): ``prompt`` a
        string, or a conversation ([{"role": "user", "content": "..."}]) rendered by the chat template.
        ``sampling``: temperature, top_k, top_p, min_p, repetition_penalty, seed, stop (strings), as
        ptx.contract.sampling.Sampling takes them; greedy by default."""
        from .text import Text
        from .text_generation import generate_text

        text = Text.beside(self.path, tokenizer)
        if text is None:
            raise PtxError(f"no tokenizer.json beside {self.path or self.name}: give tokenizer=DIR (a transformers "
                           "tokenizer folder), or export the model with its tokenizer (ptx export DIR)")
        ids = text.encode(prompt) if isinstance(prompt, str) else text.chat(prompt)
        params = Sampling(max_new_tokens=max_new_tokens, **sampling)
        return generate_text(self, [ids], text, params)[0].text

    def detections(self, feeds: Mapping[str, object]) -> list[dict[str, np.ndarray]]:
        """A detection model's answer as its module returned it: one dict per image ({"boxes": [K, 4],
        "scores": [K], "labels": [K]}, K that image's detections), rebuilt from the flat outputs its
        file answers (ptx.contract.detections)."""
        if self.signature.detections is None:
            raise PtxError(f"{self.name} answers no detections (its outputs are {', '.join(self.signature.output_names)}): "
                           "call run() instead")
        return per_image(self.run(feeds), self.signature.detections)

    @property
    def output_structure(self) -> OutputStructure | None:
        """The structure the module returned its outputs in (``(output_0, [output_1_0, ...])``), as
        ``ptx export --module`` recorded it in the file (ptx.output_structure); None for a file that
        records none. Checked to name exactly the file's outputs."""
        text = self.metadata.get(STRUCTURE_KEY)
        if not text:
            return None
        where = f"{self.path.name if self.path else self.name}: ptx.{STRUCTURE_KEY}"
        try:
            structure = OutputStructure.from_json(text, where)
        except ContractError as exc:  # what to do, beside what was wrong
            raise ContractError(f"{exc}: re-export the model to record it again") from None
        if sorted(structure.names()) != sorted(self.signature.output_names):
            raise ArtifactError(f"{where} names the outputs {', '.join(structure.names())}; the model's are "
                                f"{', '.join(self.signature.output_names)}: re-export it")
        return structure

    def nest(self, outputs: Mapping[str, np.ndarray]):
        """``run()``'s answer (every output, by name) given back as the module returned it: the
        tuples, lists and dicts it nested them in (a ModelOutput or dataclass as a dict of its
        fields), as the file records them; a detection model's, one dict per image. A file that records
        no structure: the answer as it is."""
        if self.signature.detections is not None:
            return per_image(outputs, self.signature.detections)
        structure = self.output_structure
        return dict(outputs) if structure is None else structure.nest(outputs)

    def __repr__(self) -> str:
        kind = "tutorial model" if self.head is not None else "model"
        return f"<{kind} {self.name} on {self.backend} ({self.device})>"

    # -- the head: a tutorial model's meaning ----------------------------------------------------
    def _head(self, what: str) -> Head:
        if self.head is None:
            raise PtxError(f"{self.name} is your own model (named tensors, no labels or pipeline): {what} is a "
                           f"tutorial model's; call run({{{', '.join(repr(n) for n in self.signature.input_names)}: "
                           "array}) instead")
        return self.head

    contract = _head_attr("contract", "its contract")
    info = _head_attr("info", "its contract")
    labels = _head_attr("labels", "labels")
    graph_input = _head_attr("graph_input", "graph_input")

    def predict(self, inputs, raw: bool = False, min_confidence: float | None = None) -> list[Prediction]:
        """Pictures (paths, an image file's bytes or binary file object, PIL images, numpy arrays:
        one picture or a batch, by shape), numbers, CSV rows or strings (or a text file's bytes: one
        input per line) -> one Prediction each, as docs/library.md's "What predict() takes" lists.
        ``min_confidence`` (0-1) marks answers whose probability is below it ``low_confidence``."""
        samples, sources = self._head("predict()").samples_of(inputs, raw=raw)
        return mark_low_confidence(self.predict_samples(samples, sources), min_confidence)

    def predict_samples(self, samples: list[np.ndarray], sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """Raw samples of possibly different lengths (tokens) -> predictions, in order."""
        contract = self._head("predict_samples()").contract
        sources = list(sources) if sources is not None else [None] * len(samples)
        results: list[Prediction | None] = [None] * len(samples)
        for group in length_groups(samples, contract):
            batch = collate([samples[i] for i in group], contract)
            for i, result in zip(group, self.predict_raw(batch, [sources[i] for i in group])):
                results[i] = result
        return results

    def predict_raw(self, samples: np.ndarray, sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """Raw samples (N, ...) as datasets hold them -> predictions, via the artifact's steps (uint8
        pictures go to an artifact exported with --input uint8 as they are)."""
        head = self._head("predict_raw()")
        if head.raw_input is not None and samples.dtype == np.uint8:
            return head.interpret(self.predict_pictures(samples), samples, sources)
        return head.interpret(self.run(head.feeds(to_model_input(samples, head.contract)))[self._output], samples,
                              sources)

    def predict_pictures(self, pictures) -> np.ndarray:
        """(N, canvas, canvas) uint8 raw pictures -> outputs. An artifact exported with --input uint8
        takes them as they are (its graph normalises them); any other normalises them here first."""
        head = self._head("predict_pictures()")
        if head.info.raw_input is None:
            return self.run(head.feeds(to_model_input(pictures, head.contract)))[self._output]
        head.check_pictures(pictures)
        return self.run({self._input: np.ascontiguousarray(pictures)})[self._output]

    def predict_on_device(self, x):
        """A torch tensor on the GPU in, a torch tensor on the same GPU out (ort-cuda): nothing
        crosses to the host."""
        head = self._head("predict_on_device()")
        run_on_device = getattr(self.runner, "run_on_device", None)
        if run_on_device is None:
            raise PtxError(f"predict_on_device is ort-cuda's; this model runs on {self.backend}: use run(model.head.feeds(x))")
        if head.info.raw_input is not None:
            head.check_pictures(x)
        else:
            head.check_input(x)
        return run_on_device({self._input: x})[self._output]

    prepare_one = _head_attr("prepare_one", "prepare_one()")
    prepare_many = _head_attr("prepare_many", "prepare_many()")
    text_lines = _head_attr("text_lines", "text_lines()")


def answered_otherwise(models) -> str | None:
    """One line where a model's answers contradicted the output shapes it declares (the first runner
    that saw it, with how many others did: the file is wrong, not a backend), else None."""
    models = {id(m): m for m in models}.values()  # the reference is a row too
    seen = [m.runner.contradiction for m in models if getattr(getattr(m, "runner", None), "contradiction", None)]
    if not seen:
        return None
    more = f"; {len(seen) - 1} other backend{'s' * (len(seen) != 2)} answered so too" if len(seen) > 1 else ""
    return f"warning: {seen[0]}{more}"
