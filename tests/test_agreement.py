"""The mission's suite: for every registered model, all backends agree at several batch sizes on
real data (lstm in its seq-first layout). CUDA backends join when a GPU is present."""
import numpy as np
import pytest

from conftest import GPU
from ptx.infer import load
from ptx.infer.preprocess import decisions, expected_output_shape, normalize, to_layout

BATCH_SIZES = (1, 2, 7, 64)
OTHERS = [("torchscript", "cpu"), ("ort-cpu", "cpu")] + (
    [("eager", "cuda"), ("torchscript", "cuda"), ("ort-cuda", "cuda")] if GPU else [])


@pytest.mark.parametrize("backend,device", OTHERS, ids=[f"{b}-{d}" for b, d in OTHERS])
def test_backends_agree_with_eager(runs, model_name, backend, device):
    root = runs.ready(model_name)
    eager = load(model_name, backend="eager", root=root)
    other = load(model_name, backend=backend, root=root, device=device)
    raw, _ = runs.test_samples(model_name, max(BATCH_SIZES))
    meta = eager.meta
    atol = meta["atol"] if device == "cpu" else 1e-3  # cuDNN/TF32 kernels round differently from the CPU
    for batch in BATCH_SIZES:
        x = to_layout(normalize(raw[:batch], meta), meta)
        want, got = eager.predict_array(x), other.predict_array(x)
        assert got.shape == want.shape == expected_output_shape(meta, x)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"{backend} batch {batch}")
        if decisions(want, meta) is not None:  # argmax, or the 0.5 threshold of a binary model
            assert np.array_equal(decisions(got, meta), decisions(want, meta)), f"{backend} batch {batch}: label differs"


def text_models():
    from ptx.models import get, list_models

    return [n for n in list_models() if get(n).input.kind == "text"]


@pytest.mark.parametrize("name", text_models())
@pytest.mark.parametrize("backend", ["eager", "torchscript", "ort-cpu"])
def test_words_of_different_lengths_get_the_same_answer_alone_or_batched(runs, name, backend):
    """Padding a short word into a batch of long ones must not change its answer (packed GRU)."""
    predictor = load(name, backend=backend, root=runs.ready(name))
    vocab = predictor.meta["vocab"] or "abcdefghijklmnopqrstuvwxyzéü"
    words = [vocab[i % len(vocab)] * n + vocab[(i + 1) % len(vocab)] for i, n in enumerate((1, 4, 2, 9, 3))]
    together = predictor.predict(words)
    for word, batched in zip(words, together):
        alone = predictor.predict([word])[0]
        assert alone.label_name == batched.label_name
        np.testing.assert_allclose(alone.logits, batched.logits, atol=1e-5)
