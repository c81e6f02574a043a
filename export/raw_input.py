"""``--input uint8``: the model behind its own preprocessing, so the artifact takes raw pictures.

A 28x28 picture is 784 bytes as uint8 and 3,136 as float32: taking the picture pipeline's uint8
output and doing the contract's tensor steps (scale, normalize, pad, layout) as the graph's first
nodes moves a quarter of the bytes to the device and leaves the host nothing to compute. The steps
are the ones ptx.contract.transforms.normalize applies, in float32 and in the same order, so the
numbers the model sees are the same.
"""
from __future__ import annotations

import torch

from ptx.contract import Contract, NormalizeStep, PadStep, ScaleStep


class _Scale(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.register_buffer("factor", torch.tensor(factor, dtype=torch.float32))

    def forward(self, x):
        return x * self.factor


class _Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


# Each tensor step of a contract as the graph's own module.
GRAPH_STEPS = {ScaleStep: lambda step: _Scale(step.factor), NormalizeStep: lambda step: _Normalize(step.mean, step.std),
               PadStep: lambda step: torch.nn.ZeroPad2d(step.pixels)}


class RawPictureModel(torch.nn.Module):
    """(batch, canvas, canvas) uint8 -> ``model``'s output, via the contract's tensor steps."""

    def __init__(self, model: torch.nn.Module, contract: Contract):
        super().__init__()
        for step in contract.tensor_steps:
            if type(step) not in GRAPH_STEPS:
                raise ValueError(f"{contract.model}: step {step.op!r} has no graph form")
        self.steps = torch.nn.ModuleList(GRAPH_STEPS[type(step)](step) for step in contract.tensor_steps)
        self.sample_shape = [int(d) for d in contract.input.sample_shape]
        self.batch_axis = contract.input.batch_axis
        self.model = model

    def forward(self, picture):
        x = picture.to(torch.float32)
        for step in self.steps:
            x = step(x)
        x = x.reshape([-1] + self.sample_shape)  # (B, *sample): the layout normalize() gives
        if self.batch_axis != 0:
            x = x.movedim(0, self.batch_axis)  # (28, B, 28) for lstm
        return self.model(x)
