"""The served model as one more row of verify (DESIGN 15: the answers of a deployed server are where
differences are seen): a model on an Open Inference Protocol server, opened from its URL, run on the
same cases as every other row and judged by the same rule against the same reference; where it
fails, what kind of difference it is, where the evidence supports one (drift.py).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.errors import PtxError

from ..model.model import Model
from ..runtime.oip_runner import ServedRunner
from ..runtime.oip_transport import Connection, Endpoint
from .batch_composition import check_largest_batch
from .comparator import run_cases
from .drift import name_difference
from .report import SERVED, Row


def open_served(url: str | Endpoint, connection: Connection | None = None, like=None) -> Model:
    """The Model of the model served at ``url`` (a runner without a head: its tensors are the
    server's). ``like``: the reference's signature, which names the tensors compared."""
    endpoint = url if isinstance(url, Endpoint) else Endpoint.parse(url)
    return Model(ServedRunner(endpoint, connection or Connection(), like))


def served_row(served: Model, this, against: str) -> Row:
    """``served``'s Row: its answers on verify's cases (``this``, verify's Run) held to the reference
    on the CPU, the same sample alone and in a batch, and the kind of any difference."""
    runner, report = served.runner, this.report
    runner.hold_to(this.signature)
    label = f"{SERVED}{runner.endpoint.url}"
    report.notes += [f"{label}: {runner.describe()}", *runner.notes]
    if runner.left_out:
        report.notes.append(f"note: not compared (the server's own tensors, no reference has them): "
                            f"{', '.join(runner.left_out)}")
    want, _ = this.reference_on("cpu")
    shared = sorted(want)
    this.progress(f"running {label}")
    run = this.run_on(served)
    got, error = run_cases(run, [this.cases[i] for i in shared])
    got = {shared[k]: v for k, v in got.items()}
    row = Row(label, against=against, error=error, batch_sizes=sorted({c.batch for c in this.cases if c.batch}))
    if not got:
        return row
    this.judge(row, got, want, shared, this.truth)
    row.composition = check_largest_batch(run, this.signature, this.cases, got, lambda n: this.tolerances.of(
        n, _dtype(this.signature, n), "cpu"))
    if [f for f in row.failures if f != row.error]:
        row.kinds = _kinds(row, run, this, got, want)
        report.notes += [f"{label}: {kind}" for kind in row.kinds] or [
            f"{label}: no kind of difference could be named (identical requests agree, no batch dependence, no "
            "reduced precision's values, no input scale or offset fits)"]
    return row


def _kinds(row: Row, run, this, got: Mapping, want: Mapping) -> list[str]:
    index = row.worst_case if row.worst_case in got else min(got)
    tolerances, signature = this.tolerances, this.signature

    def agrees(name, g, w) -> bool:
        t = tolerances.of(name, _dtype(signature, name), "cpu")
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        return g.shape == w.shape and bool(np.all(np.abs(g - w) <= t.atol + t.rtol * np.abs(w)))

    axes = {t.name: t.batch_axis for t in (*signature.inputs, *signature.outputs)}
    if this.head is not None:  # verify feeds a head's cases in its contract's layout
        axes[this.head.contract.input.name] = this.head.contract.input.batch_axis
        axes[this.head.contract.output.name] = this.head.contract.output.batch_axis
    try:
        return name_difference(run, this.run_on(this.reference), this.cases[index].feeds, got[index], want[index],
                               agrees, axes, row.composition)
    except PtxError as exc:  # the server failed while asked again: the verdict stands, the kind is unknown
        return [f"no kind named: asking again failed ({exc})"]


def _dtype(signature, name: str) -> str:
    try:
        return signature.output(name).dtype
    except Exception:  # noqa: BLE001 - a head's output the signature does not list: judged as float32
        return "float32"
