"""A transformers folder as it comes (``ptx export DIR``, as ``optimum-cli export onnx --model DIR`` takes
one): what ``save_pretrained`` writes or a downloaded snapshot holds (config.json, the weights as safetensors,
the tokenizer files), opened by its config's architecture with transformers' own ``from_pretrained``, in
float32 and from the folder alone (nothing downloaded, no code of the folder's run). The tokenizer files go
beside the exported file (``text_files``), so the export's folder takes text and chats by itself."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ptx.errors import PtxError
from ptx.infer.model.text import TEXT_FILES, Text

# A tokenizer transformers can convert to a tokenizer.json where the folder has none (a slow tokenizer's files).
SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def is_pretrained_folder(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_pretrained(folder: str | Path, log: Callable[[str], None]) -> tuple[torch.nn.Module, str]:
    """(the model ``folder`` holds, in eval mode and float32; its name: the folder's)."""
    folder = Path(folder)
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
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    cls = next((getattr(transformers, a) for a in architectures if hasattr(transformers, a)), None)
    if cls is None:
        known = ", ".join(architectures) or "none"
        raise PtxError(f"{folder}/config.json names the architecture {known}, which this transformers "
                       f"({transformers.__version__}) does not have: upgrade transformers, or export a factory with "
                       "--module")
    log(f"folder: {folder} holds a {cls.__name__} ({config.get('model_type', 'unknown type')}): opened with "
        "transformers' from_pretrained, in float32")
    try:
        module = cls.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers' own refusal (missing weights, a bad file), in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PtxError(f"{folder}: transformers could not open the model ({first})") from None
    return module.eval(), folder.resolve().name


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
    with tempfile.TemporaryDirectory(prefix="ptx-tokenizer-") as made:
        tokenizer.save_pretrained(made)
        if not (Path(made) / "tokenizer.json").is_file():
            raise PtxError(f"{what} {folder}: its tokenizer has no fast form (tokenizer.json), which ptx reads without "
                           "transformers")
        files = _read(Path(made))
    log(f"text: {folder} has a slow tokenizer: transformers wrote its tokenizer.json")
    return {**_read(folder), **files}  # the folder's generation config too


def _read(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in TEXT_FILES if (folder / name).is_file()}
