"""000 §7: LSTM(28 -> 128) reading an image row by row, seq-first, classifying from the last step."""
import torch
from torch import nn

from .registry import register
from .spec import BATCH, mnist_model, seed_recipe, tensor


class RowLSTM(nn.Module):
    def __init__(self, input_dim: int = 28, hidden_dim: int = 128, output_dim: int = 10):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.lstm = nn.LSTM(input_dim, hidden_dim)
        self.linear = nn.Linear(hidden_dim, output_dim, bias=False)

    def forward(self, x):  # (T=28, B, 28) -> (B, 10)
        # h0/c0 follow the input's batch so that exported graphs keep the batch dynamic.
        batch = x.size(1)
        h0 = torch.zeros(1, batch, self.hidden_dim, dtype=x.dtype, device=x.device)
        c0 = torch.zeros(1, batch, self.hidden_dim, dtype=x.dtype, device=x.device)
        out, _ = self.lstm(x, (h0, c0))  # (T, B, H)
        return self.linear(out[-1])


register(mnist_model(
    name="lstm",
    description="LSTM(28,128) over image rows, seq-first (28, batch, 28), Linear(128,10,bias=False)",
    seed="000 §7",
    builder=RowLSTM,
    # Seq-first: the picture's 28 rows are the time steps, its 28 columns each step's features.
    input=tensor((28, BATCH, 28), ("row", "batch", "column")),
    recipe=seed_recipe(epochs=20),
    params=4 * 128 * (28 + 128) + 2 * 4 * 128 + 128 * 10,
))
