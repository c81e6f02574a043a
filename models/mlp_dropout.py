"""000 §5: 784-512-512-10 ReLU MLP with Dropout(0.2), no bias, trained with Adam."""
from torch import nn

from .registry import register
from .spec import FLAT_784, Optimizer, mnist_model, seed_recipe


class DropoutMLP(nn.Module):
    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 512, bias=False), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 512, bias=False), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 10, bias=False),
        )

    def forward(self, x):  # (B, 784) -> (B, 10)
        return self.layers(x)


register(mnist_model(
    name="mlp-dropout",
    description="784-512-512-10 ReLU MLP with Dropout(0.2), no bias, Adam",
    seed="000 §5",
    builder=DropoutMLP,
    input=FLAT_784,
    # The seed calls optim.Adam(model.parameters()): Adam's default lr.
    recipe=seed_recipe(epochs=100, optimizer=Optimizer.ADAM, lr=1e-3),
    params=784 * 512 + 512 * 512 + 512 * 10,
))
