"""Continuous batching (the multi-row Decoding, infer/model/generation.py's Batch; serve/generator.py): decodings
that join a running batch between two steps and leave mid-way (done, or their client gone) each get the tokens
they get alone, greedy (judged as verify judges, up to ties) and sampled with their seed; the cache (the runner's
own) never keeps padding the members do not need; a planted fault (a joining row's past shifted by one position)
is caught by the same judgement; and the server's generator runs concurrent requests in one batch of at most
max_rows rows."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from ptx.contract.generation import Parting, Steps
from ptx.contract.generation_judge import first_parting, tie_width
from ptx.contract.sampling import Chooser, Sampling
from ptx.contract.schema import DEFAULT_TOLERANCES
from ptx.errors import PtxError
from ptx.infer import load
from ptx.infer.model.batch import Batch
from ptx.infer.model.generation import GREEDY, Decoding

TOLERANCE = DEFAULT_TOLERANCES[("float32", "cpu")]
TIMEOUT_S = 60


def bounded(clients):
    """``clients`` (a coroutine) run to its end, failing after TIMEOUT_S instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(clients, TIMEOUT_S))


@pytest.fixture(scope="module")
def model(chat_export):
    """The session's tiny chat Llama (tests/text_models.py), as the library opens it."""
    opened = load(chat_export["file"])
    yield opened
    opened.close()


def prompts(model, lengths, seed=0) -> list[list[int]]:
    vocab = model.signature.output(model.generation.logits).shape[-1]
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).tolist() for n in lengths]


# Who joins when (before which step of the batch), with which prompts (one request may have several), how
# many new tokens, and the step before which its client leaves (None: it runs to its end). Those joining at
# one step (0 and 6) join together: one prefill of prompts of several lengths, the batch's past longer still.
PLAN = [(0, [17], 12, None), (0, [3, 9], 20, None), (2, [25], 8, None), (3, [5], 30, 9), (6, [1, 12], 10, None),
        (6, [7], 9, None), (10, [40], 6, None)]


def run_plan(model, plan, choose_of, together: bool = True):
    """Drive one Batch through ``plan`` (requests joining at the same step join together, in one prefill, where
    ``together``); each request's decoding, and the batch's past length after each step beside what its
    members needed."""
    batch = Batch(None, model.signature, model.generation, cache=model.runner.new_cache(model.generation))
    requests = [(at, model.decoding(prompts(model, lengths, seed=k), new, eos=()), choose_of(k), leave)
                for k, (at, lengths, new, leave) in enumerate(plan)]
    lengths = []
    for t in range(64):
        joining = [(decoding, choose) for at, decoding, choose, _ in requests if at == t]
        if together and joining:
            firsts = batch.join_together([decoding for decoding, _ in joining])
        else:
            firsts = [batch.join(decoding) for decoding, _ in joining]
        for (decoding, choose), first in zip(joining, firsts):
            decoding.append(choose(first.logits, decoding.history))
        for at, decoding, choose, leave in requests:
            if leave == t:
                batch.leave(decoding)
        steps = batch.step()
        if steps:
            lengths.append((batch.cache.length, max(d.past_length for d, _ in steps)))
        for decoding, step in steps:
            chooser = next(c for _, d, c, _ in requests if d is decoding)
            decoding.append(chooser(step.logits, decoding.history))
        if not steps and t > max(at for at, *_ in plan):
            break
    return [(decoding, leave) for _, decoding, _, leave in requests], lengths


def alone(model, plan, choose_of):
    """Each request decoded by itself, to its end."""
    return [model.decoding(prompts(model, lengths, seed=k), new, eos=()).to_end(choose_of(k))
            for k, (_, lengths, new, _) in enumerate(plan)]


def cut(steps: Steps, got: Steps) -> Steps:
    """``steps`` up to as many tokens per prompt as ``got`` has (a request that left mid-way)."""
    lengths = [len(t) for t in got.tokens]
    return Steps(*([row[:n] for row, n in zip(rows, lengths)] for rows in (steps.tokens, steps.margins, steps.tops)))


def partings(reference: Steps, got: Steps) -> list[Parting]:
    """Where each prompt's greedy tokens part from ``reference``'s, by the judge's own free-running rule (a
    parting within twice the float32 tolerance of the reference's top-2 margin is a tie)."""
    found = (first_parting(k, want, margins, have, [tie_width(TOLERANCE, None, top) for top in tops])
             for k, (want, margins, tops, have) in enumerate(zip(reference.tokens, reference.margins, reference.tops,
                                                                  got.tokens)))
    return [p for p in found if p is not None]


def test_joining_and_leaving_mid_decoding_gives_each_its_alone_greedy_tokens(model):
    batched, lengths = run_plan(model, PLAN, lambda k: GREEDY)
    for (decoding, leave), own in zip(batched, alone(model, PLAN, lambda k: GREEDY)):
        got = decoding.decoded()
        if leave is None:
            assert [len(t) for t in got.tokens] == [len(t) for t in own.tokens]
        else:  # left mid-way: a prefix of its own tokens, no step after its client left
            assert 0 < len(got.tokens[0]) < len(own.tokens[0])
        parted = partings(cut(own.steps, got.steps), got.steps)
        assert not parted, [p.describe() for p in parted]
    # the cache is as long as its longest member needs, no longer: cut when the longest left
    assert all(have == need for have, need in lengths), lengths
    assert max(have for have, _ in lengths) > lengths[-1][0]


def test_seeded_sampling_in_the_batch_draws_as_alone(model):
    def seeded(k):
        return Chooser(Sampling(temperature=1.0, top_p=0.9, seed=100 + k))

    batched, _ = run_plan(model, PLAN, seeded)
    for (decoding, leave), own in zip(batched, alone(model, PLAN, seeded)):
        got = decoding.decoded().tokens
        assert got == own.tokens if leave is None else got[0] == own.tokens[0][:len(got[0])]
    assert len({tuple(d.decoded().tokens[0]) for d, _ in batched}) == len(PLAN)  # the seeds draw apart


def test_a_joining_row_s_past_shifted_by_one_position_is_caught(model, monkeypatch):
    """A planted fault: each joiner's cache moved one position along the past axis when it joins the batch's. The
    judge that passes the batch above names where the rows part, and no parting is a tie."""
    from ptx.infer.runtime.cache import Cache

    added, axis = Cache.add, model.generation.past_axis

    def shifted(self, other):  # one position later than its mask says: a zero comes in first, its newest key is lost
        def later(a):
            moved = np.zeros_like(a)
            moved[(slice(None),) * axis + (slice(1, None),)] = a[(slice(None),) * axis + (slice(None, -1),)]
            return moved
        other.load({name: later(a) for name, a in other.arrays().items()})
        return added(self, other)

    monkeypatch.setattr(Cache, "add", shifted)
    batched, _ = run_plan(model, PLAN, lambda k: GREEDY, together=False)
    monkeypatch.undo()
    parted = [partings(cut(own.steps, d.decoded().steps), d.decoded().steps)
              for (d, _), own in zip(batched, alone(model, PLAN, lambda k: GREEDY))]
    assert all(parted), parted  # every joiner parts from its own tokens
    assert all(p.step >= 2 and not p.tie for found in parted for p in found)  # the first token is the prefill's


def test_a_decoding_in_a_batch_no_longer_runs_alone(model):
    batch = Batch(model.runner.run, model.signature, model.generation)
    decoding = model.decoding(prompts(model, [4]), 5, eos=())
    decoding.append(GREEDY(batch.join(decoding).logits, decoding.history))
    (_, step), = batch.step()
    decoding.append(GREEDY(step.logits, decoding.history))
    with pytest.raises(PtxError, match="before its first step"):
        batch.join(decoding)
    with pytest.raises(PtxError, match="runs in a batch"):
        decoding.step()  # its cache is the batch's now
    assert batch.step()[0][0] is decoding


# -- the server's generator: concurrent requests in one batch ------------------------------------------------


def generator_of(model, max_rows, read: dict | None = None):
    """The server's generator, and the batch's rows at each of its steps. ``read`` (collect's count of each
    decoding's tokens its client has read): each step waits until every client still there has read the tokens
    before it, as a client reading as fast as tokens come does. A step of the tiny model takes a fraction of a
    millisecond: on a loaded machine the event loop was left behind by a whole decoding, so a client that
    leaves after 3 tokens left after the last, and requests meant to overlap ran one after another."""
    from ptx.serve.generator import Generator

    generator = Generator("chat", model, model.generation, max_rows=max_rows)
    rows = []  # the batch's rows at each step
    run_step = generator.batch.step

    def step():
        deadline = time.monotonic() + TIMEOUT_S
        while read is not None and time.monotonic() < deadline and any(
                not ride.stop.is_set() and read.get(id(ride.decoding), 0) < len(ride.decoding.tokens[0])
                for ride in generator._riding):
            time.sleep(0.001)
        rows.append(generator.batch.rows)
        return run_step()

    generator.batch.step = step
    return generator, rows


async def collect(generator, decoding, after: asyncio.Event | None = None, leave_after: int | None = None,
                  started: asyncio.Event | None = None, read: dict | None = None):
    """The request's tokens, streamed: it starts once ``after`` is set, sets ``started`` at its first
    token, and leaves after ``leave_after`` tokens; ``read``: how many it has read, by id of its decoding."""
    if after is not None:
        await after.wait()
    got = []
    stream = generator.stream(decoding)
    async for tokens in stream:
        got.append(tokens[0])
        if read is not None:
            read[id(decoding)] = len(got)
        if started is not None:
            started.set()
        if leave_after is not None and len(got) == leave_after:
            await stream.aclose()
            break
    return got


def test_concurrent_requests_share_the_batch_and_each_gets_its_alone_tokens(model):
    read = {}
    generator, rows = generator_of(model, max_rows=8, read=read)
    asked = [(prompts(model, [n], seed=n)[0], new) for n, new in [(9, 24), (3, 16), (20, 20), (6, 12)]]
    want = [model.generate(p, new, eos=())[0] for p, new in asked]

    async def clients():
        started = [asyncio.Event() for _ in asked]
        tasks = [collect(generator, Decoding(model.runner.run, model.signature, model.generation, p, new, eos=()),
                         after=started[k - 1] if k else None, started=started[k], read=read)
                 for k, (p, new) in enumerate(asked)]
        return await asyncio.gather(*tasks)

    try:
        got = bounded(clients())
    finally:
        generator.close()
    assert got == want
    assert max(rows) >= 3 and generator.batch.rows == 0  # they ran together; all left at their end
    # the batch is the one decoding, its cache the runner's (ONNX Runtime's values, bound by IO binding), let go
    assert type(generator.batch.cache).__name__ == "HeldCache" and generator.batch.cache.rows == 0


def test_a_request_past_max_rows_waits_its_turn_and_a_client_gone_leaves(model):
    read = {}
    generator, rows = generator_of(model, max_rows=2, read=read)
    asked = [(prompts(model, [n], seed=n)[0], 20) for n in (5, 8, 11)]
    want = [model.generate(p, new, eos=())[0] for p, new in asked]

    decodings = [Decoding(model.runner.run, model.signature, model.generation, p, new, eos=()) for p, new in asked]

    async def clients():
        return await asyncio.gather(collect(generator, decodings[0], leave_after=3, read=read),
                                    collect(generator, decodings[1], read=read), collect(generator, decodings[2], read=read))

    try:
        got = bounded(clients())
    finally:
        generator.close()
    assert got[0] == want[0][:3] and got[1:] == want[1:]  # the others went on as alone
    assert max(rows) == 2 and decodings[0].index <= 6  # its client gone after 3 tokens, a step or two later
    # the third waited for the first's row only, not for the second's end: it ran beside the second
    assert rows.count(2) >= 15, rows


def test_closing_the_server_ends_every_request_cleanly(model):
    generator, _ = generator_of(model, max_rows=4)
    release = threading.Event()
    run_step = generator.batch.step

    def slow():
        release.wait(TIMEOUT_S)
        return run_step()

    generator.batch.step = slow

    async def client():
        decoding = Decoding(model.runner.run, model.signature, model.generation, prompts(model, [5])[0], 50, eos=())
        got = []
        async for tokens in generator.stream(decoding):
            got.append(tokens[0])
            if len(got) == 1:
                generator.close()
                release.set()
        return got

    assert 1 <= len(bounded(client())) <= 2  # the step under way was the last


def test_a_burst_of_requests_joins_in_one_prefill_and_each_gets_its_alone_tokens(model):
    """Four requests arrive while the batch's step is held: they join together, one run for their prompts
    (of three lengths), and each streams the tokens it gets alone."""
    generator, _ = generator_of(model, max_rows=8)
    asked = [(prompts(model, [n], seed=n)[0], new) for n, new in [(4, 14), (11, 6), (7, 10), (11, 12), (2, 9)]]
    want = [model.generate(p, new, eos=())[0] for p, new in asked]
    release, groups = threading.Event(), []
    run_step, join_together = generator.batch.step, generator.batch.join_together

    def held():
        release.wait(TIMEOUT_S)
        return run_step()

    generator.batch.step = held
    generator.batch.join_together = lambda decodings: groups.append(len(decodings)) or join_together(decodings)

    async def clients():
        first = asyncio.ensure_future(collect(generator, model.decoding(*asked[0], eos=())))
        deadline = time.monotonic() + TIMEOUT_S
        while not generator.batch.rows and time.monotonic() < deadline:  # the first has joined; its next step is held
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(collect(generator, model.decoding(p, new, eos=()))) for p, new in asked[1:]]
        while len(generator._waiting) < len(rest) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(first, *rest)

    try:
        got = bounded(clients())
    finally:
        release.set()
        generator.close()
    assert got == want and groups == [4]
