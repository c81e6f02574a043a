"""A reduced row's verdict in ``ptx verify``: the evidence verify has, handed to the one rule
(ptx.contract.verdict), which export follows too, so that a file gets one verdict whichever asks."""
from __future__ import annotations

from ptx.contract.verdict import (Verdict, decide, judge_tensors, labels_evidence, recorded_bound, recorded_evidence,
                                  recorded_verdicts, serving_label)

from ptx.machine import describe_cpu

from .report import Row


def reduced_verdict(row: Row, got, want, truth, head, signature, source: tuple[str, str], metadata,
                    bound_again=None, reference_reduced: bool = False) -> Verdict:
    """A reduced row's verdict from the evidence verify has (ptx.contract.verdict's order): the bound
    its file records (a tutorial model's accuracy bound re-checked on the real samples; a user's metric
    measured again with --metric; else as export measured it, said so), a head's labels and accuracy
    on real samples, then the tensors on the cases (the user's inputs, or generated ones); a verdict
    the file records on stronger evidence than verify has here decides, read from the file.

    ``reference_reduced``: the reference is itself reduced (an int8 file verified by its path is held
    to its own runtime at int8), so the tensors say how two int8 runtimes agree, not what int8 costs:
    the verdict export recorded for this row, made against the f32 file, decides where there is one."""
    recorded, bound = recorded_verdicts(metadata).get(row.label), recorded_bound(metadata)
    if reference_reduced and recorded is not None:
        return decide(row.label, [recorded_evidence(recorded)])
    evidence = []
    shared = [i for i in got if i in want]
    real = truth is not None and 0 in got and head is not None and row.argmax_agreement is not None
    if real:
        g, w = got[0][head.output_name], want[0][head.output_name]
        evidence.append(labels_evidence(g, w, truth, head.contract))
        if row.max_drop is not None:  # the accuracy bound its file was made to hold, measured here again
            evidence.append(labels_evidence(g, w, truth, head.contract, row.max_drop))
    else:
        kind, words = source
        evidence.append(judge_tensors([got[i] for i in shared], [want[i] for i in shared],
                                      [(t.name, t.batch_axis) for t in signature.outputs], row.precision, words,
                                      kind=kind, detections=signature.detections))
    if bound_again is not None:
        evidence.append(bound_again)
    elif not (real and row.max_drop is not None):  # a bound verify cannot measure here: as export measured it
        # what export measured on stronger evidence than verify has here (real samples, your --inputs)
        # decides where it was measured on this CPU, said as read from the file, verify's own shown and not
        # counted; on another CPU (int8 kernels differ by instruction set) verify's measurement stands, and
        # a note says why the two differ. The bound the file was made to hold decides wherever it runs.
        if recorded is not None and (recorded.evidence == "bound" or (
                recorded.evidence != "generated" and metadata.get("cpu") == describe_cpu())):
            evidence.append(recorded_evidence(recorded))
        elif recorded is None and bound is not None and row.label == serving_label(metadata):
            evidence.append(bound)  # a file written before ptx.verdict
    return decide(row.label, evidence)
