"""Models of users' own, written in the tests the way published architectures are, and exported by
the tests: no downloads. (torchvision's models would be the natural choice, but on these machines
its compiled operators do not load against the CPU build of torch that set-up installs.)

Each entry builds the module, example inputs, and how torch.onnx should export it; ``export_all``
writes every one to a folder as ONNX (and TorchScript where a test needs it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualCNN(nn.Module):
    """A small ResNet: stem, two residual blocks with batch norm, adaptive pool, classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.ModuleList([self._block(16, 16, 1), self._block(16, 32, 2)])
        self.downsample = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    @staticmethod
    def _block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.blocks[0](x) + x)
        x = F.relu(self.blocks[1](x) + self.downsample(x))
        return self.fc(self.pool(x).flatten(1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(scale))))


class MobileBlockNet(nn.Module):
    """MobileNetV3's inverted residual: expand 1x1, depthwise 3x3, squeeze-excitation, hard-swish,
    project 1x1; dynamic height and width (it pools adaptively)."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), nn.BatchNorm2d(48),
                                       nn.Hardswish())
        self.se = SqueezeExcite(48, 12)
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.depthwise(self.expand(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PictureAndIds(nn.Module):
    """Two inputs (a float picture and int64 token ids) and two outputs (class scores, an embedding)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.embed = nn.Embedding(50, 8)
        self.scores = nn.Linear(16, 4)

    def forward(self, picture, ids):
        seen = F.adaptive_avg_pool2d(F.relu(self.conv(picture)), 1).flatten(1)
        read = self.embed(ids).mean(1)
        joint = torch.cat([seen, read], 1)
        return self.scores(joint), joint


class StatefulGRU(nn.Module):
    """A recurrent model with a state input whose batch is axis 1, and a scalar int64 ``mode`` that
    picks a branch (an ONNX If once scripted)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x, h0, mode):
        y, h = self.gru(x, h0)
        last = y[-1]
        if bool(mode > 0):
            last = torch.tanh(last) * 2.0
        else:
            last = last + 1.0
        return self.out(last), h


class FixedBatchOne(nn.Module):
    """A model whose batch is fixed to 1 (a detector exported for one camera frame)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return torch.softmax(self.fc(x), -1)


class HalfMLP(nn.Module):
    """Exported in float16: inputs, weights and outputs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SpecialisedBatch(nn.Module):
    """Reads its batch size as a Python int, so the tracer bakes the example's batch into the graph
    (a real exporter pitfall: pytorch#148886 and the many int(x.size(0)) in published code)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        n = int(x.size(0))
        bias = torch.zeros(n, 4)
        return self.fc(x) + bias


@dataclass
class OwnModel:
    name: str
    module: nn.Module
    example: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict = field(default_factory=dict)
    script: bool = False  # torch.jit.script first (control flow becomes an ONNX If)
    half: bool = False
    declarations: list[str] = field(default_factory=list)  # --input for its TorchScript file


def catalog() -> dict[str, OwnModel]:
    torch.manual_seed(0)
    batch = {0: "batch"}
    models = [
        OwnModel("residual", ResidualCNN().eval(), (torch.rand(2, 3, 32, 32),), ["image"], ["logits"],
                 {"image": batch, "logits": batch}, declarations=["image=batchx3x32x32"]),
        OwnModel("mobile", MobileBlockNet().eval(), (torch.rand(2, 3, 40, 48),), ["image"], ["scores"],
                 {"image": {0: "batch", 2: "height", 3: "width"}, "scores": batch},
                 declarations=["image=batchx3xheightxwidth"]),
        OwnModel("two_io", PictureAndIds().eval(), (torch.rand(2, 1, 16, 16), torch.randint(0, 50, (2, 6))),
                 ["picture", "ids"], ["scores", "joint"],
                 {"picture": batch, "ids": {0: "batch", 1: "tokens"}, "scores": batch, "joint": batch},
                 declarations=["picture=batchx1x16x16", "ids=batchxtokens:int64"]),
        OwnModel("stateful", StatefulGRU().eval(), (torch.rand(5, 2, 6), torch.zeros(1, 2, 12),
                                                    torch.tensor(1, dtype=torch.int64)),
                 ["x", "h0", "mode"], ["scores", "h"],
                 {"x": {0: "steps", 1: "batch"}, "h0": {1: "batch"}, "scores": batch, "h": {1: "batch"}}, script=True),
        OwnModel("fixed1", FixedBatchOne().eval(), (torch.rand(1, 12),), ["x"], ["probs"]),
        OwnModel("half", HalfMLP().eval().half(), (torch.rand(3, 16).half(),), ["x"], ["y"],
                 {"x": batch, "y": batch}, half=True),
        OwnModel("specialised", SpecialisedBatch().eval(), (torch.rand(3, 8),), ["x"], ["y"],
                 {"x": batch, "y": batch}, declarations=["x=batchx8"]),
    ]
    return {m.name: m for m in models}


def export_onnx(model: OwnModel, path: Path) -> Path:
    """torch.onnx's TorchScript-based exporter: it keeps dynamic_axes' names (the dynamo exporter
    is exercised by ptx's own export of modules)."""
    module = torch.jit.script(model.module) if model.script else model.module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, model.example, str(path), input_names=model.input_names,
                          output_names=model.output_names, dynamic_axes=model.dynamic_axes or None,
                          opset_version=17, dynamo=False)
    return path


def export_torchscript(model: OwnModel, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.script(model.module) if model.script else torch.jit.trace(model.module, model.example)
    torch.jit.save(traced, str(path))
    return path


def export_all(folder: Path) -> dict[str, Path]:
    """Every model as ONNX (NAME.onnx) and, where it declares its inputs, TorchScript (NAME.pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, model in catalog().items():
        paths[name] = export_onnx(model, folder / f"{name}.onnx")
        if model.declarations:
            paths[f"{name}.pt"] = export_torchscript(model, folder / f"{name}.pt")
    return paths
