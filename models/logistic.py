"""003 lecture 6: logistic regression, Linear(1,1) + sigmoid with BCE: hours studied -> pass."""
import torch
from torch import nn

from .registry import register
from .spec import BATCH, InputContract, ModelSpec, Preprocessing, Recipe


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
    input=InputContract(shape=(BATCH, 1), layout="scalar", kind="number", output_name="probability"),
    preprocessing=Preprocessing(scale=1.0),
    labels=("fail", "pass"),
    dataset="hours",
    # BCELoss(size_average=False) in the seed: summed over the batch.
    recipe=Recipe(loss="bce_sum", optimizer="sgd", lr=0.01, batch_size=3, epochs=1000),
    params=2,
    task="binary",
))
