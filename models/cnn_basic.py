"""003 lecture 10: basic CNN, conv 1->10 k5, conv 10->20 k5, max-pool 2, ReLU, FC 320->10."""
import torch.nn.functional as F
from torch import nn

from .registry import register
from .spec import mnist_model, seed_recipe


class BasicCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        x = F.relu(self.pooling(self.conv1(x)))  # (B, 10, 12, 12)
        x = F.relu(self.pooling(self.conv2(x)))  # (B, 20, 4, 4)
        return self.fc(x.flatten(1))


register(mnist_model(
    name="cnn-basic",
    description="basic CNN: conv 1->10 k5, conv 10->20 k5, max-pool 2, ReLU, FC 320->10",
    seed="003 lecture 10",
    builder=BasicCNN,
    recipe=seed_recipe(epochs=10, momentum=0.5, batch_size=64),
    params=(10 * 25 + 10) + (20 * 10 * 25 + 20) + (320 * 10 + 10),
))
