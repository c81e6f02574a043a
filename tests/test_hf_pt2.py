"""pt2 packages of Hugging Face transformers' own classes (issue 58: GPT-2 with its cache on, BERT
with attention_mask and token_type_ids, ViT, T5's encoder; tests/hf_models.py), each through export,
verify, predict, bench and serve, with answers equal to eager PyTorch's and to a bare
aoti_load_package call's. A package whose outputs are a ModelOutput records transformers' module
and loads in a fresh process. AOTInductor compiles C++ for each (~20 s a model on 2 cores): this
file is apart from tests/test_hf_models.py so that pytest-xdist's --dist loadfile gives the compiles
a worker of their own."""
from __future__ import annotations

import subprocess
import sys
import urllib.error

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

import torch  # noqa: E402

import serving  # noqa: E402
from hf_models import TIMEOUT, Exports, cli, eager, first_case, ptx, served_answer  # noqa: E402
from ptx.errors import InputError  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.pytree_types import recorded_modules  # noqa: E402

NAMES = ["gpt2", "bert", "vit", "t5"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("hf_pt2"), ["pt2"])


def bare(folder, feeds):
    """The package called as torch gives it (transformers is imported in this process, so its
    output types are registered), with the inputs in forward()'s order: a flat list of tensors."""
    package = torch._inductor.aoti_load_package(str(folder / "model.pt2"))
    out = package(*(torch.from_numpy(v) for v in feeds.values()))
    return [t.numpy() for t in torch.utils._pytree.tree_leaves(out)]


@pytest.mark.parametrize("name", NAMES)
def test_each_pt2_answers_as_eager_and_a_bare_package_call(exports, name, tmp_path):
    folder, said = exports[name]
    assert "model.pt2" in said and "shape certificate: holds" in said, said
    case = first_case(folder)
    want = eager(name, tmp_path, case.feeds)
    got = load(folder / "model.pt2").run(case.feeds)
    assert got and set(got) <= set(want)
    for output, value in got.items():
        np.testing.assert_allclose(value, want[output], atol=1e-4, rtol=1e-3, err_msg=output)
    for value, output in zip(bare(folder, case.feeds), got):
        np.testing.assert_array_equal(value, got[output])


def test_a_pt2_of_a_model_output_records_transformers_and_loads_in_a_fresh_process(exports):
    """Issue 58, 4: the package named transformers.modeling_outputs' types in its pytree spec, and
    `ptx verify model.pt2` failed where transformers was not imported; the module is recorded at
    export and imported at load."""
    folder, _ = exports["bert"]
    assert recorded_modules(folder / "model.pt2") == ["transformers.modeling_outputs"]
    bare = subprocess.run([sys.executable, "-c", "import sys, torch; m = torch._inductor.aoti_load_package(sys.argv[1]); "
                           "x = torch.ones(3, 8, dtype=torch.int64); m(x, x, x)", folder / "model.pt2"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert "in pytree is not registered" in bare.stderr  # what ptx's load prevents: the bare call's failure
    done = ptx("verify", folder / "model.pt2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout and "not registered" not in done.stdout + done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_verify_predict_and_bench_take_each_pt2(exports, name, tmp_path):
    folder, _ = exports[name]
    assert "PASS" in cli("verify", folder / "model.pt2")
    case = first_case(folder)
    np.savez(tmp_path / "in.npz", **case.feeds)
    cli("predict", "--model", folder / "model.pt2", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    predicted = np.load(tmp_path / "out.npz")
    got = load(folder / "model.pt2").run(case.feeds)
    assert sorted(predicted.files) == sorted(got)
    for output, value in got.items():
        np.testing.assert_array_equal(predicted[output], value)
        np.testing.assert_allclose(predicted[output], case.outputs[output], atol=1e-4, rtol=1e-3)
    assert "aoti" in cli("bench", folder / "model.pt2", "--batch-sizes", "2", "--seconds", "0.2", "--rounds", "1")


def test_serve_answers_as_the_package(exports, tmp_path):
    files = []
    for name in NAMES:  # served by the file's name (each export's is model.pt2)
        files.append(tmp_path / f"{name}.pt2")
        files[-1].write_bytes((exports[name][0] / "model.pt2").read_bytes())
    with serving.running(tmp_path, *files) as server:
        for name, path in zip(NAMES, files):
            case = first_case(exports[name][0])
            answer = served_answer(server.url, name, case.feeds)
            for output, want in load(path).run(case.feeds).items():
                got = np.array(answer[output]["data"], want.dtype).reshape(want.shape)
                np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6, err_msg=f"{name} {output}")
                np.testing.assert_allclose(got, case.outputs[output], atol=1e-4, rtol=1e-3)
        with pytest.raises(urllib.error.HTTPError) as refused:  # past BERT's 64 positions: a 400, not an answer
            served_answer(server.url, "bert", past_the_bound(first_case(exports["bert"][0]).feeds))
        assert refused.value.code == 400 and "takes seq up to 64" in refused.value.read().decode()


def past_the_bound(feeds: dict, seq: int = 65) -> dict:
    """``feeds`` (ids of shape [batch, seq]) tiled out to ``seq`` positions."""
    return {k: np.resize(v, (v.shape[0], seq)) for k, v in feeds.items()}


def test_a_pt2_refuses_a_size_past_the_models_own_bound(exports, tmp_path):
    """Issue 58: BERT's package answered a sequence of 65 from past the end of its 64-position table,
    where eager and the ONNX file raise. torch.export's range is recorded with the signature, and every
    command and load() refuse a larger size in one line; T5 (relative positions) is bounded nowhere."""
    folder, said = exports["bert"]
    assert "the model bounds seq up to 64 (torch.export found it)" in said, said
    # the embedding by the user's own module path, not the keyword wrapper's (module.embeddings...)
    assert "(rows of the embedding embeddings.word_embeddings)" in said, said
    package = folder / "model.pt2"
    model = load(package)
    assert model.signature.limits == (("seq", 64),)
    feeds = first_case(folder).feeds
    assert model.run(past_the_bound(feeds, 64))["last_hidden_state"].shape[1] == 64  # the bound itself runs
    with pytest.raises(InputError, match="has seq=65; the model takes seq up to 64"):
        model.run(past_the_bound(feeds))
    np.savez(tmp_path / "long.npz", **past_the_bound(feeds))
    predicted = ptx("predict", "--model", package, tmp_path / "long.npz")
    assert predicted.returncode == 2 and predicted.stderr.count("\n") == 1, predicted.stderr
    assert "long.npz has seq=65; the model takes seq up to 64" in predicted.stderr
    checked = ptx("verify", package, "--max-shape", "seq=100")
    assert checked.returncode == 2 and checked.stderr.splitlines()[-1] == (
        "error: --max-shape seq=100: model.pt2 takes seq up to 64 (the model's own bound, recorded at export): "
        "give at most 64"), checked.stderr
    assert "seq up to 64: the model's own bound" in cli("inspect", package)
    assert load(exports["t5"][0] / "model.pt2").signature.limits == ()
