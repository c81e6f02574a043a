"""The one verdict rule of `ptx verify`, in words: what it judges and what its exit status means."""
from __future__ import annotations

from ptx.contract.comparison import MAX_RELATIVE_ERROR
from ptx.contract.accuracy_rule import MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT
from ptx.contract.error_model import SCALE_WORDS
from ptx.contract.verdict import NEAR_TIE_MARGIN

# What verify judges and what its exit status means: `ptx verify --help`, the table's heading and
# the JSON's "rule" all print this, so the three cannot drift apart.
RULE = {
    "f32": f"every output within atol + rtol x {SCALE_WORDS} (the last axis; a value without one, its own "
           "|reference|) of the reference's, finite, with the same decisions "
           "(a tutorial model's head); a decision that flips between two outputs closer than that tolerance is a "
           "tie (counted, not a failure)",
    "bf16/tf32/int8": f"outputs of the right shape with no NaN/Inf (else FAIL); then one verdict by the strongest "
                      f"evidence at hand, the same rule export records in the file: (1) the bound the file was made "
                      f"to hold (ptx export --max-drop X: a tutorial model's accuracy at most X points below, measured "
                      f"again on its real samples; a model file's --metric, measured again with verify --metric, else "
                      f"as export measured it, said so); (2) a head's labels on real samples: they agree with the "
                      f"reference's on >= {100 * MIN_LABEL_AGREEMENT:.0f}% and accuracy is at most "
                      f"{MAX_ACCURACY_DROP:g} below; (3) your --inputs, (4) generated inputs (said so): each output "
                      f"that looks like class scores keeps its argmax on >= {100 * MIN_LABEL_AGREEMENT:.0f}% of the rows "
                      f"where f32 decides (near-ties, f32's top-two softmax margin < {NEAR_TIE_MARGIN:g}, not "
                      f"counted) and any other stays within a relative error (||got - want|| / ||want||) of "
                      + ", ".join(f"{v:g} ({k})" for k, v in MAX_RELATIVE_ERROR.items())
                      + "; else NOT USABLE: that precision is not for this model (bench and serve never pick it), "
                        "a FAIL only when you named the row (--backends ort-cpu-int8, openvino-bf16, ort-cuda-tf32) "
                        "or verify the reduced file itself (model.int4.onnx). "
                        "Where the file records another verdict, a note says which and why",
    "reference": "a tutorial model's run: eager (CPU rows: on the CPU; CUDA rows: on the same GPU at f32, TF32 off, "
                 "or on the CPU for ort-cuda where torch has no CUDA); a model file: its own runtime on the CPU "
                 "(ONNX: ort-cpu; TorchScript: torchscript; pt2: aoti), an int8 file's at int8; where the file records that "
                 "runtime NOT USABLE, the next runtime it records PASS, else the f32 file it was made from, else its own "
                 "runtime all the same, whose row says NOT USABLE; tf32 rows are judged like bf16 against f32",
    "FAIL": "an f32 row outside the tolerance; an export that does not load, or was exported from another "
            "checkpoint or contract (stale); a reduced-precision row with wrong shapes or NaN/Inf. A backend that "
            "cannot run a model file at all is no disagreement (--strict fails it); onnx.reference is a third "
            "opinion: where it alone departs, a note (--strict fails it)",
    "exit status": "0 when every compared row passes (ties, NOT USABLE rows that came along and third opinions "
                   "noted); 1 when any row FAILs (a reduced row you asked about that is NOT USABLE too); 2 when nothing could be compared (no export yet, or no backend runs here) or on a "
                   "usage error",
}
