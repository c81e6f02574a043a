"""A transformers folder as it comes (``ptx export DIR``, as ``optimum-cli export onnx --model DIR`` takes
one): what ``save_pretrained`` writes or a downloaded snapshot holds (config.json, the weights as safetensors,
the tokenizer files), opened by its config's architecture, from the folder alone (nothing downloaded, no code of
the folder's run), as its memory plan says before a weight is read (``open_folder``: whole by transformers'
``from_pretrained`` in float32 where that fits, else one module at a time from the shards: docs/large-lms.md).
The tokenizer files go beside the exported file (``text_files``), so the export's folder takes text and chats
by itself."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ptx.atomic import scratch_folder
from ptx.errors import PtxError
from ptx.infer.model.text import TEXT_FILES, Text
from ptx.infer.runtime.memory_plan import MARGIN, OutOfMemoryPlan, size_text, where_available
from ptx.machine import available_memory

from .folder_weights import FolderWeights

# A tokenizer transformers can convert to a tokenizer.json where the folder has none (a slow tokenizer's files).
SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def is_pretrained_folder(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "config.json").is_file()


def _architecture(folder: Path):
    """(the transformers class ``folder``'s config.json names, that config as a dict): one line of PtxError where
    the folder's model is code of its own or this transformers lacks its class."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PtxError(f"{folder}/config.json: not a transformers config ({exc})") from None
    if not isinstance(config, dict):
        raise PtxError(f"{folder}/config.json: not a transformers config (a JSON object)")
    if config.get("auto_map"):
        raise PtxError(f"{folder}: its model is code of its own (config.json's auto_map), which ptx does not run from a "
                       "folder: build it yourself in a factory and export that with --module FILE.py:FACTORY")
    try:
        import transformers
    except ImportError:
        raise PtxError(f"{folder} is a transformers folder: pip install transformers to export it") from None
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)] or _by_model_type(config)
    cls = next((getattr(transformers, a) for a in architectures if hasattr(transformers, a)), None)
    if cls is None and not architectures:
        raise PtxError(f"{folder}/config.json names no architecture and its model_type {config.get('model_type')!r} is "
                       f"none this transformers ({transformers.__version__}) knows: add \"architectures\": [the model's "
                       "class] to it, or export a factory with --module")
    if cls is None:
        raise PtxError(f"{folder}/config.json names the architecture {', '.join(architectures)}, which this "
                       f"transformers ({transformers.__version__}) does not have: upgrade transformers, or export a "
                       "factory with --module")
    return cls, config


def _by_model_type(config: dict) -> list[str]:
    """The class a config without "architectures" (a hand-made or old one) is, as transformers' Auto classes read its
    model_type: its causal LM first, then its sequence-to-sequence LM, then its bare model."""
    from transformers.models.auto import modeling_auto

    kind = config.get("model_type")
    mappings = (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
                modeling_auto.MODEL_MAPPING_NAMES)
    named = [mapping[kind] for mapping in mappings if isinstance(kind, str) and kind in mapping][:1]
    return [n if isinstance(n, str) else n[0] for n in named]  # a few map to several classes: the first


def _from_pretrained(cls, folder: Path) -> torch.nn.Module:
    try:
        module = cls.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own refusal (missing weights, a bad file), in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PtxError(f"{folder}: transformers could not open the model ({first})") from None
    return module.eval()


@dataclass
class Opened:
    """A transformers folder's model as export opens it: the module, its name (the folder's), the folder's weights
    where the graph is traced without them and each file reads them from the shards (None: the folder holds no
    safetensors file, or names its tensors otherwise than the model, and is exported as transformers loads it), and
    the formats asked."""

    module: torch.nn.Module
    name: str
    folder: FolderWeights | None
    formats: list[str]


# What export holds, as multiples of the float32 weights (whole) or of the largest tensor (read tensor by tensor):
# with the model whole, the module (1x) stays beside every file's writing and checking, ONNX Runtime's session of
# the f32 file where one is asked (1.2x), and what a decoding holds; read tensor by tensor, a few copies of the
# largest tensor or piece (read, widened, transposed, quantized) while the weights are written, then the reduced
# file's session and the judge's logits. The runs behind them: docs/benchmarks/large-models.md.
WHOLE_HOLDS = {"with f32": 2.4, "reduced only": 1.5}
LARGEST_COPIES = 3
REDUCED_SHARE = {"int4": 0.17, "int8": 0.30}  # a weight-only file's bytes over the float32 weights'
SESSION_HOLDS = 1.3  # ONNX Runtime's session over the file's weights it opens (memory_plan's external figure)
# The share of the available memory an export may plan to take with the model whole: the rest stays the machine's
# (a 3B model whole, 12 GB in float32, would take 20 of a 24 GB machine's; read tensor by tensor, some 5).
WHOLE_SHARE = 0.5


def decoding_bytes(config: dict) -> float:
    """What judging a decoding of the folder's model holds beside its weights (memory_plan.decoding_need): the
    cache at the judging prompts' longest, a prompt pass's logits, and every judged position's logits twice (the
    reference's, the row's), from the config's sizes (a multimodal config's text part where it has one)."""
    from ptx.contract.generation import JUDGED_POSITIONS, JUDGING_STEPS, LONG_PROMPT
    from ptx.infer.runtime.memory_plan import decoding_need

    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config

    def number(*keys) -> int:
        return next((int(text[k]) for k in keys if isinstance(text.get(k), int) and text[k] > 0), 0)

    vocab, layers, width = number("vocab_size"), number("num_hidden_layers", "n_layer"), number("hidden_size", "n_embd")
    heads = number("num_attention_heads", "n_head") or 1
    kv_heads, head = number("num_key_value_heads") or heads, number("head_dim") or width // heads
    positions = LONG_PROMPT + JUDGING_STEPS
    cache = 2 * layers * kv_heads * head * positions * 4
    return decoding_need(cache, LONG_PROMPT * vocab * 4, 2 * JUDGED_POSITIONS * vocab * 4)


def open_folder(folder: str | Path, formats, log: Callable[[str], None]) -> Opened:
    """The model ``folder`` holds, opened as its memory plan says before any weight is read: whole in float32 by
    transformers where the export's peak with it fits in the memory available, else built without weights and
    read one module at a time from the shards as it runs (export/streamed_module.py); each file's graph traced
    without the weights and written from the shards tensor by tensor (export/weightless.py). Refused in one line,
    naming the figures, where even that cannot fit."""
    folder = Path(folder)
    cls, config = _architecture(folder)
    kind = f"a {cls.__name__} ({config.get('model_type', 'unknown type')})"
    weights = FolderWeights.of(folder)
    if weights is None:  # an older folder (pytorch_model.bin): transformers reads it whole
        log(f"folder: {folder} holds {kind} without safetensors files: opened with transformers' from_pretrained, in "
            "float32")
        return Opened(_from_pretrained(cls, folder), folder.resolve().name, None, list(formats))
    f32 = weights.f32_bytes
    files = len({t.path for t in weights.tensors.values()})
    said = (f"{size_text(weights.stored_bytes)} of {weights.dtype} in {files} file{'s' * (files > 1)}"
            + (f", {size_text(f32)} in float32" if weights.dtype != "float32" else ""))
    available, decoding = available_memory(), decoding_bytes(config)
    whole = WHOLE_HOLDS["with f32" if "onnx" in formats else "reduced only"] * f32 + decoding
    if available is None or whole * (1 + MARGIN) <= available * WHOLE_SHARE:
        room = "" if available is None else f" (about {size_text(whole * (1 + MARGIN))} of {size_text(available)} available)"
        log(f"folder: {folder} holds {kind}, {said}: opened whole with transformers' from_pretrained, in float32"
            f"{room}; its files traced without the weights and written from the folder tensor by tensor")
        module = _from_pretrained(cls, folder)
        return Opened(module, folder.resolve().name, weights if _names_match(module, weights) else None, list(formats))
    streamed = _streamed_need(weights, formats, decoding)
    if streamed * (1 + MARGIN) > available:
        raise OutOfMemoryPlan(f"{folder.name}: exporting {kind} needs about {size_text(streamed * (1 + MARGIN))} of "
                              f"memory even read one tensor at a time ({size_text(weights.largest_f32)} its largest "
                              f"in float32, {size_text(whole)} whole) and {size_text(available)} is available "
                              f"({where_available()}): free memory, or export it on a larger machine")
    log(f"folder: {folder} holds {kind}, {said}: whole it would need about {size_text(whole * (1 + MARGIN))} of memory, "
        f"more than half of the {size_text(available)} available ({where_available()}): read one tensor at a time "
        f"from the folder instead (about {size_text(streamed * (1 + MARGIN))} at its peak)")
    from .streamed_module import empty_model, stream

    with _refused_as_one_line(folder):
        module = empty_model(cls, cls.config_class.from_pretrained(str(folder), local_files_only=True))
        stream(module, weights)
    return Opened(module, folder.resolve().name, weights, list(formats))


def _streamed_need(weights: FolderWeights, formats, decoding: float) -> float:
    """The bytes a folder's export read tensor by tensor holds at its peak: the largest tensor's copies while the
    weights are written, or the largest reduced file's session and a decoding while it is judged."""
    shares = [REDUCED_SHARE["int4" if "int4" in f else "int8"] for f in formats if f != "onnx"] or [0.0]
    # (an f32 file asked too is checked only where ONNX Runtime can open it: the pipeline's plan skips it else)
    checking = SESSION_HOLDS * max(shares) * weights.f32_bytes + decoding
    return max(LARGEST_COPIES * weights.largest_f32, checking)


def _names_match(module: torch.nn.Module, weights: FolderWeights) -> bool:
    """Whether every parameter of ``module`` is a tensor of ``weights`` by its name and shape (a checkpoint converted
    from another layout is not: its files are then traced with the weights transformers loaded)."""
    from .streamed_module import folder_keys

    try:
        folder_keys(module, weights)
    except PtxError:
        return False
    return True


@contextmanager
def _refused_as_one_line(folder: Path):
    try:
        yield
    except PtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers' own refusal of the config, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PtxError(f"{folder}: transformers could not build the model from its config ({first})") from None


def text_files(folder: str | Path, log: Callable[[str], None], what: str) -> dict[str, bytes]:
    """The text files that go beside the export (TEXT_FILES, by name: small files, held as bytes): ``folder``'s
    where it has a tokenizer.json; else, where it has a slow tokenizer's files, those transformers writes
    with a tokenizer.json; else none (said)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        Text.open(folder, what)  # a file tokenizers cannot read is refused before anything is exported
        return _read(folder)
    if not any((folder / f).is_file() for f in SLOW_TOKENIZER_FILES):
        log(f"text: no tokenizer in {folder}: the export takes token ids (ptx generate --ids), or give --tokenizer DIR")
        return {}
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own refusal, in one line
        raise PtxError(f"{what} {folder}: transformers could not read its tokenizer ({str(exc).splitlines()[0]})") from None
    with scratch_folder("ptx-tokenizer-") as made:
        tokenizer.save_pretrained(made)
        if not (Path(made) / "tokenizer.json").is_file():
            raise PtxError(f"{what} {folder}: its tokenizer has no fast form (tokenizer.json), which ptx reads without "
                           "transformers")
        files = _read(Path(made))
    log(f"text: {folder} has a slow tokenizer: transformers wrote its tokenizer.json")
    return {**_read(folder), **files}  # the folder's generation config too


def _read(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in TEXT_FILES if (folder / name).is_file()}
