"""Generate with the exported model (issue 75): causal LMs as transformers makes them (a Llama-shaped one:
grouped-query attention and rotary positions; a GPT-2-shaped one: learned positions and a tied head),
random weights from configs, exported with their key/value cache; their greedy tokens through ort-cpu
and openvino equal transformers' own generate(do_sample=False), alone and left-padded in one batch;
verify judges generation step by step; ptx generate answers ids and text."""
from __future__ import annotations

import functools
import json

import pytest
from ptx_command import ptx as run_ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.contract.generation import GENERATION_KEY, Generation, Steps, judge_tokens, left_padded, positions  # noqa: E402
from ptx.contract.schema import Tolerance  # noqa: E402
from ptx.errors import InputError, PtxError  # noqa: E402
from ptx.export.formats.onnx import add_metadata  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402

VOCAB = 128
NEW_TOKENS = 64


def llama():
    torch.manual_seed(0)  # initializer_range 0.2: logits far apart enough that greedy choices are no near-ties
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    return transformers.LlamaForCausalLM(config).eval()


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).eval()


def qwen2():
    torch.manual_seed(0)  # Qwen2: Llama's shape with biases on q, k and v, the embedding tied to the head
    config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      initializer_range=0.2, tie_word_embeddings=True, bos_token_id=None,
                                      eos_token_id=None)
    return transformers.Qwen2ForCausalLM(config).eval()


BUILDERS = {"llama": llama, "gpt2": gpt2, "qwen2": qwen2}
PROMPTS = [[5, 17, 93], [8, 1, 44, 120, 7, 3, 9, 60, 2, 11], [99, 4, 4, 31, 70, 12]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    done = {}
    for name, build in BUILDERS.items():
        lines: list[str] = []
        # GPT-2's TorchScript too: a trace carries the cache where it holds, as its check proves
        export_module(build(), None, root / name, log=lines.append,
                      formats=["onnx", "torchscript"] if name == "gpt2" else ["onnx"])
        done[name] = (root / name / "model.onnx", lines)
    return done


@functools.cache
def eager_generate(name, prompt, new_tokens=NEW_TOKENS):
    model = BUILDERS[name]()
    ids = torch.tensor([list(prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def ptx(*args, check=True):
    done = run_ptx(*args)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.parametrize("name", BUILDERS)
def test_export_keeps_the_cache_and_says_how_it_validated(exported, name):
    path, lines = exported[name]
    said = "\n".join(lines)
    assert "task: text-generation" in said and "the decoder is exported with its key/value cache" in said, said
    onnx_line = next(ln for ln in lines if ln.startswith("onnx "))
    assert "decoding steps" in onnx_line and "greedy tokens: 48 of 48" in onnx_line, onnx_line
    model = load(path)
    inputs = model.signature.input_names
    assert inputs[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert "past_key_values.1.value" in inputs and "present.1.value" in model.signature.output_names
    generation = model.generation
    assert len(generation.cache) == 4 and generation.recorded() is not None
    heads = model.signature.input("past_key_values.0.key").shape[1]
    assert heads == (4 if name == "gpt2" else 2)  # grouped-query attention keeps 2 key/value heads of 4


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
    assert doc["kind"] == "generation" and doc["ok"] and doc["steps"] == 16
    rows = {r["backend"]: r for r in doc["rows"]}
    for label in ("ort-cpu", "openvino", "onnx.reference"):
        assert rows[label]["status"] == "PASS" and rows[label]["judgement"]["agreeing"] == 48, rows[label]
    text = ptx("verify", exported["gpt2"][0]).stdout
    assert "greedy generation, 3 prompts (3, 7, 12 tokens) x 16 steps" in text and text.splitlines()[-1].startswith("OK")


def _recorded_otherwise(path, tmp_path, change) -> str:
    """A copy of the file whose recorded reference ``change`` altered (what a backend that parts would show)."""
    copy = tmp_path / "planted.onnx"
    copy.write_bytes(path.read_bytes())
    generation = load(path).generation
    reference = json.loads(json.dumps(generation.reference))
    change(reference)
    add_metadata(copy, {GENERATION_KEY: generation.with_reference(reference).to_json()})
    return copy


def test_a_parting_is_named_with_both_tokens_and_the_margin(exported, tmp_path):
    def plant(ref):
        ref["tokens"][1][5] = (ref["tokens"][1][5] + 1) % VOCAB  # the reference chose otherwise at step 6
        ref["margins"][1][5] = 3.0
    copy = _recorded_otherwise(exported["llama"][0], tmp_path, plant)
    done = ptx("verify", copy, "--backends", "ort-cpu", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "prompt 2 step 6: parts:" in done.stdout and "top-2 margin 3" in done.stdout, done.stdout


def test_verify_s_atol_widens_what_counts_as_a_tie(exported, tmp_path):
    def plant(ref):
        ref["tokens"][2][1] = (ref["tokens"][2][1] + 1) % VOCAB
        ref["margins"][2][1] = 0.5
    copy = _recorded_otherwise(exported["llama"][0], tmp_path, plant)
    assert ptx("verify", copy, "--backends", "ort-cpu", check=False).returncode == 1
    done = ptx("verify", copy, "--backends", "ort-cpu", "--atol", "0.3", check=False)
    assert done.returncode == 0 and "prompt 3 step 2: a tie:" in done.stdout, done.stdout


def test_a_parting_at_a_near_tie_is_said_not_failed(exported, tmp_path):
    def plant(ref):
        ref["tokens"][0][3] = (ref["tokens"][0][3] + 1) % VOCAB
        ref["margins"][0][3] = 1e-5
    copy = _recorded_otherwise(exported["gpt2"][0], tmp_path, plant)
    done = ptx("verify", copy, "--backends", "ort-cpu", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prompt 1 step 4: a tie:" in done.stdout and "said, not failed" in done.stdout, done.stdout


def test_the_judge_counts_agreement_to_each_first_parting():
    reference = Steps([[1, 2, 3, 4], [5, 6, 7, 8]], [[1.0] * 4, [1.0, 1.0, 0.0001, 1.0]], [[10.0] * 4, [10.0] * 4])
    got = Steps([[1, 2, 3, 4], [5, 6, 9, 8]], [[1.0] * 4] * 2, [[10.0] * 4] * 2)
    judged = judge_tokens(reference, got, Tolerance(1e-4, 1e-3))
    assert judged.steps == 8 and judged.agreeing == 6 and judged.passed  # a tie: 0.0001 <= 2 * (1e-4 + 1e-3 * 10)
    assert [(p.prompt, p.step, p.want, p.got, p.tie) for p in judged.partings] == [(1, 3, 7, 9, True)]
    strict = judge_tokens(reference, got, Tolerance(0.0, 0.0))
    assert not strict.passed
    reduced = judge_tokens(reference, Steps([[9, 9, 9, 9], [5, 6, 7, 8]], [], []), Tolerance(0, 0), reduced=True)
    assert reduced.agreeing == 4 and reduced.share == 0.5 and reduced.passed


def test_left_padding_keeps_each_prompt_s_positions():
    ids, mask = left_padded([[7, 8, 9], [4]], pad=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


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


def test_torchscript_carries_the_cache_where_its_trace_holds(exported):
    path, lines = exported["gpt2"]
    said = [ln for ln in lines if ln.startswith("torchscript")]
    assert said and "greedy tokens: 48 of 48" in said[0], lines
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
    export_module(llama(), None, tmp_path / "lm", formats=["onnx", "torchscript"], log=lines.append)
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
    assert done.returncode != 0 and "--shape/--value/--range is not for a model exported with its cache" in \
        done.stderr, done.stderr


def test_decoding_is_pulled_step_by_step_and_teacher_forced_by_appending(exported):
    """The caller pulls: a step's logits, the tokens it appends (argmax: generate()'s; another: the next step
    answers that one, as a prompt ending in it would), each prompt done at its end-of-sequence id, and a
    decoding no longer pulled runs nothing more."""
    import numpy as np

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
