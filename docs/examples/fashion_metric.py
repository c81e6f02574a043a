"""A metric of your own for `ptx export FILE.onnx --format onnx-int8|openvino-int8 --max-drop X
--metric docs/examples/fashion_metric.py:accuracy` (docs/own-model.md, "A bound on your own metric").

ptx calls ``accuracy(run)`` once for the f32 file and once for every int8 candidate it tries;
``run({input name: array}) -> {output name: array}`` runs that model. The function feeds your own data
and scores your own labels, and returns one number, higher is better: here the top-1 accuracy, in
percent, on the first 2,000 of Fashion-MNIST's 10,000 test pictures (Debian's dataset-fashion-mnist,
which scripts/setup.sh installs), so --max-drop 0.5 means half a percentage point.
"""
import gzip

import numpy as np

FOLDER = "/usr/share/datasets/fashion-mnist"
COUNT = 2000


def _idx(name: str, header: int) -> np.ndarray:
    """An IDX file's values after its header (16 bytes for pictures, 8 for labels)."""
    with gzip.open(f"{FOLDER}/{name}", "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8)[header:]


PICTURES = (_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)[:COUNT] / 255.0).astype(np.float32)
LABELS = _idx("t10k-labels-idx1-ubyte.gz", 8)[:COUNT]


def accuracy(run) -> float:
    """Percent of the pictures whose highest score is their label."""
    scores = run({"input": PICTURES})["logits"]
    return 100.0 * float((scores.argmax(axis=1) == LABELS).mean())
