"""`ptx generate FILE`: greedy decoding of token ids (or text, with a local tokenizer) through one backend
of a file exported with its key/value cache (ptx.infer.load(FILE).generate)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ptx.cli.options import Choice, DeviceChoice, backend_names
from ptx.contract.names import PRECISIONS

DEFAULT_NEW_TOKENS = 32


def _ids(value: str) -> list[int]:
    try:
        ids = [int(t) for t in value.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give token ids as integers separated by commas (5,17,923)") from None
    if not ids:
        raise click.BadParameter(f"{value!r}: give at least one token id")
    return ids


def _eos(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    return tuple(_ids(value))


class Tokenizer:
    """A local transformers tokenizer folder's tokenizer.json, read by the tokenizers library (no torch, and
    nothing downloaded): text to ids with the special tokens the tokenizer adds (Llama's BOS), ids to text."""

    def __init__(self, folder: str):
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise click.BadParameter(f"{folder}: no tokenizer.json there; give a transformers tokenizer folder "
                                     "(tokenizer.save_pretrained(DIR) writes one)", param_hint="--tokenizer")
        try:
            from tokenizers import Tokenizer as Fast
        except ImportError:
            raise click.UsageError("--tokenizer reads tokenizer.json with the tokenizers library: "
                                   "pip install tokenizers") from None
        try:
            self.fast = Fast.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception type for a bad file
            raise click.BadParameter(f"{path}: not a tokenizer file tokenizers can read ({exc})",
                                     param_hint="--tokenizer") from None

    def encode(self, text: str) -> list[int]:
        return self.fast.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.fast.decode(ids, skip_special_tokens=True)


@click.command("generate", short_help="Generate tokens with a language model exported with its cache.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--ids", "ids", multiple=True, metavar="ID,ID,...", callback=lambda c, p, v: [_ids(x) for x in v],
              help="A prompt's token ids, comma-separated; repeat for several prompts (one batch, left-padded: each "
                   "prompt's tokens as if it ran alone).")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="A prompt as text (needs --tokenizer); repeat for several.")
@click.option("--tokenizer", metavar="DIR", help="A local transformers tokenizer folder (its tokenizer.json): "
                                                 "--prompt is encoded with it and the new tokens printed as text.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=DEFAULT_NEW_TOKENS, show_default=True,
              help="New tokens per prompt at most (fewer where a prompt reaches an end-of-sequence id).")
@click.option("--backend", type=Choice(backend_names()), help="Default: the file's own (ort-cpu for ONNX).")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]), help="For a backend that runs on several.")
@click.option("--precision", type=Choice(PRECISIONS),
              help="Default: the file's own. int4 or int8 of an f32 file runs the reduced file beside it "
                   "(model.int4.onnx, model.int8w.onnx; ptx export FILE --format onnx-int4 writes one).")
@click.option("--eos", metavar="ID[,ID]|none", help="The ids that end a prompt (default: the file's; none: run every "
                                                    "step).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: each prompt's ids and new token ids, and "
                                                      "the time.")
def generate_cmd(file, ids, prompts, tokenizer, max_new_tokens, backend, device, precision, eos, as_json) -> None:
    """Greedy decoding of each prompt through FILE, a model exported with its key/value cache (`ptx export
    --module FILE.py:FACTORY --task text-generation`, by itself for a transformers model that generates).

    \b
      ptx generate exports/lm/model.onnx --ids 5,17,923 --ids 8,1 --max-new-tokens 16
      ptx generate exports/lm/model.onnx --tokenizer tok/ --prompt "Once upon a time"

    Exit status: 0 generated, 1 the model or a prompt refused, 2 usage error.
    """
    from ptx.infer import load

    if not Path(file).is_file():
        raise click.BadParameter(f"{file}: no such file", param_hint="FILE")
    if prompts and not tokenizer:
        raise click.UsageError("--prompt is text: give --tokenizer DIR to encode it (or give token ids with --ids)")
    words = Tokenizer(tokenizer) if tokenizer else None
    given = list(ids) + [words.encode(p) for p in prompts] if words else list(ids)
    if not given:
        raise click.UsageError("give a prompt: --ids 5,17,923 (or --tokenizer DIR --prompt TEXT)")
    model = load(file, backend=backend, device=device, precision=precision)
    try:
        decoded = model.decode(given, max_new_tokens, _eos(eos))
    finally:
        model.close()
    timing = {"prefill_ms": round(1000 * decoded.prefill_s, 3),
              "decode_ms_per_token": None if decoded.decode_ms_per_token is None else round(decoded.decode_ms_per_token, 3)}
    if as_json:
        doc = {"model": str(file), "backend": model.backend, "prompts": [
            {"ids": prompt, "new_ids": new, **({"text": words.decode(new)} if words else {})}
            for prompt, new in zip(given, decoded.tokens)], **timing}
        click.echo(json.dumps(doc))
        return
    for k, (prompt, new) in enumerate(zip(given, decoded.tokens)):
        shown = words.decode(new) if words else " ".join(map(str, new))
        click.echo(f"prompt {k + 1} ({len(prompt)} tokens): {shown}")
    per_token = (f", then {timing['decode_ms_per_token']:.2f} ms per token" if timing["decode_ms_per_token"] else "")
    where = model.backend + (f" at {model.precision} ({Path(model.path).name})" if model.precision != "f32" else "")
    click.echo(f"{len(given)} prompt{'s' * (len(given) != 1)} on {where}: the prompt in "
               f"{timing['prefill_ms']:.1f} ms{per_token}", err=True)


__all__ = ["generate_cmd"]
