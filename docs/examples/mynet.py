"""A model of your own, as you would write it: the walk-through of docs/own-model.md exports it.

`build` is the FACTORY `ptx export --module docs/examples/mynet.py:build` calls; it returns the
module (it may also return (module, example inputs)). With torchvision installed, the same page works
with `return torchvision.models.resnet18(weights="DEFAULT")` here and `--input image=batchx3x224x224`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """A residual block with batch norm, as ResNet has them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class MyNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, classes)

    def forward(self, image):
        features = self.blocks(self.stem(image))
        return self.head(F.adaptive_avg_pool2d(features, 1).flatten(1))


def build() -> nn.Module:
    torch.manual_seed(0)  # the same weights every time the walk-through runs
    return MyNet().eval()
