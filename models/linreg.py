"""000 §2: linear regression y = w x on y = 2x + noise; `--bias` gives 003 lecture 5's LinearModel."""
from torch import nn

from ptx.contract import InputKind, Task

from .registry import register
from .spec import BATCH, Loss, ModelSpec, seed_recipe, tensor


class LinearRegression(nn.Module):
    def __init__(self, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(1, 1, bias=bias)

    def forward(self, x):  # (B, 1) -> (B, 1)
        return self.linear(x)


register(ModelSpec(
    name="linreg",
    description="Linear(1,1,bias=False) fitted to y = 2x + N(0, 0.33)",
    seed="000 §2",
    builder=LinearRegression,
    input=tensor((BATCH, 1), ("batch", "feature")), kind=InputKind.NUMBER,
    features=("x",),
    labels=("y",),
    dataset="line",
    recipe=seed_recipe(epochs=100, loss=Loss.MSE, batch_size=10),
    params=1,
    task=Task.REGRESSION,
    model_args={"bias": False},
    report=lambda model: {"w": model.linear.weight.item(),
                          **({"b": model.linear.bias.item()} if model.linear.bias is not None else {})},
))
