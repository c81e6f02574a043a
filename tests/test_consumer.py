"""docs/artifact-format.md runs, and reproduces ptx: a stranger's consumer, taken from the document.

The document's Python blocks, extracted from the file itself (nothing is copied here), are one
reference implementation for onnxruntime + numpy + Pillow. For every registered model and real test
inputs (pictures of several sizes and modes, 16-bit ones, `--raw` samples, numbers, CSV rows and
files, words), each step must give what ptx gives: the grayscale and the raw sample byte for byte,
the batches and the input tensor exactly, then the decisions. A failure names the model, the input
and the step. The whole page, worked examples included, also runs in a process that never imports
ptx or torch, and `ptx predict --raw --json` gives the document's answers.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from images import paper_digit
from ptx.contract import InputKind
from ptx.contract import pictures as ptx_pictures
from ptx.contract.transforms import collate, length_groups, to_model_input
from ptx.errors import InputError
from ptx.infer import load
from ptx.infer.model.inputs import expand_csv_rows
from ptx.models import get
from ptx_command import ptx

DOC = Path(__file__).resolve().parents[1] / "docs" / "artifact-format.md"
# What a stranger has: the standard library's json, hashlib and unicodedata, numpy, onnxruntime, onnx, Pillow.
STRANGER_MODULES = {"json", "hashlib", "math", "unicodedata", "numpy", "onnxruntime", "onnx", "PIL"}
# The reference implementation the document promises, by the names its blocks define.
REFERENCE_NAMES = {"field_checksums", "edited_fields", "read_text", "csv_rows", "encode", "raw_sample", "batches",
                   "to_grayscale", "mnist_digit", "fashion_product", "PIPELINES", "open_artifact", "to_input",
                   "decide", "predict"}
N_SAMPLES = 6  # real test samples per model, beside the made-up inputs below


# -- the document's code ------------------------------------------------------------------------------

def python_blocks() -> list[tuple[int, str]]:
    """Every ```python block of the document: (the line its code starts on, the code)."""
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)]


def defines_only(source: str) -> bool:
    """A block of imports, definitions and constants (the reference), not an example that runs."""
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    return all(isinstance(node, allowed) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               for node in ast.parse(source).body)


def run_blocks(blocks, namespace: dict) -> dict:
    for line, source in blocks:
        # Padded so that a traceback names the document's own line.
        exec(compile("\n" * (line - 1) + source, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def reference() -> dict:
    return run_blocks([b for b in python_blocks() if defines_only(b[1])], {"__name__": "artifact_format"})


def test_the_documents_code_defines_the_reference_and_imports_only_what_a_stranger_has():
    blocks = python_blocks()
    imported = set()
    for _, source in blocks:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
    assert imported <= STRANGER_MODULES, f"the document imports {sorted(imported - STRANGER_MODULES)}"
    defined = set(run_blocks([b for b in blocks if defines_only(b[1])], {}))
    assert REFERENCE_NAMES <= defined, f"the document no longer defines {sorted(REFERENCE_NAMES - defined)}"


# -- inputs as users hand them over ----------------------------------------------------------------------

@dataclass
class Case:
    name: str  # how a failure names the input
    item: str  # what is handed to ptx and to the document's raw_sample
    raw: bool = False


def _save(image: Image.Image, path: Path, **options) -> str:
    image.save(path, **options)
    return str(path)


def picture_cases(x: np.ndarray, folder: Path) -> tuple[list[Case], list[Case]]:
    """Real test samples (canvas x canvas uint8, light on dark) as files: dataset-like ones for --raw
    in every mode ptx reads, and pictures as people have them for the pipeline. (good, refused)"""
    folder.mkdir(parents=True, exist_ok=True)
    a, b, c = x[0], x[1], x[2]
    good = [Case(f"raw {i}.png (L)", _save(Image.fromarray(s), folder / f"raw{i}.png"), True)
            for i, s in enumerate(x)]
    rgba = np.dstack([a, a, a, np.where(a > 0, 255, 128).astype(np.uint8)])
    good += [
        Case("raw 16-bit full range", _save(Image.fromarray(a.astype(np.uint16) * 257), folder / "r16.png"), True),
        Case("raw 16-bit, 12 bits used", _save(Image.fromarray(b.astype(np.uint16) * 16), folder / "r12.png"), True),
        Case("raw RGB", _save(Image.fromarray(np.dstack([c, c, c])), folder / "rgb.png"), True),
        Case("raw RGBA, half-transparent paper", _save(Image.fromarray(rgba), folder / "rgba.png"), True),
        Case("raw float TIFF in [0, 1]", _save(Image.fromarray(a.astype(np.float32) / 255), folder / "f.tif"), True),
    ]
    photo = paper_digit(a)  # 200x200, dark on white, off-centre
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees to show
    tinted = np.asarray(paper_digit(b, size=160, scale=4, offset=(30, 10)).convert("RGB"), dtype=np.float32)
    tinted *= np.linspace(0.55, 1.0, 160, dtype=np.float32)[None, :, None] * np.array([1.0, 0.93, 0.8], np.float32)
    transparent = np.zeros((60, 60, 4), np.uint8)
    transparent[16:44, 16:44, 3] = a  # dark ink on a transparent background: composited on white
    scan = Image.fromarray(255 - b).resize((14, 14), Image.Resampling.BOX).crop((1, 0, 13, 14))
    product = Image.fromarray(255 - c).resize((112, 112), Image.Resampling.BICUBIC)  # a shop's dark-on-white
    good += [
        Case("photo 200x200 L PNG", _save(photo, folder / "photo.png")),
        Case("photo RGB JPEG rotated by EXIF", _save(photo.convert("RGB").crop((0, 20, 200, 180)), folder / "rot.jpg",
                                                       exif=exif.tobytes(), quality=92)),
        Case("photo on tinted paper in uneven light", _save(Image.fromarray(tinted.round().astype(np.uint8)),
                                                            folder / "tinted.png")),
        Case("16-bit scan 64x48, light on dark", _save(Image.fromarray((np.pad(a, ((10, 10), (18, 18))).astype(
            np.uint16) * 200)), folder / "scan16.png")),
        Case("low-resolution scan 12x14", _save(scan, folder / "small.png")),
        Case("RGBA on a transparent background", _save(Image.fromarray(transparent), folder / "alpha.png")),
        Case("palette GIF", _save(photo.resize((90, 90)).convert("P"), folder / "p.gif")),
        Case("product 112x112 bicubic, dark on white", _save(product, folder / "product.png")),
        Case("40x60 RGB, light on black", _save(Image.fromarray(np.dstack([a] * 3)).resize((40, 60)), folder / "tall.png")),
    ]
    bad = [
        Case("raw 30x30", _save(Image.fromarray(np.pad(a, 1)), folder / "r30.png"), True),
        Case("raw 56x56", _save(Image.fromarray(np.kron(a, np.ones((2, 2), np.uint8))), folder / "r56.png"), True),
        Case("one flat colour", _save(Image.new("L", (50, 40), 255), folder / "white.png")),
    ]
    return good, bad


def csv_file(folder: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def value_rows(x: np.ndarray) -> list[str]:
    return [",".join(repr(float(v)) for v in row) for row in x.reshape(len(x), -1)]


def words_of(tokens: np.ndarray, model_name: str) -> list[str]:
    """Token ids as the dataset holds them -> the words a user would type."""
    step = get(model_name).contract().encoding
    if step.encoding == "vocab":
        return ["".join(step.vocab[int(i)] for i in row) for row in tokens]
    return ["".join(chr(c) for c in row if c != step.pad_id) for row in tokens.tolist()]


def cases_for(model_name: str, runs, folder: Path) -> tuple[list[Case], list[Case]]:
    """(inputs ptx predicts, inputs ptx refuses) of the model's kind."""
    kind = get(model_name).kind
    x, _ = runs.test_samples(model_name, N_SAMPLES)
    if kind is InputKind.IMAGE:
        return picture_cases(x, folder)
    if kind is InputKind.NUMBER:
        given = value_rows(x) + ["0.5", "-1.25", " 3 ", "1e-3", "2"]
        return [Case(repr(v), v) for v in given], [Case(repr(v), v) for v in ["nan", "inf", "1,2", "abc", ""]]
    if kind is InputKind.VECTOR:
        features = ",".join(get(model_name).contract().features)
        rows = value_rows(x)
        good = [Case(repr(r), r) for r in rows + ["6, 148, 72, 35, 0, 33.6, 0.627, 50"]]
        bad = [Case(repr(r), r) for r in ["6,148,72,35,0,33.6,0.627", "6,nan,72,35,0,33.6,0.627,50",
                                          "6;148;72;35;0;33.6;0.627;50"]]
        files = {  # CSV files: (good ones, refused ones)
            "bom-header-blank-lines.csv": ("\ufeff" + features + "\n\n" + "\n".join(rows) + "\n\n", "utf-8"),
            "utf-16-crlf.csv": ("\r\n".join(rows), "utf-16"),
            "no-header.csv": ("\n".join(rows[:2]) + "\n", "utf-8"),
        }
        refused = {
            "empty.csv": ("", "utf-8"), "header-only.csv": (features + "\n", "utf-8"),
            "blank-lines.csv": ("\n \n\t\n", "utf-8"), "latin-1.csv": ("tête," + features + "\n" + rows[0], "latin-1"),
            "header-in-another-order.csv": (",".join(reversed(features.split(","))) + "\n" + rows[0], "utf-8"),
            "with-an-outcome-column.csv": (features + ",outcome\n" + "\n".join(r + ",1" for r in rows), "utf-8"),
        }
        good += [Case(f"CSV file {n}", csv_file(folder, n, t, e)) for n, (t, e) in files.items()]
        bad += [Case(f"CSV file {n}", csv_file(folder, n, t, e)) for n, (t, e) in refused.items()]
        return good, bad
    words = words_of(x, model_name)
    if get(model_name).contract().encoding.encoding == "vocab":
        good = words + ["hell", "ohlo", "h", "lol"]
        bad = ["help", "Hello", ""]
    else:
        good = words + ["cafe\u0301", "café", "€uro", "zeitgeist", "ab"]
        bad = ["", "a\x00b", "caf\udce9"]
    return [Case(repr(w), w) for w in good], [Case(repr(w), w) for w in bad]


# -- the comparison -------------------------------------------------------------------------------------

def same_array(got, want) -> str:
    """'' when ``got`` is ``want`` exactly (dtype, shape, every value); else what differs."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{got.dtype}{got.shape} where ptx has {want.dtype}{want.shape}"
    if np.array_equal(got, want):
        return ""
    wrong = got != want
    worst = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
    return f"{int(wrong.sum())} of {wrong.size} values differ (max |diff| {worst:g}), first at index {np.argwhere(wrong)[0].tolist()}"


def by_document(where: str, step: str, call, *args):
    """The document's ``call``; its failure (a TypeError for a parameter it lacks...) is this step's."""
    try:
        return call(*args)
    except Exception as exc:
        raise AssertionError(f"{where}: step '{step}': the document's code fails: {type(exc).__name__}: {exc}") from exc


def rows_of(case: Case, model_name: str, reference: dict, contract: dict, features) -> list[tuple[Case, str]]:
    """A CSV file -> its rows, by the document and by ptx (which must agree); other inputs as they are."""
    if not case.name.startswith("CSV file"):
        return [(case, case.item)]
    ptx_rows, unreadable = expand_csv_rows([case.item], features)
    assert not unreadable, f"{model_name}: input {case.name}: ptx refuses it: {unreadable}"
    rows = by_document(f"{model_name}: input {case.name}", "CSV rows", reference["csv_rows"], case.item,
                       contract["features"])
    assert rows == ptx_rows, f"{model_name}: input {case.name}: step 'CSV rows' differs: {rows} where ptx has {ptx_rows}"
    return [(Case(f"{case.name} row {i + 1}", row), row) for i, row in enumerate(rows)]


def refused_by_both(case: Case, model_name: str, reference: dict, contract: dict, predictor) -> None:
    if case.name.startswith("CSV file"):
        _, unreadable = expand_csv_rows([case.item], predictor.contract.features)
        ptx_refuses = bool(unreadable)
        call = lambda: reference["csv_rows"](case.item, contract["features"])
    else:
        try:
            predictor.prepare_one(case.item, raw=case.raw)
            ptx_refuses = False
        except InputError:
            ptx_refuses = True
        call = lambda: reference["raw_sample"](case.item, contract, case.raw)
    try:
        call()
        document_refuses = False
    except ValueError:  # UnicodeDecodeError is one; an IndexError or KeyError would be a bug in the document
        document_refuses = True
    assert ptx_refuses and document_refuses, \
        f"{model_name}: input {case.name}: ptx {'refuses' if ptx_refuses else 'accepts'} it, the document " \
        f"{'refuses' if document_refuses else 'accepts'} it; both must refuse it"


def test_the_documents_reference_code_reproduces_ptx_step_by_step(runs, model_name, reference, tmp_path):
    root = runs.ready(model_name)
    session, contract, labels = reference["open_artifact"](str(root / model_name / "model.onnx"))
    predictor = load(model_name, backend="ort-cpu", root=root)
    good, bad = cases_for(model_name, runs, tmp_path)
    picture = predictor.contract.picture

    cases, ref_samples, ptx_samples = [], [], []
    for given in good:
        for case, item in rows_of(given, model_name, reference, contract, predictor.contract.features):
            where = f"{model_name}: input {case.name}"
            if picture is not None:
                gray = ptx_pictures.to_grayscale(ptx_pictures.open_image(item), item)
                problem = same_array(by_document(where, "grayscale", reference["to_grayscale"], item), gray)
                assert not problem, f"{where}: step 'grayscale' differs from ptx: {problem}"
            step = "raw sample (--raw)" if case.raw else \
                f"raw sample (picture pipeline {picture.pipeline})" if picture else "raw sample"
            ours = by_document(where, step, reference["raw_sample"], item, contract, case.raw)
            theirs = predictor.prepare_one(item, raw=case.raw)
            problem = same_array(ours, theirs)
            assert not problem, f"{where}: step '{step}' differs from ptx: {problem}"
            cases.append(case)
            ref_samples.append(ours)
            ptx_samples.append(theirs)

    ptx_groups = length_groups(ptx_samples, predictor.contract)
    ref_batches = by_document(model_name, "batching", reference["batches"], ref_samples, contract)
    assert [indices for indices, _ in ref_batches] == ptx_groups, \
        f"{model_name}: step 'batching' differs: groups {[i for i, _ in ref_batches]} where ptx has {ptx_groups}"
    ptx_answers = predictor.predict_samples(ptx_samples, [c.name for c in cases])
    for (indices, batch), group in zip(ref_batches, ptx_groups):
        names = ", ".join(cases[i].name for i in indices)
        ptx_batch = collate([ptx_samples[i] for i in group], predictor.contract)
        problem = same_array(batch, ptx_batch)
        assert not problem, f"{model_name}: inputs {names}: step 'batch (padding)' differs from ptx: {problem}"
        x = by_document(f"{model_name}: inputs {names}", "input tensor", reference["to_input"], batch, contract)
        problem = same_array(x, to_model_input(ptx_batch, predictor.contract))
        assert not problem, f"{model_name}: inputs {names}: step 'input tensor (tensor steps, layout)' differs: {problem}"
        outputs = session.run([contract["output"]["name"]], {contract["input"]["name"]: x})[0]
        decided = by_document(f"{model_name}: inputs {names}", "decision", reference["decide"], outputs, contract,
                              labels, [len(ref_samples[i]) for i in indices])
        for i, (answer, probability) in zip(indices, decided):
            want = ptx_answers[i]
            got_ptx = (want.value, None) if want.value is not None else (want.label_name, want.probability)
            assert (answer, probability) == got_ptx, \
                f"{model_name}: input {cases[i].name}: step 'decision' differs: the document says " \
                f"{(answer, probability)}, ptx says {got_ptx}"

    for case in bad:
        refused_by_both(case, model_name, reference, contract, predictor)

    meta = session.get_modelmeta().custom_metadata_map
    assert reference["edited_fields"](meta) == [], f"{model_name}: step 'checksums' differs from ptx.checksums"


PIPELINE_PARAMS = {  # parameters no registered model uses, so that every branch of the reference is compared
    "mnist-digit": [dict(paper_window=0.0), dict(canvas=32, box=16, ink_threshold=0.35, paper_window=0.2),
                    dict(version=1), dict(version=2, paper_window=0.0),
                    dict(version=2, canvas=32, box=16, ink_threshold=0.35, paper_window=0.2),
                    # box 48: the ink spans fewer search pixels than that, so its region is read from a finer copy
                    dict(version=2, canvas=56, box=48), dict(version=2, canvas=56, box=48, paper_window=0.0)],
    "fashion-product": [dict(sharpen_radius=0.0), dict(canvas=32, trim_threshold=0.1, sharpen_radius=2.0)],
}


@pytest.mark.parametrize("pipeline", list(PIPELINE_PARAMS))
def test_the_documents_pipelines_match_ptx_with_other_parameters(runs, reference, tmp_path, pipeline):
    good, _ = picture_cases(runs.test_samples("convnet", 3)[0], tmp_path)
    for case in good:
        gray = ptx_pictures.to_grayscale(ptx_pictures.open_image(case.item), case.item)
        for params in PIPELINE_PARAMS[pipeline]:
            ours = by_document(f"{pipeline} {params}: input {case.name}", "picture pipeline",
                               lambda: reference["PIPELINES"][pipeline](gray, **params))
            problem = same_array(ours, ptx_pictures.PIPELINES[pipeline](gray, **params))
            assert not problem, f"{pipeline} {params}: input {case.name}: step 'picture pipeline' differs: {problem}"


# -- as a stranger and as a user run it -----------------------------------------------------------------------

STRANGER = '''
import json, sys
namespace = {"__name__": "artifact_format"}
for line, source in json.loads(sys.stdin.read()):
    exec(compile("\\n" * (line - 1) + source, sys.argv[1], "exec"), namespace)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("ptx", "torch"))
assert not leaked, "the document's code imported " + ", ".join(leaked[:5])
'''
EXAMPLE_MODELS = ("convnet", "linreg", "diabetes", "gru-classifier", "rnn-hello")


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PTX_DATA_DIR")}


def test_the_whole_document_runs_without_ptx_or_torch(runs, tmp_path):
    """Every block in order, worked examples included, in a folder laid out as ptx leaves it."""
    (tmp_path / "runs").symlink_to(runs.ready(*EXAMPLE_MODELS), target_is_directory=True)
    paper_digit(runs.test_samples("convnet", 1)[0][0]).save(tmp_path / "digit.png")
    features = ",".join(get("diabetes").contract().features)
    (tmp_path / "patients.csv").write_text(features + "\n" + "\n".join(value_rows(runs.test_samples("diabetes", 3)[0])))
    r = subprocess.run([sys.executable, "-c", STRANGER, str(DOC)], input=json.dumps(python_blocks()),
                       capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=120)
    assert r.returncode == 0, f"the document's code failed:\n{r.stderr[-3000:]}"
    assert len(r.stdout.splitlines()) >= len(EXAMPLE_MODELS), r.stdout


@pytest.mark.parametrize("model_name", ["convnet", "diabetes", "gru-classifier"])
def test_ptx_predict_raw_json_gives_the_documents_answers(runs, reference, tmp_path, model_name):
    root = runs.ready(model_name)
    good, _ = cases_for(model_name, runs, tmp_path)
    given = [c.item for c in good if c.raw or get(model_name).kind is not InputKind.IMAGE]
    # "--" ends the options; a CSV file stands for its rows.
    r = ptx("predict", "--raw", "--json", "--model", model_name,
            "--root", str(root), "--", *given, cwd=tmp_path, env=clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)["results"]
    contract = reference["open_artifact"](str(root / model_name / "model.onnx"))[1]
    items = [row for item in given for row in (reference["csv_rows"](item, contract["features"])
                                                if item.endswith(".csv") else [item])]
    answers = reference["predict"](str(root / model_name / "model.onnx"), items, raw=True)
    assert len(results) == len(answers)
    for item, result, (answer, probability) in zip(items, results, answers):
        assert (result["label_name"], result["probability"]) == (answer, probability), \
            f"{model_name}: input {item!r}: `ptx predict --raw` says {result['label_name']} " \
            f"{result['probability']}, the document {answer} {probability}"
