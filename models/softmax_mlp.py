"""003 lecture 9: softmax classifier 784-512-256-128-64-10 with ReLU."""
from torch import nn

from .registry import register
from .spec import BATCH, MNIST_LABELS, MNIST_NORMALIZATION, InputContract, ModelSpec, Recipe


class SoftmaxMLP(nn.Module):
    def __init__(self):
        super().__init__()
        sizes = (784, 512, 256, 128, 64)
        layers = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(64, 10))

    def forward(self, x):  # (B, 784) -> (B, 10)
        return self.layers(x)


register(ModelSpec(
    name="softmax-mlp",
    description="softmax classifier 784-512-256-128-64-10 ReLU",
    seed="003 lecture 9",
    builder=SoftmaxMLP,
    input=InputContract(shape=(BATCH, 784), layout="flat"),
    preprocessing=MNIST_NORMALIZATION,
    labels=MNIST_LABELS,
    dataset="mnist",
    recipe=Recipe(loss="cross_entropy", optimizer="sgd", lr=0.01, momentum=0.5, batch_size=64, epochs=10),
    params=(784 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10),
))
