"""003 lecture 11: the ResidualBlock net (16/32 channels, FC 512->10)."""
import torch.nn.functional as F
from torch import nn

from .registry import register
from .spec import mnist_model, seed_recipe


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(x + y)


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.rblock1 = ResidualBlock(16)
        self.rblock2 = ResidualBlock(32)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        x = self.rblock1(self.mp(F.relu(self.conv1(x))))  # (B, 16, 12, 12)
        x = self.rblock2(self.mp(F.relu(self.conv2(x))))  # (B, 32, 4, 4)
        return self.fc(x.flatten(1))  # 32 * 4 * 4 = 512


register(mnist_model(
    name="resnet",
    description="ResidualBlock net: conv 16, block, conv 32, block, FC 512->10",
    seed="003 lecture 11",
    builder=ResidualNet,
    recipe=seed_recipe(epochs=10, momentum=0.5, batch_size=64),
    params=(16 * 25 + 16) + (32 * 16 * 25 + 32) + 2 * (16 * 16 * 9 + 16) + 2 * (32 * 32 * 9 + 32) + (512 * 10 + 10),
))
