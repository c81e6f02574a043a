"""The one cache (infer/runtime/cache.py), in each of its forms: numpy arrays, ONNX Runtime's OrtValues, a
GroupQueryAttention decoder's buffer in place (--ort-attention), OpenVINO's state, a fixed-length cache's buffer
(--static-cache: bound in place on ort-cpu, its present taken on TorchScript, OrtValues as ort-cuda keeps them, and on
ort-cuda-graph's runner, whose steps run from a session of fixed sizes: here on the CPU provider, without capture).
One parametrised set: each form
decodes transformers' greedy tokens alone and left-padded; rows join and leave a running decoding (a server's batch)
and each gets its tokens alone; prompt lookup (speculative decoding: several positions a step, the rejected ones
cut from the cache) gives greedy's tokens exactly in fewer steps, and so does a draft model's guesses, greedy's with
a logit bias and penalties too. Planted faults, each caught by tokens that part
from greedy's, named by step: a cache truncated one position short, a row that leaves without its cache (the rows
that stay read the wrong rows), a draft accepted past a mismatch."""
from __future__ import annotations

import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.contract.generation_judge import first_parting  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.infer.model import generation  # noqa: E402
from ptx.infer.model.generation import Batch, Decoding  # noqa: E402
from ptx.infer.model.speculative import PromptLookup, draft_model  # noqa: E402
from ptx.infer.runtime.cache import ArrayCache, Cache  # noqa: E402
from ptx.infer.runtime.ort_cache import DeviceSlotCache  # noqa: E402
from test_generate import PROMPTS, eager_generate  # noqa: E402
from test_graph_paths import on_runner  # noqa: E402

GRAPH_ON_CPU = "ort-cuda-graph's runner on the CPU"

FORMS = {"arrays": ("plain", "ort-cpu"), "ort-values": ("plain", "ort-cpu"), "in-place": ("placed", "ort-cpu"),
         "openvino-state": ("plain", "openvino"), "slots": ("static", "ort-cpu"),
         "slots-presents": ("static-torchscript", "torchscript"), "device-slots": ("static", "ort-cpu"),
         "graph-slots": ("static", GRAPH_ON_CPU)}
KINDS = {"arrays": "ArrayCache", "ort-values": "HeldCache", "in-place": "PlacedCache", "openvino-state": "StateCache",
         "slots": "SlotCache", "slots-presents": "SlotCache", "device-slots": "DeviceSlotCache",
         "graph-slots": "GraphSlotCache"}
NEW = 20
# a prompt that repeats itself: greedy's answer to it, on these random weights too, soon loops over what it saw
LOOP = [7, 21, 99, 4, 63, 12, 88, 30] * 3 + [7, 21, 99]


def small_llama():
    """A draft model for the tiny Llama: its vocabulary, one layer, other random weights."""
    torch.manual_seed(1)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                      initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_decoders):
    root = tmp_path_factory.mktemp("cache-forms")
    export_module(small_llama(), None, root / "small", log=lambda _: None, formats=["onnx"])
    static = tiny_decoders.static("llama")[0]
    return {"plain": tiny_decoders["llama"][0], "placed": tiny_decoders.placed("llama")[0],
            "small": root / "small" / "model.onnx", "static": static,
            "static-torchscript": static.with_name("model.torchscript.pt")}


@pytest.fixture(scope="module", params=list(FORMS))
def form(request, files):
    from ptx.infer.runtime.ort_graph import OrtGraphRunner

    kind, backend = FORMS[request.param]
    model = on_runner(OrtGraphRunner, files[kind]) if backend == GRAPH_ON_CPU else load(files[kind], backend=backend)
    yield request.param, model
    model.close()


def new_cache(form) -> Cache:
    name, model = form
    if name == "arrays":
        cache = ArrayCache(model.runner.run, model.signature, model.generation)
    elif name == "device-slots":  # ort-cuda's form, its OrtValues here on the CPU
        cache = DeviceSlotCache(model.runner, model.signature, model.generation)
    else:
        cache = model.runner.new_cache(model.generation)
    assert type(cache).__name__ == KINDS[name]
    return cache


def decoding(form, prompts, new=NEW, speculate=None) -> Decoding:
    _, model = form
    return Decoding(model.runner.run, model.signature, model.generation, prompts, new, eos=(), cache=new_cache(form),
                    speculate=speculate)


def greedy(prompt, new=NEW) -> list[int]:
    return eager_generate("llama", tuple(prompt), new)


def parted(want: list[int], got: list[int], prompt: int = 0):
    """Where ``got`` parts from greedy's ``want`` (margins unknown: any parting counts), or None."""
    return first_parting(prompt, want, [1.0] * len(want), got, [0.0] * len(want))


def test_each_form_decodes_greedy_alone_and_left_padded(form):
    assert [decoding(form, [p]).to_end().tokens[0] for p in PROMPTS] == [greedy(p) for p in PROMPTS]
    assert decoding(form, PROMPTS).to_end().tokens == [greedy(p) for p in PROMPTS]


def test_what_arrays_gives_stays_as_it_was_once_the_cache_is_released(form):
    """A form's arrays() are the rows' values copied out: a cache that joins a running batch is released before its
    values are loaded into the batch's (Cache.add). A view of memory the cache held (an OrtValue's numpy() on the
    CPU is one, of a host array only that OrtValue keeps) would read freed memory there."""
    d = decoding(form, [PROMPTS[0]], new=6)
    for _ in range(3):
        d.take(d.step())
    cache = d.cache
    # as long as its buffer, as a joining prompt's cache is (its buffer of its prompt's positions): a slice of a
    # whole buffer is contiguous, so ascontiguousarray would give a view of it
    cache.fit(max(cache.length, getattr(cache, "capacity", 0)))
    taken = cache.arrays()
    as_taken = {name: a.copy() for name, a in taken.items()}
    cache.release()
    gc.collect()
    # memory of the same sizes taken again, as the next decodings' would take what the cache let go
    taken_again = [np.full(a.shape, -7, a.dtype) for a in taken.values() for _ in range(32)]
    for name, a in taken.items():
        np.testing.assert_array_equal(a, as_taken[name], err_msg=name)
    del taken_again


def run_batch(form, plan, speculate=None):
    """Requests (prompts, new tokens, the step they join at, the step before which their client leaves) through
    one Batch of the form's cache; each request's decoding."""
    batch = Batch(None, form[1].signature, form[1].generation, cache=new_cache(form))
    requests = [(at, decoding(form, prompts, new, speculate), leave) for prompts, new, at, leave in plan]
    for t in range(80):
        for at, d, _ in requests:
            if at == t:
                d.take(batch.join(d))
            if any(leave == t and d is r for _, r, leave in requests):
                batch.leave(d)
        for member, step in batch.step():
            member.take(step)
        if not batch.members and t > max(at for _, _, at, _ in plan):
            break
    return batch, [d for _, d, _ in requests]


PLAN = [([PROMPTS[0]], 18, 0, None), ([PROMPTS[1], PROMPTS[2]], 12, 0, None), ([LOOP], 16, 3, None),
        ([PROMPTS[2]], 20, 4, 9), ([[3, 5]], 6, 10, None)]


def test_rows_join_and_leave_a_running_decoding_and_each_gets_its_tokens_alone(form):
    batch, done = run_batch(form, PLAN)
    for (prompts, new, _, leave), d in zip(PLAN, done):
        for row, prompt in enumerate(prompts):
            want = greedy(prompt, new)
            got = d.tokens[row]
            assert got == want[:len(got)] and (len(got) == new) == (leave is None), (prompts, got, want)
    assert batch.cache.rows == 0 and not batch.members  # every one left, its cache with it


def test_prompt_lookup_gives_greedy_s_tokens_in_fewer_steps(form):
    want = greedy(LOOP, 40)
    alone = decoding(form, [LOOP], 40, PromptLookup()).to_end()
    assert alone.tokens[0] == want
    assert alone.decode_steps < 40 - 1, alone.decode_steps  # drafts kept: fewer runs than tokens
    rows = decoding(form, [LOOP, PROMPTS[1]], 40, PromptLookup()).to_end()  # rows that keep different counts
    assert rows.tokens == [want, greedy(PROMPTS[1], 40)]
    # ONNX Runtime's GroupQueryAttention runs one new position a row where there are several: no guesses there
    assert (rows.decode_steps == 40 - 1) == (form[0] == "in-place"), rows.decode_steps
    _, served = run_batch(form, [([LOOP], 40, 0, None), ([PROMPTS[0]], 30, 2, None)], PromptLookup())
    assert [d.tokens[0] for d in served] == [want, greedy(PROMPTS[0], 30)]


def test_a_draft_model_gives_greedy_s_tokens_exactly(form, files):
    """The model itself as its own draft (every guess kept: 5 tokens a step) and a smaller one of other weights (few
    kept): greedy's tokens either way, the draft's cache cut back to what the target kept at each step."""
    model = form[1]
    for path, most_steps in ((files["plain"], 8), (files["small"], 39)):
        drafter = draft_model(path, model)
        try:
            done = decoding(form, [PROMPTS[1]], 40, drafter).to_end()
            rows = decoding(form, [LOOP, PROMPTS[1]], 24, drafter).to_end()
        finally:
            drafter.close()
        assert done.tokens[0] == greedy(PROMPTS[1], 40) and done.decode_steps <= most_steps, done.decode_steps
        assert rows.tokens == [greedy(LOOP, 24), greedy(PROMPTS[1], 24)]


def test_greedy_with_a_bias_and_penalties_keeps_its_own_tokens_with_guesses(files, monkeypatch):
    """Greedy with a logit bias and penalties (its choice over the answer with the guesses kept before each) takes
    prompt lookup's guesses where that choice confirms them: the tokens it gives without guesses, in fewer steps.
    A planted fault, every guess kept, parts from them."""
    from ptx.contract import sampling
    from ptx.contract.sampling import Sampling
    from ptx.infer.model.generation import chooser_of

    # mild enough that its answer still repeats the prompt (which prompt lookup guesses), strong enough to change it
    penalized = Sampling(presence_penalty=0.2, frequency_penalty=0.05, repetition_penalty=1.02, logit_bias={7: 1.0})

    def decoded(model, speculate):
        return decoding(("arrays", model), [LOOP], 40, speculate).to_end(chooser_of(penalized))

    with load(files["plain"]) as model:
        want = decoded(model, None)
        guessed = decoded(model, PromptLookup())
        assert guessed.tokens == want.tokens and want.tokens[0] != greedy(LOOP, 40)  # the penalties tell
        assert guessed.decode_steps < want.decode_steps, (guessed.decode_steps, want.decode_steps)
        monkeypatch.setattr(sampling, "confirms", lambda scores, guess: True)
        found = parted(want.tokens[0], decoded(model, PromptLookup()).tokens[0])
        assert found is not None and found.step > 1


def _truncated_short(monkeypatch, form):
    cut = type(new_cache(form)).truncate

    def short(self, length):  # the newest kept position lost: the cache one short, padded back to its length
        cut(self, length - 1)
        self.fit(length)
    monkeypatch.setattr(type(new_cache(form)), "truncate", short)


def _leaves_without_its_cache(monkeypatch, form):
    kept = type(new_cache(form)).keep

    def first_rows(self, rows):  # the first rows kept, whichever left: the rows after a leaver read the wrong cache
        kept(self, list(range(len(rows))))
    monkeypatch.setattr(type(new_cache(form)), "keep", first_rows)


def _draft_past_a_mismatch(monkeypatch, form):
    confirmed = generation._confirmed

    def one_more(ahead, drafts):
        counts = confirmed(ahead, drafts)
        return np.minimum(counts + 1, [1 + len(d) for d in drafts])
    monkeypatch.setattr(generation, "_confirmed", one_more)


@pytest.mark.parametrize("fault", [_truncated_short, _leaves_without_its_cache, _draft_past_a_mismatch])
def test_a_planted_fault_parts_from_greedy_s_tokens_named_by_step(form, monkeypatch, fault):
    fault(monkeypatch, form)
    if fault is _leaves_without_its_cache:
        _, done = run_batch(form, [([PROMPTS[0]], 16, 0, 3), ([PROMPTS[1]], 16, 0, None)])
        got, want = done[1].tokens[0], greedy(PROMPTS[1], 16)
    else:
        got, want = decoding(form, [LOOP], 40, PromptLookup()).to_end().tokens[0], greedy(LOOP, 40)
    found = parted(want, got)
    assert found is not None and found.step > 1, (got, want)
    assert found.describe().startswith(f"prompt 1 step {found.step}: ")


# -- speculative sampling keeps the distribution --------------------------------------------------------------------
ROWS = 2000  # rows decoded at once, each with its own seeded Generator
DELTA = 1e-9  # the chance a right sampler's frequency leaves the bound, per check (Hoeffding, a union over categories)
FIRST = 4  # every row's first token, given: the token after it is the one sampled with guesses
# sharper than 1 so that the first guess (greedy's token) is kept in a good share of the rows and refused in the
# rest, and the token after it is tested on many rows too
TEMPERATURE = 0.5


class SameGuesses:
    """A drafter that guesses the same tokens for every row (certain guesses, as prompt lookup's are)."""

    def __init__(self, guesses):
        self.guesses = list(guesses)

    def propose(self, histories, limits, owner=None):
        return [self.guesses[:limit] for limit in limits]


def sampled(model, speculate) -> tuple[list[list[int]], np.ndarray]:
    """ROWS rows of LOOP, their first token FIRST, then one step sampled at TEMPERATURE (with ``speculate``'s
    guesses, or none): each row's tokens, and the step's logits after each position [positions, vocab] (every row's
    alike until its first sampled token)."""
    from ptx.contract.sampling import Chooser, Sampling

    decoding = Decoding(model.runner.run, model.signature, model.generation, [LOOP] * ROWS, 4, eos=(),
                        speculate=speculate)
    decoding.step()
    decoding.append(np.full(ROWS, FIRST))
    step = decoding.step()
    decoding.take(step, Chooser(Sampling(temperature=TEMPERATURE, seed=11), keys=range(ROWS)))
    ahead = step.ahead if step.ahead is not None else step.logits[:, None]
    return decoding.tokens, ahead[0]


def off_by(tokens: list[int], logits: np.ndarray) -> tuple[float, float]:
    """(the largest gap between a token's frequency in ``tokens`` and its probability under ``logits`` at
    TEMPERATURE, over the three most probable tokens and the rest; the gap Hoeffding's bound allows a right
    sampler of that many draws with probability 1 - DELTA)."""
    scores = logits / TEMPERATURE
    p = np.exp(scores - scores.max())
    p /= p.sum()
    top = list(np.argsort(-p)[:3])
    counts = np.bincount(np.asarray(tokens), minlength=len(p)) / len(tokens)
    gaps = [abs(counts[t] - p[t]) for t in top] + [abs(counts.sum() - counts[top].sum() - (1 - p[top].sum()))]
    return max(gaps), float(np.sqrt(np.log(2 * 4 / DELTA) / (2 * len(tokens))))


def test_speculative_sampling_keeps_plain_sampling_s_distribution(files, monkeypatch):
    """Sampled with guesses (speculative sampling: a guess kept with the probability the choice gives it, else a
    draw without it), each token's frequencies stay within Hoeffding's bound of its distribution, as plain
    sampling's do: the first sampled token's over every row, the next one's over the rows that kept the first
    guess. Planted faults leave the bound: a refused guess not taken out of the draw, every guess kept."""
    from ptx.contract import sampling

    with load(files["plain"]) as model:
        greedy_next = model.generate(LOOP + [FIRST], 2, eos=())[0]  # the likeliest guesses: both branches taken
        drafter = SameGuesses(greedy_next)
        for speculate in (None, drafter):
            tokens, ahead = sampled(model, speculate)
            gap, bound = off_by([t[1] for t in tokens], ahead[0])
            assert gap <= bound, (speculate, gap, bound)
        kept = [t[2] for t in tokens if t[1] == greedy_next[0]]
        assert 0.1 * ROWS < len(kept) < 0.9 * ROWS  # the guess kept and refused, each often
        gap, bound = off_by(kept, ahead[1])
        assert gap <= bound, (gap, bound)
        for name, fault in (("refused", lambda p, guess: p), ("keeps", lambda p, guess, draw: True)):
            monkeypatch.setattr(sampling, name, fault)  # the refused guess drawn again; every guess kept
            tokens, ahead = sampled(model, drafter)
            gap, bound = off_by([t[1] for t in tokens], ahead[0])
            assert gap > bound, (gap, bound)
            monkeypatch.undo()
