"""Encoder-decoders generate with their cache (T5, BART, Whisper from tiny configs, random weights): the
default `ptx export --module` writes an encoder file beside the decoder file with its cache; their greedy
tokens through ort-cpu and openvino equal transformers' own generate(do_sample=False) for three inputs x 32
tokens, alone and in one batch (Whisper from 80-bin features); ptx verify, ptx generate (ids, or a .npy of
features), ptx bench --generate (the encoder timed apart) and serve's generate read the pair; a decoder
whose traced decoding is not the model's, or an encoder file that is not its own, is refused in one line.
One export per family, shared by the module, in-process and with the TorchScript-based ONNX exporter (the
torch.export-based one, the CLI's default, takes minutes for the three on 2 cores: the default's task is
tests/test_task_choice.py's, the exporters' agreement the ONNX format's own tests')."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from ptx_command import ptx_ok as ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.contract.generation import Encoder, Generation, encoder_file_name  # noqa: E402
from ptx.contract.tensors import Signature, TensorSig  # noqa: E402
from ptx.errors import ArtifactError, InputError, PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.infer.model.encoder_decoding import EncoderDecoding  # noqa: E402
from ptx.infer.model.generation import GREEDY  # noqa: E402

NEW_TOKENS = 32
# Tiny configs (2 layers, width 32) with weights wide enough that greedy choices are no near-ties (T5's default
# initializer makes a random tiny one choose its padding id forever; T5 v1.1's gated-GELU (flan-T5's) varies its
# tokens where the first T5's ReLU repeats one, and keeps bf16's choices, which verify judges too).
FACTORIES = {
    "t5": """
import torch
from transformers import T5Config, T5ForConditionalGeneration

def build():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                               decoder_start_token_id=0, initializer_factor=8.0,
                                               feed_forward_proj="gated-gelu")).eval()
""",
    # BART's config forces its end-of-sequence id at the last step generate() allows: ptx's decoding does too
    "bart": """
import torch
from transformers import BartConfig, BartForConditionalGeneration

def build():
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                                                   init_std=0.3)).eval()
""",
    # 80 mel bins; the encoder takes exactly 2 x max_source_positions frames
    "whisper": """
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

def build():
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=30,
        max_target_positions=64, decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        init_std=0.3)).eval()
""",
}
# What a user declared when these exported their forward pass (the names are the encoder's and decoder's)
DECLARED = {"t5": ["input_ids=batchxseq:int64", "decoder_input_ids=batchxdseq:int64"],
            "bart": ["input_ids=batchxseq:int64", "decoder_input_ids=batchxdseq:int64"],
            "whisper": ["input_features=batchx80x60", "decoder_input_ids=batchxdseq:int64"]}
SOURCES = [[5, 17, 93, 4], [8, 44, 12, 7, 3, 9, 60, 2, 11], [99, 4, 31, 70, 12, 6]]


def features(count=3, seed=5):
    return np.random.default_rng(seed).standard_normal((count, 80, 60)).astype(np.float32)


def inputs(name):
    return features() if name == "whisper" else SOURCES


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    root = tmp_path_factory.mktemp("factories")
    for name, text in FACTORIES.items():
        (root / f"{name}.py").write_text(text)
    return root


@pytest.fixture(scope="module")
def exported(factories, tmp_path_factory):
    """Each family as `ptx export --module` exports it by default (the inputs declared as they were for its
    forward pass), in-process: its ONNX file, and BART's TorchScript file too (written first: a TorchScript
    trace after the TorchScript-based ONNX exporter's, in one process, parts from eager and is not kept)."""
    from ptx.export.module import export_module

    root = tmp_path_factory.mktemp("exported")
    done = {}
    for name in FACTORIES:
        lines: list[str] = []
        export_module(load_factory(f"{factories / name}.py:build").module, None, root / name, inputs=DECLARED[name],
                      formats=[*(["torchscript"] if name == "bart" else []), "onnx"], exporter="legacy",
                      log=lines.append)
        done[name] = (root / name / "model.onnx", lines)
    return done


@functools.cache
def built(name: str):
    """The family's model as its factory builds it."""
    import importlib.util

    spec = importlib.util.spec_from_loader(f"factory_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(FACTORIES[name], module.__dict__)  # noqa: S102 - the test's own factory text
    return module.build()


@functools.cache
def eager_generate(name: str, row: int) -> list[int]:
    """transformers' own generate(do_sample=False) of one input, its new tokens up to and with an end id."""
    model = built(name)
    given = ({"input_features": torch.from_numpy(features()[row:row + 1])} if name == "whisper" else
             {"input_ids": torch.tensor([SOURCES[row]])})
    with torch.no_grad():
        out = model.generate(**given, max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True,
                             output_logits=True)
    tokens = out.sequences[0, out.sequences.shape[1] - len(out.logits):].tolist()
    eos = model.generation_config.eos_token_id
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.mark.parametrize("name", FACTORIES)
def test_the_default_export_writes_the_encoder_beside_the_decoder_with_its_cache(exported, name):
    path, lines = exported[name]
    said = "\n".join(lines)
    assert lines[0].startswith("task: text2text-generation (") and "the encoder and the decoder are exported" in lines[0]
    assert "generate(): greedy, 3 sources, up to 16 tokens each: eager's decoder with its cache gives transformers " \
        in said and "generate(do_sample=False): the same tokens" in said, said
    onnx_line = next(ln for ln in lines if ln.startswith("onnx "))
    assert "model.onnx + encoder.onnx" in onnx_line and "greedy tokens: 48 of 48" in onnx_line, onnx_line
    if name == "bart":
        ts_line = next(ln for ln in lines if ln.startswith("torchscript "))
        assert "model.torchscript.pt + encoder.torchscript.pt" in ts_line, ts_line
    with load(path) as model:
        generation = model.generation
        part = generation.encoder
        assert part.file == "encoder.onnx" and len(part.cross) == 4 and generation.attention_mask is None
        assert model.signature.input_names[0] == "decoder_input_ids"
        assert "past_key_values.1.encoder.value" in model.signature.input_names
        assert "present.1.decoder.value" in model.signature.output_names
        assert model.encoder.signature.output_names[0] == "last_hidden_state"
        assert (part.decoder_mask is None) == (name == "whisper") and part.features == (name == "whisper")
        assert generation.forced_eos == (2 if name == "bart" else None)


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
@pytest.mark.parametrize("name", FACTORIES)
def test_greedy_tokens_equal_transformers_generate_alone_and_batched(exported, name, backend):
    """The acceptance: three inputs, 32 new tokens, token for token as eager generate(), each alone and the
    three in one batch (ids of different lengths right-padded)."""
    want = [eager_generate(name, k) for k in range(3)]
    given = inputs(name)
    with load(exported[name][0], backend=backend) as model:
        assert [model.generate(given[k:k + 1], max_new_tokens=NEW_TOKENS)[0] for k in range(3)] == want
        assert model.generate(given, max_new_tokens=NEW_TOKENS) == want


def test_sampling_draws_the_same_tokens_on_both_runtimes(exported):
    taken = []
    for backend in ("ort-cpu", "openvino"):
        with load(exported["bart"][0], backend=backend) as model:
            taken.append(model.generate(SOURCES, max_new_tokens=12, temperature=0.8, top_k=20, seed=3, eos=()))
    assert taken[0] == taken[1] and taken[0] != load(exported["bart"][0]).generate(SOURCES, max_new_tokens=12, eos=())


@pytest.mark.parametrize("name", FACTORIES)
def test_verify_judges_the_pair_teacher_forced_and_exits_0(exported, name):
    done = ptx("verify", exported[name][0], "--backends", "ort-cpu,openvino")
    assert done.stdout.splitlines()[-1].startswith("OK: "), done.stdout  # openvino-bf16 too, where the CPU has it
    for row in ("ort-cpu", "openvino"):
        line = done.stdout.split(f"  {row} ")[1].splitlines()[0]
        assert "PASS        teacher-forced 3 prompts x 16 steps" in line and "own tokens: 48 of 48" in line, done.stdout
    given = "3 inputs of features 80x60" if name == "whisper" else "3 prompts (3, 7, 12 tokens)"
    assert f"greedy generation, {given} x 16 steps" in done.stdout, done.stdout


def test_verify_fails_a_pair_whose_cross_attention_past_is_mis_wired(exported, tmp_path):
    """The planted fault on the file: the contract feeds each layer's cross-attention key as its value and the
    value as its key (the tensors' shapes agree, so only the tokens can tell); the files as exported pass
    (test_verify_judges_the_pair_teacher_forced_and_exits_0)."""
    import shutil

    import onnx

    folder = exported["bart"][0].parent
    for name in ("model.onnx", "encoder.onnx"):
        shutil.copy(folder / name, tmp_path / name)
    graph = onnx.load(tmp_path / "model.onnx")
    entry = next(p for p in graph.metadata_props if p.key == "ptx.generation")
    doc = json.loads(entry.value)
    doc["encoder"]["cross"] = [[out, fed.replace(".key", ".tmp").replace(".value", ".key").replace(".tmp", ".value")]
                               for out, fed in doc["encoder"]["cross"]]
    entry.value = json.dumps(doc)
    onnx.save(graph, tmp_path / "model.onnx")
    done = ptx("verify", tmp_path / "model.onnx", "--backends", "ort-cpu", check=False)
    assert done.returncode == 1 and "  ort-cpu " in done.stdout and "FAIL" in done.stdout, done.stdout + done.stderr


def test_ptx_generate_takes_ids_and_a_feature_file(exported, tmp_path):
    done = ptx("generate", exported["t5"][0], *[a for s in SOURCES for a in ("--ids", ",".join(map(str, s)))],
               "--json")
    doc = json.loads(done.stdout)
    assert [p["new_ids"] for p in doc["prompts"]] == [eager_generate("t5", k) for k in range(3)]
    assert doc["encoder_ms"] > 0 and doc["prefill_ms"] > 0
    np.save(tmp_path / "mel.npy", features()[1])  # one item, without its batch axis
    done = ptx("generate", exported["whisper"][0], "--features", tmp_path / "mel.npy")
    assert done.stdout.strip() == f"input 1 (features 80x60): {' '.join(map(str, eager_generate('whisper', 1)))}"
    assert "the encoder in" in done.stderr
    wrong = ptx("generate", exported["whisper"][0], "--ids", "1,2", check=False)
    assert wrong.returncode == 2 and "whose encoder reads features: give --features FILE.npy (an array [80, 60])" \
        in wrong.stderr, wrong.stderr
    wrong = ptx("generate", exported["bart"][0], "--features", tmp_path / "mel.npy", check=False)
    assert wrong.returncode == 2 and "takes token ids: give --ids or --prompt" in wrong.stderr, wrong.stderr


def test_bench_generate_times_the_encoder_apart(exported):
    done = ptx("bench", exported["whisper"][0], "--generate", "8", "--backends", "ort-cpu", "--rounds", "1", "--json")
    row = json.loads(done.stdout)["rows"][0]
    assert row["runner"] == "ort-cpu" and row["encoder_ms"] > 0 and row["decode_ms_per_token"] > 0
    text = ptx("bench", exported["t5"][0], "--generate", "4", "--backends", "ort-cpu", "--rounds", "1").stdout
    assert "a seeded source of 32 tokens" in text and "encoder ms  prefill ms" in text, text


def test_serve_generates_from_source_ids_and_from_features(exported, tmp_path):
    import urllib.request

    import serving

    def post(server, model, body):
        request = urllib.request.Request(f"{server.url}/v2/models/{model}/generate", data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    with serving.running(tmp_path, exported["t5"][0], exported["whisper"][0],
                         args=("--name", "t5", "--name", "whisper")) as server:
        got = post(server, "t5", {"input_ids": SOURCES, "max_tokens": NEW_TOKENS})
        assert got["output_ids"] == [eager_generate("t5", k) for k in range(3)]
        got = post(server, "whisper", {"input_features": features()[0].tolist(), "max_tokens": NEW_TOKENS})
        assert got["output_ids"] == eager_generate("whisper", 0)


def test_inputs_the_encoder_does_not_take_are_one_line_each(exported):
    with load(exported["whisper"][0]) as model:
        with pytest.raises(InputError, match=r"input_features of shape \[3, 80, 59\]: the encoder takes \[batch, 80, 60\]"):
            model.generate(features()[:, :, :59], max_new_tokens=2)
        with pytest.raises(InputError, match="NaN"):
            model.generate(np.full((80, 60), np.nan, dtype=np.float32), max_new_tokens=2)
    with load(exported["t5"][0]) as model:
        with pytest.raises(InputError, match="not a float array"):
            model.generate(features(), max_new_tokens=2)
        with pytest.raises(InputError, match="outside the vocabulary"):
            model.generate([[5, 100]], max_new_tokens=2)
    with load(exported["bart"][0]) as model:
        with pytest.raises(InputError, match="a source of 65 tokens: the encoder has 64 positions"):
            model.generate([[5] * 65], max_new_tokens=2)
        with pytest.raises(InputError, match="need 65 positions; the model has 64: ask for at most 63 new tokens"):
            model.generate(SOURCES, max_new_tokens=64)


def test_an_encoder_file_not_beside_or_not_its_own_is_refused_in_one_line(exported, tmp_path):
    import shutil

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(exported["t5"][0], alone / "model.onnx")
    with pytest.raises(PtxError, match="its encoder, encoder.onnx, is not beside it"):
        load(alone / "model.onnx")
    shutil.copy(exported["whisper"][0].parent / "encoder.onnx", alone / "encoder.onnx")  # another model's encoder
    with pytest.raises(ArtifactError, match="encoder.onnx is not the encoder model.onnx names: it lacks input_ids"):
        load(alone / "model.onnx")


def test_a_decoder_whose_traced_decoding_is_not_the_model_s_is_refused_before_any_file(factories, tmp_path,
                                                                                        monkeypatch):
    """The planted fault: the cross-attention keys and values fed swapped (what a wrong layout would do) part
    from generate() at once; the model as it is passes (the fixture's exports)."""
    from ptx.export import seq2seq
    from ptx.export.module import export_module

    plain = seq2seq.CachedSeq2SeqDecoder.forward

    def swapped(self, ids, *rest):
        mask, past = (rest[0], list(rest[1:])) if self.takes_mask else (None, list(rest))
        for i in range(self.layers):
            past[4 * i + 2], past[4 * i + 3] = past[4 * i + 3], past[4 * i + 2]
        return plain(self, ids, *([mask] if self.takes_mask else []), *past)

    monkeypatch.setattr(seq2seq.CachedSeq2SeqDecoder, "forward", swapped)
    module = load_factory(f"{factories / 'bart'}.py:build").module
    with pytest.raises(PtxError, match=r"^--task text2text-generation: BartForConditionalGeneration's decoder with its "
                                       r"cache does not decode as its generate\(do_sample=False\) does: source \d+ step \d+: eager's "
                                       r"logits put \d+ above generate\(\)'s \d+ by .* \(a near-tie is within"):
        export_module(module, None, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_all_logits_of_an_encoder_decoder_exports_its_decoder_as_it_is(factories, tmp_path):
    """An encoder-decoder's decoder computes every position's logits whatever is asked: --all-logits changes
    nothing (it raised a TypeError from the export's source)."""
    from ptx.export.module import export_module

    module = load_factory(f"{factories / 'bart'}.py:build").module
    export_module(module, None, tmp_path / "out", formats=["onnx"], all_logits=True, log=lambda _: None)
    with load(tmp_path / "out" / "model.onnx") as model:
        assert "logits_to_keep" not in model.signature.input_names and model.generation.encoder is not None


def test_the_tasks_say_which_kind_takes_which(factories):
    module = load_factory(f"{factories / 'bart'}.py:build").module
    from ptx.export.seq2seq import chosen_task

    with pytest.raises(PtxError, match="^--task text-generation: BartForConditionalGeneration is an encoder-decoder: "
                                       "give --task text2text-generation"):
        chosen_task(module, "text-generation", print)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2,
                                                                 n_head=2))
    with pytest.raises(PtxError, match="^--task text2text-generation: GPT2LMHeadModel is not an encoder-decoder: give "
                                       "--task text-generation"):
        chosen_task(gpt2, "text2text-generation", print)
    assert chosen_task(module, "forward", print) == "forward"  # its forward pass, as before (docs/own-model.md)


# -- the decoding's own rules, on a toy encoder and decoder (numpy only) ---------------------------------------


def toy(forced_eos=None, suppress=(), begin_suppress=()):
    """A decoder whose logits favour (last id + 1) % 8, and an encoder whose cross past is the source's mask."""
    part = Encoder("encoder.onnx", (("cross", "past.cross"),), start=(0,))
    generation = Generation((("past", "present"),), input_ids="decoder_input_ids", attention_mask=None,
                            position_ids=None, eos=(7,), pad=0, suppress=tuple(suppress),
                            begin_suppress=tuple(begin_suppress), forced_eos=forced_eos, encoder=part)
    enc_sig = Signature((TensorSig("input_ids", "int64", ("batch", "source"), 0),
                         TensorSig("attention_mask", "int64", ("batch", "source"), 0)),
                        (TensorSig("cross", "float32", ("batch", 1, "source", 1), 0),))
    dec_sig = Signature((TensorSig("decoder_input_ids", "int64", ("batch", "seq"), 0),
                         TensorSig("encoder_attention_mask", "int64", ("batch", "source"), 0),
                         TensorSig("past", "float32", ("batch", 1, "past", 1), 0),
                         TensorSig("past.cross", "float32", ("batch", 1, "source", 1), 0)),
                        (TensorSig("logits", "float32", ("batch", "seq", 8), 0),
                         TensorSig("present", "float32", ("batch", 1, "total", 1), 0)))
    runs = {"encoder": 0}

    def encode(feeds):
        runs["encoder"] += 1
        return {"cross": feeds["attention_mask"][:, None, :, None].astype(np.float32)}

    def decode(feeds):
        ids = feeds["decoder_input_ids"]
        assert feeds["past.cross"].shape[2] == feeds["encoder_attention_mask"].shape[1]
        logits = np.zeros((*ids.shape, 8), dtype=np.float32)
        np.put_along_axis(logits, ((ids + 1) % 8)[..., None], 1.0, axis=-1)
        present = np.concatenate([feeds["past"], np.zeros((ids.shape[0], 1, ids.shape[1], 1), np.float32)], axis=2)
        return {"logits": logits, "present": present}

    return (encode, enc_sig, decode, dec_sig, generation), runs


def test_the_encoder_runs_once_at_the_first_step_and_its_time_is_said_apart():
    parts, runs = toy()
    decoding = EncoderDecoding(*parts, [[1, 2, 3], [4]], 5)
    assert runs["encoder"] == 0  # nothing runs that the caller did not pull
    decoded = decoding.to_end(GREEDY)
    assert runs["encoder"] == 1 and decoded.tokens == [[1, 2, 3, 4, 5]] * 2 and decoded.encode_s > 0


def test_forced_eos_ends_at_the_last_step_and_suppressed_ids_are_never_chosen():
    parts, _ = toy(forced_eos=7)
    assert EncoderDecoding(*parts, [[1]], 3).to_end(GREEDY).tokens == [[1, 2, 7]]  # as generate()'s ForcedEOS
    assert EncoderDecoding(*parts, [[1]], 3, eos=()).to_end(GREEDY).tokens == [[1, 2, 3]]  # every step: none forced
    parts, _ = toy(suppress=(2,), begin_suppress=(1,))
    tokens = EncoderDecoding(*parts, [[1]], 3).to_end(GREEDY).tokens[0]
    assert tokens[0] not in (1, 2) and 2 not in tokens
    assert EncoderDecoding(*toy()[0], [[1]], 3).to_end(GREEDY).tokens == [[1, 2, 3]]  # the legit case: as it chose


def test_decoder_prompts_of_two_lengths_in_one_batch_are_refused():
    parts, _ = toy()
    with pytest.raises(InputError, match="decoder prompts of 1, 2 tokens"):
        EncoderDecoding(*parts, [[1], [2]], 3, starts=[[0], [0, 1]])


def test_the_contract_keeps_its_encoder_and_a_causal_lm_s_is_as_before():
    parts, _ = toy(forced_eos=7, suppress=(2,))
    generation = parts[-1]
    again = Generation.from_json(generation.to_json(), "test")
    assert again == generation and again.encoder.cross == (("cross", "past.cross"),)
    causal = Generation((("past_key_values.0.key", "present.0.key"),))
    assert set(json.loads(causal.to_json())) == {"cache", "input_ids", "attention_mask", "position_ids", "logits",
                                                 "past_axis", "eos", "pad", "max_positions", "reference", "bounds"}
    assert encoder_file_name("model.torchscript.pt") == "encoder.torchscript.pt"
    assert encoder_file_name("t5.onnx") == "t5.encoder.onnx"


def test_serve_s_apart_batch_runs_each_request_s_own_steps_as_alone():
    """Requests whose cross-attention pasts differ in length (sources of 3 and 1 ids: one Batch could not merge
    them) each get the tokens they get alone; one that leaves runs no more steps, and a started one cannot join."""
    from ptx.infer.model.batch import Apart

    parts, runs = toy()
    alone = [EncoderDecoding(*parts, [s], 5).to_end(GREEDY).tokens[0] for s in ([1, 2, 3], [4])]
    apart = Apart()
    first, second, gone = (EncoderDecoding(*parts, [s], 5) for s in ([1, 2, 3], [4], [5, 6]))
    for decoding in (first, second, gone):
        decoding.append(GREEDY(apart.join(decoding).logits, decoding.history))
    assert apart.rows == 3 and runs["encoder"] == 2 + 3
    apart.leave(gone)
    while apart.rows and (steps := apart.step()):
        assert all(d is not gone for d, _ in steps)
        for decoding, step in steps:
            decoding.append(GREEDY(step.logits, decoding.history))
    assert [first.tokens[0], second.tokens[0]] == alone and len(gone.tokens[0]) == 1
    with pytest.raises(PtxError, match="before its first step"):
        apart.join(first)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_openvino_runs_the_decoder_s_attention_as_its_fused_operator_without_a_warning(exported, name):
    """The openvino runner's rewrite (infer/runtime/openvino_attention.py) takes each decoder layer's self- and
    cross-attention, and says nothing: it had warned on BART and Whisper (their cross-attention reads no cache
    variable, TorchScript's BART layer 0 its keys through a Concat of a Concat) and run all of it as written.
    The tokens are held to transformers' by the greedy test above on the same runner. T5's are left as written,
    said nowhere and right: its scores take two Adds (the position bias, then the mask), a layout the rewrite does
    not take."""
    import warnings

    pytest.importorskip("openvino")
    from ptx.infer import load

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load(exported[name][0], "openvino")
        model.runner.compiled_for({}, stateful=True)
    # 2 layers: self- and cross-attention in BART; Whisper's cross-attention is not a layout the rewrite takes
    assert model.runner.attention_fused == {"t5": 0, "bart": 4, "whisper": 2}[name]
