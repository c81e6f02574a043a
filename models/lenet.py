"""002 "Net": the PyTorch tutorial LeNet on 1x32x32 input (MNIST padded from 28x28 by the spec)."""
import torch.nn.functional as F
from torch import nn

from ptx.contract import PadStep

from .registry import register
from .spec import BATCH, IMAGE_28, MNIST_NORMALIZATION, mnist_model, seed_recipe, tensor


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):  # (B, 1, 32, 32) -> (B, 10)
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))  # (B, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, 5, 5)
        x = x.flatten(1)  # (B, 400)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


register(mnist_model(
    name="lenet",
    description="tutorial LeNet: conv 6/16 k5, FC 400-120-84-10, MNIST padded to 32x32",
    seed="002 §4 Net",
    builder=LeNet,
    input=tensor((BATCH, 1, 32, 32), IMAGE_28.axes),
    preprocessing=MNIST_NORMALIZATION + (PadStep(2),),  # 28x28 digits padded to 32x32
    # The seed's optimizer and loop count; its batch is a single random tensor, so the batch is the
    # official tutorial's (4).
    recipe=seed_recipe(epochs=5, lr=0.001, batch_size=4),
    params=(6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10),
))
