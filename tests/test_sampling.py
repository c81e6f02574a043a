"""Sampling in the one decoding (ptx.contract.sampling): the scores are transformers' logits processors'
(repetition penalty, temperature, top-k, top-p, min-p) on random logits; the draws are the seed's (one
numpy Generator per row, one uniform per step, inverted over the kept tokens' distribution), so a seed gives
the same tokens again, a row the same alone or in a batch, and logits that differ by a runtime's rounding
the same tokens; the draws follow the distribution; greedy stays the argmax; bad values are one line each."""
from __future__ import annotations

import numpy as np
import pytest

from ptx.contract.sampling import Chooser, Sampling, SamplingError, choose, processed

VOCAB = 50


def _logits(seed: int, rows: int = 4, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, VOCAB)) * scale).astype(np.float32)


def _history(rows: int = 4, seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, 12).tolist() for _ in range(rows)]


SETTINGS = {
    "temperature": dict(temperature=0.7),
    "top-k": dict(temperature=1.0, top_k=5),
    "top-p": dict(temperature=1.0, top_p=0.8),
    "min-p": dict(temperature=1.0, min_p=0.1),
    "penalty-greedy": dict(repetition_penalty=1.3),
    "all": dict(temperature=0.6, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2),
    "hot": dict(temperature=2.5, top_k=30, top_p=0.95),
}


def _transformers_scores(logits: np.ndarray, history, params: Sampling) -> np.ndarray:
    """What transformers' generate() makes of the same logits, with its own processors in its own order
    (GenerationMixin._get_logits_processor): the penalty always, the warpers when sampling."""
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    chain = []
    if params.repetition_penalty != 1.0:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(float(params.repetition_penalty)))
    if not params.greedy:
        if params.temperature != 1.0:
            chain.append(lp.TemperatureLogitsWarper(float(params.temperature)))
        if params.top_k:
            chain.append(lp.TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            chain.append(lp.TopPLogitsWarper(float(params.top_p)))
        if params.min_p > 0:
            chain.append(lp.MinPLogitsWarper(float(params.min_p)))
    ids = torch.tensor(history, dtype=torch.long)
    scores = torch.from_numpy(logits.astype(np.float64))
    for processor in chain:
        scores = processor(ids, scores)
    return scores.numpy()


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_scores_are_transformers_logits_processors(setting):
    params = Sampling(**SETTINGS[setting])
    for seed in range(5):
        logits, history = _logits(seed), _history()
        mine, theirs = processed(logits, history, params), _transformers_scores(logits, history, params)
        assert np.array_equal(np.isinf(mine), np.isinf(theirs)), setting  # the same tokens kept
        kept = np.isfinite(theirs)
        np.testing.assert_allclose(mine[kept], theirs[kept], rtol=1e-12, atol=1e-12)
        assert kept.sum(axis=1).min() >= 1


def test_a_filter_that_kept_another_set_would_be_caught():
    """The comparison above is not vacuous: top-p 0.8 against transformers' top-p 0.7 parts."""
    logits, history = _logits(3), _history()
    mine = processed(logits, history, Sampling(temperature=1.0, top_p=0.8))
    theirs = _transformers_scores(logits, history, Sampling(temperature=1.0, top_p=0.7))
    assert not np.array_equal(np.isinf(mine), np.isinf(theirs))


def test_greedy_is_the_argmax_and_the_default():
    logits = _logits(0)
    assert Sampling().greedy and Sampling(temperature=0).greedy and not Sampling(temperature=0.1).greedy
    assert np.array_equal(choose(logits, _history(), Sampling()), np.argmax(logits, axis=-1))
    # top-k and friends change nothing while greedy (transformers applies its warpers when sampling only)
    assert np.array_equal(choose(logits, _history(), Sampling(top_k=1, top_p=0.1)), np.argmax(logits, axis=-1))
    # top_p 0 (OpenAI's API takes it) samples from the most probable token alone: greedy's choice at any temperature
    hot = Chooser(Sampling(temperature=2.0, top_p=0, seed=0))
    assert all(np.array_equal(hot(logits, _history()), np.argmax(logits, axis=-1)) for _ in range(50))
    tied = np.array([[1.0, 3.0, 3.0, 0.5] + [0.0] * (logits.shape[1] - 4)], dtype=np.float32)
    one_row = Chooser(Sampling(temperature=2.0, top_p=0, seed=0))
    assert all(one_row(tied, [[]])[0] == 1 for _ in range(20))  # of two tied for the top, greedy's: the first


def test_a_seed_gives_the_same_tokens_and_another_seed_others():
    def run(seed, rows=4):
        chooser = Chooser(Sampling(temperature=1.0, seed=seed))
        return np.stack([chooser(_logits(step, rows), _history(rows)) for step in range(40)])

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))
    assert np.array_equal(run(7, rows=1)[:, 0], run(7, rows=4)[:, 0])  # row 0 draws alike alone or in a batch
    assert not np.array_equal(Chooser(Sampling(temperature=1.0))(_logits(0, 64), _history(64)),
                              Chooser(Sampling(temperature=1.0))(_logits(0, 64), _history(64)))  # no seed: fresh


def test_a_prompt_draws_alike_at_any_place_of_a_batch_and_its_answers_apart():
    """A prompt's rows draw by their key (0 alone; j for its answer j), never by their place: the last row of
    a batch beside other prompts draws as the prompt alone; two answers to one prompt (keys 0, 1) draw apart."""
    params = Sampling(temperature=1.0, seed=5)
    mine = [_logits(step, rows=1) for step in range(40)]
    alone, placed, answers = Chooser(params), Chooser(params), Chooser(params, keys=[0, 1])
    got_alone = [alone(x, _history(1))[0] for x in mine]
    got_placed = [placed(np.concatenate([_logits(100 + s, rows=3), x]), _history(4))[3] for s, x in enumerate(mine)]
    assert got_placed == got_alone
    both = np.stack([answers(np.concatenate([x, x]), _history(2)) for x in mine])
    assert both[:, 0].tolist() == got_alone and not np.array_equal(both[:, 0], both[:, 1])


def test_logits_that_differ_by_rounding_choose_the_same_tokens():
    """A runtime's rounding (1e-5 on logits of about 3) moves each boundary of the distribution by about
    as much: over 2,000 draws at most a few fall within it. Noise of 0.3 (a different model) parts often."""
    rng = np.random.default_rng(0)
    steps = [_logits(1000 + s, rows=1) for s in range(2000)]
    history = _history(1)

    def tokens(noise: float) -> np.ndarray:
        chooser = Chooser(Sampling(temperature=1.0, top_p=0.95, seed=3))
        return np.array([chooser(x + rng.normal(0, noise, x.shape).astype(np.float32), history)[0] for x in steps])

    same = tokens(0.0)
    assert (tokens(1e-5) != same).sum() <= 5
    assert (tokens(0.3) != same).sum() > 100


def test_draws_follow_the_kept_distribution():
    logits = _logits(5, rows=1)
    params = Sampling(temperature=0.8, top_k=6, seed=11)
    scores = processed(logits, [[]], params)
    want = np.exp(scores[0] - scores[0].max())
    want /= want.sum()
    chooser = Chooser(params)
    counts = np.bincount([chooser(logits, [[]])[0] for _ in range(20_000)], minlength=VOCAB) / 20_000
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(want))  # nothing filtered is ever drawn
    assert np.abs(counts - want).max() < 0.015  # 20,000 draws: a frequency's error is about 0.004


@pytest.mark.parametrize("given, param", [
    (dict(temperature=-1), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=-2), "top_k"), (dict(top_k=1.5), "top_k"), (dict(top_p=-0.1), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(min_p=2), "min_p"), (dict(repetition_penalty=0), "repetition_penalty"), (dict(seed="x"), "seed"),
    (dict(stop=[""]), "stop"), (dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=True), "temperature"),
])
def test_out_of_range_values_are_one_line_naming_the_parameter(given, param):
    with pytest.raises(SamplingError) as caught:
        Sampling(**given)
    assert caught.value.param == param and param in str(caught.value) and "\n" not in str(caught.value)


def test_a_stop_string_alone_is_a_tuple_of_one():
    assert Sampling(stop="END").stop == ("END",)


def test_presence_and_frequency_penalties_count_the_answer_s_tokens_only():
    """OpenAI's formula, mu[j] - c[j] * frequency - (c[j] > 0) * presence, over the answer (after the prompt's
    2 tokens): token 3 twice, token 4 once; token 1, in the prompt alone, keeps its logit."""
    logits = _logits(0, rows=1)
    history = [[1, 2, 3, 3, 4]]
    params = Sampling(presence_penalty=0.5, frequency_penalty=0.25)
    got = processed(logits, history, params, answer_starts=[2])[0]
    want = logits[0].astype(np.float64)
    want[3] -= 2 * 0.25 + 0.5
    want[4] -= 0.25 + 0.5
    np.testing.assert_array_equal(got, want)
    # counting the prompt too (the answer from 0) would take token 1 and 2 down as well: the test tells them apart
    assert not np.array_equal(processed(logits, history, params, answer_starts=[0])[0], want)


def test_a_chooser_counts_the_answer_from_its_first_call():
    """The first call is the prompt's step: a prompt of token t repeated is no penalty on t, greedy."""
    logits = np.zeros((1, VOCAB), dtype=np.float32)
    logits[0, 7] = 1.0
    chooser = Chooser(Sampling(frequency_penalty=2.0))
    assert chooser(logits, [[7, 7, 7]])[0] == 7  # the prompt's 7s count for nothing
    assert chooser(logits, [[7, 7, 7, 7]])[0] != 7  # the answer's one 7 takes 2 off its logit of 1


def test_logit_bias_is_added_to_its_tokens_first():
    logits = _logits(1, rows=2)
    params = Sampling(logit_bias={3: 100, 5: -100.0, VOCAB + 10: 5})  # an id past the vocabulary: nothing to bias
    got = processed(logits, _history(2), params)
    want = logits.astype(np.float64)
    want[:, 3] += 100
    want[:, 5] -= 100
    np.testing.assert_array_equal(got, want)
    assert choose(logits, _history(2), params).tolist() == [3, 3]  # greedy: the biased token wins
    assert params.logit_bias == ((3, 100.0), (5, -100.0), (VOCAB + 10, 5.0))


def test_logprobs_are_the_model_s_log_softmax_not_the_penalised_scores():
    """The chooser reads the chosen token's log-probability off the raw logits, whatever bias or penalty chose
    it: here a bias makes token 3 the choice, and its log-probability is still the model's."""
    logits = _logits(2, rows=2)
    chooser = Chooser(Sampling(logit_bias={3: 100}, logprobs=4))
    chosen = chooser(logits, _history(2))
    model = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(axis=1, keepdims=True))
    for row, [taken] in enumerate(chooser.taken):
        assert taken.token == chosen[row] == 3
        assert abs(taken.logprob - model[row, 3]) < 1e-12
        order = np.argsort(-model[row], kind="stable")[:4]
        assert [t for t, _ in taken.top] == order.tolist()
        np.testing.assert_allclose([v for _, v in taken.top], model[row, order], atol=1e-12)
    biased = processed(logits, _history(2), chooser.params)
    assert abs(chooser.taken[0][0].logprob - (biased[0, 3] - np.log(np.exp(biased[0]).sum()))) > 1  # not the scores'


def test_the_plain_argmax_serves_only_where_nothing_else_is_asked():
    from ptx.infer.model.generation import GREEDY, chooser_of

    assert chooser_of(Sampling()) is GREEDY
    for asked in (dict(presence_penalty=0.1), dict(frequency_penalty=-0.1), dict(logit_bias={1: 1}), dict(logprobs=0)):
        assert isinstance(chooser_of(Sampling(**asked)), Chooser), asked


@pytest.mark.parametrize("given, param", [
    (dict(presence_penalty=2.5), "presence_penalty"), (dict(frequency_penalty=-3), "frequency_penalty"),
    (dict(logit_bias={-1: 1}), "logit_bias"), (dict(logit_bias={1: 101}), "logit_bias"),
    (dict(logit_bias=[1, 2]), "logit_bias"), (dict(logprobs=21), "logprobs"), (dict(logprobs=True), "logprobs"),
])
def test_out_of_range_openai_fields_are_one_line_naming_the_field(given, param):
    with pytest.raises(SamplingError) as caught:
        Sampling(**given)
    assert caught.value.param == param and "\n" not in str(caught.value)


class Allowing:
    """A planted constraint: allows ``allowed`` tokens, and records what it was given."""

    def __init__(self, allowed):
        self.mask = np.zeros(VOCAB, dtype=bool)
        self.mask[list(allowed)] = True
        self.taken: list[int] = []

    def allowed(self):
        return self.mask

    def advance(self, token):
        self.taken.append(token)


@pytest.mark.parametrize("setting", ["greedy", "sampled"])
def test_a_constraint_s_mask_holds_every_choice(setting):
    params = Sampling(**({} if setting == "greedy" else dict(temperature=1.5, seed=0)), repetition_penalty=1.1)
    constraints = [Allowing({4, 9}), Allowing({17})]
    chooser = Chooser(params, constraints=constraints)
    history = [[1, 2], [3]]
    free = Chooser(params)
    seen = set()
    for step in range(30):
        logits = _logits(step, rows=2)
        chosen = chooser(logits, history)
        assert chosen[0] in (4, 9) and chosen[1] == 17
        seen.add(int(free(logits, history)[0]))
        history[0].append(int(chosen[0]))  # row 1 has ended: it takes nothing more
    assert seen - {4, 9}  # unmasked, the same draws choose other tokens: the mask is what held them
    assert constraints[0].taken == history[0][2:-1] and constraints[1].taken == []  # each row advanced by what it took


def test_a_masked_token_stays_masked_whatever_its_bias():
    chooser = Chooser(Sampling(logit_bias={5: 100}), constraints=[Allowing({6})])
    assert chooser(_logits(0, rows=1), [[1]])[0] == 6
