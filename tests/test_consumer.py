"""A stranger's consumer: docs/artifact-format.md followed with onnxruntime + numpy alone.

For every registered model, real test samples are written out as a user would hand them to
`ptx predict --raw` (28x28 PNGs, numbers, CSV rows, words); ptx predicts them, and a separate
Python process that imports only onnx, onnxruntime, numpy and Pillow (never ptx, never torch)
reads model.onnx's metadata, re-implements the documented preprocessing, batching and decision
rule, and must give the same answers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from ptx.contract import InputKind
from ptx.models import get

N_SAMPLES = 12
CLOSE = 1e-4  # probabilities and regression values: the same runtime on the same numbers

# Written from docs/artifact-format.md only: argv[1] is model.onnx, argv[2] a JSON list of the inputs
# (PNG paths, numbers as strings, a CSV file of feature rows, or words). Prints a JSON list of answers.
CONSUMER_CODE = textwrap.dedent('''
    import hashlib
    import json
    import sys

    import numpy as np
    import onnx
    import onnxruntime as ort
    from PIL import Image

    path, inputs = sys.argv[1], json.loads(sys.argv[2])

    # -- metadata: ptx.* string keys; the contract is one JSON document ----------------------------
    strings = {p.key[len("ptx."):]: p.value for p in onnx.load(path).metadata_props if p.key.startswith("ptx.")}
    contract = json.loads(strings["contract"])
    assert contract["schema_version"] == 1, contract["schema_version"]
    labels = strings["labels"].split("\\n") if strings["labels"] else []

    # -- integrity: one short SHA-256 per field of the whole contract --------------------------------
    full = dict(contract, model=strings["model"], description=strings.get("description", ""), labels=labels)
    full.setdefault("features", [])
    sums = {}
    for key, value in full.items():
        if isinstance(value, dict) and value:
            parts = {key + "." + sub: v for sub, v in value.items()}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            parts = {key + "[" + str(i) + "]": v for i, v in enumerate(value)}
        else:
            parts = {key: value}
        for field, v in parts.items():
            canonical = json.dumps(v, sort_keys=True, separators=(",", ":"))
            sums[field] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    stored = json.loads(strings["checksums"])
    assert sums == stored, sorted(k for k in set(sums) | set(stored) if sums.get(k) != stored.get(k))

    task, kind = contract["task"], contract["kind"]
    inp, out = contract["input"], contract["output"]
    steps = contract["preprocessing"]
    encode = next((s for s in steps if s["op"] == "encode"), None)
    picture = next((s for s in steps if s["op"] == "picture"), None)
    sample_shape = [-1 if d == "seq" else d for d in inp["shape"] if d != "batch"]
    batch_axis = inp["shape"].index("batch")

    # -- inputs -> raw samples, as the dataset holds them --------------------------------------------
    def raw_sample(item):
        if kind == "image":  # already canvas x canvas (the picture step is what --raw skips)
            pixels = np.asarray(Image.open(item).convert("L"), dtype=np.uint8)
            canvas = picture["params"]["canvas"]
            assert pixels.shape == (canvas, canvas), pixels.shape
            return pixels
        if kind in ("number", "vector"):
            values = np.array([float(v) for v in item.split(",")], dtype=np.float32)
            assert values.size == len(contract["features"]), (item, contract["features"])
            return values
        if encode["encoding"] == "vocab":
            return np.array([encode["vocab"].index(c) for c in item], dtype=np.int64)
        return np.array([ord(c) if ord(c) < 256 else encode["unknown_id"] for c in item], dtype=np.int64)

    items = []
    for item in inputs:
        if kind == "vector" and item.endswith(".csv"):
            rows = [line.strip() for line in open(item) if line.strip()]
            items += rows
        else:
            items.append(item)
    samples = [raw_sample(item) for item in items]

    # -- batching: token sequences of different lengths share a batch only when there is a pad id ---
    if encode is not None and encode["pad_id"] is None:
        groups = {}
        for i, s in enumerate(samples):
            groups.setdefault(len(s), []).append(i)
        groups = list(groups.values())
    else:
        groups = [list(range(len(samples)))]

    def model_input(batch):
        """(N, *raw sample) -> the input tensor: tensor steps, sample shape, batch axis."""
        if encode is not None:
            x = batch.astype(np.int64)
        else:
            x = batch.astype(np.float32)
            for step in steps:
                if step["op"] == "scale":
                    x = x * np.float32(step["factor"])
                elif step["op"] == "normalize":  # one value, or one per feature (the last axis)
                    x = (x - np.asarray(step["mean"], dtype=np.float32)) / np.asarray(step["std"], dtype=np.float32)
                elif step["op"] == "pad":  # zeros around the picture, after normalisation
                    p = step["pixels"]
                    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
        x = x.reshape(len(x), *sample_shape)
        return np.ascontiguousarray(np.moveaxis(x, 0, batch_axis), dtype=inp["dtype"])

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == inp["name"] and session.get_outputs()[0].name == out["name"]
    answers = [None] * len(samples)
    for group in groups:
        members = [samples[i] for i in group]
        longest = max(len(s) for s in members)
        if encode is not None and encode["pad_id"] is not None:  # pad at the end with the pad id
            members = [np.pad(s, (0, longest - len(s)), constant_values=encode["pad_id"]) for s in members]
        outputs = session.run([out["name"]], {inp["name"]: model_input(np.stack(members))})[0]
        assert outputs.shape[0] == len(group), outputs.shape  # the output's batch axis is always first
        for i, row in zip(group, outputs):
            answer = {"input": items[i], "logits": row.astype(float).tolist()}
            if "seq" in out["shape"]:  # one label per position: the answer is a string
                length = len(samples[i])
                e = np.exp(row[:length] - row[:length].max(-1, keepdims=True))
                p = e / e.sum(-1, keepdims=True)
                answer["logits"] = row[:length].astype(float).tolist()
                answer["label_name"] = "".join(labels[j] for j in p.argmax(-1))
                answer["probability"] = float(p.max(-1).min())
            elif task == "classification":
                e = np.exp(row - row.max())
                p = e / e.sum()
                answer["label"] = int(row.argmax())
                answer["label_name"] = labels[answer["label"]]
                answer["probability"] = float(p[answer["label"]])
            elif task == "binary":  # the output is P(label 1)
                answer["label"] = int(row[0] >= 0.5)
                answer["label_name"] = labels[answer["label"]]
                answer["probability"] = float(row[0] if answer["label"] else 1 - row[0])
            else:
                answer["value"] = float(row[0])
            answers[i] = answer

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("ptx", "torch"))
    assert not leaked, "the consumer imported " + ", ".join(leaked[:5])
    print(json.dumps({"tolerance": contract["tolerances"]["cpu"], "answers": answers}))
''')


def words_of(tokens: np.ndarray, model_name: str) -> list[str]:
    """Token ids as the dataset holds them -> the words a user would type."""
    step = get(model_name).contract().encoding
    words = []
    for row in tokens:
        if step.encoding == "vocab":
            words.append("".join(step.vocab[int(i)] for i in row))
        else:
            codes = [int(c) for c in row]
            if step.pad_id is not None and step.pad_id in codes:
                codes = codes[:codes.index(step.pad_id)]
            words.append("".join(chr(c) for c in codes))
    return words


def write_inputs(model_name: str, x: np.ndarray, folder) -> list[str]:
    """Real raw samples -> what `ptx predict --raw` takes: PNG paths, numbers, a CSV file, words."""
    kind = get(model_name).input.kind
    if kind is InputKind.IMAGE:
        paths = []
        for i, picture in enumerate(x):
            assert picture.shape == (28, 28) and picture.dtype == np.uint8, (picture.shape, picture.dtype)
            path = folder / f"{i:02d}.png"
            Image.fromarray(picture).save(path)  # 2-D uint8: mode L
            paths.append(str(path))
        return paths
    if kind is InputKind.NUMBER:
        return [repr(float(v)) for v in x.reshape(len(x), -1)[:, 0]]
    if kind is InputKind.VECTOR:
        path = folder / "samples.csv"
        path.write_text("".join(",".join(repr(float(v)) for v in row) + "\n" for row in x))
        return [str(path)]
    return words_of(x, model_name)


def test_a_consumer_without_ptx_gives_ptx_predicts_answers(runs, model_name, tmp_path):
    root = runs.ready(model_name)
    x, _ = runs.test_samples(model_name, N_SAMPLES)
    inputs = write_inputs(model_name, x, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    # "--" ends the options: linreg's test inputs are negative numbers.
    predict = subprocess.run([sys.executable, "-m", "ptx", "predict", "--raw", "--json", "--model", model_name,
                              "--root", str(root), "--", *inputs], capture_output=True, text=True, cwd=tmp_path,
                             env=env)
    assert predict.returncode == 0, predict.stderr
    report = json.loads(predict.stdout)
    assert report["errors"] == [] and len(report["results"]) == N_SAMPLES, report

    consumer = subprocess.run([sys.executable, "-c", CONSUMER_CODE, str(root / model_name / "model.onnx"),
                               json.dumps(inputs)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert consumer.returncode == 0, f"the consumer failed for {model_name}:\n{consumer.stderr}"
    answer_doc = json.loads(consumer.stdout)
    answers, tol = answer_doc["answers"], answer_doc["tolerance"]
    assert len(answers) == N_SAMPLES

    per_position = get(model_name).output_shape is not None
    for i, (want, got) in enumerate(zip(report["results"], answers)):
        where = f"{model_name} sample {i} ({want['input']!r})"
        assert got["input"] == want["input"], where
        want_logits, got_logits = np.asarray(want["logits"]), np.asarray(got["logits"])
        assert got_logits.shape == want_logits.shape, (where, got_logits.shape, want_logits.shape)
        assert np.isfinite(got_logits).all(), where
        beyond = np.abs(got_logits - want_logits) > tol["atol"] + tol["rtol"] * np.abs(want_logits)
        assert not beyond.any(), f"{where}: outputs {got_logits} vs ptx {want_logits}"
        if "value" in want:
            assert abs(got["value"] - want["value"]) <= CLOSE, f"{where}: value {got['value']} vs ptx {want['value']}"
            continue
        assert got["label_name"] == want["label_name"], f"{where}: consumer says {got['label_name']!r}, " \
                                                        f"ptx says {want['label_name']!r}"
        if not per_position:
            assert got["label"] == want["label"], where
        assert abs(got["probability"] - want["probability"]) <= CLOSE, \
            f"{where}: probability {got['probability']} vs ptx {want['probability']}"
