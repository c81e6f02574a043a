"""What evaluation harnesses and chat UIs send `ptx serve`'s OpenAI API beside the text, tested with the real
`openai` client: logprobs and top_logprobs (chat and completions, whole and streamed) are the log-softmax of
ptx's own logits at each step; a completion's echo gives its prompt's log-probabilities as a teacher-forced
pass (transformers' forward of the same folder) gives them, with max_tokens 0 as lm-evaluation-harness asks;
presence_penalty, frequency_penalty and logit_bias choose as the library's one chooser does, in the
server's batch beside other requests. Their bad values are in test_openai.py's hostile battery."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_openai import HI, client, files, library_answer, local, server  # noqa: F401 - the same server fixtures

from ptx.contract.logprobs import log_softmax
from ptx.infer.model.generation import GREEDY
from ptx.infer.model.text_generation import end_ids

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def greedy_steps(local, ids, max_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """ptx's own greedy decoding, step by step: its tokens and each step's log-softmax of its logits."""
    decoding = local.decoding([ids], max_tokens, end_ids(local, local.text))
    tokens, logprobs = [], []
    for step in decoding:
        logprobs.append(log_softmax(step.logits[0]))
        token = decoding.append(GREEDY(step.logits, decoding.history))[0]
        tokens.append(token)
    return tokens, logprobs


def test_greedy_logprobs_are_the_log_softmax_of_ptx_s_logits_at_each_step(client, local):
    ids = local.text.chat(HI)
    tokens, steps = greedy_steps(local, ids, 12)
    got = client.chat.completions.create(model="chat", messages=HI, max_tokens=12, temperature=0, logprobs=True,
                                         top_logprobs=3).choices[0]
    content = got.logprobs.content
    shown = [t for t in tokens if t not in end_ids(local, local.text)]  # an end of turn has no text, nor entry
    assert len(content) == len(shown) >= 1
    for entry, token, step in zip(content, shown, steps):
        assert abs(entry.logprob - step[token]) < 1e-5
        assert entry.top_logprobs[0].logprob == entry.logprob  # greedy: the chosen one is the most probable
        best = np.argsort(-step, kind="stable")[:3]
        np.testing.assert_allclose([t.logprob for t in entry.top_logprobs], step[best], atol=1e-5)
        assert bytes(entry.bytes) == local.text.token_bytes(token)
    assert b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace") == got.message.content
    # the check tells steps apart: an entry read one step off would be caught
    assert max(abs(e.logprob - s[t]) for e, t, s in zip(content[1:], shown, steps)) > 1e-3


def test_completion_logprobs_list_the_chosen_token_beside_the_most_probable(client, local):
    asked = dict(model="chat", prompt="Once upon a time", max_tokens=10, temperature=1.0, seed=4, logprobs=2)
    got = client.completions.create(**asked).choices[0]
    want = library_answer(local, local.text.encode("Once upon a time"), 10, temperature=1.0, seed=4, logprobs=2)[0]
    assert got.text == want.text
    lp = got.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(want.logprobs)
    for token, value, top, taken in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, want.logprobs):
        assert abs(value - taken.logprob) < 1e-12 and top[token] == value  # the chosen one is listed too
        assert 2 <= len(top) <= 3 and max(top.values()) == taken.top[0][1]
    assert lp.text_offset == [sum(map(len, lp.tokens[:k])) for k in range(len(lp.tokens))]


def teacher_forced(folder, ids: list[int]) -> np.ndarray:
    """transformers' forward of the whole prompt: the log-probability of each token but the first."""
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


@pytest.mark.parametrize("max_tokens", [0, 3])
def test_echo_gives_the_prompt_s_logprobs_as_a_teacher_forced_pass(client, local, chat_export, max_tokens):
    prompt = "The quick brown fox jumps"
    ids = local.text.encode(prompt)
    got = client.completions.create(model="chat", prompt=prompt, max_tokens=max_tokens, temperature=0, echo=True,
                                    logprobs=1)
    choice = got.choices[0]
    lp = choice.logprobs
    assert choice.text.startswith(prompt) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.tokens[:len(ids)] == [local.text.token_bytes(t).decode() for t in ids]
    want = teacher_forced(chat_export["folder"], ids)
    np.testing.assert_allclose(lp.token_logprobs[1:len(ids)], want, atol=1e-4)  # ONNX Runtime against torch, f32
    assert np.abs(np.asarray(lp.token_logprobs[2:len(ids)]) - want[:-1]).max() > 1e-2  # one position off: caught
    assert got.usage.completion_tokens == max_tokens and len(lp.tokens) == len(ids) + max_tokens
    if max_tokens == 0:
        assert choice.text == prompt and choice.finish_reason == "length"


def test_streamed_logprobs_reassemble_to_the_whole(client):
    asked = dict(model="chat", messages=HI, max_tokens=12, temperature=0.9, seed=2, logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**asked).choices[0].logprobs.content
    streamed = [entry for chunk in client.chat.completions.create(**asked, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in whole]
    asked = dict(model="chat", prompt="hello world", max_tokens=6, temperature=0, echo=True, logprobs=1)
    whole = client.completions.create(**asked).choices[0]
    text, tokens, values, offsets = "", [], [], []
    for chunk in client.completions.create(**asked, stream=True):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs:
                tokens += choice.logprobs.tokens
                values += choice.logprobs.token_logprobs
                offsets += choice.logprobs.text_offset
    assert (text, tokens, values, offsets) == (whole.text, whole.logprobs.tokens, whole.logprobs.token_logprobs,
                                               whole.logprobs.text_offset)


def test_logit_bias_forces_and_bans_tokens_and_logprobs_stay_the_model_s(client, local):
    forced = local.text.encode(" fox")[-1]
    got = client.completions.create(model="chat", prompt="Once", max_tokens=5, temperature=0,
                                    logit_bias={str(forced): 100}, logprobs=0)
    assert got.choices[0].text == local.text.decode([forced] * 5)
    plain = client.completions.create(model="chat", prompt="Once", max_tokens=5, temperature=0, logprobs=0).choices[0]
    first = greedy_steps(local, local.text.encode("Once"), 1)[0][0]
    assert plain.logprobs.tokens[0] == local.text.token_bytes(first).decode("utf-8", "backslashreplace")
    banned = client.completions.create(model="chat", prompt="Once", max_tokens=5, temperature=0,
                                       logit_bias={str(first): -100}, logprobs=3).choices[0]
    assert banned.logprobs.tokens[0] != plain.logprobs.tokens[0]
    # the banned token is still the model's most probable: its raw log-probability heads the list
    assert max(banned.logprobs.top_logprobs[0].values()) == plain.logprobs.token_logprobs[0]


def test_penalties_choose_as_the_library_and_change_the_answer(client, local):
    ids = local.text.encode("hello world")
    asked = dict(model="chat", prompt="hello world", max_tokens=24, temperature=0)
    penalised = dict(presence_penalty=1.5, frequency_penalty=2.0)
    got = client.completions.create(**asked, **penalised).choices[0].text
    want, unpenalised = library_answer(local, ids, 24, **penalised)[0], library_answer(local, ids, 24)[0]
    assert got == want.text != client.completions.create(**asked).choices[0].text == unpenalised.text
    assert len(set(want.tokens)) > len(set(unpenalised.tokens))  # fewer repeats


def test_requests_with_logprobs_and_penalties_in_one_batch_each_get_their_answer_alone(client, local):
    """Five clients at once: echo (its prompt run alone), logprobs, penalties and bias beside plain greedy and
    sampled requests; each answer is the library's for that request alone."""
    asked = [("Once upon a time", 16, dict(temperature=0, logprobs=2)),
             ("The quick brown", 12, dict(temperature=0.8, seed=3, frequency_penalty=1.0)),
             ("hello world", 20, dict(temperature=0, presence_penalty=2.0, logit_bias=((40, 5.0),))),
             ("café", 8, dict(temperature=1.0, seed=9, logprobs=0)),
             ("user assistant", 10, dict(temperature=0))]

    def ask(k):
        prompt, max_tokens, sampling = asked[k]
        extra = {"logit_bias": {str(t): b for t, b in sampling["logit_bias"]}} if "logit_bias" in sampling else {}
        got = client.completions.create(model="chat", prompt=prompt, max_tokens=max_tokens, echo=k == 0,
                                        **{**sampling, **extra}).choices[0]
        return got.text[len(prompt):] if k == 0 else got.text, got.logprobs

    with ThreadPoolExecutor(len(asked)) as pool:
        got = list(pool.map(ask, range(len(asked))))
    for (prompt, max_tokens, sampling), (text, logprobs) in zip(asked, got):
        want = library_answer(local, local.text.encode(prompt), max_tokens, **sampling)[0]
        assert text == want.text, prompt
        if want.logprobs is not None:
            values = [v for v in logprobs.token_logprobs if v is not None][-len(want.logprobs):]
            np.testing.assert_allclose(values, [t.logprob for t in want.logprobs], atol=1e-5)
