"""003 lecture 11: the GoogLeNet-style InceptionA net (88 channels out of each block, FC 1408->10)."""
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register
from .spec import mnist_model, seed_recipe


class InceptionA(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch5x5_2 = nn.Conv2d(16, 24, kernel_size=5, padding=2)
        self.branch3x3_1 = nn.Conv2d(in_channels, 16, kernel_size=1)
        self.branch3x3_2 = nn.Conv2d(16, 24, kernel_size=3, padding=1)
        self.branch3x3_3 = nn.Conv2d(24, 24, kernel_size=3, padding=1)
        self.branch_pool = nn.Conv2d(in_channels, 24, kernel_size=1)

    def forward(self, x):  # (B, C, H, W) -> (B, 88, H, W)
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_1(x)))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([branch1x1, branch5x5, branch3x3, branch_pool], dim=1)


class InceptionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(88, 20, kernel_size=5)  # 88 = 24 * 3 + 16
        self.incep1 = InceptionA(in_channels=10)
        self.incep2 = InceptionA(in_channels=20)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(1408, 10)

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        x = self.incep1(F.relu(self.mp(self.conv1(x))))  # (B, 88, 12, 12)
        x = self.incep2(F.relu(self.mp(self.conv2(x))))  # (B, 88, 4, 4)
        return self.fc(x.flatten(1))  # 88 * 4 * 4 = 1408


def _inception_a_params(c: int) -> int:
    return (c * 16 + 16) * 3 + (16 * 24 * 25 + 24) + (16 * 24 * 9 + 24) + (24 * 24 * 9 + 24) + (c * 24 + 24)


register(mnist_model(
    name="inception",
    description="InceptionA net: conv 10, InceptionA, conv 20, InceptionA (88 ch), FC 1408->10",
    seed="003 lecture 11",
    builder=InceptionNet,
    recipe=seed_recipe(epochs=10, momentum=0.5, batch_size=64),
    params=(10 * 25 + 10) + (20 * 88 * 25 + 20) + _inception_a_params(10) + _inception_a_params(20) + (1408 * 10 + 10),
))
