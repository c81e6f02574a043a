"""The served model as one more row of verify (DESIGN 15: the answers of a deployed server are where
differences are seen): a model on an Open Inference Protocol server, opened from its URL, run on the
same cases as every other row and judged by the same rule against the same reference; where it
fails, what kind of difference it is, where the evidence supports one (drift.py). Where the server is
ptx's and the model takes pictures, a second row: a few real samples sent as PNG files through its
picture route, against the reference fed the same files through ptx's pipeline here (the server's
preprocessing compared too, which its tensor input never meets).
"""
from __future__ import annotations

import io
from typing import Callable, Mapping

import numpy as np

from ptx.contract.comparison import compare_output
from ptx.contract.protocol import SERVER_NAME
from ptx.contract.transforms import pictures_from_model_input
from ptx.errors import PtxError

from ..model.head import IMAGE_INPUT, PROBABILITIES_OUTPUT
from ..model.model import Model
from ..runtime.oip_runner import ServedRunner
from ..runtime.oip_transport import Connection, Endpoint, ServerRefusedError
from .comparator import output_dtype, run_cases
from .drift import name_difference
from .report import SERVED, Row

PICTURES = 16  # real samples sent as PNG files: a drifted preprocessing moves every answer, a few show it


def open_served(url: str | Endpoint, connection: Connection | None = None,
                say: Callable[[str], None] | None = None) -> Model:
    """The Model of the model served at ``url`` (a runner without a head: its tensors are the
    server's, named as the reference's once verify holds it to one: ServedRunner.hold_to); ``say``:
    where a line about how it talks goes (REST's fallback from binary to JSON)."""
    endpoint = url if isinstance(url, Endpoint) else Endpoint.parse(url)
    return Model(ServedRunner(endpoint, connection or Connection(), say))


def served_rows(served: Model, this, against: str) -> list[Row]:
    """``served``'s rows: its tensor input's (served_row), then its picture route's where it has one
    that can be compared (picture_row)."""
    runner = served.runner
    runner.hold_to(this.signature)
    pictures = _picture_route(runner, this)
    row = served_row(served, this, against, compared=(IMAGE_INPUT, PROBABILITIES_OUTPUT) if pictures else ())
    return [row, picture_row(runner, this, against, row)] if pictures else [row]


def served_row(served: Model, this, against: str, compared=()) -> Row:
    """``served``'s Row: its answers on verify's cases (``this``, verify's Run) held to the reference
    on the CPU, the same sample alone and in a batch, and the kind of any difference. ``compared``:
    the server's own tensors that the picture row compares (not said to be left out)."""
    runner, report = served.runner, this.report
    label = f"{SERVED}{runner.endpoint.url}"
    report.notes += [f"{label}: {runner.describe()}", *runner.notes]
    left_out = [n for n in runner.left_out if n not in compared]
    if left_out:
        report.notes.append(f"note: not compared (the server's own tensors, no reference has them): "
                            f"{', '.join(left_out)}")
    want, _ = this.reference_on("cpu")
    this.progress(f"running {label}")
    run, refused = this.run_on(served), []

    def asked(feeds):  # a refused request stops verify (exit 2, the server's words), as no runtime's error does:
        try:  # the server's refusal says nothing about whether it answers as the reference does
            return run(feeds)
        except ServerRefusedError as exc:
            refused.append(exc)
            raise
    got, error = run_cases(asked, this.cases, sorted(want))
    if refused:
        raise refused[0]
    report.notes += runner.transport.notes  # how it talked: a fallback from binary to JSON
    row = Row(label, against=against, error=error, batch_sizes=sorted({c.batch for c in this.cases if c.batch}))
    if not got:
        return row
    this.ran(row, asked, got, want)  # samples alone, asked again: refused there too, the same outcome
    if refused:
        raise refused[0]
    if [f for f in row.failures if f != row.error]:
        row.kinds = _kinds(row, run, this, got, want)
        report.notes += [f"{label}: {kind}" for kind in row.kinds] or [
            f"{label}: no kind of difference could be named (identical requests agree, no batch dependence, no "
            "reduced precision's values, no input scale or offset fits)"]
    return row


def _picture_route(runner, this) -> bool:
    """Whether the server is ptx's with a picture route for this model (``image``: encoded files,
    answered with probabilities), and verify has real samples to send through it."""
    head = this.head
    if head is None or head.contract.picture is None or PROBABILITIES_OUTPUT not in head.answers \
            or this.truth is None or not this.cases or this.cases[0].label != "real":
        return False
    takes = {(t.get("name"), t.get("datatype")) for t in runner._metadata.get("inputs") or []}
    answers = {t.get("name") for t in runner._metadata.get("outputs") or []}
    if (IMAGE_INPUT, "BYTES") not in takes or PROBABILITIES_OUTPUT not in answers:
        return False
    return (runner.transport.server_metadata() or {}).get("name") == SERVER_NAME


def picture_row(runner, this, against: str, tensors: Row) -> Row:
    """The picture route's Row: the first real samples as PNG files (as a client sends them), the
    server's probabilities against the reference's on the same files prepared here by ptx's own
    pipeline (decode, the contract's picture and tensor steps), judged by the same rule; where it
    fails and the tensor row (``tensors``) passed, the difference is the preprocessing."""
    from PIL import Image

    head, report = this.head, this.report
    label = f"{SERVED}{runner.endpoint.url} ({IMAGE_INPUT})"
    real = this.cases[0].feeds[head.contract.input.name]
    axis = head.contract.input.batch_axis
    n = min(PICTURES, real.shape[axis])
    row = Row(label, against=against, cases=[f"{n} real samples as PNG files"])
    this.progress(f"running {label}")
    try:
        files = []
        for picture in pictures_from_model_input(np.take(real, range(n), axis=axis), head.contract):
            with io.BytesIO() as buffer:
                Image.fromarray(picture).save(buffer, "PNG")
                files.append(buffer.getvalue())
        samples = head.prepare_many([(f, f"picture {i}") for i, f in enumerate(files)])
        failed = next((s for s in samples if isinstance(s, Exception)), None)
        if failed is not None:
            raise failed
        want = np.stack([np.asarray(p.probabilities, np.float32) for p in this.reference.predict_samples(samples)])
        got = runner.transport.infer({IMAGE_INPUT: np.array(files, dtype=object)},
                                     [PROBABILITIES_OUTPUT])[PROBABILITIES_OUTPUT]
    except ServerRefusedError:  # the server's refusal is verify's outcome, not this row's failure
        raise
    except PtxError as exc:
        row.error = str(exc)
        return row
    tolerance = this.tolerances.of(head.output_name, "float32", "cpu")
    row.outputs = [compare_output(PROBABILITIES_OUTPUT, got, want, tolerance, batch_axis=0)]
    if got.shape == want.shape:
        truth = np.asarray(this.truth).reshape(-1)[:n]
        row.argmax_agreement = float((got.argmax(-1) == want.argmax(-1)).mean())
        row.accuracy = float((got.argmax(-1) == truth).mean())
        row.reference_accuracy = float((want.argmax(-1) == truth).mean())
    if row.failures and not tensors.failures:
        row.kinds = [f"a preprocessing drift: the same tensors agree, the same pictures do not: the server prepares "
                     f"{IMAGE_INPUT!r} otherwise than ptx's pipeline here (its decode, resize or normalisation)"]
        report.notes += [f"{label}: {kind}" for kind in row.kinds]
    return row


def _kinds(row: Row, run, this, got: Mapping, want: Mapping) -> list[str]:
    index = row.worst_case if row.worst_case in got else min(got)
    tolerances, signature = this.tolerances, this.signature

    def agrees(name, g, w) -> bool:  # by verify's one comparison, at the row's tolerance
        return compare_output(name, g, w, tolerances.of(name, output_dtype(signature, name), "cpu"), detail=False).ok

    axes = {t.name: t.batch_axis for t in (*signature.inputs, *signature.outputs)}
    if this.head is not None:  # verify feeds a head's cases in its contract's layout
        axes[this.head.contract.input.name] = this.head.contract.input.batch_axis
        axes[this.head.contract.output.name] = this.head.contract.output.batch_axis
    try:
        return name_difference(run, this.run_on(this.reference), this.cases[index].feeds, got[index], want[index],
                               agrees, axes, row.composition)
    except PtxError as exc:  # the server failed while asked again: the verdict stands, the kind is unknown
        return [f"no kind named: asking again failed ({exc})"]
