"""A sentence-transformers folder as it comes (``ptx export DIR`` where DIR holds a modules.json): what
``SentenceTransformer.save`` writes or a downloaded snapshot of one holds (all-MiniLM-L6-v2's): its Transformer
module's transformers folder, its Pooling module's config (1_Pooling/config.json) and, where modules.json lists
one, its Normalize module. Export builds them into one graph, as sentence-transformers' encode() runs them: the
transformers model opened by transformers' AutoModel (as sentence-transformers opens it), the pooling its config
says (mean, CLS, max, mean over the square root of the length; several concatenated) and the L2 normalisation,
from ``input_ids`` and ``attention_mask`` [batch, seq] to ``sentence_embedding`` [batch, dimensions]. Each file
records that it embeds (ptx.contract.embedding, which the server's /v1/embeddings and verify read) and is checked
against the eager module by the vectors' cosine and length, the rule verify judges them by.

The tokenizer goes beside the files as sentence-transformers runs it: its tokenizer.json without the padding or
truncation of its own that a saved tokenizer may carry (all-MiniLM-L6-v2's pads every text to 128: transformers
replaces both at each call), and lowercasing first where sentence_bert_config.json's do_lower_case asks for it
and the tokenizer does not already lowercase. Modules ptx does not build (Dense, a Router, a static or CLIP
model), a pooling it does not (weightedmean, lasttoken) and a default prompt encode() would prepend are refused
in one line, before any weight is read.

The module is written through the one export driver (export/pipeline.py) as a user's module is
(export/module.py's ModuleSource), apart from what an embedding adds: its record, its judge and its tokenizer.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ptx.atomic import atomic_folder, writable_dir_for
from ptx.contract import DEFAULT_OPSET, Tolerance
from ptx.contract.embedding import EMBEDDING_KEY, POOLING_MODES, RULE, Embedding, compare_embedding
from ptx.contract.comparison import compare_output
from ptx.errors import PtxError

from .decoder import check_tokenizer
from .formats import get as get_format
from .module import ModuleExportResult, ModuleOptions, ModuleSource, _check_name, _check_out_dir
from .pipeline import check_options, export_files
from .pretrained import _architecture, _from_pretrained, text_files
from .validate import ExportResult

MODULES_FILE = "modules.json"
EMBEDDER_FORMATS = ("onnx", "torchscript")
# sentence-transformers' legacy Pooling keys, in the order its Pooling concatenates the modes they turn on.
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# The Transformer module's own config file (older releases named it after the architecture).
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_camembert_config.json", "sentence_albert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
# A tokenizer's model_max_length where it says none (transformers' VERY_LARGE_INTEGER): the positions bound it then.
NO_LIMIT = 10 ** 12


def is_sentence_transformers(folder: str | Path | None) -> bool:
    """Whether ``folder`` is a sentence-transformers model's (it holds a modules.json)."""
    return folder is not None and Path(folder).is_dir() and (Path(folder) / MODULES_FILE).is_file()


@dataclass(frozen=True)
class Plan:
    """What a sentence-transformers folder says, read before any weight: the Transformer module's transformers
    folder, the pooling modes, whether it normalises, the longest input (max_seq_length, with the special tokens)
    and whether its texts are lowercased first."""

    folder: Path
    transformer: Path
    pooling: tuple[str, ...]
    normalized: bool
    max_tokens: int
    lowercase: bool
    dimension: int | None  # the Pooling's word embedding dimension (the transformer's hidden size)

    def describe(self) -> str:
        return (f"{' + '.join(self.pooling)} pooling{', L2-normalised' if self.normalized else ''}, at most "
                f"{self.max_tokens} tokens{', lowercased' if self.lowercase else ''}")


def _json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PtxError(f"{path}: not {what} ({exc}); keep the folder as SentenceTransformer.save wrote it") from None
    if not isinstance(doc, (dict, list)):
        raise PtxError(f"{path}: not {what}")
    return doc


def read_plan(folder: str | Path) -> Plan:
    """The Plan of the sentence-transformers folder ``folder``; a module, pooling or prompt ptx does not build
    refused in one line."""
    folder = Path(folder)
    modules = _json(folder / MODULES_FILE, "a sentence-transformers modules list")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules):
        raise PtxError(f"{folder}/{MODULES_FILE}: not a sentence-transformers modules list ([{{\"type\": ..., \"path\": "
                       "...}, ...])")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        others = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        raise PtxError(f"{folder}: its modules are {', '.join(kinds)}; ptx exports a Transformer, then a Pooling, then "
                       f"a Normalize where there is one" + (f", and builds no {others[0]} module" if others else "")
                       + ": export the model with sentence-transformers' own export_optimized_onnx_model instead")
    where = {kind: folder / str(m.get("path") or "") for kind, m in zip(kinds, modules)}
    _check_prompts(folder)
    if "Normalize" in where:
        _check_normalize(where["Normalize"])
    pooling, dimension = _pooling(where["Pooling"] / "config.json")
    max_tokens, lowercase = _transformer_config(where["Transformer"])
    return Plan(folder, where["Transformer"], pooling, "Normalize" in where, max_tokens, lowercase, dimension)


def _check_prompts(folder: Path) -> None:
    """A default prompt (config_sentence_transformers.json) that encode() would put before every text is refused:
    an OpenAI client sends the text alone."""
    path = folder / "config_sentence_transformers.json"
    config = _json(path, "a sentence-transformers config") if path.is_file() else {}
    name = config.get("default_prompt_name") if isinstance(config, dict) else None
    prompt = (config.get("prompts") or {}).get(name) if name else None
    if prompt:
        raise PtxError(f"{path}: encode() puts the default prompt {name!r} ({prompt!r}) before every text, which ptx "
                       "does not: set default_prompt_name to null, and give the prompt in the texts you send")


def _check_normalize(path: Path) -> None:
    config = _json(path / "config.json", "a Normalize config") if (path / "config.json").is_file() else {}
    named = config.get("module_input_name", "sentence_embedding") if isinstance(config, dict) else None
    if named != "sentence_embedding":
        raise PtxError(f"{path}: its Normalize normalises {named!r}; ptx exports one of the sentence embedding")


def _pooling(path: Path) -> tuple[tuple[str, ...], int | None]:
    """(the Pooling config's modes in the order it concatenates them, its word embedding dimension): its
    ``pooling_mode`` (sentence-transformers 6), else its legacy pooling_mode_* flags (mean where none is on)."""
    config = _json(path, "a Pooling config")
    if not isinstance(config, dict):
        raise PtxError(f"{path}: not a Pooling config (a JSON object)")
    mode = config.get("pooling_mode")
    if mode is not None:
        modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else ()
    else:
        modes = tuple(name for key, name in LEGACY_POOLING.items() if config.get(key)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if not modes or unknown or not all(isinstance(m, str) for m in modes):
        raise PtxError(f"{path}: pooling {unknown[0] if unknown else mode!r}; ptx builds {', '.join(POOLING_MODES)} "
                       "pooling into the graph")
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    return modes, dimension if isinstance(dimension, int) and not isinstance(dimension, bool) else None


def _transformer_config(folder: Path) -> tuple[int, bool]:
    """(the longest input in tokens, whether texts are lowercased) as sentence-transformers' Transformer module
    reads them: max_seq_length, else its tokenizer's model_max_length (the one its config sets, else
    tokenizer_config.json's), each within the model's positions; do_lower_case."""
    path = next((folder / n for n in TRANSFORMER_CONFIGS if (folder / n).is_file()), None)
    config = _json(path, "a sentence-transformers Transformer config") if path is not None else {}
    if not isinstance(config, dict):
        raise PtxError(f"{path}: not a Transformer config (a JSON object)")
    task = config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction" or config.get("module_output_name", "token_embeddings") != "token_embeddings":
        raise PtxError(f"{path}: its Transformer runs {task!r} into {config.get('module_output_name')!r}; ptx exports "
                       "one that pools the tokens' last hidden states (feature-extraction)")
    positions = _json(folder / "config.json", "a transformers config").get("max_position_embeddings")
    positions = positions if isinstance(positions, int) and positions > 0 else NO_LIMIT
    given = config.get("max_seq_length")
    if not isinstance(given, int):
        kwargs = config.get("processor_kwargs") or config.get("tokenizer_args") or {}
        given = kwargs.get("model_max_length") if isinstance(kwargs, dict) else None
    if not isinstance(given, int):
        tokenizer = folder / "tokenizer_config.json"
        given = (_json(tokenizer, "a tokenizer config") if tokenizer.is_file() else {}).get("model_max_length")
    limit = min(given if isinstance(given, int) and 0 < given < NO_LIMIT else NO_LIMIT, positions)
    if limit >= NO_LIMIT:
        raise PtxError(f"{folder}: neither its sentence-transformers config (max_seq_length) nor its model's config "
                       "(max_position_embeddings) says how long a text it takes")
    return limit, bool(config.get("do_lower_case", False))


class SentenceEncoder(torch.nn.Module):
    """A sentence-transformers model as one module: the transformers model's last hidden states, pooled over the
    tokens the mask keeps (each of ``pooling`` in turn, concatenated) and, where ``normalized``, L2-normalised:
    sentence-transformers' Pooling and Normalize arithmetic (its _forward_padded), written out so that the graph
    needs no sentence-transformers."""

    def __init__(self, encoder: torch.nn.Module, pooling: Sequence[str], normalized: bool):
        super().__init__()
        self.encoder, self.pooling, self.normalized = encoder, tuple(pooling), normalized

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        vectors = torch.cat([_pooled(mode, tokens, attention_mask) for mode in self.pooling], dim=-1)
        return torch.nn.functional.normalize(vectors, p=2, dim=-1) if self.normalized else vectors


def _pooled(mode: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One pooling of ``tokens`` (B, T, H) over the positions ``mask`` (B, T) keeps: (B, H)."""
    if mode == "cls":  # the first kept position (a left-padded row's too)
        first = mask.to(torch.int32).argmax(dim=1)
        return torch.gather(tokens, 1, first[:, None, None].expand(-1, 1, tokens.shape[-1])).squeeze(1)
    if mode == "max":
        return tokens.masked_fill(mask[..., None] == 0, float("-inf")).max(dim=1).values
    kept = mask[..., None].to(tokens.dtype)
    count = torch.clamp(kept.sum(dim=1), min=1e-9)
    return (tokens * kept).sum(dim=1) / (count if mode == "mean" else torch.sqrt(count))


def sentence_encoder(plan: Plan, log: Callable[[str], None]) -> SentenceEncoder:
    """The plan's model as one module, in eval mode and float32: its transformer opened by transformers' AutoModel
    from the folder alone (nothing downloaded, no code of the folder's run)."""
    import transformers

    cls, config = _architecture(plan.transformer)  # refuses code of its own, an architecture transformers lacks
    encoder = _from_pretrained(transformers.AutoModel, plan.transformer)
    hidden = getattr(encoder.config, "hidden_size", None)
    if plan.dimension is not None and hidden is not None and plan.dimension != hidden:
        raise PtxError(f"{plan.folder}: its Pooling takes vectors of {plan.dimension} and its {cls.__name__} gives "
                       f"{hidden}: not one model's modules")
    log(f"folder: {plan.folder} holds a sentence-transformers model, a {type(encoder).__name__} "
        f"({config.get('model_type', 'unknown type')}) with {plan.describe()}: exported as one encoder, its pooling "
        "and normalisation in the graph")
    return SentenceEncoder(encoder, plan.pooling, plan.normalized).eval()


class EmbedderSource(ModuleSource):
    """A SentenceEncoder as the one driver writes it: a module's source (traced, checked against eager on
    generated ids and masks and the shape certificate's probes), its vectors judged by their cosine and length."""

    def __init__(self, module: SentenceEncoder, name: str, given: ModuleOptions, embedding: Embedding):
        super().__init__(module, None, name, given)
        self.embedding = embedding

    def compare(self, sig, got, want, allowed: Tolerance):
        if sig.name == self.embedding.output:
            return compare_embedding(sig.name, got, want, allowed)
        return compare_output(sig.name, got, want, allowed, sig.batch_axis)

    def describe(self, result: ExportResult, tolerance: Tolerance) -> str:
        vectors = result.agreements[self.embedding.output]
        return (f"least cosine vs eager {vectors.cosine:.7f}, lengths within {vectors.length_error:.1e} "
                f"({self.embedding.output}, {RULE}; {result.checked()}; {result.method})")


def export_embedder(folder: str | Path, out_dir: str | Path, *, formats: Sequence[str] = ("onnx",),
                    name: str | None = None, opset: int = DEFAULT_OPSET, exporter: str | None = None,
                    atol: float | None = None, rtol: float | None = None, tokenizer: str | Path | None = None,
                    force: bool = False, log: Callable[[str], None] = print) -> ModuleExportResult:
    """Export the sentence-transformers model of ``folder`` to ``out_dir`` (written whole or not at all): each of
    ``formats`` (onnx, torchscript) checked against the eager module, model.reference.npz, and the tokenizer's
    files (``tokenizer``'s folder where given) beside them. ``ptx export DIR`` calls it for a folder with a
    modules.json; ``ptx serve OUT/model.onnx`` then answers /v1/embeddings."""
    folder = Path(folder)
    plan = read_plan(folder)  # every refusal before a weight is read
    unknown = [f for f in formats if f not in EMBEDDER_FORMATS]
    if unknown or not formats:
        raise PtxError(f"--format {','.join(formats)}: a sentence-transformers model exports to "
                       f"{' or '.join(EMBEDDER_FORMATS)}")
    chosen = [get_format(f) for f in dict.fromkeys(formats)]
    name = _check_name(name or folder.resolve().name)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force, name)
    text = _tokenizer_files(Path(tokenizer) if tokenizer else plan.transformer, plan, log,
                            "--tokenizer" if tokenizer else "the folder")
    module = sentence_encoder(plan, log)
    vocab = int(module.encoder.get_input_embeddings().num_embeddings)
    check_tokenizer(text, vocab)
    dimensions = int(module(torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1, dtype=torch.int64)).shape[-1])
    embedding = Embedding(dimensions=dimensions, pooling=plan.pooling, normalized=plan.normalized,
                          max_tokens=plan.max_tokens, vocab=vocab)
    given = ModuleOptions(inputs=[f"{embedding.ids}=batchxseq:int64", f"{embedding.mask}=batchxseq:int64"],
                          output_names=[embedding.output], formats=formats, name=name, opset=opset, exporter=exporter,
                          atol=atol, rtol=rtol, force=force, task="forward", log=log,
                          provenance={"source": f"{folder.resolve().name} (a sentence-transformers folder)",
                                      EMBEDDING_KEY: embedding.to_json()})
    check_options(chosen, given.writer_options())
    source = EmbedderSource(module, name, given, embedding)
    result = ModuleExportResult(out_dir, name, source.signature)
    with writable_dir_for(out_dir.parent), atomic_folder(out_dir) as staging:
        result.files = export_files(source, chosen, lambda fmt: nullcontext(
            (staging / fmt.file_name, out_dir / fmt.file_name)), log)
        result.reference = source.save_reference(staging, out_dir)
        for file_name, data in text.items():
            (staging / file_name).write_bytes(data)
    if text:
        log(f"text: {', '.join(text)} kept beside the file: ptx serve's /v1/embeddings and Model.embed take text")
    return result


def _tokenizer_files(folder: Path, plan: Plan, log: Callable[[str], None], what: str) -> dict[str, bytes]:
    """The tokenizer files that go beside the export (export/pretrained.py's text_files), their tokenizer.json as
    sentence-transformers runs it (the module's docstring says how)."""
    text = text_files(folder, log, what)
    if "tokenizer.json" not in text:
        raise PtxError(f"{what} {folder}: no tokenizer, and an embedding model takes text: give --tokenizer DIR")
    doc = json.loads(text["tokenizer.json"])
    doc["padding"], doc["truncation"] = None, None
    if plan.lowercase and not _lowercases(doc.get("normalizer")):
        found = doc.get("normalizer")
        parts = found["normalizers"] if isinstance(found, dict) and found.get("type") == "Sequence" else \
            [found] if found else []
        doc["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Lowercase"}, *parts]}
    from tokenizers import Tokenizer

    adjusted = json.dumps(doc, ensure_ascii=False)
    Tokenizer.from_str(adjusted)  # what tokenizers cannot read is refused here, not by the server
    return {**text, "tokenizer.json": adjusted.encode("utf-8")}


def _lowercases(normalizer) -> bool:
    """Whether a tokenizer.json normalizer lowercases already (a Lowercase, or BERT's with lowercase on)."""
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Sequence":
        return any(_lowercases(part) for part in normalizer.get("normalizers") or [])
    return normalizer.get("type") == "Lowercase" or (normalizer.get("type") == "BertNormalizer"
                                                     and bool(normalizer.get("lowercase")))
