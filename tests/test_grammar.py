"""Answers held to a grammar (infer/model/grammar.py, llguidance masking in the one chooser): on a tiny random
Qwen2 with its tokenizer (tests/text_models.py), a JSON schema of nested objects, enums, arrays and required
fields gives JSON that validates, greedy and in 100 sampled answers at temperature 1.0 (the same draws
unmasked do not parse); a regex's answers match it whole; `ptx generate --json-schema FILE` and `--regex`
print such answers; a schema the library cannot compile is one line; `ptx bench --generate --json-schema` times
each row's decoding again with the mask, whose answers validate."""
from __future__ import annotations

import json
import re

import pytest
from ptx_command import ptx

from ptx.contract.grammar import Grammar, GrammarError
from ptx.contract.sampling import Sampling
from ptx.infer import load
from ptx.infer.model.text_generation import end_ids, generate_text

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

# What extraction code sends: nested objects, enums, arrays, required fields (strings bounded, so that an answer
# ends within the tokens asked for; the bounds are part of the schema the answer must meet).
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["person", "place", "thing"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "kind", "address"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe someone as JSON."}]
TOKENS = 300


@pytest.fixture(scope="module")
def model(tool_chat_export):
    opened = load(tool_chat_export["file"])
    yield opened
    opened.close()


def valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def answers(model, grammar: Grammar | None, n: int, **sampling):
    ids = model.text.chat(ASK)
    return generate_text(model, [ids], model.text, Sampling(max_new_tokens=TOKENS, grammar=grammar, **sampling), n=n,
                         eos=end_ids(model, model.text))


def test_greedy_and_100_sampled_answers_validate_against_the_schema(model):
    greedy = answers(model, Grammar.json_schema(SCHEMA), 1)[0]
    assert valid(greedy.text) and greedy.finish_reason == "stop", greedy.text
    sampled = answers(model, Grammar.json_schema(SCHEMA), 100, temperature=1.0, seed=0)  # 100 rows, each its draws
    assert [a.text for a in sampled if not valid(a.text)] == []
    assert len({a.text for a in sampled}) > 90 and {json.loads(a.text)["kind"] for a in sampled} == {
        "person", "place", "thing"}
    free = answers(model, None, 20, temperature=1.0, seed=0)  # the same draws, unmasked
    assert not any(valid(a.text) for a in free)


def test_a_vocabulary_padded_past_its_tokenizer_never_allows_a_padding_id(model, tool_chat_export, monkeypatch):
    """Qwen2.5's logits are wider than its tokenizer (151,936 rows for 151,665 words), and so are this model's:
    the ids past the tokenizer are scored, so a mask must leave them out. At every step of 20 sampled answers each
    mask is the logits' width and allows no padding id; a planted fault (the mask allows them) is caught by the
    same answers no longer parsing (llguidance refuses the id, and the row can only end)."""
    from ptx.infer.model import grammar as grammars

    words = model.text.tokenizer.get_vocab_size()
    logits = json.loads((tool_chat_export["folder"] / "config.json").read_text())["vocab_size"]
    assert logits > words
    masks = []
    allowed = grammars.Matcher.allowed
    monkeypatch.setattr(grammars.Matcher, "allowed", lambda self: masks.append(allowed(self)) or masks[-1])
    sampled = answers(model, Grammar.json_schema(SCHEMA), 20, temperature=1.0, seed=5)
    assert [a.text for a in sampled if not valid(a.text)] == []
    assert len(masks) > 200 and {m.shape[0] for m in masks} == {logits}
    assert not any(m[words:].any() for m in masks)

    def padding_allowed(self):
        mask = allowed(self).copy()
        mask[words:] = True
        return mask

    monkeypatch.setattr(grammars.Matcher, "allowed", padding_allowed)
    planted = answers(model, Grammar.json_schema(SCHEMA), 20, temperature=1.0, seed=5)
    assert sum(not valid(a.text) for a in planted) > 10


def test_any_json_object_and_a_regex(model):
    # any object, of any length: an answer that ends (not cut at its tokens, as OpenAI's JSON mode says) parses
    got = answers(model, Grammar.json_object(), 20, temperature=1.0, seed=1)
    ended = [a.text for a in got if a.finish_reason == "stop"]
    assert len(ended) >= 5 and all(isinstance(json.loads(text), dict) for text in ended), ended
    pattern = r"[a-z]{3}-[0-9]{2,4}( ok)?"
    got = answers(model, Grammar.regex(pattern), 20, temperature=1.0, seed=2)
    assert all(re.fullmatch(pattern, a.text) and a.finish_reason == "stop" for a in got), [a.text for a in got]


def test_prompt_lookup_s_guesses_are_walked_by_the_grammar_and_keep_its_tokens_and_logprobs(model, monkeypatch):
    """An answer held to a schema takes prompt lookup's guesses where the prompt shows its keys: greedy's tokens
    and log-probabilities are those it gives without guesses, in fewer steps, and 20 sampled answers still parse.
    A planted fault, the row's own grammar walking the guesses (a step keeps fewer than its chooser confirms, and
    the row's grammar is given those again at the next step), parts from them."""
    from ptx.infer.model import grammar as grammars
    from ptx.infer.model.speculative import PromptLookup

    example = json.dumps({"name": "Ada", "kind": "person", "age": 36, "tags": ["math"],
                          "address": {"city": "London", "zip": "12345"}})
    ids = model.text.chat([{"role": "user", "content": f"Describe someone as JSON, like {example} or {example}"}])
    grammar = Grammar.json_schema(SCHEMA)

    def answered(speculate, n=1, **sampling):
        done = generate_text(model, [ids], model.text, Sampling(max_new_tokens=TOKENS, grammar=grammar, **sampling),
                             n=n, eos=end_ids(model, model.text), speculate=speculate)
        return done, done.decoded.decode_steps

    (alone,), steps = answered(None, logprobs=2)
    (guessed,), guessed_steps = answered(PromptLookup(), logprobs=2)
    assert valid(guessed.text) and guessed.tokens == alone.tokens
    # a step over several positions rounds its logits otherwise than one over one: f32's noise, far below 1e-5
    assert [t.token for t in guessed.logprobs] == [t.token for t in alone.logprobs]
    assert [t.logprob for t in guessed.logprobs] == pytest.approx([t.logprob for t in alone.logprobs], abs=1e-5)
    assert guessed_steps < steps, (guessed_steps, steps)
    sampled, _ = answered(PromptLookup(), 20, temperature=1.0, seed=0)
    assert [a.text for a in sampled if not valid(a.text)] == []
    monkeypatch.setattr(grammars.Matcher, "copy", lambda self: self)
    (planted,), _ = answered(PromptLookup(), logprobs=2)
    assert planted.tokens != alone.tokens


def test_a_schema_the_library_cannot_compile_is_one_line(model):
    with pytest.raises(GrammarError) as caught:
        answers(model, Grammar.json_schema({"type": "objectx"}), 1)
    assert "objectx" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(GrammarError):
        Grammar.json_schema("[1, 2]")


def wide(properties: int) -> dict:
    """An object of ``properties`` optional string properties, as a form's schema has them."""
    return {"type": "object", "additionalProperties": False,
            "properties": {f"p{i}": {"type": "string", "maxLength": 2} for i in range(properties)}}


def test_a_schema_past_the_engine_s_limits_is_one_line_before_or_in_its_answer_never_a_cut_answer(model):
    """llguidance gives up on a grammar past its parser's limits: an object of 600 optional properties passes its
    2,000 Earley items a row at the first "{". Such a schema is refused before its answer starts; the same object
    after a string of 12 characters gives up past the first steps walked, inside the answer, which then fails in
    one line (before, each answer ended there as if whole: "{" with finish_reason "stop"). 300 properties, within
    the limit, answer and validate; a token the grammar refuses (a caller's own) still only ends its row (the
    padding test)."""
    with pytest.raises(GrammarError) as caught:
        answers(model, Grammar.json_schema(wide(600)), 1)
    said = str(caught.value)
    assert said.startswith("the JSON schema is past what the grammar engine (llguidance) holds: Current row has "
                           "2399 items; max is 2000: give fewer") and "\n" not in said, said
    deep = {"type": "object", "properties": {"a": {"type": "string", "minLength": 12, "maxLength": 12}, "b": wide(600)},
            "required": ["a", "b"], "additionalProperties": False}
    from ptx.infer.model import grammar as grammars

    grammars.check(Grammar.json_schema(deep), model.text, model.text.vocab_size, end_ids(model, model.text))
    with pytest.raises(GrammarError, match="past what the grammar engine"):
        answers(model, Grammar.json_schema(deep), 1)
    fits = answers(model, Grammar.json_schema(wide(300)), 4, temperature=1.0, seed=0)
    for answer in fits:
        jsonschema.validate(json.loads(answer.text), wide(300))


def test_ptx_generate_holds_answers_to_a_schema_or_a_regex(tool_chat_export, tmp_path):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(SCHEMA))
    done = ptx("generate", tool_chat_export["file"], "--prompt", "Someone, as JSON", "--chat", "--json-schema", schema,
               "--temperature", "1.0", "--seed", "3", "--max-new-tokens", TOKENS, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)["prompts"][0]
    assert valid(answer["text"]) and answer["finish_reason"] == "stop", answer
    codes = {backend: ptx("generate", tool_chat_export["file"], "--prompt", "A code", "--regex", "[A-Z]{2}[0-9]{3}",
                          "--backend", backend) for backend in ("ort-cpu", "openvino")}  # the mask on every backend
    for done in codes.values():
        assert done.returncode == 0 and re.fullmatch(r"prompt 1 \(\d+ tokens\): [A-Z]{2}[0-9]{3}",
                                                     done.stdout.strip()), done.stdout
    assert codes["ort-cpu"].stdout == codes["openvino"].stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "objectx"}')
    for args, says in [(("--json-schema", bad), "cannot hold an answer"),
                       (("--json-schema", schema, "--regex", "a"), "give one"),
                       (("--json-schema", tmp_path / "none.json"), "cannot be read")]:
        done = ptx("generate", tool_chat_export["file"], "--prompt", "x", *args)
        assert done.returncode == 2 and says in done.stderr and not done.stdout.strip(), (args, done.stderr)


def test_ptx_bench_times_each_row_again_held_to_the_schema(tool_chat_export, model, tmp_path, monkeypatch):
    """The masked decoding bench times is held to the grammar (its answer validates; unmasked, the same prompt's
    greedy answer does not parse), and `ptx bench --generate --json-schema` says its time beside the row's, its
    schema compiled once: the check before any backend opens and every decoding after it ask for the same
    tokenizer (vocabulary, end ids) and grammar."""
    from collections import OrderedDict

    from ptx.infer.bench.masked import time_masked
    from ptx.infer.model import grammar as grammars

    ids = model.text.chat(ASK)
    masked = time_masked(model, [ids], TOKENS, 1, Grammar.json_schema(json.dumps(SCHEMA)), lambda _: None, "ort-cpu")
    [answer] = masked.answers
    assert answer[-1] in end_ids(model, model.text) and valid(model.text.decode(answer[:-1])), answer
    assert masked.ms_per_token > 0 and masked.tokens == len(answer) - 1
    assert not valid(model.text.decode(model.generate(ids, TOKENS)[0]))
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(SCHEMA))
    compiled, tokenizers = OrderedDict(), {}
    monkeypatch.setattr(grammars, "_GRAMMARS", compiled)
    monkeypatch.setattr(grammars, "_TOKENIZERS", tokenizers)
    done = ptx("bench", tool_chat_export["file"], "--generate", "16", "--backends", "ort-cpu", "--rounds", "1",
               "--json-schema", schema)
    assert done.returncode == 0, done.stderr
    assert len(tokenizers) == 1 and len(compiled) == 1, (list(tokenizers), list(compiled))
    head = next(line for line in done.stdout.splitlines() if line.startswith("runner"))
    assert "masked ms/token" in head and "mask cost" in head and "greedy held to JSON of its schema" in done.stdout
    refused = ptx("bench", tool_chat_export["file"], "--json-schema", schema)
    assert refused.returncode == 2 and "--json-schema is for --generate N" in refused.stderr, refused.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "objectx"}')
    done = ptx("bench", tool_chat_export["file"], "--generate", "4", "--json-schema", bad)
    assert done.returncode == 2 and "cannot hold an answer" in done.stderr and not done.stdout.strip(), done.stderr
