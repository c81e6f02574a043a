"""Prompt-lookup speculative decoding (infer/model/speculative.py) where users ask for it: `ptx generate --speculate
ngram` gives greedy's tokens in fewer steps (ids and text), `ptx bench --generate --speculate ngram` times it beside
greedy's row, the server's continuous batching keeps a greedy request's guesses (its tokens greedy's, alone and
beside others), and the OpenAI API answers `ptx serve --speculate ngram` with the text (and logprobs, and JSON held to
its grammar) the library gives without guesses.
The drafter itself: the continuation of the latest earlier match, the longest match first."""
from __future__ import annotations

import asyncio
import json

import pytest

import serving
from ptx.contract.sampling import Sampling
from ptx.infer import load
from ptx.infer.model.speculative import PromptLookup, drafter_of
from ptx.infer.model.text_generation import generate_text
from ptx_command import ptx

TIMEOUT_S = 60
REPEATED = "w5 w17 w93 w40 w8 w61 w5 w17 w93 w40 w8 w61 w5 w17"


@pytest.fixture(scope="module")
def chat(chat_export):
    model = load(chat_export["file"])
    yield model
    model.close()


def test_prompt_lookup_guesses_what_followed_the_latest_longest_match():
    drafter = PromptLookup(tokens=3)
    assert drafter.draft([1, 2, 3, 4, 9, 1, 2, 3, 7, 1, 2, 3]) == [7, 1, 2]  # the latest place 1 2 3 was seen
    assert drafter.draft([5, 6, 5, 7, 8, 6, 5]) == [7, 8, 6]  # "6 5" matches before "5" alone
    assert drafter.draft([1, 2, 3]) == [] and drafter.draft([4]) == []  # nothing seen before
    assert drafter.draft([1, 2, 1, 2, 9, 1, 2], limit=1) == [9]
    assert drafter_of(None) is None and isinstance(drafter_of("ngram"), PromptLookup)
    with pytest.raises(Exception, match="--speculate draft: give ngram .* or a draft model's file"):
        drafter_of("draft")


def test_a_draft_whose_tokenizer_gives_its_ids_other_words_is_refused(chat, chat_export, tmp_path):
    """A draft model of the model's tokenizer is taken (here the model itself, its tokenizer beside it); the same
    file beside a tokenizer of as many ids but two words swapped is refused in one line, where each of its guesses
    would be another word than the model's."""
    import shutil

    from ptx.infer.model.speculative import draft_model

    draft_model(chat_export["file"], chat).close()
    other = tmp_path / "other"
    shutil.copytree(chat_export["file"].parent, other)
    doc = json.loads((other / "tokenizer.json").read_text())
    words = doc["model"]["vocab"]
    first, second = sorted(words, key=words.get)[200:202]
    words[first], words[second] = words[second], words[first]
    (other / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(Exception, match="its tokenizer gives its .* ids other words than the model's"):
        draft_model(other / chat_export["file"].name, chat)


def test_ptx_generate_speculate_gives_greedy_s_ids_and_text_in_fewer_steps(chat_export):
    file = chat_export["file"]
    ids = ["--ids", "5,17,93,40,8,61,5,17,93,40,8,61,5,17", "--max-new-tokens", "24", "--eos", "none"]
    plain = ptx("generate", file, *ids, "--json")
    guessed = ptx("generate", file, *ids, "--json", "--speculate", "ngram")
    assert plain.returncode == guessed.returncode == 0, plain.stderr + guessed.stderr
    plain, guessed = json.loads(plain.stdout), json.loads(guessed.stdout)
    assert guessed["prompts"][0]["new_ids"] == plain["prompts"][0]["new_ids"]
    assert guessed["decode_steps"] < len(plain["prompts"][0]["new_ids"]) - 1, guessed
    text = ptx("generate", file, "--prompt", REPEATED, "--max-new-tokens", "16", "--speculate", "ngram")
    alone = ptx("generate", file, "--prompt", REPEATED, "--max-new-tokens", "16")
    assert text.returncode == 0 and text.stdout == alone.stdout, text.stderr
    assert "--speculate ngram)" in text.stderr and " a step" in text.stderr, text.stderr
    drafted = json.loads(ptx("generate", file, *ids, "--json", "--speculate", file).stdout)  # itself as its draft
    assert drafted["prompts"][0]["new_ids"] == plain["prompts"][0]["new_ids"] and drafted["decode_steps"] <= 6
    refused = ptx("generate", file, *ids, "--speculate", "draft")
    assert refused.returncode == 2 and "--speculate draft: give ngram" in refused.stderr, refused.stderr


def test_ptx_bench_generate_times_speculation_beside_greedy(chat_export):
    done = ptx("bench", chat_export["file"], "--generate", "16", "--backends", "ort-cpu", "--rounds", "1",
               "--speculate", "ngram", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["runner"]: r for r in json.loads(done.stdout)["rows"]}
    assert set(rows) == {"ort-cpu", "ort-cpu --speculate ngram"}, rows
    assert rows["ort-cpu"]["tokens_per_step"] is None and rows["ort-cpu --speculate ngram"]["tokens_per_step"] >= 1
    assert "its tokens differ" not in done.stdout
    refused = ptx("bench", chat_export["file"], "--speculate", "ngram")
    assert refused.returncode == 2 and "--speculate is for --generate N" in refused.stderr, refused.stderr


def test_the_server_s_batch_keeps_a_greedy_request_s_guesses_beside_others(chat):
    from ptx.serve.generator import Generator

    generator = Generator("chat", chat, chat.generation, max_rows=8, speculate="ngram")
    repeated = chat.text.encode(REPEATED)
    asked = [(repeated, 30), ([5, 9, 14], 12), (repeated[:9], 20)]
    want = [chat.generate(p, new, eos=())[0] for p, new in asked]
    decodings = [generator.start([p], new, (), 8) for p, new in asked]

    async def clients():
        return await asyncio.gather(*(generator.generate(d) for d in decodings))

    try:
        got = asyncio.run(asyncio.wait_for(clients(), TIMEOUT_S))
    finally:
        generator.close()
    assert [g[0] for g in got] == want
    assert decodings[0].decoded().decode_steps < 30 - 1  # its guesses were kept in the batch


def test_openai_answers_ptx_serve_speculate_with_the_library_s_greedy_text(chat_export, chat, tmp_path):
    """Greedy, streamed or whole, and with logprobs or held to JSON (whose requests take the guesses too): the text
    and log-probabilities the library gives without guesses."""
    from ptx.contract.grammar import Grammar

    pytest.importorskip("openai")
    ids = chat.text.chat([{"role": "user", "content": REPEATED}])
    want = generate_text(chat, [ids], chat.text, Sampling(max_new_tokens=24, logprobs=2))[0]
    json_want = generate_text(chat, [ids], chat.text, Sampling(max_new_tokens=24, grammar=Grammar.json_object()))[0]
    asked = dict(model="chat", messages=[{"role": "user", "content": REPEATED}], max_tokens=24, temperature=0)
    with serving.running(tmp_path, chat_export["file"], args=("--name", "chat", "--speculate", "ngram")) as server:
        client = serving.openai_client(server, TIMEOUT_S)
        answer = client.chat.completions.create(**asked)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            **asked, stream=True) if chunk.choices)
        scored = client.chat.completions.create(**asked, logprobs=True, top_logprobs=2).choices[0]
        held = client.chat.completions.create(**asked, response_format={"type": "json_object"}).choices[0]
    assert answer.choices[0].message.content == want.text == streamed == scored.message.content
    assert [t.logprob for t in scored.logprobs.content] == pytest.approx([t.logprob for t in want.logprobs], abs=1e-5)
    assert held.message.content == json_want.text
