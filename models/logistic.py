"""003 lecture 6: logistic regression, Linear(1,1) + sigmoid with BCE: hours studied -> pass."""
import torch
from torch import nn

from ptx.contract import InputKind, Task

from .registry import register
from .spec import BATCH, Loss, ModelSpec, seed_recipe, tensor


class LogisticRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):  # (B, 1) hours -> (B, 1) P(pass)
        return torch.sigmoid(self.linear(x))


register(ModelSpec(
    name="logistic",
    description="logistic regression Linear(1,1) + sigmoid, BCE: hours studied -> pass",
    seed="003 lecture 6",
    builder=LogisticRegression,
    input=tensor((BATCH, 1), ("batch", "feature")), kind=InputKind.NUMBER,
    features=("hours",),
    labels=("fail", "pass"),
    dataset="hours",
    # BCELoss(size_average=False) in the seed: summed over the batch; plain SGD.
    recipe=seed_recipe(epochs=1000, loss=Loss.BCE_SUM, momentum=0.0, batch_size=3),
    params=2,
    task=Task.BINARY,
))
