"""The one judge of a decoding (ptx.contract.generation_judge), on logits made here (numpy, no model): per prompt,
never pooled; a float32 row held to the row-scaled tolerance at every step, a near-tie said; a reduced row held
to each prompt's top-1 agreement and KL divergence, a near-tie counted as agreeing; NaN or Inf at any step
fails the row; the record a file keeps (each step's largest logits) judges as the whole rows do. Proven both
ways: a prompt wrong from step 1 and a NaN at step 9 fail a reduced row whose other prompts hold."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ptx.contract.comparison import compare_output, default_tolerance
from ptx.contract.generation import JUDGED_POSITIONS, JUDGING_STEPS, Steps, batches, judging_prompts, of_layout
from ptx.contract.generation_judge import DEFAULT_BOUNDS, Bounds, bounds_for, judge, parse_bound, recorded_bounds
from ptx.contract.reference_decoding import KEPT, PromptPositions, ReferenceDecoding, StepLogits
from ptx.errors import PtxError

F32 = default_tolerance("float32")
VOCAB, STEPS, PROMPTS = 512, 16, 4


def _reference(scale: float = 10.0, seed: int = 0) -> tuple[ReferenceDecoding, list[list[np.ndarray]]]:
    """A reference decoding of PROMPTS prompts x STEPS steps: rows of logits of ``scale``, each step's token its
    argmax; (the reference with whole rows, the rows)."""
    rng = np.random.default_rng(seed)
    rows = [[(rng.standard_normal(VOCAB) * scale).astype(np.float32) for _ in range(STEPS)] for _ in range(PROMPTS)]
    tokens = [[int(np.argmax(r)) for r in prompt] for prompt in rows]
    margins = [[float(np.sort(r)[-1] - np.sort(r)[-2]) for r in prompt] for prompt in rows]
    tops = [[float(r.max()) for r in prompt] for prompt in rows]
    reference = ReferenceDecoding([[1, 2, 3]] * PROMPTS, Steps(tokens, margins, tops),
                                  [[StepLogits.of_row(r) for r in prompt] for prompt in rows], "made here")
    return reference, rows


def _own(reference: ReferenceDecoding) -> Steps:
    return Steps([list(t) for t in reference.steps.tokens], [], [])


def _noisy(rows, size: float, seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[(r + rng.standard_normal(r.shape).astype(np.float32) * size) for r in prompt] for prompt in rows]


def test_a_float32_row_within_its_rows_scale_passes_and_a_moved_step_fails_naming_prompt_and_step():
    reference, rows = _reference(scale=40.0)  # logits of about +-130, as the Llama
    noise = _noisy(rows, 4e-3)  # far beyond atol 1e-4, a tenth of rtol x the row's largest
    judged = judge(reference, noise, _own(reference), tolerance=F32)
    assert judged.passed, judged.failures()
    assert "within atol 0.0001 + rtol 0.001" in judged.describe()
    moved = [[r.copy() for r in prompt] for prompt in noise]
    moved[2][4] = moved[2][4] * np.float32(1.05)  # the logits scaled by 1.05 at one step of one prompt
    failed = judge(reference, moved, _own(reference), tolerance=F32)
    assert not failed.passed and failed.failures()[0].startswith("prompt 3 step 5: logits differ from the reference's")


def test_a_float32_near_tie_is_said_not_failed_and_a_parting_at_a_clear_margin_fails_its_prompt():
    reference, rows = _reference()
    k, step = 1, 6
    row = rows[k][step].copy()
    token = reference.steps.tokens[k][step]
    other = int(np.argsort(row)[-2])
    row[other] = row[token] - np.float32(1e-4)  # the reference's top-2 margin: 1e-4, within the band
    reference.logits[k][step] = StepLogits.of_row(row)
    reference.steps.margins[k][step] = 1e-4
    rows[k][step] = row
    got = [[r.copy() for r in prompt] for prompt in rows]
    got[k][step] = row.copy()
    got[k][step][other] += np.float32(2e-4)  # the row ranks the other token first, within tolerance
    own = _own(reference)
    own.tokens[k][step:] = [other] * (STEPS - step)
    judged = judge(reference, got, own, tolerance=F32)
    assert judged.passed, judged.failures()
    assert judged.prompts[k].ties and "a near-tie" in judged.describe() and "prompt 2 step 7" in judged.describe()
    clear = _own(reference)
    clear.tokens[0][2] = (clear.tokens[0][2] + 1) % VOCAB  # its own tokens part where the reference is decisive
    failed = judge(reference, rows, clear, tolerance=F32)
    assert failed.failures() == [f"prompt 1's own tokens part at a clear margin: prompt 1 step 3: parts: "
                                 f"{clear.tokens[0][2]} where the reference chose {reference.steps.tokens[0][2]} (its "
                                 f"top-2 margin {reference.steps.margins[0][2]:.3g})"]


def test_a_reduced_row_is_judged_per_prompt_one_prompt_wrong_from_step_1_fails_and_nan_at_step_9_fails():
    reference, rows = _reference(scale=3.0)
    rough = _noisy(rows, 0.05)  # a reduced precision's error: KL about 1e-3
    held = judge(reference, rough, _own(reference), precision="int8", tolerance=F32)
    assert held.passed, held.failures()
    assert all(p.agreement >= 0.9 and p.kl_mean < DEFAULT_BOUNDS["int8"].max_kl for p in held.prompts)
    wrong = [list(p) for p in rough]
    wrong[3] = rows[0]  # prompt 4 answers as prompt 1 would: wrong from step 1, its three neighbours right
    failed = judge(reference, wrong, _own(reference), precision="int8", tolerance=F32)
    assert not failed.passed
    said = failed.failures()
    assert said[0].startswith("prompt 4: top token the reference's on") and "first at step 1" in said[0], said
    assert sum(p.same_top + len(p.ties) for p in failed.prompts) / failed.steps > 0.7  # pooled, it would pass
    nan = [list(p) for p in rough]
    nan[1][8] = nan[1][8].copy()
    nan[1][8][17] = np.nan
    assert judge(reference, nan, _own(reference), precision="int8", tolerance=F32).failures() == [
        "prompt 2 step 9: NaN or infinite logits"]
    inf = [list(p) for p in rows]
    inf[0][0] = np.full(VOCAB, np.inf, np.float32)
    assert judge(reference, inf, _own(reference), tolerance=F32).failures()[0] == "prompt 1 step 1: NaN or infinite logits"


def test_a_failing_reduced_row_says_its_worst_prompt_first_in_one_line_and_keeps_every_reason():
    """Two prompts fail: prompt 1 answers as another prompt from its step 9 (half its steps wrong), prompt 3 from
    its step 1. The line a verdict is said in names prompt 3, the worse, and how many reasons more the record
    keeps (a decoder at int4 can fail each prompt twice: each reason on the line made it run past a screen);
    the record keeps them all. A NaN comes before them; alone, it is said without a count."""
    from ptx.contract.verdict import in_one_line

    reference, rows = _reference(scale=3.0)
    rough = _noisy(rows, 0.05)
    wrong = [list(p) for p in rough]
    wrong[0][8:] = rows[1][8:]
    wrong[2] = rows[1]
    failed = judge(reference, wrong, _own(reference), precision="int8", tolerance=F32)
    said, line = failed.failures(), failed.describe()
    assert said[0].startswith("prompt 3: top token the reference's on") and any(r.startswith("prompt 1:") for r in said)
    assert line.endswith(f"{said[0]} (and {len(said) - 1} more)") and "prompt 1:" not in line, line
    assert in_one_line(said) == f"{said[0]} (and {len(said) - 1} more)" and failed.to_dict()["failures"] == said
    nan = [list(p) for p in rough]
    nan[1][8] = np.full(VOCAB, np.nan, np.float32)
    nan[2] = rows[1]
    both = judge(reference, nan, _own(reference), precision="int8", tolerance=F32).failures()
    assert both[0] == "prompt 2 step 9: NaN or infinite logits", both  # a NaN before any agreement
    nan[2] = rough[2]
    one = judge(reference, nan, _own(reference), precision="int8", tolerance=F32).failures()
    assert in_one_line(one) == "prompt 2 step 9: NaN or infinite logits", one


def _with_prompt_positions(reference: ReferenceDecoding, scale: float, seed: int = 4) -> list[np.ndarray]:
    """``reference`` given prompts of 40, 3, 3 and 3 tokens and its logits at their own positions (rows of
    ``scale``), recorded as a file records them; each prompt's rows [positions, vocab]."""
    rng = np.random.default_rng(seed)
    reference.prompts = [[int(t) for t in rng.integers(0, VOCAB, n)] for n in (40, 3, 3, 3)]
    rows = [(rng.standard_normal((len(p) - 1, VOCAB)) * scale).astype(np.float32) for p in reference.prompts]
    reference.prompt_positions = [PromptPositions.of_rows(r, p) for r, p in zip(rows, reference.prompts)]
    return rows


def test_a_first_step_asked_alone_is_held_as_its_row_is_held_and_one_answered_otherwise_fails():
    """Generation's way of running a prompt (its last position alone) against the same position asked with every
    one: a float32 row's noise passes and a 1% difference fails; a reduced row's own rounding of a lone row passes
    by its KL and a distribution moved beyond its bound fails."""
    reference, rows = _reference(scale=40.0)
    noise = _noisy(rows, 4e-3)
    alone = [prompt[0] + np.float32(1e-3) for prompt in noise]  # f32 noise of another blocking
    assert judge(reference, noise, _own(reference), tolerance=F32, alone=alone).passed
    off = [a.copy() for a in alone]
    off[1] = off[1] * np.float32(1.01)
    said = judge(reference, noise, _own(reference), tolerance=F32, alone=off).failures()
    assert said == [said[0]] and said[0].startswith("prompt 2 step 1: its logits asked alone, as generation asks "
                                                    "them, differ from the same position's asked with every position "
                                                    "by up to"), said
    reference, rows = _reference(scale=3.0)
    rough = _noisy(rows, 0.05)
    lone = [prompt[0] + np.random.default_rng(k).standard_normal(VOCAB).astype(np.float32) * 0.02
            for k, prompt in enumerate(rough)]  # int8 activations rounded otherwise: beyond f32's tolerance
    assert judge(reference, rough, _own(reference), precision="int8", tolerance=F32, alone=lone).passed
    moved = [a.copy() for a in lone]
    moved[2] = rough[2][0] * np.float32(3.0)  # a distribution three times as peaked
    said = judge(reference, rough, _own(reference), precision="int8", tolerance=F32, alone=moved).failures()
    assert said == [said[0]] and said[0].startswith("prompt 3 step 1: its logits asked alone") and \
        "KL divergence" in said[0], said


def test_a_prompt_s_own_positions_are_judged_and_a_pass_wrong_but_at_its_last_position_fails_naming_it():
    """The prompt's pass gives logits at every position: a fault that leaves its last position right (a mask that
    lets each position see the ones after it: the last sees them all anyway) shows only there, so those positions
    are judged (as a file records them: the kept logits and the logit of the prompt's next id), counted, and
    named where they fail; a reduced row's agreement, KL and perplexity ratio read them too."""
    reference, rows = _reference(scale=5.0)
    own = _with_prompt_positions(reference, 5.0)
    recorded = ReferenceDecoding.from_record(json.loads(json.dumps(reference.to_record())))
    assert np.array_equal(np.float32(recorded.prompt_positions[0].next_logits),  # float32 kept exactly
                          [r[t] for r, t in zip(own[0], reference.prompts[0][1:])])
    judged = judge(recorded, _noisy(rows, 1e-4), _own(recorded), tolerance=F32, forced_prompts=own)
    assert judged.passed, judged.failures()
    assert judged.positions == 4 * STEPS + 39 + 3 * 2
    assert "teacher-forced 4 prompts, 109 positions (45 in the prompts, 16 steps each)" in judged.describe()
    wrong = [r.copy() for r in own]
    wrong[0][10:] *= np.float32(1.05)  # positions 11 to 39 of the first prompt's pass moved; its steps right
    failed = judge(recorded, rows, _own(recorded), tolerance=F32, forced_prompts=wrong)
    assert failed.failures()[0].startswith("prompt 1 position 11: logits differ from the reference's"), failed.failures()
    assert judge(recorded, rows, _own(recorded), tolerance=F32).passed  # a pass that gave its last position only

    rough = _noisy(rows, 0.05)
    held = judge(recorded, rough, _own(recorded), precision="int8", tolerance=F32,
                 forced_prompts=[r + np.float32(0.05) * np.random.default_rng(5).standard_normal(r.shape).astype(
                     np.float32) for r in own])
    assert held.passed, held.failures()
    assert all(p.perplexity_ratio == pytest.approx(1.0, abs=0.05) for p in held.prompts)
    assert "perplexity at most x1.0" in held.describe()
    same = judge(recorded, rows, _own(recorded), precision="int8", tolerance=F32, forced_prompts=own)
    assert all(p.perplexity_ratio == pytest.approx(1.0, abs=1e-5) for p in same.prompts)
    shuffled = [r.copy() for r in own]
    shuffled[0] = shuffled[0][::-1].copy()  # the first prompt's pass answers its positions in reverse
    said = judge(recorded, rows, _own(recorded), precision="int8", tolerance=F32, forced_prompts=shuffled).failures()
    assert said and said[0].startswith("prompt 1: top token the reference's on") and "of 55 positions" in said[0] \
        and "first at position 1:" in said[0], said


def test_a_reduced_row_s_bounds_are_its_precision_s_the_file_s_or_the_user_s():
    reference, rows = _reference(scale=3.0)
    rough = _noisy(rows, 0.3)  # KL about 0.04: within int4's bounds, beyond bf16's
    assert judge(reference, rough, _own(reference), precision="int4", tolerance=F32).passed
    assert not judge(reference, rough, _own(reference), precision="bf16", tolerance=F32).passed
    loose = bounds_for("bf16", None, {"max_kl": {None: 1.0}, "max_kl_p99": {"bf16": 5.0}, "min_agreement": {"int4": 0}})
    assert loose == Bounds(0.9, 1.0, 5.0)
    assert judge(reference, rough, _own(reference), precision="bf16", tolerance=F32, bounds=loose).passed
    recorded = recorded_bounds({"max_kl": {"int4": 0.5}})
    assert recorded["int4"]["max_kl"] == 0.5 and recorded["int8"] == DEFAULT_BOUNDS["int8"].to_dict()
    assert bounds_for("int4", recorded).max_kl == 0.5 and bounds_for("fp8", recorded) == bounds_for("int4", recorded)
    assert parse_bound("--max-kl", ["0.1", "int4=0.3"]) == {None: 0.1, "int4": 0.3}
    for option, text, words in [("--max-kl", "int3=0.1", "int3 is no reduced precision"), ("--max-kl", "-1", ">= 0"),
                                ("--min-agreement", "1.5", "a share of steps"), ("--max-kl", "x", ">= 0")]:
        with pytest.raises(PtxError, match=words):
            parse_bound(option, [text])


def test_what_a_file_records_of_each_step_judges_as_the_whole_rows_do():
    reference, rows = _reference(scale=5.0)
    rows[0][0][7] = -1000.0  # the row's largest |logit| is negative: kept, it is the tolerance's scale
    reference.logits[0][0] = StepLogits.of_row(rows[0][0])
    doc = json.loads(json.dumps(reference.to_record()))
    recorded = ReferenceDecoding.from_record(doc)
    first = recorded.logits[0][0]
    assert first.ids.size == KEPT + 1 and 7 in first.ids and first.scale == 1000.0
    assert np.array_equal(first.values, rows[0][0][first.ids])  # float32 kept exactly
    assert recorded.steps.tokens == reference.steps.tokens and recorded.prompts == reference.prompts
    for size in (0.01, 1.0):  # KL over the kept and the rest as one bucket: a lower bound, near where they hold it
        noisy = _noisy(rows, size)
        whole = [StepLogits.of_row(r).kl_from(n) for r, n in zip(rows[1], noisy[1])]
        kept = [recorded.logits[1][s].kl_from(n) for s, n in enumerate(noisy[1])]
        assert all(k <= w + 1e-9 for k, w in zip(kept, whole))
    peaked = (np.arange(VOCAB, dtype=np.float32) * 0.5)  # a trained model's: its top tokens hold the mass
    step = StepLogits.of_row(peaked)
    moved = peaked + np.random.default_rng(3).standard_normal(VOCAB).astype(np.float32) * 0.2
    assert step.kept().kl_from(moved) == pytest.approx(step.kl_from(moved), rel=1e-3)
    moved_far = [[r * np.float32(1.05) for r in p] for p in rows]
    assert not judge(recorded, moved_far, _own(recorded), tolerance=F32).passed
    assert judge(recorded, rows, _own(recorded), tolerance=F32).passed


def test_a_top_token_the_record_did_not_keep_is_a_near_tie_in_a_flat_distribution_and_a_parting_in_a_peaked_one():
    """A file keeps each step's KEPT largest logits: a row whose top is none of them is at least the reference's
    token's margin over the smallest kept one below it, not infinitely far."""
    def judged(scale: float) -> tuple:
        reference, rows = _reference(scale=scale)
        recorded = ReferenceDecoding.from_record(json.loads(json.dumps(reference.to_record())))
        got = [[r.copy() for r in prompt] for prompt in rows]
        row, kept = got[2][3], recorded.logits[2][3]
        outside = next(t for t in np.argsort(row) if t not in set(kept.ids.tolist()))  # the reference's lowest
        row[outside] = row.max() + np.float32(0.01)  # the row's top now: a token the record did not keep
        return judge(recorded, got, _own(recorded), precision="int4", tolerance=F32), outside

    flat, outside = judged(0.01)  # random weights at a published initializer: the top 33 within a few hundredths
    assert flat.passed, flat.failures()
    assert f"a near-tie: {outside} where the reference chose" in flat.describe() and " at least " in flat.describe()
    peaked, outside = judged(3.0)  # the reference's token leads the smallest kept logit by logits, not hundredths
    said = peaked.prompts[2].flips[0].describe()
    assert said.startswith(f"prompt 3 step 4: parts: {outside} where") and " at least " in said and "inf" not in said


def test_a_decoder_in_optimum_s_layout_is_read_by_its_names():
    inputs = ["input_ids", "attention_mask", "position_ids", *(f"past_key_values.{i}.{k}" for i in range(2)
                                                                 for k in ("key", "value"))]
    outputs = ["logits", *(f"present.{i}.{k}" for i in range(2) for k in ("key", "value"))]
    generation = of_layout(inputs, outputs)
    assert generation.cache[3] == ("past_key_values.1.value", "present.1.value") and generation.position_ids
    assert of_layout([n for n in inputs if n != "position_ids"], outputs).position_ids is None
    assert of_layout(inputs + ["use_cache_branch"], outputs) is None  # a merged decoder: not this layout
    assert of_layout(["input_ids", "attention_mask"], ["logits"]) is None  # no cache: a forward pass


def test_the_judging_prompts_reach_past_300_positions_where_the_model_has_them_and_a_long_one_runs_alone():
    prompts = judging_prompts(128, 4096)
    assert [len(p) for p in prompts] == [3, 7, 12, 448] and batches(prompts) == [[0, 1, 2], [3]]
    assert JUDGED_POSITIONS == sum(len(p) - 1 for p in prompts) + 4 * JUDGING_STEPS >= 512  # as a quantized LM's
    assert [len(p) for p in judging_prompts(128, 128)] == [3, 7, 12, 112]
    assert [len(p) for p in judging_prompts(128, None, long=False)] == [3, 7, 12]


def test_the_one_comparison_s_argmax_is_tie_aware_for_logits():
    want = np.array([[10.0, 10.0 - 1e-3, 0.0], [10.0, 5.0, 0.0]], np.float32)
    got = np.array([[10.0 - 1e-3, 10.0, 0.0], [5.0, 10.0, 0.0]], np.float32)
    found = compare_output("logits", got, want, F32, batch_axis=0)
    assert found.decisions == 2 and found.same_decisions == 0 and found.ties == 1
    assert "argmax agrees on 0 of 2 (1 more at a near-tie)" in found.summary()
