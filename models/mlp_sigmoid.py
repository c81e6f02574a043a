"""000 §4: two-layer sigmoid MLP 784-512-10, no bias."""
from torch import nn

from .registry import register
from .spec import FLAT_784, mnist_model, seed_recipe


class SigmoidMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 512, bias=False),
            nn.Sigmoid(),
            nn.Linear(512, 10, bias=False),
        )

    def forward(self, x):  # (B, 784) -> (B, 10)
        return self.layers(x)


register(mnist_model(
    name="mlp-sigmoid",
    description="784-512 Sigmoid 512-10 MLP, no bias",
    seed="000 §4",
    builder=SigmoidMLP,
    input=FLAT_784,
    recipe=seed_recipe(epochs=100),
    params=784 * 512 + 512 * 10,
))
