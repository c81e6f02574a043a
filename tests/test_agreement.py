"""The mission's suite: for every registered model, every backend of the registry agrees with
eager at several batch sizes on real data (lstm in its seq-first layout), under the one agreement
rule (ptx.contract.compare). CUDA pairs join when this machine can run them."""
import numpy as np
import pytest

from conftest import PT2_MODELS, outputs, skip_if_torch_loader_crashes
from ptx.contract import compare
from ptx.contract.transforms import to_model_input
from ptx.export.formats import default_formats
from ptx.infer import backends, load
from ptx.infer.verify.verify import reference_device

BATCH_SIZES = (1, 2, 7, 64)
# CUDA pairs carry the gpu mark: `pytest -m gpu` runs the agreement suite on the GPU alone.
OTHERS = [pytest.param(b.name, d, id=f"{b.name}-{d}", marks=[pytest.mark.gpu] if d == "cuda" else [])
          for b, d in backends.pairs() if (b.name, d) != ("eager", "cpu")]


@pytest.mark.parametrize("backend,device", OTHERS)
def test_backends_agree_with_eager(runs, model_name, backend, device):
    # ptx verify's rule: eager on the same device, or on the CPU for a torch-free backend (ort-cuda)
    # next to a CPU-only torch.
    why = backends.get(backend).unavailable(device)
    ref_device = None if why else reference_device(backends.get(backend), device)
    if ref_device is None:
        pytest.skip(f"{backend} on {device}: {why or backends.get('eager').unavailable(device)}")
    root = runs.ready(model_name)
    artifact = backends.get(backend).artifact
    if artifact not in default_formats() and artifact != "checkpoint":  # written on request only (pt2)
        if model_name not in PT2_MODELS:
            pytest.skip(f"{artifact} is compiled in tests for {', '.join(PT2_MODELS)} only (~40 s a model)")
        with skip_if_torch_loader_crashes(device):  # torch 2.11's loader crash on CUDA is a skip, with its line
            root = runs.with_pt2(model_name, device).parent  # compiled for the device it is tested on
    eager = load(model_name, backend="eager", root=root, device=ref_device)
    other = load(model_name, backend=backend, root=root, device=device)
    raw, _ = runs.test_samples(model_name, max(BATCH_SIZES))
    contract = eager.contract
    for batch in BATCH_SIZES:
        x = to_model_input(raw[:batch], contract)
        want, got = outputs(eager, x), outputs(other, x)
        promised = contract.signature.output_shapes({contract.input.name: x})[contract.output.name]
        assert got.shape == want.shape == promised
        result = compare(got, want, contract, device=device)
        assert result.ok, f"{backend} batch {batch}: {result.failures}"


def text_models():
    from ptx.models import get, list_models

    return [n for n in list_models() if get(n).kind == "text"]


@pytest.mark.parametrize("name", text_models())
@pytest.mark.parametrize("backend", ["eager", "torchscript", "ort-cpu", "openvino"])
def test_words_of_different_lengths_get_the_same_answer_alone_or_batched(runs, name, backend):
    """Batching a short word with long ones must not change its answer (packed GRU; rnn-hello,
    which has no padding token, is batched by length)."""
    why = backends.get(backend).unavailable("cpu")
    if why:
        pytest.skip(f"{backend}: {why}")
    predictor = load(name, backend=backend, root=runs.ready(name))
    encoding = predictor.contract.encoding
    alphabet = encoding.vocab or "abcdefghijklmnopqrstuvwxyzéü"
    words = [alphabet[i % len(alphabet)] * n + alphabet[(i + 1) % len(alphabet)] for i, n in enumerate((1, 4, 2, 9, 3))]
    together = predictor.predict(words)
    for word, batched in zip(words, together):
        alone = predictor.predict([word])[0]
        assert alone.label_name == batched.label_name
        np.testing.assert_allclose(alone.logits, batched.logits, atol=1e-5)
