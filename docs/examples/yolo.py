"""A detector shaped as ultralytics' YOLOv8 DetectionModel, in plain torch: docs/own-model.md's
"Outputs of any structure" exports it, and tests/test_nested_outputs.py checks it.

Like ultralytics' model in eval mode, forward() returns ``(predictions, [p3, p4, p5])``: the decoded
predictions ``[batch, 4 + classes, anchors]`` (a box as centre and size in pixels, then each class's
score) beside the three feature maps of the head, at strides 8, 16 and 32.
"""
import torch
import torch.nn as nn


def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Conv, batch norm, SiLU: ultralytics' Conv."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Detect(nn.Module):
    """The head: per level a box branch (4 distances from the anchor point) and a class branch."""

    def __init__(self, classes: int, channels: tuple[int, ...], strides: tuple[int, ...]):
        super().__init__()
        self.classes, self.strides = classes, strides
        self.box = nn.ModuleList(nn.Sequential(conv(c, 16, 1), nn.Conv2d(16, 4, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(conv(c, 16, 1), nn.Conv2d(16, classes, 1)) for c in channels)

    def forward(self, features):
        x = [torch.cat((b(f), c(f)), 1) for f, b, c in zip(features, self.box, self.cls)]
        points, strides = [], []
        for level, stride in zip(x, self.strides):  # anchor points at the centre of each cell, as make_anchors
            h, w = level.shape[2:]
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            points.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(stride)))
        anchors, stride = torch.cat(points).T.unsqueeze(0), torch.cat(strides).T.unsqueeze(0)
        y = torch.cat([level.flatten(2) for level in x], 2)
        distances, scores = y.split((4, self.classes), 1)
        lt, rb = distances.exp().chunk(2, 1)  # dist2bbox, as centre and size
        boxes = torch.cat(((anchors + (rb - lt) / 2), lt + rb), 1) * stride
        return torch.cat((boxes, scores.sigmoid()), 1), x


class Yolo(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(conv(3, 8, 2), conv(8, 16, 2), conv(16, 16, 2))  # stride 8
        self.p4, self.p5 = conv(16, 32, 2), conv(32, 32, 2)  # strides 16 and 32
        self.detect = Detect(classes, (16, 32, 32), (8, 16, 32))

    def forward(self, image):
        p3 = self.stem(image)
        p4 = self.p4(p3)
        return self.detect([p3, p4, self.p5(p4)])


def build() -> nn.Module:
    torch.manual_seed(0)  # the same weights every time
    return Yolo().eval()
