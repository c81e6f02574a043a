"""A causal language model exported with its key/value cache: ``ptx export --module FILE.py:FACTORY
--task text-generation`` (and by itself for a transformers causal LM whose class generates: chosen_task).

The decoder file takes input_ids, attention_mask (past + new tokens), position_ids where the model
reads them, and every layer's past key and value (``past_key_values.{i}.key``: [batch, kv heads, past,
head size]); it returns the logits and every layer's present key and value (``present.{i}.key``), which
the next step feeds back as its past: Optimum's layout, which ORTModelForCausalLM, onnxruntime-genai and
OpenVINO read. Batch, new tokens and past length are dynamic; an empty past (length 0) serves the first
step. The model's own cache (a transformers DynamicCache) is built inside from the flat tensors, so
grouped-query attention, rotary positions (Llama, Qwen2) and learned positions with a tied head (GPT-2)
are the model's own code, traced.

Validated as the design asks of every export: the file is opened by the runtime that serves it and
decodes the same prompts as eager's own cached decoding, batched and left-padded, step by step, each
step's logits held to the tolerance on eager's tokens (teacher-forced, so a near-tie cannot hide a
difference in the steps after it); its free-running greedy tokens are then judged against eager's by
the one judge of tokens (ptx.contract.generation.judge_tokens). The file records its generation contract
(ptx.generation) with eager's decoding of those prompts, which ``ptx verify`` holds every runtime to.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.contract.comparison import compare_output, default_tolerance
from ptx.contract.generation import GENERATION_KEY, Generation, judge_tokens
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError, ValidationError
from ptx.infer.model.generation import Decoded, greedy

TASKS = ("auto", "text-generation", "forward")
# The prompts export validates on: three lengths in one left-padded batch, so that padding, the mask
# and positions are exercised; and the steps each decodes (the past grows from 0 to longest + steps).
PROMPT_LENGTHS = (3, 7, 12)
VALIDATION_STEPS = 16
BATCH, SEQ, PAST, TOTAL = "batch", "seq", "past", "total"


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
    """Why ptx cannot export ``module`` with its key/value cache, judged from its class and config without
    running it; None for the kind it can: a causal LM as transformers makes them (input_ids, attention_mask,
    a cache and use_cache in; the logits and the cache out). The one place that says which kinds get the
    cache export: ``--task auto`` asks it of a model that generates, ``--task text-generation`` of any."""
    kind = type(module).__name__
    if getattr(getattr(module, "config", None), "is_encoder_decoder", False):
        return (f"{kind} is an encoder-decoder: ptx exports its cache for causal LMs only; generating with one "
                "would need an encoder file, and a decoder file taking the encoder's states, its own past and the "
                "cross-attention past")
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
    """The task export_module runs, text-generation or forward, for ``task`` (one of TASKS): auto exports
    with its cache a model that generates, where ptx can make its cache export (cache_refusal), and says in
    one line why one that generates is exported without it; text-generation is refused, in one line, of a
    kind ptx cannot make it of."""
    if task not in TASKS:
        raise PtxError(f"--task {task!r}: choose {', '.join(TASKS)}")
    if task == "forward" or not isinstance(module, torch.nn.Module):
        return "forward"  # export_module refuses what is no nn.Module, on either way
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


def _cache_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A model's cache as (key, value) per layer: a transformers Cache (its ``layers``, or the older
    key_cache / value_cache lists) or the legacy tuple of tuples."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    if isinstance(cache, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in cache):
        return [(p[0], p[1]) for p in cache]
    raise PtxError(f"the model's cache is a {type(cache).__name__}, which ptx cannot read as keys and values per layer")


def _new_cache(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding ``pairs`` (the layers' past keys and values), as generate() builds one."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (key, value) in enumerate(pairs):
        cache.update(key, value, layer)
    return cache


class CachedDecoder(torch.nn.Module):
    """``model`` called on flat tensors: the ids, mask, positions (where it reads them) and each layer's
    past key and value in; the logits and each layer's present key and value out (a tuple, in the order
    of ``output_names``)."""

    def __init__(self, model: torch.nn.Module, layers: int, takes_positions: bool, cache_keyword: str):
        super().__init__()
        self.model, self.layers, self.takes_positions = model, layers, takes_positions
        self.cache_keyword = cache_keyword

    def forward(self, input_ids, attention_mask, *rest):
        position_ids, past = (rest[0], rest[1:]) if self.takes_positions else (None, rest)
        cache = _new_cache([(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        extra = {"position_ids": position_ids} if self.takes_positions else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         **{self.cache_keyword: cache}, **extra)
        logits, present = _logits_and_cache(out)
        return (logits, *(t for pair in _cache_pairs(present) for t in pair))


# The names a model's answer holds its cache under: transformers 5 says ``cache``, earlier ``past_key_values``.
CACHE_NAMES = ("cache", "past_key_values")


def _logits_and_cache(out):
    """(logits, cache) of a causal LM's answer (a ModelOutput, or a tuple of logits then cache)."""
    if hasattr(out, "keys"):
        return out["logits"], next((out[k] for k in CACHE_NAMES if k in out.keys() and out[k] is not None), None)
    return out[0], out[1] if len(out) > 1 else None


def _named(decoder: CachedDecoder, names: Sequence[str]) -> CachedDecoder:
    """``decoder`` whose forward() shows ``names`` as its parameters: the exporters name the graph's
    inputs by them and torch.export binds the example to them."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  *(inspect.Parameter(n.replace(".", "_"), inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names)]

    def forward(self, *args):
        return CachedDecoder.forward(self, *args)

    forward.__signature__ = inspect.Signature(parameters)
    cls = type(type(decoder.model).__name__, (CachedDecoder,), {"forward": forward, "__module__": __name__})
    made = cls.__new__(cls)
    torch.nn.Module.__init__(made)
    made.model, made.layers, made.takes_positions = decoder.model, decoder.layers, decoder.takes_positions
    made.cache_keyword = decoder.cache_keyword
    return made


def _config_int(module, *names) -> int | None:
    config = getattr(module, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def decoder_of(module: torch.nn.Module, log: Callable[[str], None]) -> tuple[CachedDecoder, Signature, Generation]:
    """(the decoder to export, its signature, its generation contract without the reference) of a causal
    LM ``module``: the cache's layout learned by one eager run with use_cache=True."""
    refuse_text_generation(module)
    params = inspect.signature(module.forward).parameters
    cache_keyword = next(k for k in CACHE_NAMES if k in params)
    takes_positions = "position_ids" in params
    ids = torch.tensor([[1, 2]])
    with torch.no_grad():
        try:
            out = module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        except Exception as exc:  # noqa: BLE001 - the model's own refusal, in one line
            raise PtxError(f"--task text-generation: {type(module).__name__} refused a first step of 2 tokens "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    logits, cache = _logits_and_cache(out)
    if cache is None:
        raise PtxError(f"--task text-generation: {type(module).__name__} returned no cache with use_cache=True: "
                       "export it with --task forward (its logits alone)")
    pairs = _cache_pairs(cache)
    vocab, dtype = int(logits.shape[-1]), str(logits.dtype).replace("torch.", "")
    inputs = [TensorSig("input_ids", "int64", (BATCH, SEQ), 0, (0, vocab - 1)),
              TensorSig("attention_mask", "int64", (BATCH, TOTAL), 0, (0, 1))]
    if takes_positions:
        inputs.append(TensorSig("position_ids", "int64", (BATCH, SEQ), 0))
    outputs = [TensorSig("logits", dtype, (BATCH, SEQ, vocab), 0)]
    cache_names = []
    for layer, pair in enumerate(pairs):
        for kind, tensor in zip(("key", "value"), pair):
            if tensor.dim() != 4:
                raise PtxError(f"--task text-generation: layer {layer}'s cached {kind} has shape {list(tensor.shape)}; "
                               "ptx decodes a cache of [batch, heads, past, head size]")
            heads, size = int(tensor.shape[1]), int(tensor.shape[3])
            kv_dtype = str(tensor.dtype).replace("torch.", "")
            past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
            inputs.append(TensorSig(past, kv_dtype, (BATCH, heads, PAST, size), 0))
            outputs.append(TensorSig(present, kv_dtype, (BATCH, heads, TOTAL, size), 0))
            cache_names.append((past, present))
    config = getattr(module, "generation_config", None) or getattr(module, "config", None)
    eos = _ids(getattr(config, "eos_token_id", None))
    outside = [e for e in eos if not 0 <= e < vocab]
    if outside:
        log(f"generation: end-of-sequence id {', '.join(map(str, outside))} is outside the vocabulary of {vocab}: "
            "left out (give --eos to ptx generate)")
        eos = [e for e in eos if 0 <= e < vocab]
    pad = next((p for p in (*_ids(getattr(config, "pad_token_id", None)), *eos) if 0 <= p < vocab), 0)
    generation = Generation(tuple(cache_names), position_ids="position_ids" if takes_positions else None,
                            eos=tuple(eos), pad=pad,
                            max_positions=_config_int(module, "max_position_embeddings", "n_positions"))
    heads = {int(p[0].shape[1]) for p in pairs}
    log(f"generation: {len(pairs)} layers, a cache of {'/'.join(map(str, sorted(heads)))} key/value heads of "
        f"{int(pairs[0][0].shape[3])}; "
        + (f"end-of-sequence {', '.join(map(str, eos))}" if eos else "no end-of-sequence id")
        + f"; padding {pad}" + (f"; {generation.max_positions} positions" if generation.max_positions else ""))
    decoder = _named(CachedDecoder(module, len(pairs), takes_positions, cache_keyword), [t.name for t in inputs])
    return decoder, Signature(tuple(inputs), tuple(outputs)), generation


def example_feeds(signature: Signature, generation: Generation, vocab: int, batch: int = 2, seq: int = 3,
                  past: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs the exporters trace with: every dynamic size at least 2 (torch.export specializes 0 and 1),
    the mask covering past and new tokens, positions following the past."""
    rng = np.random.default_rng(seed)
    feeds = {generation.input_ids: rng.integers(0, vocab, (batch, seq)).astype(np.int64),
             generation.attention_mask: np.ones((batch, past + seq), dtype=np.int64)}
    if generation.position_ids:
        feeds[generation.position_ids] = np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))
    for name, _ in generation.cache:
        sig = signature.input(name)
        shape = [batch if isinstance(d, str) and d == BATCH else past if d == PAST else d for d in sig.shape]
        feeds[name] = rng.standard_normal(shape).astype(sig.dtype)
    return feeds


def eager_run(decoder: torch.nn.Module, signature: Signature):
    """The decoder as a runner's run(): numpy in, numpy out, by name."""
    def run(feeds):
        with torch.no_grad():
            out = decoder(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in signature.input_names))
        return {n: t.detach().numpy() for n, t in zip(signature.output_names, out)}
    return run


def validation_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in PROMPT_LENGTHS]


def reference_decoding(decoder, signature: Signature, generation: Generation, prompts, steps: int) -> Decoded:
    """Eager's own cached greedy decoding of ``prompts``, every step run (no end-of-sequence stop), with each
    step's logits kept for the file's teacher-forced check."""
    kept: list[np.ndarray] = []
    decoded = greedy(eager_run(decoder, signature), signature, generation, prompts, steps, eos=(),
                     on_step=lambda _, logits: kept.append(logits.copy()))
    decoded.logits = kept
    return decoded


def check_decoding(run, signature: Signature, generation: Generation, prompts, eager: Decoded, where: str,
                   device: str = "cpu", tolerance=None) -> str:
    """The file's decoding (``run``: its runner's) held to eager's: every step's logits on eager's tokens
    within the tolerance, batched and left-padded and the second prompt alone (batch 1), then its own
    greedy tokens judged against eager's. A ValidationError names the step and the difference; returns
    the line export says."""
    tolerance = tolerance or default_tolerance(signature.output(generation.logits).dtype, device)
    worst, checked = 0.0, 0

    def hold(rows: Sequence[int]):
        def on_step(step, logits):
            nonlocal worst, checked
            want = eager.logits[step][list(rows)]
            agreement = compare_output(generation.logits, logits, want, tolerance, detail=False)
            worst = max(worst, agreement.max_abs)
            checked += 1
            if not agreement.ok:
                raise ValidationError(f"{where}: step {step + 1}'s logits differ from eager's by up to "
                                      f"{agreement.max_abs:.3g} (atol {tolerance.atol:g}, rtol {tolerance.rtol:g}) on "
                                      f"prompts {', '.join(str(r + 1) for r in rows)}, the past holding "
                                      f"{max(len(prompts[r]) for r in rows) + step - 1 if step else 0} tokens")
        return on_step

    steps = len(eager.tokens[0])
    greedy(run, signature, generation, prompts, steps, eos=(), forced=eager.tokens, on_step=hold(range(len(prompts))))
    greedy(run, signature, generation, [prompts[1]], steps, eos=(), forced=[eager.tokens[1]], on_step=hold([1]))
    own = greedy(run, signature, generation, prompts, steps, eos=())
    judged = judge_tokens(eager.steps, own.steps, tolerance)
    if not judged.passed:
        raise ValidationError(f"{where}: its greedy tokens part from eager's: {judged.describe()}")
    return (f"worst |diff| vs eager {worst:.2e} over {checked} decoding steps (logits, atol {tolerance.atol:g}, rtol "
            f"{tolerance.rtol:g}; {len(prompts)} prompts left-padded in one batch and one alone, the past from 0 to "
            f"{max(map(len, prompts)) + steps - 1}); greedy tokens: {judged.describe()}")


def recorded(generation: Generation, prompts, eager: Decoded) -> Generation:
    """``generation`` with eager's decoding of the validation prompts, as the file records it for verify."""
    return generation.with_reference({"prompts": prompts, **eager.steps.to_dict(),
                                      "by": f"eager PyTorch (torch {torch.__version__})"})


def generation_strings(generation: Generation) -> dict[str, str]:
    return {GENERATION_KEY: generation.to_json()}


def write_decoder(fmt, decoder, signature: Signature, strings: dict[str, str], path: Path, example: dict,
                  options: dict):
    """``fmt``'s writer on the decoder, traced at ``example`` (every dynamic size 2 or more); that the file takes
    an empty past too (the first step's) is what check_decoding proves."""
    args = tuple(torch.from_numpy(example[n]) for n in signature.input_names)
    return fmt.write(decoder, args, path, signature, strings, **options)


GENERATION_FORMATS = ("onnx", "torchscript", "pt2")
# The format that carries the cache to every runtime: its failure fails the export. Another format that
# cannot carry it (a trace that fixes the past's length) is said in one line and not kept.
CARRIES_THE_CACHE = "onnx"


def export_generating(module: torch.nn.Module, out_dir: Path, *, formats: Sequence[str], name: str,
                      strings_of: Callable[[Signature], dict[str, str]], options: dict[str, dict],
                      log: Callable[[str], None], steps: int = VALIDATION_STEPS, declared: Sequence[str] = (),
                      tolerance: Callable | None = None, text: Mapping[str, bytes] | None = None
                      ) -> tuple[list, Signature]:
    """Write ``module`` (a causal LM, in eval mode) with its cache in each of ``formats`` into ``out_dir``
    (written whole or not at all), each file decoded through its serving runtime and held to eager's own
    cached decoding; returns ([(format, path, line)], the signature every file records). ``text``: the
    tokenizer's files (export/pretrained.py's text_files), written beside them."""
    from ptx.atomic import atomic_folder, writable_dir_for

    from .formats import get as get_format

    unknown = [f for f in formats if f not in GENERATION_FORMATS]
    if unknown or not formats:
        raise PtxError(f"format {unknown[0] if unknown else '(none)'!r}: a model exported with its cache (--task "
                       f"text-generation) is written as {', '.join(GENERATION_FORMATS)}")
    decoder, signature, generation = decoder_of(module, log)
    foreign = [n for n in declared if n not in signature.input_names]
    if foreign:
        raise PtxError(f"--input {foreign[0]}: a decoder exported with its cache takes "
                       f"{', '.join(signature.input_names[:3])} and the past key/values; leave --input out, or give "
                       "--task forward to export one forward pass of the inputs you declare")
    vocab = int(signature.output(generation.logits).shape[-1])
    check_tokenizer(text or {}, vocab)
    prompts = validation_prompts(vocab)
    if generation.max_positions is not None:
        steps = max(1, min(steps, generation.max_positions - max(map(len, prompts))))
    eager = reference_decoding(decoder, signature, generation, prompts, steps)
    contract = recorded(generation, prompts, eager)
    strings = {**strings_of(signature), **generation_strings(contract)}
    example = example_feeds(signature, generation, vocab)
    params = sum(p.numel() for p in module.parameters())
    log(f"module: {name} ({type(module).__name__}, {params:,} parameters), exported with its cache: inputs "
        f"{', '.join(signature.input_names[:3 if generation.position_ids else 2])} and the past of "
        f"{len(generation.cache) // 2} layers; outputs logits and the present")
    done, refused = [], []
    with writable_dir_for(out_dir.parent), atomic_folder(out_dir) as staging:
        for name_ in formats:
            fmt = get_format(name_)
            path = staging / fmt.file_name
            try:
                line, method = _written_and_checked(fmt, decoder, signature, generation, strings, path, example,
                                                    options.get(name_, {}), prompts, eager, log, tolerance)
            except PtxError as exc:
                if name_ == CARRIES_THE_CACHE:
                    raise
                for left in staging.glob(fmt.file_name + "*"):
                    left.unlink()
                refused.append(f"{fmt.name}: {exc}")
                log(f"{fmt.name:<11} not kept: it cannot carry the cache ({exc})")
                continue
            size = sum(p.stat().st_size for p in staging.glob(fmt.file_name + "*")) / 1e6
            log(f"{fmt.name:<11} {out_dir / fmt.file_name}  {size:.1f} MB  {method}; {line}")
            done.append((fmt.name, out_dir / fmt.file_name, line))
        if not done:
            raise PtxError(f"no format carries {name}'s cache: {'; '.join(refused)}; export it to onnx")
        for file_name, data in (text or {}).items():
            (staging / file_name).write_bytes(data)
        if text:
            template = "chat_template.jinja" in text or b'"chat_template"' in text.get("tokenizer_config.json", b"")
            log(f"text: {', '.join(text)} kept beside the file{' (with a chat template)' if template else ''}: "
                "ptx generate --prompt and ptx serve's OpenAI API take text")
    return done, signature


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


def _written_and_checked(fmt, decoder, signature, generation, strings, path, example, options, prompts, eager, log,
                         tolerance=None):
    """(the file's line, how it was written): ``fmt``'s file of the decoder at ``path``, decoded through its
    serving runtime and held to eager's decoding (check_decoding)."""
    from .validate import open_checked

    if fmt.progress:
        log(f"{fmt.name:<11} {fmt.progress.format(**options)} ...")
    made = write_decoder(fmt, decoder, signature, strings, path, example, options)
    if made.note:
        log(f"{fmt.name:<11} {made.note}")
    model = open_checked(path, fmt, options.get("device", "cpu"))
    where = f"{fmt.name} ({model.backend})"
    try:
        held_to = tolerance(model.signature.output(generation.logits), model.device) if tolerance else None
        return check_decoding(model.run, model.signature, generation, prompts, eager, where, model.device,
                              held_to), made.method
    except ValidationError as exc:
        raise ValidationError(f"{exc}{'; ' + made.hint if made.hint else ''}") from None
    except PtxError as exc:
        raise ValidationError(f"{where} does not decode with its cache: {exc}") from None
    finally:
        model.close()
