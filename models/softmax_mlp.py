"""003 lecture 9: softmax classifier 784-512-256-128-64-10 with ReLU."""
from torch import nn

from .registry import register
from .spec import FLAT_784, mnist_model, seed_recipe


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


register(mnist_model(
    name="softmax-mlp",
    description="softmax classifier 784-512-256-128-64-10 ReLU",
    seed="003 lecture 9",
    builder=SoftmaxMLP,
    input=FLAT_784,
    recipe=seed_recipe(epochs=10, momentum=0.5, batch_size=64),
    params=(784 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10),
))
