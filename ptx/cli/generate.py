"""`ptx generate FILE`: decoding of token ids or text (with the tokenizer beside the file, or --tokenizer), greedy
or sampled, through one backend of a file exported with its key/value cache (ptx.infer.load(FILE).decode)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ptx.cli.options import IGNORE_METADATA_OPTION, Choice, DeviceChoice, backend_names
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


SAMPLING_HELP = ("Sampling (default greedy): each token drawn from the logits divided by --temperature, kept to "
                 "--top-k, --top-p and --min-p, after --repetition-penalty, as transformers' generate() applies them; "
                 "--seed makes the draws the same again, on every backend.")


@click.command("generate", short_help="Generate tokens or text with a language model exported with its cache.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--ids", "ids", multiple=True, metavar="ID,ID,...", callback=lambda c, p, v: [_ids(x) for x in v],
              help="A prompt's token ids, comma-separated; repeat for several prompts (one batch, left-padded: each "
                   "prompt's tokens as if it ran alone).")
@click.option("--features", "features", type=click.Path(dir_okay=False), metavar="FILE.npy",
              help="An encoder-decoder that reads features (Whisper's log-mel frames): a .npy array of one item "
                   "[mel bins, frames] or several [n, mel bins, frames], each decoded from the model's start ids.")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              help="A prompt as text, encoded with the tokenizer beside FILE (ptx export keeps it there) or "
                   "--tokenizer's; repeat for several.")
@click.option("--chat", is_flag=True, help="Each --prompt is a user's message, rendered with the model's chat "
                                           "template (as transformers' apply_chat_template renders it).")
@click.option("--system", metavar="TEXT", help="With --chat: a system message before each prompt.")
@click.option("--tokenizer", metavar="DIR", help="A local transformers tokenizer folder (its tokenizer.json; default: "
                                                 "the one beside FILE): --prompt is encoded with it and the new tokens "
                                                 "printed as text.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=DEFAULT_NEW_TOKENS, show_default=True,
              help="New tokens per prompt at most (fewer where a prompt reaches an end-of-sequence id).")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0: greedy (the most probable token). Above 0: sampling. " + SAMPLING_HELP)
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k most probable tokens (0: all).")
@click.option("--top-p", type=float, default=1.0, show_default=True,
              help="Sample among the fewest tokens whose probability reaches p (1: all; 0: the most probable alone).")
@click.option("--min-p", type=float, default=0.0, show_default=True,
              help="Sample among tokens at least p times as probable as the most probable one (0: all).")
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
              help="Above 1 makes tokens already in the prompt or the answer less likely (greedy too).")
@click.option("--seed", type=int, help="The draws' seed: the same seed gives the same text again (default: fresh).")
@click.option("--stop", "stop", multiple=True, metavar="TEXT",
              help="End an answer where its text holds TEXT (cut before it); repeat for several.")
@click.option("--json-schema", "json_schema", type=click.Path(dir_okay=False), metavar="FILE.json",
              help="Each answer is JSON that validates against this JSON schema: the tokens that cannot continue it "
                   "are masked at every step (greedy or sampled). Needs a tokenizer.")
@click.option("--regex", metavar="PATTERN",
              help="Each answer matches PATTERN whole (masked likewise). Needs a tokenizer.")
@click.option("--backend", type=Choice(backend_names()), help="Default: the file's own (ort-cpu for ONNX).")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]), help="For a backend that runs on several.")
@click.option("--precision", type=Choice(PRECISIONS),
              help="Default: the file's own. int4 or int8 of an f32 file runs the reduced file beside it "
                   "(model.int4.onnx, model.int8w.onnx; ptx export FILE --format onnx-int4 writes one).")
@click.option("--eos", metavar="ID[,ID]|none", help="The ids that end a prompt (default: the file's and its generation "
                                                    "config's; none: run every step).")
@click.option("--speculate", metavar="ngram|FILE",
              help="Speculative decoding, greedy's tokens exactly: ngram guesses the next tokens from the prompt and "
                   "answer (prompt lookup); FILE is a draft model (a small LM exported by ptx with the model's "
                   "tokenizer) that guesses them; each step keeps the guesses greedy confirms; a sampled answer keeps "
                   "a guess with the probability its sampling gives it (speculative sampling: the same "
                   "distribution, other draws).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: each prompt's ids and new token ids (and "
                                                      "text), and the time.")
@IGNORE_METADATA_OPTION
def generate_cmd(file, ids, features, prompts, chat, system, tokenizer, max_new_tokens, temperature, top_k, top_p,
                 min_p, repetition_penalty, seed, stop, json_schema, regex, backend, device, precision, eos, speculate,
                 as_json, ignore_metadata) -> None:
    """Decode each prompt through FILE, a model exported with its key/value cache (`ptx export DIR` of a
    transformers folder, or `ptx export --module FILE.py:FACTORY`, by itself for a transformers causal LM or
    encoder-decoder that generates): greedy by default, sampled with
    --temperature. With a tokenizer beside FILE (or --tokenizer), prompts and answers are text, and an
    answer is printed as it comes, whole characters at a time. An encoder-decoder's prompt (T5, BART) is
    its encoder's source; Whisper's is --features.

    \b
      ptx generate exports/lm/model.onnx --ids 5,17,923 --ids 8,1 --max-new-tokens 16
      ptx generate exports/lm/model.onnx --prompt "Once upon a time"
      ptx generate exports/lm/model.onnx --prompt "Hi, who are you?" --chat --temperature 0.7 --seed 1
      ptx generate exports/lm/model.onnx --prompt "A person as JSON" --chat --json-schema person.json
      ptx generate exports/whisper/model.onnx --features mel.npy

    Exit status: 0 generated; 2 a refusal (the model, a prompt, an option), one line saying what to do.
    """
    from ptx.contract.sampling import Sampling, SamplingError
    from ptx.extras import MissingExtraError
    from ptx.infer import load
    from ptx.infer.model.text import Text

    if not Path(file).is_file():
        raise click.BadParameter(f"{file}: no such file", param_hint="FILE")
    if (chat or system) and not prompts:
        raise click.UsageError("--chat renders --prompt TEXT as a user's message: give --prompt")
    if system and not chat:
        raise click.UsageError("--system is a chat's system message: give --chat too")
    try:
        words = Text.beside(file, tokenizer)
    except MissingExtraError:
        if prompts or stop or tokenizer:
            raise
        words = None  # a tokenizer beside the file, and no library to read it: token ids in and out
    if (prompts or stop) and words is None:
        raise click.UsageError(f"{'--prompt' if prompts else '--stop'} is text, and there is no tokenizer.json beside "
                               f"{file}: give --tokenizer DIR (or token ids with --ids)")
    try:
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repetition_penalty=repetition_penalty, seed=seed, stop=stop, max_new_tokens=max_new_tokens,
                            grammar=_grammar(json_schema, regex, words, file))
    except SamplingError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.param.replace('_', '-')}") from None
    given = list(ids) + [_encoded(words, p, chat, system) for p in prompts]
    if features is not None:
        if given:
            raise click.UsageError("--features is the whole input of an encoder that reads features: leave out --ids "
                                   "and --prompt")
        given = _features(features)
    elif not given:
        raise click.UsageError("give a prompt: --ids 5,17,923 (or --prompt TEXT with a tokenizer; --features FILE.npy "
                               "for an encoder of features)")
    _check_input(file, features is not None)  # before the load: a wrong option must not wait for the weights
    with load(file, backend=backend, device=device, precision=precision, ignore_metadata=ignore_metadata) as model:
        _check_grammar(model, words, sampling.grammar, _eos(eos), "--json-schema" if json_schema else "--regex")
        answers, decoded = _decoded(model, words, given, sampling, _eos(eos), stream=len(given) == 1 and not as_json,
                                    speculate=speculate)
    timing = {"prefill_ms": round(1000 * decoded.prefill_s, 3),
              "decode_ms_per_token": None if decoded.decode_ms_per_token is None else round(decoded.decode_ms_per_token, 3)}
    if decoded.encode_s:
        timing = {"encoder_ms": round(1000 * decoded.encode_s, 3), **timing}
    if speculate is not None:
        timing["decode_steps"] = decoded.decode_steps
    if as_json:
        doc = {"model": str(file), "backend": model.backend, "decoding": sampling.describe(), "prompts": [
            {**({"features": list(prompt.shape)} if features else {"ids": prompt}), "new_ids": new,
             **({"text": answer.text, "finish_reason": answer.finish_reason} if answer is not None else {})}
            for prompt, new, answer in zip(given, decoded.tokens, answers)], **timing}
        click.echo(json.dumps(doc))
        return
    if not (len(given) == 1 and words is not None):  # one answer as text was printed as it came
        for k, (prompt, new, answer) in enumerate(zip(given, decoded.tokens, answers)):
            shown = answer.text if answer is not None else " ".join(map(str, new))
            what = f"features {'x'.join(map(str, prompt.shape))}" if features else f"{len(prompt)} tokens"
            click.echo(f"{'input' if features else 'prompt'} {k + 1} ({what}): {shown}")
    _timing_line(model, len(given), sampling, timing, decoded, speculate)


def _timing_line(model, prompts: int, sampling, timing: dict, decoded, speculate: str | None) -> None:
    """The line on stderr that says where the prompts ran and how fast: the prompt's run, then each token."""
    per_token = (f", then {timing['decode_ms_per_token']:.2f} ms per token" if timing["decode_ms_per_token"] else "")
    if speculate and decoded.decode_steps:
        per_token += (f" ({decoded.decode_tokens} tokens in {decoded.decode_steps} steps: "
                      f"{decoded.decode_tokens / decoded.decode_steps:.2f} a step, --speculate {speculate})")
    sys.stdout.flush()  # every token line out before the timing line, which goes to stderr
    where = model.backend + (f" at {model.precision} ({Path(model.path).name})" if model.precision != "f32" else "")
    encoder = f"the encoder in {timing['encoder_ms']:.1f} ms, " if "encoder_ms" in timing else ""
    click.echo(f"{prompts} prompt{'s' * (prompts != 1)} on {where}, {sampling.describe()}: {encoder}the "
               f"prompt in {timing['prefill_ms']:.1f} ms{per_token}", err=True)


def _grammar(json_schema: str | None, regex: str | None, words, file):
    """--json-schema FILE or --regex PATTERN as the grammar every answer is held to (None: neither)."""
    from ptx.contract.grammar import Grammar, GrammarError

    if json_schema is None and regex is None:
        return None
    if json_schema is not None and regex is not None:
        raise click.UsageError("--json-schema and --regex each say what an answer is: give one")
    option = "--json-schema" if json_schema is not None else "--regex"
    if words is None:
        raise click.UsageError(f"{option} masks the tokenizer's tokens, and there is no tokenizer.json beside {file}: "
                               "give --tokenizer DIR")
    if regex is None:
        return schema_grammar(json_schema)
    try:
        return Grammar.regex(regex)
    except GrammarError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def schema_grammar(path: str):
    """--json-schema FILE as the grammar an answer is held to (ptx generate's, ptx bench --generate's): the file
    read and the schema parsed, else one line naming the option."""
    from ptx.contract.grammar import Grammar, GrammarError

    try:
        return Grammar.json_schema(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: cannot be read ({exc})", param_hint="--json-schema") from None
    except GrammarError as exc:
        raise click.BadParameter(str(exc), param_hint="--json-schema") from None


def _check_grammar(model, words, grammar, eos, option: str) -> None:
    """The grammar compiled for the model's tokenizer before any prompt line is printed: else one line. No
    grammar, or a file without its cache (refused where it decodes), has nothing to check."""
    if grammar is None or model.generation is None:
        return
    from ptx.contract.grammar import GrammarError
    from ptx.infer.model import grammar as grammars
    from ptx.infer.model.decoding_memory import vocabulary
    from ptx.infer.model.text_generation import end_ids

    try:
        grammars.check(grammar, words, vocabulary(model.signature, model.generation) or words.vocab_size,
                       sorted(set(end_ids(model, words, eos))))
    except GrammarError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _features(path: str):
    """A .npy array of features: one item [mel bins, frames] or several [n, mel bins, frames]."""
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: not a .npy array ({exc})", param_hint="--features") from None
    if not np.issubdtype(array.dtype, np.floating) or array.ndim not in (2, 3):
        raise click.BadParameter(f"{path}: a {array.dtype} array of shape {list(array.shape)}; give float features "
                                 "[mel bins, frames] or [n, mel bins, frames]", param_hint="--features")
    return array[None] if array.ndim == 2 else array


def _check_input(file, features: bool) -> None:
    """--features for an encoder of features only, and ids or text for the others: else one line. Read from
    the contract the file records (no runtime opens); a file that cannot be read so is left to load() to say."""
    from ptx.contract.generation import of_metadata
    from ptx.errors import PtxError
    from ptx.infer.formats.model_files import read_model_file
    from ptx.infer.formats.signature import recorded_signature

    try:
        generation = of_metadata(read_model_file(file, digest=False).metadata, Path(file).name)
    except PtxError:
        return
    reads_features = bool(generation and generation.encoder and generation.encoder.features)
    if features and not reads_features:
        raise click.UsageError(f"--features is for an encoder-decoder that reads features (Whisper); {file} takes token "
                               "ids: give --ids or --prompt")
    if reads_features and not features:
        encoder = Path(file).parent / generation.encoder.file
        shape = "mel bins, frames"  # where the encoder file does not say (its own problem is load()'s to say)
        try:
            source = recorded_signature(read_model_file(encoder, digest=False).metadata, encoder)
            if source is not None:
                shape = ", ".join(map(str, source.input(generation.encoder.source).shape[1:]))
        except PtxError:
            pass
        raise click.UsageError(f"{file} is an encoder-decoder whose encoder reads features: give --features FILE.npy "
                               f"(an array [{shape}])")


def _encoded(words, prompt: str, chat: bool, system: str | None) -> list[int]:
    if not chat:
        return words.encode(prompt)
    return words.chat([*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}])


def _decoded(model, words, given, sampling, eos, stream: bool, speculate: str | None = None):
    """(each prompt's Answer, or None without a tokenizer; the decoding's record). One answer as text is
    printed as it comes, after its prompt's line head. ``speculate``: --speculate (ngram, or a draft model's
    file, opened here on the model's backend and closed after)."""
    from ptx.infer.model.speculative import drafter_of

    drafter = drafter_of(speculate, target=model)
    try:
        return _answered(model, words, given, sampling, eos, stream, drafter)
    finally:
        if hasattr(drafter, "close"):
            drafter.close()


def _answered(model, words, given, sampling, eos, stream: bool, speculate):
    if words is None:
        decoded = model.decode(given, sampling.max_new_tokens, eos, sampling, speculate=speculate)
        return [None] * len(given), decoded
    from ptx.infer.model.text_generation import generate_text

    if not stream:
        answers = generate_text(model, given, words, sampling, eos=eos, speculate=speculate)
        return answers, answers.decoded
    click.echo(f"prompt 1 ({len(given[0])} tokens): ", nl=False)
    try:  # the line is ended whatever happens, so that nothing written after it (the timing line on stderr, an
        # error) runs on from its last token on a terminal, where stdout and stderr share the lines
        answers = generate_text(model, given, words, sampling, eos=eos, speculate=speculate,
                                on_text=lambda row, piece: click.echo(piece, nl=False))
    finally:
        click.echo("")
    return answers, answers.decoded


__all__ = ["generate_cmd"]
