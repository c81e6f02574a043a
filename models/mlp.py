"""002 §4 / 004: the PyTorch quickstart NeuralNetwork, Flatten then 784-512-512-10 ReLU."""
from torch import nn

from .registry import register
from .spec import Optimizer, PIXELS_TO_UNIT, mnist_model, seed_recipe


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10)
        return self.linear_relu_stack(self.flatten(x))


register(mnist_model(
    name="mlp",
    description="quickstart NeuralNetwork: Flatten, 784-512-512-10 ReLU",
    seed="002 §4, 004",
    builder=NeuralNetwork,
    preprocessing=PIXELS_TO_UNIT,  # ToTensor only
    dataset="fashion-mnist",
    recipe=seed_recipe(epochs=10, optimizer=Optimizer.ADAM, lr=1e-3, batch_size=64),
    params=(784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10),
))
