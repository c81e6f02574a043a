"""000 §3: softmax regression 784 -> 10 with no bias."""
from torch import nn

from .registry import register
from .spec import BATCH, MNIST_LABELS, MNIST_NORMALIZATION, InputContract, ModelSpec, Recipe


class SoftmaxRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10, bias=False)

    def forward(self, x):  # (B, 784) -> (B, 10)
        return self.linear(x)


register(ModelSpec(
    name="logreg",
    description="softmax regression Linear(784,10,bias=False)",
    seed="000 §3",
    builder=SoftmaxRegression,
    input=InputContract(shape=(BATCH, 784), layout="flat"),
    preprocessing=MNIST_NORMALIZATION,
    labels=MNIST_LABELS,
    dataset="mnist",
    recipe=Recipe(loss="cross_entropy", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=100, epochs=100),
    params=784 * 10,
))
