"""Generate with the exported model (issue 75): causal LMs as transformers makes them (a Llama-shaped one:
grouped-query attention and rotary positions; a GPT-2-shaped one: learned positions and a tied head),
random weights from configs, exported with their key/value cache; their greedy tokens through ort-cpu
and openvino equal transformers' own generate(do_sample=False), alone and left-padded in one batch;
verify judges generation step by step; ptx generate answers ids and text."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

import pytest
from ptx_command import ptx_ok as ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import needs_ort_cuda  # noqa: E402
from ptx.contract.generation import Generation, left_padded, positions  # noqa: E402
from ptx.contract.reference_decoding import recorded_reference  # noqa: E402
from ptx.contract.schema import Tolerance  # noqa: E402
from ptx.errors import InputError, PtxError, PtxWarning, ValidationError  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from tiny_decoders import BUILDERS, VOCAB, gpt2, llama, qwen2  # noqa: E402,F401 - qwen2 read as `from test_generate import qwen2` by factories

NEW_TOKENS = 64

PROMPTS = [[5, 17, 93], [8, 1, 44, 120, 7, 3, 9, 60, 2, 11], [99, 4, 4, 31, 70, 12]]


@pytest.fixture(scope="module")
def exported(tiny_decoders):
    """Each decoder's export (conftest's tiny_decoders, made once per run): name -> (model.onnx, what it said)."""
    return {name: tiny_decoders[name] for name in BUILDERS}


@functools.cache
def eager_generate(name, prompt, new_tokens=NEW_TOKENS):
    model = BUILDERS[name]()
    ids = torch.tensor([list(prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", BUILDERS)
def test_export_keeps_the_cache_and_says_how_it_validated(exported, name):
    path, lines = exported[name]
    said = "\n".join(lines)
    assert "task: text-generation" in said and "the decoder is exported with its key/value cache" in said, said
    onnx_line = next(ln for ln in lines if ln.startswith("onnx "))
    assert "positions teacher-forced (" in onnx_line and " in the prompts, 64 decoding steps;" in onnx_line and \
        "greedy tokens: 64 of 64" in onnx_line, onnx_line
    assert "the reference is transformers" in said and "generate(do_sample=False) in eager PyTorch" in said and \
        "its tokens and logits, 4 prompts" in said, said  # the file, decoded by ptx's loop, held to transformers' own
    model = load(path)
    inputs = model.signature.input_names
    assert inputs[:4] == ["input_ids", "attention_mask", "position_ids", "logits_to_keep"]
    assert model.generation.logits_to_keep == "logits_to_keep" and model.signature.output("logits").shape[1] == "kept"
    assert "past_key_values.1.value" in inputs and "present.1.value" in model.signature.output_names
    generation = model.generation
    assert len(generation.cache) == 4 and recorded_reference(generation) is not None
    heads = model.signature.input("past_key_values.0.key").shape[1]
    assert heads == (4 if name == "gpt2" else 2)  # grouped-query attention keeps 2 key/value heads of 4


def _recording(monkeypatch) -> list:
    """Every ort-cpu run from now on, as (input_ids' shape, logits_to_keep, the logits' shape, whether the cache
    was held in the runtime), through run (arrays) or run_holding (generation's)."""
    from ptx.infer.runtime.ort_runner import OrtRunner

    seen = []
    plain, holding = OrtRunner._run, OrtRunner.run_holding

    def run(self, feeds):
        out = plain(self, feeds)
        seen.append((feeds["input_ids"].shape, feeds["logits_to_keep"].tolist(), out["logits"].shape, False, False))
        return out

    def held(self, feeds, keep):
        fed = not isinstance(feeds["past_key_values.0.key"], np.ndarray)  # the step before's present, as it was
        out = holding(self, feeds, keep)
        seen.append((feeds["input_ids"].shape, feeds["logits_to_keep"].tolist(), out["logits"].shape,
                     not isinstance(out["present.0.key"], np.ndarray), fed))
        return out
    monkeypatch.setattr(OrtRunner, "_run", run)
    monkeypatch.setattr(OrtRunner, "run_holding", held)
    return seen


def test_a_prompt_s_run_computes_its_last_position_s_logits_only_and_the_judge_asks_for_every_one(exported,
                                                                                                   monkeypatch):
    seen = _recording(monkeypatch)
    with load(exported["llama"][0]) as model:
        tokens = model.generate(PROMPTS, max_new_tokens=8, eos=())
    assert tokens == [eager_generate("llama", tuple(p), 8) for p in PROMPTS]
    # the left-padded prompts' last position alone, then each step's one; the cache held in ONNX Runtime and fed
    # back as it was from the second run on (the first's past is empty)
    assert seen[0] == ((3, 10), [9], (3, 1, VOCAB), True, False), seen[0]
    assert len(seen) == 8 and all(s == ((3, 1), [0], (3, 1, VOCAB), True, True) for s in seen[1:]), seen[1:]
    seen.clear()
    assert _verify(exported["llama"][0]).exit_code() == 0
    prompts = [s for s in seen if s[0][1] > 1]
    # teacher-forced (arrays): every position of each prompt; free-running (held, as generation runs): the last
    assert {(s[3], s[1] == list(range(s[0][1])), s[1] == [s[0][1] - 1]) for s in prompts} == \
        {(False, True, False), (True, False, True)}, prompts


class IntKeep(transformers.LlamaForCausalLM):
    """A causal LM whose forward names logits_to_keep and reads it as an int, as a model's own code may: the
    last ``logits_to_keep`` positions' logits (0: all)."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache, **kwargs)
        out.logits = out.logits[:, -logits_to_keep:]
        return out


def test_a_forward_that_reads_logits_to_keep_as_an_int_exports_computing_every_position(tmp_path):
    torch.manual_seed(0)
    model = IntKeep(llama().config).eval()
    said: list[str] = []
    export_module(model, None, tmp_path / "lm", formats=["onnx"], exporter="legacy", log=said.append)
    assert any("names logits_to_keep but does not take a tensor of positions" in line for line in said), said
    with load(tmp_path / "lm" / "model.onnx") as exported_model:
        assert "logits_to_keep" not in exported_model.signature.input_names
        assert exported_model.generation.logits_to_keep is None
        ids = [[5, 17, 93]]
        want = model.generate(torch.tensor(ids), attention_mask=torch.ones(1, 3, dtype=torch.int64), max_new_tokens=6,
                              min_new_tokens=6, do_sample=False, pad_token_id=0)[0, 3:].tolist()
        assert exported_model.generate(ids, max_new_tokens=6, eos=()) == [want]


def test_all_logits_exports_the_decoder_without_logits_to_keep_and_a_forward_export_refuses_it(tmp_path):
    """--all-logits: the inputs onnxruntime-genai, Optimum and openvino-genai feed, every position's logits out."""
    export_module(llama(), None, tmp_path / "lm", formats=["onnx"], exporter="legacy", all_logits=True,
                  log=lambda _: None)
    with load(tmp_path / "lm" / "model.onnx") as model:
        assert "logits_to_keep" not in model.signature.input_names and model.generation.logits_to_keep is None
        assert model.generate(PROMPTS, max_new_tokens=8, eos=()) == [eager_generate("llama", tuple(p), 8)
                                                                      for p in PROMPTS]
    with pytest.raises(PtxError, match=r"^--all-logits is for a causal LM exported with its cache"):
        export_module(llama(), None, tmp_path / "forward", task="forward", all_logits=True, log=lambda _: None,
                      inputs=["input_ids=batchxseq:int64"])
    done = ptx("export", "convnet", "--all-logits", check=False)
    assert done.returncode != 0 and "--all-logits" in done.stderr, done.stderr
    factory = f"{Path(__file__).resolve().parents[1] / 'docs' / 'examples' / 'llama_lm.py'}:build"
    folder = ptx("export", "--module", factory, "--format", "triton", "--all-logits", "--out", tmp_path / "repo",
                 check=False)
    assert folder.returncode != 0 and "--all-logits shapes a decoder exported with its cache" in folder.stderr, \
        folder.stderr


@needs_ort_cuda
def test_ort_cuda_keeps_the_cache_on_the_gpu_between_steps_and_gives_eager_s_tokens(exported, monkeypatch):
    """Each step's present stays an OrtValue on the GPU and is bound as the next step's past: no copy of the
    cache to the host and back at each step (the logits alone come to the host)."""
    from ptx.infer.runtime.ort_runner import OrtRunner

    where = []
    holding = OrtRunner.run_holding

    def held(self, feeds, keep):
        past = feeds["past_key_values.0.key"]
        out = holding(self, feeds, keep)
        where.append((out["present.0.key"].device_name().lower(), type(out["logits"]).__name__,
                      "array" if isinstance(past, np.ndarray) else past.device_name().lower()))
        return out
    monkeypatch.setattr(OrtRunner, "run_holding", held)
    with load(exported["llama"][0], backend="ort-cuda") as model:
        tokens = model.generate(PROMPTS, max_new_tokens=8, eos=())
    assert tokens == [eager_generate("llama", tuple(p), 8) for p in PROMPTS]
    assert where[0] == ("cuda", "ndarray", "array") and set(where[1:]) == {("cuda", "ndarray", "cuda")}, where


def cache_expands(path) -> int:
    """The Expand nodes of a decoder file that read its present keys or values (through an Unsqueeze): each a
    copy of a layer's cache for every query head, at every step."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    made = {out: node for node in graph.node for out in node.output}

    def from_cache(name, depth=0):
        node = made.get(name)
        return name.startswith("present.") or (node is not None and depth < 3 and node.op_type == "Unsqueeze"
                                               and from_cache(node.input[0], depth + 1))
    return sum(node.op_type == "Expand" and from_cache(node.input[0]) for node in graph.node)


def test_grouped_heads_read_the_cache_without_a_copy_for_every_query_head(exported, tmp_path, monkeypatch):
    """Llama and Qwen2 (4 query heads over 2 key/value heads) are traced per key/value group: no Expand copies
    their cache (transformers' repeat_kv traced one per layer's keys and values), and the file is held to the
    model's own attention, eager's. Planted: a grouping that pairs each query head with the wrong key/value head
    fails export, naming the step; GPT-2 (no grouped heads) is traced as it is."""
    from ptx.export import grouped_attention

    assert cache_expands(exported["llama"][0]) == cache_expands(exported["qwen2"][0]) == 0
    plain = gpt2()
    before = plain.config._attn_implementation
    with grouped_attention.grouped_attention(plain):
        assert plain.config._attn_implementation == before  # no grouped heads: its own attention, traced as it is
    real = grouped_attention._grouped

    def other_heads(module, query, key, value, *args, **kwargs):  # each group's queries against the next group's keys
        return real(module, query, key.roll(1, dims=1), value.roll(1, dims=1), *args, **kwargs)

    monkeypatch.setattr(grouped_attention, "_grouped", other_heads)
    with pytest.raises(ValidationError, match=r"(step|position) \d+"):
        export_module(llama(), None, tmp_path / "wrong", formats=["onnx"], log=lambda _: None)
    assert not (tmp_path / "wrong" / "model.onnx").exists()


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_greedy_tokens_equal_transformers_generate_alone_and_batched(exported, name, backend):
    """The issue's acceptance: three prompts, 64 new tokens, token for token as eager generate(); and the
    prompts of different lengths in one call (left-padded) each get their own tokens."""
    want = [eager_generate(name, tuple(p)) for p in PROMPTS]
    model = load(exported[name][0], backend=backend)
    try:
        assert [model.generate(p, max_new_tokens=NEW_TOKENS)[0] for p in PROMPTS] == want
        assert model.generate(PROMPTS, max_new_tokens=NEW_TOKENS) == want
        assert model.generate(PROMPTS[:2], max_new_tokens=NEW_TOKENS) == want[:2]
    finally:
        model.close()


def test_qwen2_s_tokens_equal_transformers_generate(exported):
    want = [eager_generate("qwen2", tuple(p), 32) for p in PROMPTS]
    assert load(exported["qwen2"][0]).generate(PROMPTS, max_new_tokens=32) == want


def test_an_end_of_sequence_id_stops_its_prompt_alone(exported):
    model = load(exported["llama"][0])
    full = model.generate(PROMPTS, max_new_tokens=12, eos=())
    stop = full[1][4]
    got = model.generate(PROMPTS, max_new_tokens=12, eos=[stop])
    for whole, cut in zip(full, got):
        end = whole.index(stop) + 1 if stop in whole else len(whole)
        assert cut == whole[:end]
    assert got[1] == full[1][:full[1].index(stop) + 1]


def test_a_judge_whose_decoding_cannot_fit_skips_its_row_saying_so_not_failing_the_file(exported, monkeypatch):
    """The judge decodes its recorded prompts: where that cannot fit, the row is skipped with the plan's line and
    what can be done (free memory), never a FAIL of a file that decodes, nor the library's advice to ask for fewer
    prompts, which verify and export have no option for."""
    from ptx.infer.model import decoding_memory

    monkeypatch.setattr(decoding_memory, "decoding_need", lambda *args, **kwargs: 1e15)
    done = ptx("verify", exported["llama"][0], "--backends", "ort-cpu", check=False)
    said = done.stdout + done.stderr
    assert "skipped ort-cpu: the judge's decoding: decoding 3 prompts of up to 12 tokens and 16 new ones needs " \
           "about" in said and said.count("free memory, or run it on a larger machine") == 1, said
    assert "FAIL" not in said and "fewer prompts" not in said and done.returncode != 0


def test_a_decoding_whose_cache_cannot_fit_is_refused_in_one_line_before_its_first_step(exported, tmp_path,
                                                                                        monkeypatch):
    """The cache of a batch of long decodings grows past the memory: refused where the decoding starts (library,
    CLI), not ended by the kernel once it has grown; a decoding that fits runs."""
    from ptx.infer.model.decoding_memory import decoding_need
    from ptx.infer.runtime import memory_plan

    model = load(exported["llama"][0])
    small, large = decoding_need(model.signature, model.generation, 1, 3, 10), \
        decoding_need(model.signature, model.generation, 8, 3, 60)
    room = 2 * small  # the small decoding's need with its margin, not the large one's
    assert large * (1 + memory_plan.MARGIN) > room
    monkeypatch.setattr(memory_plan, "available_memory", lambda: room)
    assert len(model.generate([[5, 17, 93]], max_new_tokens=10)[0]) == 10
    runs = []
    monkeypatch.setattr(model.runner, "run", lambda feeds: runs.append(feeds))
    monkeypatch.setattr(model.runner, "run_holding", lambda feeds, held: runs.append(feeds))
    with pytest.raises(memory_plan.OutOfMemoryPlan,
                       match=r"^decoding 8 prompts of up to 3 tokens and 60 new ones needs about .* is available .*: "
                             r"ask for fewer prompts at once or fewer new tokens$"):
        model.generate([[5, 17, 93]] * 8, max_new_tokens=60)
    assert runs == []  # refused before its first step
    ids = [arg for _ in range(8) for arg in ("--ids", "5,17,93")]
    done = ptx("generate", exported["llama"][0], *ids, "--max-new-tokens", "60", check=False)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "decoding 8 prompts of up to 3 tokens and 60 new ones needs about" in done.stderr, done.stderr
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from ptx.serve.generator import Generator
    from ptx.serve.tensors import RequestError

    served = Generator("lm", model, model.generation)  # what `ptx serve` asks of each request
    try:
        assert served.start([[5, 17, 93]], 10, None, max_prompts=8).prompts == [[5, 17, 93]]
        with pytest.raises(RequestError, match="^decoding 8 prompts of up to 3 tokens") as refused:
            served.start([[5, 17, 93]] * 8, 60, None, max_prompts=8)
        assert refused.value.status == 503
    finally:
        served.close()


def test_the_memory_plan_counts_the_prompt_s_logits_a_decoding_computes_and_keeps(exported):
    """A prompt's run of a file that takes logits_to_keep computes its last position's logits only, unless a
    judge reads every position's (then it keeps a copy of them too); a file without the input computes every
    position's whatever is asked."""
    from dataclasses import replace

    from ptx.infer.model.decoding_memory import decoding_need
    from ptx.infer.runtime import memory_plan

    model = load(exported["llama"][0])
    signature, keeping = model.signature, model.generation
    every = replace(keeping, logits_to_keep=None)
    row = 4 * VOCAB  # one position's float32 logits
    last, judged, old = (decoding_need(signature, keeping, 1, 100, 10), decoding_need(signature, keeping, 1, 100, 10,
                         every_position=True), decoding_need(signature, every, 1, 100, 10))
    assert old - last == memory_plan.RUN_COPIES * 99 * row
    assert judged - old == 100 * row == decoding_need(signature, every, 1, 100, 10, every_position=True) - old


def test_verify_and_inspect_of_a_decoder_hash_its_weights_once(exported, monkeypatch):
    """The weights digest (seconds for a 2 GB decoder) is computed where the file is read, and its note, its
    check and the report's first line use that one: verify hashed the file three times."""
    import ptx.infer.formats.model_files as model_files

    hashed = []
    real_read, real_digest = model_files.read_onnx, model_files.digest_of

    def read_onnx(path, digest=True):
        if digest:
            hashed.append(path)
        return real_read(path, digest)

    def digest_of(path, kind):
        hashed.append(path)
        return real_digest(path, kind)

    monkeypatch.setattr(model_files, "read_onnx", read_onnx)
    monkeypatch.setattr(model_files, "digest_of", digest_of)
    assert "PASS" in ptx("verify", exported["llama"][0], "--backends", "ort-cpu").stdout
    assert len(hashed) == 1, hashed
    hashed.clear()
    assert "sha256" in ptx("inspect", exported["llama"][0]).stdout  # inspect, which says the digest, once too
    assert len(hashed) == 1, hashed


def test_bad_prompts_are_one_line_each(exported):
    model = load(exported["gpt2"][0])
    for prompt, words in [([], "no prompt"), ([[1, 2], []], "prompt 2 is empty"), ([1, VOCAB], "outside the vocabulary"),
                          ([[1, "a"]], "not a list of token ids"), ([-1], "outside the vocabulary"),
                          ([[1.5, 2]], "not a list of token ids"), ("5 17", "is text: give token ids")]:
        with pytest.raises(InputError, match=words):
            model.generate(prompt, max_new_tokens=2)
    with pytest.raises(InputError, match="positions; the model has 128: ask for at most 125 new tokens"):
        model.generate([1, 2, 3], max_new_tokens=200)
    with pytest.raises(InputError, match="max_new_tokens 0"):
        model.generate([1, 2, 3], max_new_tokens=0)


def test_a_file_without_its_cache_says_how_to_export_one(tmp_path):
    export_module(torch.nn.Linear(4, 3).eval(), (torch.rand(2, 4),), tmp_path / "fwd", formats=["onnx"],
                  log=lambda _: None)
    model = load(tmp_path / "fwd" / "model.onnx")
    assert model.generation is None
    with pytest.raises(PtxError, match="exported without its key/value cache.*--task text-generation"):
        model.generate([1, 2], max_new_tokens=2)


def test_declared_inputs_the_decoder_does_not_take_are_refused(tmp_path):
    with pytest.raises(PtxError, match="--input pixel_values: a decoder exported with its cache takes"):
        export_module(gpt2(), None, tmp_path / "x", inputs=["pixel_values=batchx3x8x8"], log=lambda _: None)
    with pytest.raises(PtxError, match="--output is not for a model exported with its cache"):
        export_module(gpt2(), None, tmp_path / "x", output_names=["scores"], log=lambda _: None)


def test_verify_judges_generation_and_exits_0(exported):
    done = ptx("verify", exported["llama"][0], "--json")
    doc = json.loads(done.stdout)
    assert doc["kind"] == "generation" and doc["ok"] and doc["steps"] == 16 and len(doc["prompts"]) == 4
    rows = {r["backend"]: r for r in doc["rows"]}
    for label in ("ort-cpu", "openvino", "onnx.reference"):
        judged = rows[label]["judgement"]
        assert rows[label]["status"] == "PASS" and judged["passed"] and len(judged["prompts"]) == 4, rows[label]
    text = ptx("verify", exported["gpt2"][0]).stdout
    assert "greedy generation, 4 prompts (3, 7, 12, 112 tokens) x 16 steps, teacher-forced" in text, text
    assert text.splitlines()[-1].startswith("OK")


def _wrapped(monkeypatch, change):
    """verify's decodings run through ``change(feeds, out)`` after the runtime's own run: a backend that answers
    otherwise, planted in the row (its record untouched)."""
    from ptx.infer.verify import generation as verify_module

    real = verify_module.judge_decoding

    def judged(run, *args, **kwargs):
        return real(lambda feeds: change(feeds, dict(run(feeds))), *args, **kwargs)
    monkeypatch.setattr(verify_module, "judge_decoding", judged)


def _verify(path, backends=("ort-cpu",), **options):
    from ptx.infer.model.target import Target
    from ptx.infer.verify.generation import verify_generation

    return verify_generation(Target.of(path, verifying=True), list(backends), **options)


def test_a_backend_that_returns_another_layer_s_present_fails_verify_naming_prompt_and_step(exported, monkeypatch):
    def swapped(feeds, out):  # layer 1's present answered with layer 0's: the next step's past is wrong
        out["present.1.key"], out["present.1.value"] = out["present.0.key"], out["present.0.value"]
        return out
    _wrapped(monkeypatch, swapped)
    report = _verify(exported["llama"][0])
    assert report.exit_code() == 1
    assert report.lines()[-1].startswith("FAIL: ort-cpu: ") and "prompt 1 step 2: logits differ from the reference's" \
        in report.lines()[-1], report.lines()


def test_a_prompt_pass_wrong_but_at_its_last_position_fails_verify_naming_the_position(exported, monkeypatch):
    """What a mask that lets each position of the prompt see the ones after it gives: the prompt's last position
    (which sees them all anyway), its cache and every step right, the positions before it wrong. Judged at the
    steps alone, the file passed; the prompt's own positions are judged too."""
    def peeking(feeds, out):
        if feeds["input_ids"].shape[1] > 1:
            out["logits"] = out["logits"].copy()
            out["logits"][:, :-1] += np.float32(0.5)
        return out
    _wrapped(monkeypatch, peeking)
    report = _verify(exported["llama"][0])
    assert report.exit_code() == 1
    assert "prompt 1 position 1: logits differ from the reference's" in report.lines()[-1], report.lines()


def test_openvino_keeps_a_decoding_s_cache_in_its_variables_and_lets_it_go_at_the_end(exported, monkeypatch):
    """openvino runs a decoder in its stateful form (infer/runtime/openvino_state.py): after the prompt's run no
    present is copied out of OpenVINO (each stays in its request's variable, fed back as a HeldState), the tokens
    are eager's, and the end of the decoding, or its caller ending its one row, empties the variables; a run that
    feeds its past as arrays (verify's teacher forcing) answers as ort-cpu."""
    from ptx.infer.runtime import openvino_state

    copied = []
    read = openvino_state.StatefulRequest.read
    monkeypatch.setattr(openvino_state.StatefulRequest, "read", lambda self, past: copied.append(past) or read(self,
                                                                                                              past))
    model = load(exported["llama"][0], "openvino")
    decoding = model.decoding(PROMPTS[1], 12, eos=())
    decoding.next_tokens()
    held = decoding.cache.feeds()
    assert held and all(isinstance(v, openvino_state.HeldState) for v in held.values()), held
    assert decoding.to_end().tokens[0] == eager_generate("llama", tuple(PROMPTS[1]), 12) and copied == []
    request = held["past_key_values.0.key"].request
    assert all(0 in v.state.shape or v.state.size == 0 for v in request.variables.values())  # let go
    with pytest.raises(PtxError, match="overwritten by a later run"):
        held["past_key_values.0.key"].numpy()
    joined = model.decoding(PROMPTS[0], 12, eos=())
    joined.next_tokens()
    arrays = joined.cache.arrays()  # rows that join or leave a server's batch: the variables read out
    request = joined.cache._request
    assert all(a.shape[2] == len(PROMPTS[0]) for a in arrays.values())
    joined.end(0)  # done: the request's copy goes at once
    assert all(0 in v.state.shape or v.state.size == 0 for v in request.variables.values())
    fed = load(exported["llama"][0], "ort-cpu").run(fed_inputs(PROMPTS[0]))
    ran = model.run(fed_inputs(PROMPTS[0]))  # a run given its past as arrays: the model as written
    assert all(np.allclose(ran[name], fed[name], atol=1e-5) for name in fed)


def fed_inputs(prompt):
    """A prompt's run from an empty past, as verify feeds it: every input an array."""
    width = len(prompt)
    return {"input_ids": np.array([prompt]), "attention_mask": np.ones((1, width), np.int64),
            "position_ids": np.arange(width)[None], "logits_to_keep": np.arange(width),
            **{f"past_key_values.{k}.{kv}": np.zeros((1, 2, 0, 8), np.float32) for k in range(2)
               for kv in ("key", "value")}}


def test_a_decoder_openvino_cannot_make_stateful_runs_as_its_file_is_written(exported, monkeypatch):
    from ptx.infer.runtime import openvino_runner

    def refused(model, pairs):
        raise RuntimeError("planted: MakeStateful refused this graph")
    monkeypatch.setattr(openvino_runner, "make_stateful", refused)
    with pytest.warns(PtxWarning, match=r"cannot compile .* in its stateful form .*planted: MakeStateful refused this "
                      r"graph: its decodings hand the whole cache to OpenVINO and back at every step"):
        model = load(exported["llama"][0], "openvino")
    assert not model.runner.pairs and "KV_CACHE_PRECISION" not in model.runner.config
    assert model.decode([PROMPTS[1]], 12, eos=()).tokens[0] == eager_generate("llama", tuple(PROMPTS[1]), 12)


def test_a_stateful_form_that_no_longer_compiles_is_one_model_run_error(exported, monkeypatch):
    """The stateful form compiled at open, let go (the compiled models' LRU), then refused on the recompile a
    decoding asks for: one ModelRunError naming the form, not an error of ptx's own."""
    from ptx.errors import ModelRunError

    model = load(exported["llama"][0], "openvino")
    runner = model.runner
    assert runner.pairs
    runner._cache.clear()

    def refused(*args, **kwargs):
        raise RuntimeError("planted: the plugin refuses to compile")
    monkeypatch.setattr(runner.core, "compile_model", refused)
    with pytest.raises(ModelRunError, match="in its stateful form .*planted: the plugin refuses"):
        runner.stateful_request()
    model.close()


def test_an_openvino_decoding_that_loses_its_cache_between_steps_fails_verify(exported, monkeypatch):
    """Planted: each run of a stateful request empties its variables after it (as a runtime that kept no state
    would), so every step attends to no past: verify's judge of the openvino row, which decodes through the
    request as generation does, fails it."""
    from ptx.infer.runtime import openvino_state

    real = openvino_state.StatefulRequest.run

    def forgetting(self, feeds, held=(), into=None):
        out = real(self, feeds, held, into)
        self.request.reset_state()
        return out
    monkeypatch.setattr(openvino_state.StatefulRequest, "run", forgetting)
    report = _verify(exported["llama"][0], ("openvino",))
    assert report.exit_code() == 1 and report.lines()[-1].startswith("FAIL: openvino: "), report.lines()


def test_a_prompt_s_last_position_asked_alone_that_differs_from_every_position_s_fails_verify(exported, monkeypatch):
    """Generation's prompt run (its last position alone) answering otherwise than the same position asked with every
    one, by 1% (its tokens unchanged, so no parting shows it): the judge holds the two to the tolerance."""
    from ptx.infer.runtime.ort_runner import OrtRunner

    holding = OrtRunner.run_holding

    def off(self, feeds, held):
        out = holding(self, feeds, held)
        return {**out, "logits": out["logits"] * np.float32(1.01)} if feeds["input_ids"].shape[1] > 1 else out
    monkeypatch.setattr(OrtRunner, "run_holding", off)
    report = _verify(exported["llama"][0])
    assert report.exit_code() == 1
    assert "prompt 1 step 1: its logits asked alone, as generation asks them, differ from the same position's asked " \
        "with every position by up to" in report.lines()[-1], report.lines()


def test_verify_s_atol_is_what_a_float32_row_is_held_to(exported, monkeypatch):
    def moved(feeds, out):
        out["logits"] = out["logits"] + np.float32(0.01)  # beyond 1e-4 + 1e-3 x the rows' largest (about 1)
        return out
    _wrapped(monkeypatch, moved)
    assert "prompt 1 position 1: logits differ" in _verify(exported["llama"][0]).lines()[-1]
    assert _verify(exported["llama"][0], atol=0.02).exit_code() == 0


def test_a_reduced_row_with_one_prompt_wrong_from_step_1_fails_and_with_nan_at_step_9_fails(exported):
    """A reduced row (int8 here: ort-cpu's decoding judged as one) is held per prompt: one prompt answered as another
    fails the row whatever the others do, and so does one NaN in one step of one prompt."""
    from ptx.infer.model.generation_check import judge_decoding

    with load(exported["llama"][0]) as model:
        generation, reference = model.generation, recorded_reference(model.generation)

        def judged(change):
            return judge_decoding(lambda feeds: change(feeds, dict(model.run(feeds))), model.signature, generation,
                                  reference, precision="int8", tolerance=Tolerance(1e-4, 1e-3))[0]

        def wrong_prompt(feeds, out):
            if out["logits"].shape[0] == 3:  # the short prompts' batch: its second answered as its first
                out["logits"] = out["logits"].copy()
                out["logits"][1] = out["logits"][0]
            return out

        def nan_at_step_9(feeds, out):
            if feeds["input_ids"].shape == (3, 1) and feeds["attention_mask"].shape[1] == 12 + 8:
                out["logits"] = out["logits"].copy()
                out["logits"][2, -1, 5] = np.nan
            return out
        assert judged(lambda feeds, out: out).passed
        failed = judged(wrong_prompt).failures()
        assert len(failed) >= 1 and all(f.startswith("prompt 2") for f in failed), failed
        assert "first at position 1" in failed[0] or "KL divergence" in failed[0]
        assert judged(nan_at_step_9).failures() == ["prompt 3 step 9: NaN or infinite logits"]


def test_a_reduced_row_beyond_its_bounds_is_not_usable_and_fails_verify_where_named(exported, monkeypatch):
    """openvino-bf16 answering its second prompt from its first: NOT USABLE, said on the last line (exit 0, as
    verify's other reduced rows are) where it came along with openvino; exit 1 where --backends names it. Its
    unplanted twin passes."""
    from ptx.infer.runtime.openvino_runner import has_bf16
    from ptx.infer.verify import generation as verify_module

    if not has_bf16():  # an AVX2-only CPU: OpenVINO has no bf16 row to plant the fault in (it would run f32)
        pytest.skip("openvino-bf16 needs a CPU with bf16 instructions (AVX-512 BF16 or AMX); this one has none")
    real = verify_module.judge_decoding

    def judged(run, *args, **kwargs):
        def wrong_prompt(feeds):
            out = dict(run(feeds))
            if out["logits"].shape[0] == 3:
                out["logits"] = out["logits"].copy()
                out["logits"][1] = out["logits"][0]
            return out
        return real(wrong_prompt if kwargs.get("precision") == "bf16" else run, *args, **kwargs)
    path = exported["llama"][0]
    assert {r.label: r.status for r in _verify(path, ("openvino", "openvino-bf16")).rows} == {
        "openvino": "PASS", "openvino-bf16": "PASS"}
    monkeypatch.setattr(verify_module, "judge_decoding", judged)
    along = _verify(path, ("openvino",))
    assert {r.label: r.status for r in along.rows} == {"openvino": "PASS", "openvino-bf16": "NOT USABLE"}
    assert along.exit_code() == 0 and "NOT USABLE here: openvino-bf16" in along.lines()[-1], along.lines()
    named = _verify(path, ("openvino-bf16",))
    assert named.exit_code() == 1 and named.lines()[-1].startswith("NOT USABLE: openvino-bf16: "), named.lines()
    assert "prompt 2" in named.lines()[-1]


def test_a_decoder_edited_after_export_says_so_first_and_is_held_to_its_record(exported, tmp_path):
    """One node changed after export (GPT-2's learned positions shifted by one): the file is still judged against
    the decoding its record holds, as an f32 file made from it, and fails naming the prompt and the step; its
    unplanted twin (a file another tool made from the export, int4 by ONNX Runtime's quantizer) passes:
    tests/test_weight_only.py."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(exported["gpt2"][0]))
    proto.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "one"))
    for node in proto.graph.node:  # one node changed after export: positions shifted by one
        node.input[:] = ["shifted" if i == "position_ids" else i for i in node.input]
    proto.graph.node.insert(0, helper.make_node("Add", ["position_ids", "one"], ["shifted"], name="edit"))
    onnx.save(proto, str(tmp_path / "model.onnx"))
    done = ptx("verify", tmp_path / "model.onnx", "--backends", "ort-cpu,openvino", check=False)
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first.startswith("model.onnx is not the file exported: its sha256"), done.stdout
    assert first.endswith("it is judged as an f32 file made from it, against the decoding its record holds"), first
    assert "in eager PyTorch (torch" in done.stdout.splitlines()[1], done.stdout
    assert done.returncode == 1 and last.startswith("FAIL: ort-cpu: ") and "prompt 1 position 1: logits differ" in last, \
        done.stdout + done.stderr


def test_a_decoder_in_optimum_s_layout_without_a_record_is_decoded_not_fed_generated_inputs(exported, tmp_path):
    import onnx

    proto = onnx.load(str(exported["llama"][0]))
    del proto.metadata_props[:]  # a decoder as Optimum writes one: past_key_values.N.key in, present.N.key out
    onnx.save(proto, str(tmp_path / "decoder.onnx"))
    done = ptx("verify", tmp_path / "decoder.onnx", "--backends", "ort-cpu,openvino")
    assert "greedy generation, 3 prompts (3, 7, 12 tokens) x 16 steps" in done.stdout, done.stdout
    assert re.search(r"^  ort-cpu +reference +its decoding is the reference$", done.stdout, re.M), done.stdout
    assert re.search(r"^  openvino +PASS +teacher-forced 3 prompts, 67 positions \(19 in the prompts, 16 steps each\), "
                     "logits within", done.stdout, re.M), done.stdout
    with load(tmp_path / "decoder.onnx") as model:
        assert model.generate(PROMPTS, max_new_tokens=8, eos=()) == [eager_generate("llama", tuple(p), 8) for p in PROMPTS]


def without_positions(source, out):
    """``source`` (a ptx decoder) as a decoder that takes no position ids and counts its own from the row's first
    id, padding included, as onnxruntime-genai's builder output does (its GroupQueryAttention takes the cache
    as right-padded): positions = past length + 0..seq-1. No ptx record: a file another tool made."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    graph = proto.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                              (("pos_two", 2), ("pos_one_index", 1), ("pos_step", 1), ("pos_zero_axis", [0]))])
    made = [helper.make_node("Shape", ["past_key_values.0.key"], ["pos_past_shape"]),
            helper.make_node("Gather", ["pos_past_shape", "pos_two"], ["pos_past"]),
            helper.make_node("Shape", ["input_ids"], ["pos_ids_shape"]),
            helper.make_node("Gather", ["pos_ids_shape", "pos_one_index"], ["pos_seq"]),
            helper.make_node("Add", ["pos_past", "pos_seq"], ["pos_end"]),
            helper.make_node("Range", ["pos_past", "pos_end", "pos_step"], ["pos_range"]),
            helper.make_node("Unsqueeze", ["pos_range", "pos_zero_axis"], ["pos_row"]),
            helper.make_node("Expand", ["pos_row", "pos_ids_shape"], ["pos_counted"])]
    for node in graph.node:
        node.input[:] = ["pos_counted" if i == "position_ids" else i for i in node.input]
    for k, node in enumerate(made):
        graph.node.insert(k, node)
    kept = [i for i in graph.input if i.name != "position_ids"]
    del graph.input[:]
    graph.input.extend(kept)
    onnx.save(proto, str(out))
    return out


def test_a_decoder_that_counts_its_own_positions_decodes_each_prompt_alone(exported, tmp_path):
    """A decoder without position ids cannot share a left-padded batch (GPT-2's learned positions would count
    the padding): verify decodes each prompt alone and holds it to the record's f32 logits; a decoding of
    prompts of different lengths is refused in one line; the same prompts one at a time give eager's tokens."""
    path = without_positions(exported["gpt2"][0], tmp_path / "decoder.onnx")
    done = ptx("verify", exported["gpt2"][0], "--against", path, "--backends", "ort-cpu", check=False)
    assert done.returncode == 0 and re.search(r"^  decoder\.onnx \(ort-cpu\) +PASS +teacher-forced", done.stdout, re.M), \
        done.stdout + done.stderr
    with load(path) as model:
        assert model.generation.position_ids is None
        with pytest.raises(InputError, match="takes no position ids, so prompts of different lengths cannot share"):
            model.generate(PROMPTS, max_new_tokens=4, eos=())
        assert [model.generate([p], max_new_tokens=8, eos=())[0] for p in PROMPTS] == \
            [eager_generate("gpt2", tuple(p), 8) for p in PROMPTS]


def test_onnxruntime_genai_s_cache_sizes_are_read_beside_its_file(tmp_path):
    """The builder leaves a past's head size symbolic (kv_cache_dim) and writes it in genai_config.json."""
    from ptx.contract.tensors import Signature, TensorSig
    from ptx.infer.formats.genai_config import with_cache_sizes

    signature = Signature((TensorSig("input_ids", "int64", ("batch", "seq"), 0),
                           TensorSig("past_key_values.0.key", "float32", ("batch", 2, "past", "kv_cache_dim"), 0)),
                          (TensorSig("logits", "float32", ("batch", "seq", 320), 0),))
    assert with_cache_sizes(signature, tmp_path / "model.onnx") == signature  # no genai_config.json: as it is
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"head_size": 64,
                                                                                    "num_key_value_heads": 2}}}))
    sized = with_cache_sizes(signature, tmp_path / "model.onnx")
    assert sized.input("past_key_values.0.key").shape == ("batch", 2, "past", 64)
    assert sized.input("input_ids") == signature.input("input_ids")


def test_left_padding_keeps_each_prompt_s_positions():
    ids, mask = left_padded([[7, 8, 9], [4]], pad=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_optimum_s_layout_reads_a_logits_to_keep_of_positions_and_no_other():
    from ptx.contract.generation import of_layout

    ins = ["input_ids", "attention_mask", "logits_to_keep", "past_key_values.0.key", "past_key_values.0.value"]
    outs = ["logits", "present.0.key", "present.0.value"]
    assert of_layout(ins, outs, ("int64", 1)).logits_to_keep == "logits_to_keep"
    assert of_layout(ins, outs, ("int64", 0)) is None  # a count (transformers' int argument): not this layout
    assert of_layout([n for n in ins if n != "logits_to_keep"], outs).logits_to_keep is None


def test_a_generation_contract_that_names_what_the_file_lacks_is_refused():
    generation = Generation((("past_key_values.0.key", "present.0.key"),))
    with pytest.raises(PtxError, match="names present.0.key, which the file does not have"):
        generation.check(["input_ids", "attention_mask", "position_ids", "past_key_values.0.key"], ["logits"], "x")
    with pytest.raises(PtxError, match="not a generation contract"):
        Generation.from_json("{}", "x")


def test_ptx_generate_prints_ids_json_and_text(exported, tmp_path):
    path = exported["llama"][0]
    want = load(path).generate(PROMPTS[:2], max_new_tokens=8)
    shown = ptx("generate", path, "--ids", "5,17,93", "--ids", "8,1,44,120,7,3,9,60,2,11", "--max-new-tokens", 8)
    assert shown.stdout.splitlines() == [f"prompt {k + 1} ({len(p)} tokens): {' '.join(map(str, w))}"
                                         for k, (p, w) in enumerate(zip(PROMPTS[:2], want))]
    assert "2 prompts on ort-cpu, greedy: the prompt in" in shown.stderr
    doc = json.loads(ptx("generate", path, "--ids", "5,17,93", "--max-new-tokens", 8, "--backend", "openvino",
                         "--json").stdout)
    assert doc["backend"] == "openvino" and doc["prompts"][0]["new_ids"] == want[0] and doc["prefill_ms"] > 0
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    text = ptx("generate", path, "--tokenizer", tmp_path / "tok", "--prompt", "w5 w17 w93", "--max-new-tokens", 8)
    assert text.stdout.strip() == "prompt 1 (3 tokens): " + " ".join(f"w{t}" for t in want[0])
    for args, words in [(["--ids", "5,x"], "give token ids as integers"), (["--prompt", "hi"], "give --tokenizer DIR"),
                        ([], "give a prompt"), (["--ids", "5", "--tokenizer", tmp_path], "no tokenizer.json there"),
                        (["--ids", "5,999"], "outside the vocabulary")]:
        bad = ptx("generate", path, *args, check=False)
        assert bad.returncode == 2 and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_ptx_generate_s_token_line_and_timing_line_are_two_lines_on_a_terminal(exported, tmp_path):
    """On a terminal stdout and stderr share the lines: each token line ends before the timing line (stderr) is
    written, streamed text included."""
    import os
    import pty
    import subprocess
    import sys

    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    for args in (["--ids", "5,17,93"], ["--ids", "5,17,93", "--ids", "8,1"], ["--tokenizer", tmp_path / "tok",
                                                                             "--prompt", "w5 w17"]):
        main, child = pty.openpty()
        done = subprocess.run([sys.executable, "-m", "ptx", "generate", str(exported["llama"][0]), *map(str, args),
                               "--max-new-tokens", "4"], stdout=child, stderr=child, timeout=120)
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        os.close(main)
        lines = shown.decode().replace("\r", "").splitlines()
        assert done.returncode == 0 and lines[-1].startswith(("1 prompt on", "2 prompts on")), lines
        assert all(ln.startswith("prompt ") for ln in lines[:-1]) and len(lines) == (3 if "8,1" in args else 2), lines


def test_torchscript_carries_the_cache_where_its_trace_holds(exported):
    path, lines = exported["gpt2"]
    said = [ln for ln in lines if ln.startswith("torchscript")]
    assert said and "greedy tokens: 64 of 64" in said[0], lines
    want = [eager_generate("gpt2", tuple(p)) for p in PROMPTS]
    assert load(path.with_name("model.torchscript.pt")).generate(PROMPTS, max_new_tokens=NEW_TOKENS) == want


def test_a_format_that_cannot_carry_the_cache_is_said_and_not_kept(tmp_path, monkeypatch):
    from ptx.export.decoder import DecoderSource

    written = DecoderSource.write

    def refusing(self, fmt, *args):
        if fmt.name == "torchscript":
            raise PtxError("the trace fixed the past's length")
        return written(self, fmt, *args)
    monkeypatch.setattr(DecoderSource, "write", refusing)
    lines: list[str] = []
    export_module(llama(), None, tmp_path / "lm", formats=["onnx", "torchscript"], exporter="legacy",
                  log=lines.append)  # the TorchScript-based ONNX exporter: torch.export's is the fixture's
    assert "torchscript not kept: it cannot carry the cache (the trace fixed the past's length)" in lines, lines
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["model.onnx"]
    with pytest.raises(PtxError, match="no format carries llama's cache: torchscript: the trace fixed"):
        export_module(llama(), None, tmp_path / "ts", formats=["torchscript"], name="llama", log=lambda _: None)
    assert not (tmp_path / "ts").exists()


def test_int8_of_a_decoder_is_refused_in_one_line(exported):
    done = ptx("export", exported["llama"][0], "--format", "onnx-int8", check=False)
    assert done.returncode == 2 and "is a decoder with its key/value cache" in done.stderr, done.stderr


def test_the_cli_export_takes_no_shaping_options_for_a_decoder(tmp_path):
    """The CLI hands export_module a plan of empty entries when --shape, --value and --range are not given:
    the decoder's export goes on; given, they are refused in one line before any work."""
    factory = tmp_path / "lm.py"
    factory.write_text("from test_generate import llama as build\n")
    done = ptx("export", "--module", f"{factory}:build", "--out", tmp_path / "lm", "--shape", "seq=4", check=False)
    assert done.returncode == 2 and "--shape/--value/--range is not for a model exported with its cache" in \
        done.stderr, done.stderr


def test_decoding_is_pulled_step_by_step_and_teacher_forced_by_appending(exported):
    """The caller pulls: a step's logits, the tokens it appends (argmax: generate()'s; another: the next step
    answers that one, as a prompt ending in it would), each prompt done at its end-of-sequence id, and a
    decoding no longer pulled runs nothing more."""
    from ptx.infer.model.generation import GREEDY

    model = load(exported["llama"][0])
    want = model.generate(PROMPTS, max_new_tokens=6, eos=())
    decoding = model.decoding(PROMPTS, 6, eos=())
    first = decoding.step()
    assert first.index == 0 and first.logits.shape == (3, VOCAB) and not first.done.any()
    with pytest.raises(PtxError, match="append"):
        decoding.step()
    assert decoding.append(GREEDY(first.logits, decoding.history)) == [w[0] for w in want]
    forced = [7, 9, 11]  # not the greedy tokens: what comes next answers them
    assert forced != [w[1] for w in want]
    decoding.step()
    decoding.append(forced)
    after = decoding.step().logits
    alone = model.decoding([p + [w[0], f] for p, w, f in zip(PROMPTS, want, forced)], 1, eos=()).step().logits
    assert np.allclose(after, alone, atol=1e-4), abs(after - alone).max()
    assert decoding.decoded().tokens == [[w[0], f] for w, f in zip(want, forced)]  # stopped pulling: 2 tokens
    ended = model.decoding(PROMPTS, 6, eos=[want[1][0]])  # the second prompt's first token ends it
    assert ended.next_tokens() == [w[0] for w in want] and ended.done.tolist() == [False, True, False]
    assert ended.next_tokens() == [want[0][1], None, want[2][1]]
    assert ended.to_end().tokens == [want[0], want[1][:1], want[2]]
    with pytest.raises(PtxError, match="done"):
        ended.step()
