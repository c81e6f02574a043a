"""Text in and out of a generating model (ptx.infer.model.text, text_generation): `ptx export DIR` of a
transformers folder keeps its tokenizer, chat template and generation config beside the file; the template
renders and encodes as transformers' apply_chat_template does; answers stream whole characters and stop at
stop strings; `ptx generate FILE --prompt ... --chat --temperature 0.7 --seed 1` prints the same text on
ort-cpu and openvino, without importing torch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ptx_command import ptx

import text_models
from ptx.contract.sampling import Sampling
from ptx.errors import InputError
from ptx.infer import load
from ptx.infer.model.text import Text, TextError
from ptx.infer.model.text_generation import generate_text

transformers = pytest.importorskip("transformers")

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "café?"},
     {"role": "assistant", "content": "日本語"}, {"role": "user", "content": "again 👋"}],
]


@pytest.fixture(scope="module")
def words(chat_export):
    return Text.open(chat_export["folder"])


@pytest.fixture(scope="module")
def theirs(chat_export):
    return transformers.AutoTokenizer.from_pretrained(str(chat_export["folder"]))


def test_export_of_a_folder_keeps_its_text_beside_the_file(chat_export):
    out = chat_export["file"].parent
    kept = sorted(p.name for p in out.iterdir())
    assert kept == ["chat_template.jinja", "generation_config.json", "model.onnx", "tokenizer.json",
                    "tokenizer_config.json"]
    assert "holds a LlamaForCausalLM" in chat_export["log"]
    assert "kept beside the file (with a chat template)" in chat_export["log"]
    model = load(chat_export["file"])
    try:
        assert model.text is not None and model.text.eos == (text_models.EOS,)
        assert model.generation.eos == (text_models.EOS,)  # the config's end of turn, recorded in the file
    finally:
        model.close()


def test_a_text_s_bytes_are_its_tokens_bytes_joined(words):
    """Each token's bytes (the logprobs' "bytes"), a part of a character among them: joined, the text's UTF-8.
    Decoding each token alone (tokenizers' decode, which replaces a part of a character) would not give them."""
    for line in text_models.CORPUS:
        ids = words.encode(line)
        assert b"".join(words.token_bytes(t) for t in ids) == line.encode("utf-8"), line
    ids = words.encode("日本語のテキスト")
    assert b"".join(words.decode([t]).encode("utf-8") for t in ids) != "日本語のテキスト".encode("utf-8")
    assert words.token_bytes(text_models.EOS) == b"<|im_end|>"  # an added token: its own text


@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("prompt", [True, False])
def test_the_chat_template_renders_and_encodes_as_transformers_does(words, theirs, conversation, prompt):
    messages = CONVERSATIONS[conversation]
    assert words.render(messages, add_generation_prompt=prompt) == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt)
    if prompt:
        assert words.chat(messages) == theirs.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        assert words.render(messages, add_generation_prompt=False) != words.render(messages)  # the check can fail


def test_a_template_in_tokenizer_config_with_transformers_globals_renders_alike(tmp_path, theirs):
    """An older snapshot keeps its template in tokenizer_config.json; templates use raise_exception,
    tojson and loop controls, and see the special tokens."""
    template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
                "{% if loop.index > 5 %}{% break %}{% endif %}{{ eos_token }}{{ m | tojson }}\n{% endfor %}")
    theirs.chat_template = template
    theirs.save_pretrained(str(tmp_path))
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    mine = Text.open(tmp_path)
    messages = CONVERSATIONS[1]
    assert mine.render(messages) == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_end|>" in mine.render(messages) and "日本語" in mine.render(messages)  # tojson keeps it as it is
    with pytest.raises(InputError, match="the chat template refused the messages: no tools"):
        mine.render([{"role": "tool", "content": "x"}])


def test_encode_and_decode_are_the_tokenizer_s(words, theirs):
    line = "café, naïve 日本語 👋 the end"
    assert words.encode(line) == theirs(line).input_ids
    assert words.decode(words.encode(line)) == line


def test_a_character_split_over_tokens_is_never_given_half(words):
    ids = words.encode("naïve 日本語 👋!")
    assert any("\ufffd" in words.decode([t]) for t in ids)  # the tokenizer does split characters: the case is real
    stream = words.stream()
    pieces = [stream.feed(t) for t in ids] + [stream.finish()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "naïve 日本語 👋!" == stream.given


def test_stop_strings_cut_the_text_and_what_may_begin_one_is_held(words):
    ids = words.encode("hello world. The end")
    stream = words.stream(["world.", "xyz"])
    pieces = []
    for t in ids:
        pieces.append(stream.feed(t))
        if stream.stopped:
            break
    assert stream.stopped and "".join(pieces) == "hello " == stream.given
    assert stream.finish() == ""
    never = words.stream(["end!"])  # "end" may begin it: held, then given at the end
    shown = "".join(never.feed(t) for t in ids)
    assert shown == "hello world. The " and never.finish() == "end" and not never.stopped


def test_answers_end_at_their_stop_string_or_their_length(chat_export, words):
    model = load(chat_export["file"])
    try:
        ids = words.chat(CONVERSATIONS[0])
        whole = generate_text(model, [ids], words, Sampling(max_new_tokens=12), eos=())[0]
        assert whole.finish_reason == "length" and len(whole.tokens) == 12 and whole.text == words.decode(whole.tokens)
        stop = whole.text[len(whole.text) // 2:][:2]
        cut = generate_text(model, [ids], words, Sampling(max_new_tokens=12, stop=(stop,)), eos=())[0]
        assert cut.finish_reason == "stop" and cut.text == whole.text[:whole.text.index(stop)]
        assert cut.tokens == whole.tokens[:len(cut.tokens)] and len(cut.tokens) < 12  # decoding ended there
    finally:
        model.close()


def test_a_seed_gives_the_same_tokens_again_and_greedy_stays_the_default(chat_export):
    model = load(chat_export["file"])
    try:
        prompts = [[5, 17, 93], [8, 1, 44, 120]]
        greedy = model.generate(prompts, 10, eos=())
        assert model.generate(prompts, 10, eos=(), temperature=0) == greedy == model.generate(prompts, 10, eos=())
        sampled = model.generate(prompts, 10, eos=(), temperature=1.0, seed=3)
        assert sampled == model.generate(prompts, 10, eos=(), temperature=1.0, seed=3) != greedy
        assert sampled != model.generate(prompts, 10, eos=(), temperature=1.0, seed=4)
        # prompt 1's draws are row 0's alone or in a batch
        assert model.generate(prompts[:1], 10, eos=(), temperature=1.0, seed=3)[0] == sampled[0]
        text = model.generate_text([{"role": "user", "content": "Hi"}], 8, temperature=0.7, seed=1)
        assert isinstance(text, str) and text == model.generate_text(CONVERSATIONS[0], 8, temperature=0.7, seed=1)
    finally:
        model.close()


def test_ptx_generate_chats_with_a_seed_alike_on_ort_cpu_and_openvino(chat_export):
    pytest.importorskip("openvino")
    args = ("generate", chat_export["file"], "--prompt", "Who are you?", "--chat", "--temperature", "0.7", "--seed",
            "1", "--max-new-tokens", "24", "--eos", "none")
    answers = {backend: ptx(*args, "--backend", backend) for backend in ("ort-cpu", "openvino")}
    for backend, done in answers.items():
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("prompt 1 (") and len(done.stdout) > 30, done.stdout
        assert f"on {backend}, sampled (temperature 0.7, seed 1)" in done.stderr
    assert answers["ort-cpu"].stdout == answers["openvino"].stdout
    other = ptx(*args[:-5], "2", "--max-new-tokens", "24", "--eos", "none")
    assert other.returncode == 0 and other.stdout != answers["ort-cpu"].stdout
    as_json = json.loads(ptx(*args, "--json").stdout)
    answer = as_json["prompts"][0]
    assert answer["finish_reason"] == "length" and len(answer["new_ids"]) == 24
    assert as_json["decoding"] == "sampled (temperature 0.7, seed 1)"
    assert answers["ort-cpu"].stdout.split(": ", 1)[1].rstrip("\n") == answer["text"]


@pytest.mark.parametrize("held", [(), ("--regex", "[a-z]{2,3}")])
def test_ptx_generate_with_text_imports_no_torch(chat_export, held):
    """Sampled, and held to a grammar (llguidance's mask): torch is never imported."""
    code = ("import sys\nfrom ptx.cli import main\n"
            f"sys.argv = ['ptx', 'generate', {str(chat_export['file'])!r}, '--prompt', 'Hi', '--chat', "
            f"'--temperature', '0.7', '--seed', '1', '--max-new-tokens', '4', *{held!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("prompt 1 (") and done.stdout.rstrip().endswith("False"), done.stdout


@pytest.mark.parametrize("args, want", [
    (("--prompt", "Hi", "--top-p", "-0.5"), "--top-p"),
    (("--prompt", "Hi", "--temperature", "-1"), "temperature -1.0: give a number at least 0"),
    (("--chat",), "--chat renders --prompt TEXT"),
    (("--prompt", "Hi", "--system", "x"), "--system is a chat's system message"),
    (("--prompt", "Hi", "--tokenizer", "/nonexistent"), "no tokenizer.json there"),
])
def test_bad_generate_options_are_one_line(chat_export, args, want):
    done = ptx("generate", chat_export["file"], *args)
    assert done.returncode == 2 and want in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_text_needs_a_tokenizer_beside_the_file_or_given(chat_export, tmp_path):
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(chat_export["file"].read_bytes())
    done = ptx("generate", alone, "--prompt", "Hi")
    assert done.returncode == 2 and "no tokenizer.json beside" in done.stderr
    done = ptx("generate", alone, "--prompt", "Hi", "--tokenizer", chat_export["folder"], "--max-new-tokens", "3")
    assert done.returncode == 0 and done.stdout.startswith("prompt 1 ("), done.stderr


def test_a_tokenizer_past_the_model_s_vocabulary_is_refused(tmp_path, chat_export):
    factory = tmp_path / "small.py"  # the chat model's shape with 64 tokens where its tokenizer has 320
    factory.write_text("from transformers import LlamaConfig, LlamaForCausalLM\n\ndef build():\n"
                       "    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, "
                       "num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))\n")
    done = ptx("export", "--module", f"{factory}:build", "--tokenizer", chat_export["folder"], "--out", tmp_path / "o",
               "--format", "onnx")
    assert done.returncode == 2 and "the tokenizer has" in done.stderr and "vocabulary 64" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()


def test_a_folder_whose_model_is_its_own_code_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Mine"], "auto_map": {"AutoModel": "m.Mine"}}))
    done = ptx("export", tmp_path, "--out", tmp_path / "out")
    assert done.returncode == 2 and "code of its own" in done.stderr and "--module" in done.stderr, done.stderr


def test_a_config_without_architectures_is_read_by_its_model_type_as_transformers_reads_it(tmp_path):
    """A hand-made config.json with a model_type and no "architectures" is the class transformers' Auto classes give
    it (a causal LM first), where it was refused as "the architecture none"; a model_type transformers does not know
    is one line that says what to add."""
    from ptx.export.pretrained import _architecture

    config = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 32, "vocab_size": 50}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert _architecture(tmp_path)[0] is transformers.LlamaForCausalLM
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    assert _architecture(tmp_path)[0] is transformers.T5ForConditionalGeneration
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llamaxx"}))
    done = ptx("export", tmp_path, "--out", tmp_path / "out")
    assert done.returncode == 2 and "names no architecture and its model_type 'llamaxx'" in done.stderr and \
        '"architectures"' in done.stderr, done.stderr


def test_a_broken_tokenizer_file_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TextError, match="not a tokenizer file tokenizers can read"):
        Text.open(tmp_path)


def test_a_folder_of_a_model_exported_without_its_cache_is_refused_in_one_line(tmp_path):
    """ptx export DIR exports a model that generates (a causal LM or an encoder-decoder); a BERT folder says how
    to export its forward pass."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32)).save_pretrained(
        str(tmp_path / "bert"))
    done = ptx("export", tmp_path / "bert", "--out", tmp_path / "out")
    assert done.returncode == 2 and "exports a model that generates, with its cache" in done.stderr, done.stderr
    assert "--module FILE.py:FACTORY" in done.stderr and not (tmp_path / "out").exists()


STORY = " ".join(text_models.CORPUS * 4)  # past the model's 128 positions once encoded: cut, and said


def test_verify_judges_every_row_on_a_user_s_text_at_every_position_and_names_where_a_row_parts(chat_export,
                                                                                                 tmp_path,
                                                                                                 monkeypatch):
    """`ptx verify FILE --text T`: the rows judged on the user's text (encoded with the tokenizer beside the file)
    instead of the recorded prompts, against the f32 file's own runtime's decoding of it, every position of the
    text's pass and 16 steps; a row whose pass parts from it after the text's 20th token fails naming position
    21; a reduced file cannot be its own reference, and --tokenizer without --text is one line."""
    from ptx.infer.model.target import Target
    from ptx.infer.verify import generation as verify_module

    from ptx.infer.runtime.openvino_runner import has_bf16

    story = tmp_path / "story.txt"
    story.write_text(STORY, encoding="utf-8")
    reduced = has_bf16()  # a reduced row where the CPU has one (an AVX2-only CPU: openvino's f32 row instead)
    done = ptx("verify", chat_export["file"], "--text", story, "--backends",
               "ort-cpu,openvino-bf16" if reduced else "ort-cpu,openvino")
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout
    room = text_models.POSITIONS - 16
    assert f"1 prompt ({room} tokens) x 16 steps" in said and "against ort-cpu's own decoding of story.txt" in said
    assert f"note: story.txt is" in said and f"its first {room} are judged" in said, said
    assert f"teacher-forced 1 prompt, {room - 1 + 16} positions ({room - 1} in the prompt, 16 steps)" + (
        ": top-1" if reduced else ", logits within") in said, said

    real = verify_module.judge_decoding

    def parting(run, *args, **kwargs):  # the pass right up to the text's 20th token, wrong after it
        def changed(feeds):
            out = dict(run(feeds))
            if feeds["input_ids"].shape[1] > 1:
                out["logits"] = out["logits"].copy()
                out["logits"][:, 20:-1] += 0.5
            return out
        return real(changed, *args, **kwargs)
    monkeypatch.setattr(verify_module, "judge_decoding", parting)
    ids = Text.of(chat_export["file"].parent).encode(STORY)
    report = verify_module.verify_generation(Target.of(chat_export["file"], verifying=True), ["ort-cpu", "openvino"],
                                             text=verify_module.UserText(ids, "story.txt"))
    assert report.exit_code() == 1 and "prompt 1 position 21: logits differ" in report.lines()[-1], report.lines()
    refused = ptx("verify", chat_export["file"], "--tokenizer", chat_export["file"].parent)
    assert refused.returncode == 2 and "--tokenizer encodes --text: add --text FILE" in refused.stderr
