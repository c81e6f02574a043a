"""A causal language model exported with its key/value cache: ``ptx export --module FILE.py:FACTORY
--task text-generation`` (and by itself for a transformers causal LM whose class generates: chosen_task).

The decoder file takes input_ids, attention_mask (past + new tokens), position_ids where the model
reads them, logits_to_keep where the model's forward takes it (transformers' causal LMs: the positions
whose logits the run computes, so that a prompt's run computes its last position's only), and every
layer's past key and value (``past_key_values.{i}.key``: [batch, kv heads, past, head size]); it returns
the logits and every layer's present key and value (``present.{i}.key``), which the next step feeds back
as its past: Optimum's layout, plus logits_to_keep where there is one. Batch, new tokens and past length
are dynamic; an empty past (length 0) serves the first step. The model's own cache (a transformers
DynamicCache) is built inside from the flat tensors, so grouped-query attention, rotary positions (Llama,
Qwen2) and learned positions with a tied head (GPT-2) are the model's own code, traced (the decoder and its
tensors: export/cached_decoder.py). Here: which task a module is exported for, and its files written and
judged (DecoderSource).

Written and validated by the one export driver (export/pipeline.py), as every export is: the file is
opened by the runtime that serves it, where the memory plan says it fits, and decodes the judging prompts
(ptx.contract.generation.judging_prompts: three short ones left-padded in one batch, one reaching past 300
positions alone), teacher-forced on the reference's tokens then free-running, judged step by step by the
one judge of a decoding (ptx.contract.generation_judge; infer/model/generation_check.py runs it). The
reference is eager's decoding of the module, teacher-forced on transformers' own generate(do_sample=False)
tokens where the module generates, which ptx's loop must give (decoder_reference.py): a positions or mask bug
in ptx's loop would otherwise sit on both sides of every check. The file records its generation contract
(ptx.generation) with that reference (each step's largest logits, generation_judge.ReferenceDecoding) and
the bounds a reduced precision's decoding is held to, which ``ptx verify`` holds every runtime to.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.atomic import scratch_folder
from ptx.contract import Tolerance
from ptx.contract.generation import GENERATION_KEY, JUDGING_STEPS, batches, judging_prompts
from ptx.contract.generation_judge import BOUND_OPTIONS, recorded_bounds
from ptx.contract.tensors import Signature, TensorSig, as_declarations
from ptx.errors import PtxError, ValidationError
from ptx.files import file_sha256
from ptx.infer.model.generation_check import judge_decoding
from ptx.infer.runtime import backends as registry
from ptx.infer.runtime.memory_plan import OutOfMemoryPlan, require_room, size_text

from .cached_decoder import CACHE_NAMES, decoder_of, example_feeds
from .decoder_reference import decoding_reference
from .factory import load_state_dict_file
from .formats.onnx import Exporter
from .metadata import module_strings
from .pipeline import Checked, ExportSource

TASKS = ("auto", "text-generation", "text2text-generation", "forward")
SEQ2SEQ = "text2text-generation"  # the cache export of an encoder-decoder (T5, BART, Whisper): export/seq2seq.py


def generates(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a transformers model whose class generates (GenerationMixin's can_generate)
    and that keeps a cache: one built with use_cache=False asked for its forward pass alone."""
    can = getattr(module, "can_generate", None)
    try:
        able = bool(callable(can) and can())
    except Exception:  # noqa: BLE001 - a model's own check that raises says it does not
        return False
    return able and getattr(getattr(module, "config", None), "use_cache", True) is not False


def cache_refusal(module: torch.nn.Module) -> str | None:
    """Why ptx cannot export ``module`` with its key/value cache as a causal LM's, judged from its class and
    config without running it; None for the kind it can: a causal LM as transformers makes them (input_ids,
    attention_mask, a cache and use_cache in; the logits and the cache out). ``--task auto`` asks it of a
    model that generates, ``--task text-generation`` of any (an encoder-decoder's: export/seq2seq.py)."""
    kind = type(module).__name__
    if getattr(getattr(module, "config", None), "is_encoder_decoder", False):
        return f"{kind} is an encoder-decoder: give --task text2text-generation to export it with its cache"
    if getattr(module, "_is_stateful", False):  # transformers' mark of a recurrent state (Mamba, RWKV, hybrids)
        return (f"{kind} keeps a recurrent state: ptx exports the cache of attention layers' keys and values only; "
                "generating with it would need the state carried from step to step")
    params = inspect.signature(module.forward).parameters
    missing = [p for p in ("input_ids", "attention_mask", "use_cache") if p not in params] + \
        ([] if any(k in params for k in CACHE_NAMES) else [" or ".join(CACHE_NAMES)])
    if missing:
        return (f"{kind}.forward takes no {', '.join(missing)}: ptx exports the cache of causal LMs that take "
                "input_ids, attention_mask, a cache and use_cache, as transformers makes them")
    return None


def refuse_text_generation(module: torch.nn.Module) -> None:
    """--task text-generation of a kind ptx cannot export with its cache (cache_refusal), in one line."""
    refusal = cache_refusal(module)
    if refusal:
        raise PtxError(f"--task text-generation: {refusal}; give --task forward to export its forward pass")


def chosen_task(module, task: str, log: Callable[[str], None]) -> str:
    """The task export_module runs, text-generation or forward, for ``task`` (one of TASKS) of a model that
    is no encoder-decoder (export/seq2seq.py's chosen_task takes those): auto exports with its cache a model
    that generates, where ptx can make its cache export (cache_refusal), and says in one line why one that
    generates is exported without it; text-generation is refused, in one line, of a kind ptx cannot make it of."""
    if task not in TASKS:
        raise PtxError(f"--task {task!r}: choose {', '.join(TASKS)}")
    if task == "forward" or not isinstance(module, torch.nn.Module):
        return "forward"  # export_module refuses what is no nn.Module, on either way
    if task == SEQ2SEQ:
        raise PtxError(f"--task {task}: {type(module).__name__} is not an encoder-decoder: give --task text-generation "
                       "to export it with its cache, or --task forward for its forward pass")
    if task == "text-generation":
        refuse_text_generation(module)
        return task
    if not generates(module):
        return "forward"
    refusal = cache_refusal(module)
    if refusal:
        log(f"task: forward ({refusal}): its forward pass is exported, without a cache")
        return "forward"
    return "text-generation"


def judged_line(judged, how: str, past: int) -> str:
    """What export says of a file's decoding that holds: its worst step, what it covered (``how`` the prompts
    were batched, the past reaching ``past`` positions), its own tokens."""
    worst = max((p.worst for p in judged.prompts if p.worst is not None), key=lambda a: a.max_abs)
    own = sum(p.steps if p.parting is None else p.parting.step - 1 for p in judged.prompts)
    ties = [t.describe() for p in judged.prompts for t in p.ties]
    parted = [p.parting.describe() for p in judged.prompts if p.parting is not None]
    over = (f"{judged.positions} positions teacher-forced ({judged.prompt_positions} in the prompts, {judged.steps} "
            "decoding steps; " if judged.prompt_positions else f"{judged.steps} decoding steps teacher-forced (")
    return (f"worst |diff| vs eager {worst.max_abs:.2e} over {over}logits, atol "
            f"{judged.tolerance.atol:g}, rtol {judged.tolerance.rtol:g} x the row's largest; {how}; the past from 0 to "
            f"{past}); greedy tokens: {own} of {judged.steps} as the reference's"
            + (f" ({'; '.join(parted[:1])})" if parted else "")
            + (f"; near-ties said: {ties[0]}" + (f" and {len(ties) - 1} more" if len(ties) > 1 else "") if ties else ""))


def prompts_batched(prompts) -> str:
    """How the judging prompts are decoded (ptx.contract.generation.batches), as export says it."""
    together = [g for g in batches(prompts) if len(g) > 1]
    alone = [g[0] for g in batches(prompts) if len(g) == 1]
    return "; ".join([*(f"{len(g)} prompts left-padded in one batch" for g in together),
                      *(f"one of {len(prompts[k])} tokens alone" for k in alone)])


DECODER_FORMATS = ("onnx", "torchscript", "pt2")
# The format that carries the cache to every runtime: its failure fails the export. Another format that
# cannot carry it (a trace that fixes the past's length) is said in one line and not kept.
CARRIES_THE_CACHE = "onnx"
# export_module's options that shape a forward export's tensors or its checks, by parameter name: a decoder's
# tensors and its checks are its own, so one would be ignored.
SHAPING = {"input_files": "--inputs", "output_names": "--output", "plan": "--shape/--value/--range",
           "max_sizes": "--max-shape", "min_sizes": "--min-shape"}


class DecoderSource(ExportSource):
    """A causal LM (in eval mode) as the one driver writes it with its key/value cache: the decoder and its
    signature (decoder_of), traced at example_feeds' sizes; each file decoded through its serving runtime
    and held to the reference (decoding_reference: transformers' generate() of the judging prompts where the
    module generates, else ptx's decoding of the eager module) step by step (check), which every file records for verify
    (ptx.generation, with the bounds a reduced precision is held to: ``bounds``, the user's by option name).
    ``strings_of(signature)``: the metadata every file carries beside its generation contract;
    ``tolerance(output, device)``: what the logits are held to (None: their dtype's)."""
    TASK, EXPORTED, ALONE = "text-generation", "the decoder is exported with its key/value cache", "logits"

    formats = DECODER_FORMATS
    folder = None  # an encoder-decoder's source (seq2seq.py) is opened whole, never read from its folder
    _weightless: bytes | None = None  # a folder's f32 file's graph traced without its weights, once it is written

    def __init__(self, module: torch.nn.Module, name: str, *, strings_of: Callable[[Signature], dict[str, str]],
                 options: dict[str, dict], log: Callable[[str], None], steps: int = JUDGING_STEPS,
                 declared: Sequence[str] = (), tolerance: Callable | None = None,
                 text: Mapping[str, bytes] | None = None, bounds: Mapping[str, Mapping] | None = None,
                 all_logits: bool = False, ort_attention: bool = False, static_cache: bool = False, folder=None):
        refuse_text_generation(module)
        self.folder = folder  # the transformers folder whose tensors the module's parameters are (pretrained.py)
        decoder, signature, self.generation = decoder_of(module, log, all_logits, ort_attention, static_cache)
        foreign = [n for n in declared if n not in signature.input_names]
        if foreign:
            raise PtxError(f"--input {foreign[0]}: a decoder exported with its cache takes "
                           f"{', '.join(signature.input_names[:3])} and the past key/values; leave --input out, or "
                           "give --task forward to export one forward pass of the inputs you declare")
        vocab = int(signature.output(self.generation.logits).shape[-1])
        check_tokenizer(text or {}, vocab)
        self.text = dict(text or {})  # the tokenizer's files, kept beside the files (keep_text)
        self.prompts = judging_prompts(vocab, self.generation.max_positions, steps)
        if self.generation.max_positions is not None:
            steps = max(1, min(steps, self.generation.max_positions - max(map(len, self.prompts))))
        self.steps = steps
        streamed = getattr(module, "ptx_streamed", None)
        self.reference = decoding_reference(decoder, module if generates(module) and streamed is None else None,
                                            signature, self.generation, self.prompts, steps, log,
                                            streamed=folder if streamed is not None else None)
        if streamed is not None:
            streamed.let_go()  # what the writers and the judge hold next is theirs
        recorded = self.generation.with_reference(self.reference.to_record(), recorded_bounds(bounds))
        strings = {**strings_of(signature), GENERATION_KEY: recorded.to_json()}
        example = example_feeds(signature, self.generation, vocab)  # every dynamic size 2 or more; that the file
        # takes an empty past too (the first step's) is what the check proves
        super().__init__(name, decoder, tuple(torch.from_numpy(example[n]) for n in signature.input_names),
                         signature, strings)
        self._options, self._tolerance = options, tolerance
        pasts = {past for past, _ in self.generation.cache}
        own = [n for n in signature.input_names if n not in pasts]
        log(f"module: {name} ({type(module).__name__}, {sum(p.numel() for p in module.parameters()):,} parameters), "
            f"exported with its cache: inputs {', '.join(own)} and the past of {len(self.generation.cache) // 2} "
            "layers; outputs logits and the present")

    def options(self, fmt) -> dict:
        options = dict(self._options.get(fmt.name, {}))
        if self.folder is not None and fmt.name == CARRIES_THE_CACHE:  # traced without weights, read from the folder
            options["weights"] = self.folder
        return options

    def write(self, fmt, path: Path, options: dict):
        if self.folder is not None and fmt.name != CARRIES_THE_CACHE and getattr(self.subject.model, "ptx_streamed", None):
            raise PtxError(f"--format {fmt.name}: {self.name} is read from its folder one tensor at a time (its weights "
                           "do not fit in memory whole): ptx writes it as onnx and the weight-only formats (onnx-int4, "
                           "onnx-int8w, openvino-int4, openvino-int8w)")
        if self.folder is not None and fmt.name == CARRIES_THE_CACHE:
            # asked before a folder's f32 file is written from its shards: one its check cannot open is not kept
            require_room(f"checking {path.name} ({size_text(self.folder.f32_bytes)} of float32 weights) on "
                         f"{fmt.serving_backend}", registry.get(fmt.serving_backend).holds_external * self.folder.f32_bytes)
            # its graph kept (a few MB at 7B: no weight in it) for the weight-only formats: a second trace of a 0.5B
            # model costs some 100 s
            with scratch_folder("ptx-weightless-") as scratch:
                lazy = Path(scratch) / fmt.file_name
                made = super().write(fmt, path, {**options, "lazy_copy": lazy})
                self._weightless = lazy.read_bytes() if lazy.exists() else None
            return made
        return super().write(fmt, path, options)

    def departure(self, path: Path) -> str | None:
        """Where the decoder file at ``path`` parts from the module, said as the module's layer (export/departure.py),
        on the longest short judging prompt's first step; None where the file names no layers."""
        from .departure import departure
        from .weight_only import first_steps

        prompt = max((p for p in self.prompts if len(p) <= 64), key=len, default=self.prompts[0])
        feeds = first_steps(self.signature, self.generation, [prompt])[0]
        try:
            return departure(path, self.subject.model, feeds, np.asarray([prompt], dtype=np.int64))
        finally:
            streamed = getattr(self.subject.model, "ptx_streamed", None)
            if streamed is not None:
                streamed.let_go()

    traced_how = ""  # how lazy_graph's trace went, where worth saying (export/repeated_layers.py)

    @property
    def has_weightless_graph(self) -> bool:
        """Whether the f32 file's graph, traced without its weights, is kept for the weight-only formats."""
        return self._weightless is not None

    def lazy_graph(self, scratch: Path) -> Path:
        """The decoder's f32 graph traced without its weights in ``scratch`` (model.onnx, with the strings every file
        carries), each initializer naming its folder tensor: what the weight-only formats are made from, one tensor
        at a time, where the folder's model is exported without its f32 file (export/weightless.py)."""
        from .formats import get

        fmt = get(CARRIES_THE_CACHE)
        path = Path(scratch) / fmt.file_name
        if self._weightless is not None:  # the f32 file's, traced when it was written
            path.write_bytes(self._weightless)
            return path
        written = fmt.write(self.subject, self.example, path, self.signature, self.strings, lazy=True,
                            **self.options(fmt))
        self.traced_how = written.traced
        return path

    def tolerance(self, sig: TensorSig, on: str) -> Tolerance:
        return self._tolerance(sig, on) if self._tolerance else super().tolerance(sig, on)

    def check(self, fmt, model, path: Path, cases, on: str, hint: str) -> Checked:
        """The file's decoding of the prompts, teacher-forced on the reference's tokens then free-running, held
        to eager's step by step (ptx.contract.generation_judge, as verify holds it): a ValidationError names
        the prompt and step where it fails."""
        where = f"{fmt.name} ({model.backend})"
        logits = model.signature.output(self.generation.logits)
        try:
            judged, _ = judge_decoding(model.run, model.signature, self.generation, self.reference,
                                       tolerance=self.tolerance(logits, model.device), encoder=model.encoder,
                                       cache=model.runner.new_cache(self.generation))
        except OutOfMemoryPlan:
            raise  # not checked here, said as such (not_kept): no fault of the file
        except PtxError as exc:
            raise ValidationError(f"{where} does not decode with its cache: {exc}") from None
        failures = judged.failures()
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise ValidationError(f"{where}: {failures[0]}{more}{'; ' + hint if hint else ''}")
        worst = max((p.worst for p in judged.prompts), key=lambda a: a.max_abs)
        return Checked({logits.name: worst}, detail=self.judged_line(judged))

    def judged_line(self, judged) -> str:
        return judged_line(judged, prompts_batched(self.prompts), max(map(len, self.prompts)) + self.steps - 1)

    def describe(self, result, tolerance: Tolerance) -> str:
        return f"{result.method}; {result.detail}"

    def not_kept(self, fmt, exc: PtxError) -> str | None:
        if isinstance(exc, OutOfMemoryPlan) or fmt.name == CARRIES_THE_CACHE:
            return super().not_kept(fmt, exc)
        return f"it cannot carry the cache ({exc})"

    def none_kept(self, reasons: Sequence[str]) -> PtxError:
        return PtxError(f"no format carries {self.name}'s cache: {'; '.join(reasons)}; export it to onnx")

    def keep_text(self, staging: Path, log: Callable[[str], None]) -> None:
        """The tokenizer's files (export/pretrained.py's text_files) written beside the files in ``staging``."""
        for file_name, data in self.text.items():
            (staging / file_name).write_bytes(data)
        if self.text:
            template = "chat_template.jinja" in self.text or b'"chat_template"' in self.text.get(
                "tokenizer_config.json", b"")
            log(f"text: {', '.join(self.text)} kept beside the file{' (with a chat template)' if template else ''}: "
                "ptx generate --prompt and ptx serve's OpenAI API take text")


def check_tokenizer(text: Mapping[str, bytes], vocab: int) -> None:
    """A tokenizer whose ids reach past the model's vocabulary is refused (the wrong tokenizer for the model):
    a model's vocabulary may be larger (padded), never smaller."""
    if "tokenizer.json" not in text:
        return
    from tokenizers import Tokenizer

    size = Tokenizer.from_str(text["tokenizer.json"].decode("utf-8")).get_vocab_size(with_added_tokens=True)
    if size > vocab:
        raise PtxError(f"the tokenizer has {size:,} tokens and the model's vocabulary {vocab:,}: its ids would run past "
                       "the model's; give the model's own tokenizer (--tokenizer DIR)")


def decoder_formats(formats: Sequence[str]) -> list[str]:
    """The formats asked of a decoder with its cache, each once: one it is not written as, refused in one line."""
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in DECODER_FORMATS]
    if unknown or not chosen:
        raise PtxError(f"format {unknown[0] if unknown else '(none)'!r}: a model exported with its cache (--task "
                       f"text-generation) is written as {', '.join(DECODER_FORMATS)}")
    return chosen


def refuse_beside_ort(seq2seq: bool, formats: Sequence[str]) -> None:
    """--ort-attention's refusals, in one line: an encoder-decoder (its decoder's attention is transformers'
    own), and a format of a runtime other than ONNX Runtime, which does not run its operator."""
    if seq2seq:
        raise PtxError("--ort-attention is for a causal LM (--task text-generation): an encoder-decoder's decoder "
                       "keeps its own attention; leave it out")
    other = next((f for f in formats if f != "onnx" and not f.startswith("onnx-")), None)
    if other:
        raise PtxError(f"--format {other}: --ort-attention writes ONNX Runtime's GroupQueryAttention, which only ONNX "
                       f"Runtime runs: leave out {other}, or export without --ort-attention")


def refuse_shaping(**given) -> None:
    """One line for the first of export_module's options that shape a forward export (SHAPING; ``given``: by
    parameter name; a plan counts where one of its entries is set, as the CLI always makes one)."""
    named = [SHAPING[k] for k, v in given.items() if (any(v.values()) if isinstance(v, dict) else v)]
    if named:
        raise PtxError(f"{named[0]} is not for a model exported with its cache (its tensors are the decoder's, "
                       "checked by decoding prompts): leave it out, or give --task forward")


def refuse_bounds(bounds) -> None:
    """A reduced decoding's bounds are recorded in a generating file only: one line for a forward export."""
    given = [name for name, values in (bounds or {}).items() if values]
    if given:
        raise PtxError(f"{BOUND_OPTIONS[given[0]]} bounds a decoding (a model exported with its cache): leave it out, or "
                       "give --task text-generation")


def refuse_text(text) -> None:
    """A tokenizer goes beside a generating file only: one line for a forward export given one."""
    if text:
        raise PtxError("a tokenizer is kept beside a model exported with its cache (one that generates): leave "
                       "--tokenizer out, or give --task text-generation (text2text-generation for an encoder-decoder)")


def decoder_source(module, *, name: str, checkpoint, opset, exporter, device, provenance, log, asked: bool, inputs,
                   tolerance, tolerance_given: dict, made: type, text: Mapping[str, bytes] | None = None,
                   bounds: Mapping[str, Mapping] | None = None, all_logits: bool = False,
                   ort_attention: bool = False, static_cache: bool = False, folder=None) -> DecoderSource:
    """export_module's source for a model with its key/value cache (``made``: DecoderSource, or an
    encoder-decoder's Seq2SeqSource; ``asked``: given as --task, else its class generates), the checkpoint
    loaded into it. ``tolerance(output, device)``: what the files are held to (``tolerance_given``: the
    user's, as the files record it); ``text``: the tokenizer's files, kept beside them; ``bounds``: what a
    reduced precision's decoding must hold, as the user gave them (recorded); ``all_logits``: a causal LM's decoder
    without logits_to_keep (an encoder-decoder's decoders never take it); ``ort_attention``: a causal LM's decoder
    whose attention is ONNX Runtime's GroupQueryAttention, its cache kept in place (export/ort_attention.py);
    ``static_cache``: a causal LM's decoder whose cache is a buffer of fixed length (export/static_cache.py);
    ``folder``: the transformers folder (export/folder_weights.FolderWeights) whose tensors the module's parameters
    are: its files are traced without their weights and read them from there (export/pretrained.py)."""
    log(f"task: {made.TASK} ({'asked' if asked else f'{type(module).__name__} generates'}): {made.EXPORTED}"
        + ("" if asked else f"; --task forward exports its {made.ALONE} alone"))
    loaded = load_state_dict_file(module, checkpoint, name) if checkpoint is not None else None
    module.eval()
    if loaded:
        log(f"checkpoint: {loaded}")
    onnx_options = dict(opset=opset, exporter=Exporter(exporter) if exporter else None)

    # the checkpoint hashed once: every file of the source carries its digest
    given = {"torch_version": str(torch.__version__),
             **({"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint)} if loaded else {}),
             **tolerance_given, **dict(provenance or {})}

    def strings_of(signature: Signature) -> dict[str, str]:
        return module_strings(name, signature, given)

    return made(
        module, name, strings_of=strings_of, log=log, tolerance=tolerance, text=text, bounds=bounds,
        options={"onnx": onnx_options, "torchscript": {}, "pt2": dict(device=device)},
        declared=[t.name for t in as_declarations(inputs or ())],
        # an encoder-decoder's decoder computes every position's logits, its cache as transformers lays it out
        **({"all_logits": all_logits, "ort_attention": ort_attention, "static_cache": static_cache, "folder": folder}
           if made is DecoderSource
           else {}))
