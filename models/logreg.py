"""000 §3: softmax regression 784 -> 10 with no bias."""
from torch import nn

from .registry import register
from .spec import FLAT_784, mnist_model, seed_recipe


class SoftmaxRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10, bias=False)

    def forward(self, x):  # (B, 784) -> (B, 10)
        return self.linear(x)


register(mnist_model(
    name="logreg",
    description="softmax regression Linear(784,10,bias=False)",
    seed="000 §3",
    builder=SoftmaxRegression,
    input=FLAT_784,
    recipe=seed_recipe(epochs=100),
    params=784 * 10,
))
