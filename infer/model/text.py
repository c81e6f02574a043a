"""A generating model's words, torch-free: the tokenizer, chat template and generation config that a
transformers folder holds (``save_pretrained`` writes them; ``ptx export`` keeps them beside the file), read
with the ``tokenizers`` library and rendered with jinja2 exactly as transformers' apply_chat_template renders
them, so a model exported from a folder takes text and chats with nothing else installed.

What transformers does and ptx repeats (transformers 5, utils/chat_template_utils.py and
tokenization_utils_base.py): the template runs in jinja2's ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, a ``tojson`` that does not escape HTML, ``raise_exception`` and
``strftime_now``; it sees ``messages``, ``add_generation_prompt`` and the named special tokens (bos_token,
eos_token, ...); the rendered text is encoded without adding special tokens (the template writes them). The
template is the folder's chat_template.jinja, else tokenizer_config.json's ``chat_template`` (a string, or a
list of named templates: "default"), else chat_template.json's. transformers itself is not imported: it
brings torch, which the ONNX Runtime path never imports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

from ptx.errors import InputError, PtxError
from ptx.extras import require

# What ptx export keeps beside a generating file, where the tokenizer's folder has them (tokenizer.json first:
# without it there is no text).
TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "chat_template.json", "generation_config.json")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ROLES_NOTE = 'messages are [{"role": "system" | "user" | "assistant", "content": "text"}, ...]'
# generation_config.json's sampling fields, as Sampling names them: the model's own defaults where it samples.
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


class TextError(PtxError):
    """A tokenizer folder that cannot be read, or a chat template that fails."""


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TextError(f"{path}: not a JSON file ({exc}); keep the folder as save_pretrained wrote it") from None
    return doc if isinstance(doc, dict) else {}


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


@dataclass
class Text:
    """The tokenizer of ``folder`` (its tokenizer.json), its chat template and generation config."""

    folder: Path

    @classmethod
    def of(cls, folder: str | Path | None) -> "Text | None":
        """The folder's text, or None where it holds no tokenizer.json."""
        if folder is None or not (Path(folder) / "tokenizer.json").is_file():
            return None
        text = cls(Path(folder))
        text.tokenizer  # noqa: B018 - read now, so a broken file is said where the folder is named
        return text

    @classmethod
    def open(cls, folder: str | Path, what: str = "--tokenizer") -> "Text":
        text = cls.of(folder)
        if text is None:
            raise TextError(f"{what} {folder}: no tokenizer.json there; give a transformers tokenizer folder "
                            "(tokenizer.save_pretrained(DIR) writes one)")
        return text

    @classmethod
    def beside(cls, path: str | Path | None, tokenizer: str | Path | None = None) -> "Text | None":
        """The text a model file is read with: ``tokenizer``'s folder where given (refused in one line where it
        holds no tokenizer.json), else the one beside the file at ``path``, or None."""
        if tokenizer is not None:
            return cls.open(tokenizer)
        return None if path is None else cls.of(Path(path).parent)

    @cached_property
    def tokenizer(self):
        require("text")
        from tokenizers import Tokenizer

        path = self.folder / "tokenizer.json"
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception type for a bad file
            raise TextError(f"{path}: not a tokenizer file tokenizers can read ({exc})") from None

    @cached_property
    def config(self) -> dict:
        return _read_json(self.folder / "tokenizer_config.json")

    @cached_property
    def generation_config(self) -> dict:
        return _read_json(self.folder / "generation_config.json")

    # -- tokens ---------------------------------------------------------------------------------------
    def encode(self, text: str, special: bool = True) -> list[int]:
        """``text``'s ids, with the special tokens the tokenizer adds (Llama's BOS) unless ``special`` is False."""
        if not isinstance(text, str):
            raise InputError(f"{str(text)[:40]!r} is not text: give a string")
        return self.tokenizer.encode(text, add_special_tokens=special).ids

    def decode(self, ids: Sequence[int]) -> str:
        if not self._kept_specials:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return self.tokenizer.decode([i for i in ids if not self.skipped(i)], skip_special_tokens=False)

    def keep_special(self, word: str) -> None:
        """Decoded text keeps ``word`` where it is one of the tokenizer's special tokens, which decoding drops
        otherwise: a tool-call syntax's tag (Mistral's [TOOL_CALLS]) is read from the answer's text.
        tokenizers decodes with every special token or none, so the others are left out by id."""
        token = self.tokenizer.token_to_id(word)
        if token is not None and token in self._specials:
            self._kept_specials.add(token)

    @property
    def keeps_specials(self) -> bool:
        """Whether decoding keeps some special tokens (keep_special), leaving the others out by id."""
        return bool(self._kept_specials)

    def skipped(self, token: int) -> bool:
        """Whether decoding leaves ``token`` out of the text (a special token not kept)."""
        return token in self._specials and token not in self._kept_specials

    @cached_property
    def _specials(self) -> set[int]:
        return {int(i) for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}

    @cached_property
    def _kept_specials(self) -> set[int]:
        return set()

    def token_bytes(self, token: int) -> bytes:
        """The bytes token ``token`` adds to a text (an answer's bytes are its tokens' joined; a token may hold part
        of a character): a byte-level BPE's token through GPT-2's byte alphabet, SentencePiece's byte tokens
        (<0xE6>) and word marks (▁ a space), an added token's own text; else the tokenizer's decode of it alone.
        tokenizers has no call for one token's bytes (its decode replaces a part of a character with U+FFFD)."""
        if token not in self._spelt:
            self._spelt[token] = self._bytes_of(int(token))
        return self._spelt[token]

    @cached_property
    def _spelt(self) -> dict[int, bytes]:
        return {}

    @cached_property
    def _decoders(self) -> set[str]:
        """The kinds of the tokenizer's decoder (a Sequence's parts among them)."""
        found = json.loads(self.tokenizer.to_str()).get("decoder") or {}
        parts = found.get("decoders", []) if found.get("type") == "Sequence" else [found]
        return {part.get("type") for part in parts if isinstance(part, dict)} | {found.get("type")}

    @cached_property
    def _added(self) -> dict[int, str]:
        return {int(i): t.content for i, t in self.tokenizer.get_added_tokens_decoder().items()}

    def _bytes_of(self, token: int) -> bytes:
        if token in self._added:
            return self._added[token].encode("utf-8")
        piece = self.tokenizer.id_to_token(token)
        if piece is None:
            return b""
        if "ByteLevel" in self._decoders and all(ch in _BYTE_OF for ch in piece):
            return bytes(_BYTE_OF[ch] for ch in piece)
        if "ByteFallback" in self._decoders and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        if "Metaspace" in self._decoders or "Replace" in self._decoders:
            return piece.replace("\u2581", " ").encode("utf-8")
        return self.tokenizer.decode([token], skip_special_tokens=False).encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @cached_property
    def longest_token_bytes(self) -> int:
        """The most bytes one token adds to a text (its added tokens' too): a text's tokens are at least its bytes
        over this, less what a normalizer shortens (NFKC makes a fullwidth letter's 3 bytes one)."""
        return max((len(self.token_bytes(t)) for t in range(self.vocab_size)), default=1) or 1

    @cached_property
    def eos(self) -> tuple[int, ...]:
        """generation_config.json's end-of-sequence ids (a chat model's end of turn among them)."""
        value = self.generation_config.get("eos_token_id")
        ids = value if isinstance(value, list) else [value]
        return tuple(int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool))

    def sampling_defaults(self) -> dict:
        """generation_config.json's sampling settings where it samples (do_sample true), by Sampling's names."""
        config = self.generation_config
        if not config.get("do_sample"):
            return {}
        return {k: config[k] for k in SAMPLING_FIELDS if isinstance(config.get(k), (int, float))
                and not isinstance(config.get(k), bool)}

    # -- chat -----------------------------------------------------------------------------------------
    @cached_property
    def chat_template(self) -> str | None:
        jinja = self.folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        found = self.config.get("chat_template") or _read_json(self.folder / "chat_template.json").get("chat_template")
        if isinstance(found, list):  # named templates: the default one
            found = next((t.get("template") for t in found if isinstance(t, dict) and t.get("name") == "default"), None)
        return found if isinstance(found, str) else None

    def render(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
               tools: Sequence[Mapping] | None = None) -> str:
        """The conversation as the model reads it: the chat template rendered as transformers renders it, with
        ``tools`` (OpenAI's [{"type": "function", "function": {...}}], as apply_chat_template(tools=...) takes
        them) where given."""
        require("text")
        import jinja2

        if self.chat_template is None:
            raise TextError(f"{self.folder} has no chat template (chat_template.jinja, or tokenizer_config.json's "
                            "chat_template): give the prompt as text instead")
        check_messages(messages)
        specials = {k: t for k in SPECIAL_TOKENS if (t := _token_text(self.config.get(k))) is not None}
        try:
            return _compiled(self.chat_template).render(
                messages=[dict(m) for m in messages], tools=None if tools is None else [dict(t) for t in tools],
                documents=None,
                add_generation_prompt=add_generation_prompt, **specials)
        except jinja2.TemplateError as exc:
            raise InputError(f"the chat template refused the messages: {exc}") from None

    def chat(self, messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None) -> list[int]:
        """The conversation's ids, ready for the assistant's answer (``tools``: the functions it may call)."""
        return self.encode(self.render(messages, tools=tools), special=False)

    def stream(self, stop: Sequence[str] = ()) -> "TextStream":
        return TextStream(self, stop)


def check_messages(messages) -> None:
    """A conversation as chat templates take it: a non-empty list of role/content objects."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError(f"no messages: {ROLES_NOTE}")
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InputError(f"message {k + 1} has no role: {ROLES_NOTE}")
        calls = message.get("role") == "assistant" and message.get("tool_calls")
        if not isinstance(message.get("content"), str) and not (calls and message.get("content") is None):
            raise InputError(f"message {k + 1}: its content is not text: {ROLES_NOTE}")


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet (tokenizers' ByteLevel): the character standing for each byte in a token."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


_BYTE_OF = _byte_alphabet()
_TEMPLATES: dict[str, object] = {}


def _compiled(template: str):
    """The template compiled in transformers' environment (kept: a server renders it per request)."""
    if template in _TEMPLATES:
        return _TEMPLATES[template]
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """transformers' {% generation %} block (it marks the assistant's tokens for training): its body as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    try:
        compiled = _TEMPLATES[template] = env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TextError(f"the chat template is not a jinja2 template ({exc})") from None
    return compiled


class TextStream:
    """One answer's text as its tokens come: ``feed(token)`` returns the text that is now whole (a
    character whose bytes span two tokens is held until its last byte comes: tokenizers' DecodeStream), less
    what may be the start of a stop string; ``stopped`` once the text holds one (the text ends before it);
    ``finish()`` the rest at the end. The pieces joined are the answer's decode, cut at the stop string."""

    def __init__(self, text: Text, stop: Sequence[str] = ()):
        from tokenizers.decoders import DecodeStream

        self.text, self.stop = text, tuple(stop)
        self.keeping = text.keeps_specials  # then the tokens it skips are left out here, by id
        self.decoder = DecodeStream(skip_special_tokens=not self.keeping)
        self.ids: list[int] = []
        self.decoded = ""  # what the DecodeStream gave so far
        self.pending = ""  # decoded but not yet given: it may begin a stop string
        self.given = ""
        self.stopped = False

    def feed(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(int(token))
        if self.keeping and self.text.skipped(int(token)):
            return ""
        piece = self.decoder.step(self.text.tokenizer, int(token)) or ""
        self.decoded += piece
        return self._give(piece)

    def finish(self) -> str:
        """What is left at the end: text held for a stop string that never came, and bytes the stream still
        held (where the answer ended inside a character, the tokenizer's decode of it)."""
        if self.stopped:
            return ""
        whole = self.text.decode(self.ids)
        rest = whole[len(self.decoded):] if whole.startswith(self.decoded) else ""
        self.decoded += rest
        piece = self._give(rest)
        self.given += self.pending
        piece, self.pending = piece + self.pending, ""
        return piece

    def _give(self, piece: str) -> str:
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
        else:
            held = max((n for s in self.stop for n in range(min(len(s) - 1, len(self.pending)), 0, -1)
                        if self.pending.endswith(s[:n])), default=0)
            out, self.pending = self.pending[:len(self.pending) - held], self.pending[len(self.pending) - held:]
        self.given += out
        return out
