"""A detection model as it comes (torchvision's convention): forward() returns one dict per image whose
tensors are as long as the detections that image kept (``[{"boxes": [K_i, 4], "scores": [K_i],
"labels": [K_i]}, ...]``). No exporter returns a list of dicts, and no two images agree on K_i, so the
module is wrapped in ``FlatDetections``: each key's tensors concatenated over the images (``boxes``
[N, 4], ``scores`` [N], ``labels`` [N]) plus ``counts`` [images], how many each image kept. torch.export
takes those data-dependent sizes (the selection's nonzero/masking becomes an unbacked size), and the
signature records which outputs they are (ptx.contract.detections.DetectionOutputs), so that load(),
predict, serve and the comparison give back one dict per image.

The list is as long as the batch: forward() builds it in a Python loop over the images, which every
exporter unrolls at the batch it traces (torch.export specializes the batch to that constant). A
dynamic batch is refused saying so, with the route that works: a fixed batch (one image per call, as
detectors are deployed).
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

import torch

from ptx.contract.detections import COUNTS, DetectionOutputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError

DETECTIONS = "detections"  # the symbol of the flat outputs' first axis: how many the images kept in all


def is_detections(out, sigs: Sequence[TensorSig] = ()) -> bool:
    """Whether ``out`` is one dict of tensors per image (as many as a fixed batch of ``sigs`` holds, where
    one is fixed), every dict with the same keys, boxes among them ([K, 4] under a key named ``boxes`` or
    ending so), each dict's tensors as long as one another (the detections it kept)."""
    if not isinstance(out, (list, tuple)) or not out or not all(isinstance(d, Mapping) and d for d in out):
        return False
    fixed = {t.shape[0] for t in sigs if t.shape and isinstance(t.shape[0], int)}
    if fixed and len(out) not in fixed:
        return False
    keys = list(out[0])
    boxes = next((k for k in keys if str(k).endswith("boxes")), None)
    for d in out:
        if list(d) != keys or not all(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in d.values()):
            return False
        if len({v.shape[0] for v in d.values()}) != 1 or boxes is None or d[boxes].dim() != 2 or d[boxes].shape[1] != 4:
            return False
    return True


class FlatDetections(torch.nn.Module):
    """``module`` whose one dict per image becomes flat tensors: each key concatenated over the images,
    then ``counts`` [images] (int64)."""

    def __init__(self, module: torch.nn.Module, keys: Sequence[str], counts: str):
        super().__init__()
        self.module, self.keys, self.counts = module, [str(k) for k in keys], counts

    def forward(self, *args):
        images = self.module(*args)
        flat = {k: torch.cat([d[k] for d in images]) for k in self.keys}
        # one 0-d tensor per image: torch.export keeps each size symbolic (stack of sym sizes)
        flat[self.counts] = torch.stack([torch.scalar_tensor(d[self.keys[0]].shape[0], dtype=torch.int64)
                                         for d in images])
        return flat


def detection_outputs(module: torch.nn.Module, sigs: Sequence[TensorSig], out, log: Callable[[str], None]
                      ) -> torch.nn.Module:
    """``module`` wrapped in FlatDetections (its forward() showing the declared inputs' names, as
    torch.export binds the example to them), or a one-line refusal where the batch is dynamic."""
    name = type(getattr(module, "module", module)).__name__
    batched = [t for t in sigs if t.batch_axis is not None]
    if batched:
        t = batched[0]
        fixed = "x".join("1" if i == t.batch_axis else str(d) for i, d in enumerate(t.shape))
        raise PtxError(f"{name} returns one dict of detections per image, a list as long as the batch: every exporter "
                       f"fixes that length at the batch it traces, so the batch of {t.name} cannot be dynamic; export it "
                       f"with a fixed batch: --input {t.name}={fixed} (one picture per call, as detectors are "
                       "deployed; 2 or more where you batch them)")
    keys = [str(k) for k in out[0]]
    counts = COUNTS if COUNTS not in keys else next(f"{COUNTS}_{i}" for i in range(1, 100) if f"{COUNTS}_{i}" not in keys)
    log(f"outputs: one dict per image ({', '.join(keys)}), exported flat: each key's detections of every image one "
        f"after another, and {counts}, how many each image kept")
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  *(inspect.Parameter(t.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for t in sigs)]

    def forward(self, *args):
        return FlatDetections.forward(self, *args)

    forward.__signature__ = inspect.Signature(parameters)
    cls = type(name, (FlatDetections,), {"forward": forward, "__module__": FlatDetections.__module__})
    return cls(module, keys, counts)


def with_detections(signature: Signature, module: torch.nn.Module) -> Signature:
    """``signature`` of a FlatDetections module with its detections recorded, and each flat output's
    first axis the data-dependent ``detections`` (two runs that kept as many are no proof that every
    run does); any other module's as it is."""
    flat = module if isinstance(module, FlatDetections) else None
    if flat is None:
        return signature
    from dataclasses import replace

    outputs = tuple(replace(t, shape=(DETECTIONS, *t.shape[1:]), batch_axis=None) if t.name in flat.keys else
                    replace(t, batch_axis=None) for t in signature.outputs)
    return replace(signature, outputs=outputs, detections=DetectionOutputs(flat.counts, tuple(flat.keys)))
