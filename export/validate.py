"""Prove a written file answers as its reference did before it is kept (optimum's
validate_model_outputs), with one check for every export: a tutorial model's, a user's module's, a
user's file's int8 (``check_model``, on the file export/pipeline.py opened once). The file is
opened by the code that will serve it (the runtime floor's ptx.infer.load, which export sits
on) and run on the cases
the reference answered (the eager module, or the f32 file); the one comparison judges each output
(ptx.contract.comparison).

A reduced precision cannot meet the f32 atol: ``check_model`` holds it to running every case with
finite outputs of the right shapes, and it is judged apart: a tutorial model's by labels and
accuracy on real test samples as ``ptx verify`` draws them (``judge_reduced``), a user's model's
by its tensors against the f32 file (``tensor_evidence``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ptx.contract import Contract, Tolerance
from ptx.contract.cases import Case, run_cases
from ptx.contract.comparison import OutputAgreement, compare_outputs, default_tolerance
from ptx.contract.accuracy_rule import JUDGING_BATCH
from ptx.contract.error_model import allowance
from ptx.contract.verdict import Evidence, judge_tensors, labels_evidence
from ptx.contract.names import FULL_PRECISION
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.transforms import decisions, normalize, pictures_from_model_input, run_in_batches, to_layout
from ptx.errors import PtxError, ValidationError
from ptx.infer.model.target import load_file

VALIDATION_BATCHES = (1, 2, 7, 64)


@dataclass
class ExportResult:
    """One written, validated file, from any export (a tutorial model's, a user's module's or file's)."""

    format: str
    path: Path
    size_bytes: int
    method: str  # how it was made: "torch.export-based exporter, opset 18", "traced", ...
    batches: tuple[int, ...]  # the batch sizes it was checked at (none without a batch axis)
    agreements: dict[str, OutputAgreement]  # per output, the worst case
    judged: bool = True  # False: a reduced precision, checked to run with finite outputs, not by the f32 tolerance
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the other symbols' sizes checked: seq 8, 10
    # A reduced precision's verdict on its serving runtime (ptx.contract.verdict.Verdict), or None.
    judgement: object | None = None
    judged_by: str | None = None  # the backend label the judgement was made through (ort-cpu-int8)
    verdicts: list = field(default_factory=list)  # a reduced file's Verdict on every runtime that reads it, its own first
    certificate: object | None = None  # its shape certificate (ptx.contract.shape_certificate), where one was made
    detail: str = ""  # what its check found, in words, where the check says it (a decoder's steps and tokens)

    @property
    def worst(self) -> OutputAgreement:
        return max(self.agreements.values(), key=lambda a: a.max_abs)

    def ties(self) -> str:
        """Detections one side kept alone at the threshold, over every case (said, not counted), or ''."""
        tied = [a for a in self.agreements.values() if a.tied]
        count = sum(a.ties for a in tied)
        return f"; {count} tie{'s' * (count != 1)} at the threshold, not counted (first: {tied[0].tied})" if tied else ""

    def checked(self) -> str:
        """What it was checked at: "batches 3, 5; seq 8, 10"."""
        text = f"batches {', '.join(map(str, self.batches))}" if self.batches else "2 cases at the declared shapes"
        return text + "".join(f"; {symbol} {', '.join(map(str, sizes))}" for symbol, sizes in self.sizes.items())


def open_checked(path, fmt, device: str = "cpu", backend: str | None = None):
    """The file at ``path`` opened by ``backend`` (default: ``fmt``'s serving backend) on ``device``, at
    the format's precision (the floor's load_file); a file that does not load said as the
    ValidationError of the file ptx wrote."""
    try:
        return load_file(path, backend or fmt.serving_backend, device, fmt.precision)
    except PtxError as exc:
        raise ValidationError(f"{fmt.name}: the file ptx wrote does not load: {exc}") from None


def check_model(fmt, model, signature: Signature, cases: Sequence[Case], tolerance: Callable[[TensorSig], Tolerance],
                *, compare: Callable[..., OutputAgreement] | None = None, hint: str = ""
                ) -> tuple[dict[str, OutputAgreement], list[dict]]:
    """Run every case through the opened file ``model``; (the worst agreement per output, the file's
    outputs per case). ValidationError in one line naming the format, the case, the output and its
    error, on the first that fails: one that does not run, an output of another shape or with NaN
    where the reference has none, and at full precision any value beyond ``tolerance`` (or a
    decision a head's ``compare`` judges flipped; else each output by the one comparison). ``hint``:
    why the file may have failed, added to the line."""
    why = f" ({hint})" if hint else ""

    judged = fmt.precision == FULL_PRECISION
    worst: dict[str, OutputAgreement] = {}
    answers = []
    if model.signature.output_names != signature.output_names:
        raise ValidationError(f"{fmt.name}: the file's outputs are {model.signature.output_names}, the "
                              f"reference's {signature.output_names}")
    judge = (lambda name, got, want, allowed: compare(signature.output(name), got, want, allowed)) if compare else None
    as_detections = signature.detections.names if signature.detections else ()
    for case, got, error in run_cases(model.run, cases, refused=PtxError):  # ptx's one run loop
        if error is not None:  # ModelRunError: e.g. a batch the exporter fixed
            raise ValidationError(f"{fmt.name}: {case.label} does not run: {error}{why}")
        found = compare_outputs(got, case.outputs, signature, lambda name: tolerance(signature.output(name)), judge=judge)
        for name, agreement in found.items():  # the one loop over outputs; detections once, as detections
            if agreement.problem or (judged and not agreement.ok):
                where = "" if name in as_detections else _worst_value(got[name], case.outputs[name], agreement,
                                                                      signature.output(name).batch_axis)
                raise ValidationError(f"{fmt.name}: {case.label}: {agreement.summary()}{where}{why}")
            kept = worst.get(name)
            if kept is not None and (kept.tied or agreement.tied):  # detections at the threshold: said over every case
                agreement.ties, kept.ties = (agreement.ties + kept.ties,) * 2
                agreement.tied = kept.tied = kept.tied or agreement.tied
            if kept is None or agreement.max_abs > kept.max_abs:
                worst[name] = agreement
        answers.append(got)
    return worst, answers


def _worst_value(got, want, agreement: OutputAgreement, batch_axis: int | None) -> str:
    """Where the value furthest beyond its allowance is (the one rule's: its row's scale) and what each side
    holds there, or '' (shapes differ)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or not got.size or want.dtype.kind not in "biufc" or got.dtype.kind not in "biufc":
        return ""
    wide = want.astype(np.float64)
    beyond = np.abs(np.nan_to_num(got.astype(np.float64) - wide, nan=np.inf)) - allowance(wide, agreement.tolerance,
                                                                                          batch_axis)
    at = np.unravel_index(int(np.argmax(beyond)), beyond.shape)
    return (f" (the value furthest beyond, at {list(map(int, at))}: {float(got[at]):.6g} where the reference has "
            f"{float(want[at]):.6g})")


# -- a tutorial model: its real samples and its head ----------------------------------------------


def validation_inputs(ckpt: dict, batches=VALIDATION_BATCHES) -> list[np.ndarray]:
    """Real test samples kept in the checkpoint, cycled up to the largest batch, in model layout."""
    contract: Contract = ckpt["contract"]
    raw = ckpt["samples"]["x"].numpy()
    needed = max(batches)
    raw = np.concatenate([raw] * (-(-needed // len(raw))))[:needed]
    samples = normalize(raw, contract)
    inputs = [to_layout(samples[:b], contract) for b in batches]
    encoding = contract.encoding
    if encoding is not None:
        # A sequence length other than the export example's proves the length stayed dynamic. Pad
        # with the pad id, or, for a model without one, repeat real tokens (all rows stay one length).
        extra = np.full((len(samples), 3), encoding.pad_id) if encoding.pad_id is not None else samples[:, :3]
        inputs.append(to_layout(np.concatenate([samples, extra], axis=1)[:needed], contract))
    return inputs


def tutorial_cases(module, contract: Contract, signature: Signature, inputs: Sequence[np.ndarray],
                   raw: bool = False) -> list[Case]:
    """Model-layout batches -> cases: what the graph takes (the pictures they were made from, for
    an ``--input uint8`` graph) and what the eager ``module`` that was exported answers on that."""
    import torch

    [graph_input], [output] = signature.inputs, signature.outputs
    seq_axis = contract.input.seq_axis
    cases = []
    for x in inputs:
        fed = pictures_from_model_input(x, contract) if raw else x
        with torch.inference_mode():
            want = module(torch.from_numpy(fed)).numpy()
        batch = x.shape[contract.input.batch_axis]
        cases.append(Case(f"batch {batch}", {graph_input.name: fed}, batch, {output.name: want},
                          {"seq": x.shape[seq_axis]} if seq_axis is not None else {}))
    return cases


def judge_reduced(model, eager_module, ckpt: dict, notice=print, eager: dict | None = None,
                  max_drop: float | None = None) -> tuple[Evidence, str]:
    """Judge a tutorial model's reduced-precision file (opened as ``model``) as ``ptx verify`` does,
    on the same real test samples in the same batches: (judgement, dataset name). DataError where
    the run's dataset is not on this machine. ``eager``: a dict that keeps the samples and eager's
    answers between calls, for a caller judging many files of one model (--keep-f32 auto's search).
    ``max_drop``: the bound the file is made to hold (accuracy points), judged instead of the gate."""
    kept = _judging(eager_module, ckpt, notice, eager)
    got = _answers(model, ckpt["contract"], kept["x"])
    return labels_evidence(got, kept["want"], kept["truth"], ckpt["contract"], max_drop), kept["data"]


def tutorial_accuracy(model, eager_module, ckpt: dict, eager: dict, indices: Sequence[int] | None = None,
                      notice=print) -> tuple[float, list[float]]:
    """(accuracy, each sample's 1.0 or 0.0) of ``model`` on the samples ``judge_reduced`` judges on
    (``indices`` of them; None: all): the metric --max-drop bounds, per sample for NNCF's ranking.
    ``model`` None: eager's own on them all, what --max-drop is counted from."""
    kept = _judging(eager_module, ckpt, notice, eager)
    contract: Contract = ckpt["contract"]
    x, truth = kept["x"], np.asarray(kept["truth"])
    if indices is not None:
        x, truth = np.take(x, list(indices), axis=contract.input.batch_axis), truth[list(indices)]
    labels = decisions(kept["want"] if model is None else _answers(model, contract, x), contract)
    correct = (labels == truth.reshape(labels.shape)).astype(float)
    return float(correct.mean()), correct.tolist()


def _judging(eager_module, ckpt: dict, notice, eager: dict | None) -> dict:
    """The judging samples, their true labels and eager's answers, computed once into ``eager``."""
    import torch

    from ptx.trainers.data import judging_samples

    contract: Contract = ckpt["contract"]
    kept = eager if eager is not None else {}
    if "want" not in kept:
        dataset = (ckpt.get("dataset") or {}).get("name") or contract.model
        raw, kept["truth"], kept["data"] = judging_samples(dataset, contract, notice=notice)
        kept["x"] = to_layout(normalize(raw, contract), contract)
        with torch.inference_mode():
            kept["want"] = run_in_batches(lambda batch: eager_module(torch.from_numpy(batch)).numpy(), kept["x"],
                                          contract.input.batch_axis, JUDGING_BATCH)
    return kept


def _answers(model, contract: Contract, x: np.ndarray) -> np.ndarray:
    head = model.head
    return run_in_batches(lambda batch: np.asarray(model.run(head.feeds(batch))[head.output_name]), x,
                          contract.input.batch_axis, JUDGING_BATCH)


# -- a model without labels: a reduced precision judged by its tensors ----------------------------


def tensor_evidence(fmt, path, signature: Signature, cases: Sequence[Case], held: str,
                  answers: Sequence[dict] | None = None, backend: str | None = None, against: str = "the f32 file",
                  kind: str = "generated") -> Evidence:
    """The reduced file at ``path`` judged by its answers against the reference's on ``cases`` (the
    f32 file's, or eager's for a module), by the one rule for tensors (ptx.contract.verdict.judge_tensors:
    near-ties of f32's own not counted). ``answers``: the file's own, where the driver's check ran
    it on ``cases`` first; else it is opened (through ``backend``: another runtime than the format's
    serving one) and run on them here."""
    if answers is None:
        with open_checked(path, fmt, backend=backend) as model:
            answers = check_model(fmt, model, signature, cases, lambda s: default_tolerance(s.dtype))[1]
    return judge_tensors(answers[:len(cases)], [c.outputs for c in cases],
                         [(s.name, s.batch_axis) for s in signature.outputs], fmt.precision, held, against, kind,
                         detections=signature.detections)
