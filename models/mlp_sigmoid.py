"""000 §4: two-layer sigmoid MLP 784-512-10, no bias."""
from torch import nn

from .registry import register
from .spec import BATCH, MNIST_LABELS, MNIST_NORMALIZATION, InputContract, ModelSpec, Recipe


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


register(ModelSpec(
    name="mlp-sigmoid",
    description="784-512 Sigmoid 512-10 MLP, no bias",
    seed="000 §4",
    builder=SigmoidMLP,
    input=InputContract(shape=(BATCH, 784), layout="flat"),
    preprocessing=MNIST_NORMALIZATION,
    labels=MNIST_LABELS,
    dataset="mnist",
    recipe=Recipe(loss="cross_entropy", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=100, epochs=100),
    params=784 * 512 + 512 * 10,
))
