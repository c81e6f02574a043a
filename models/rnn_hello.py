"""003 lecture 12: a character RNN learning "hello" -> "ohlol", embedding + RNN, seq-first."""
import torch
from torch import nn

from ptx.contract import EncodeStep, InputKind

from .registry import register
from .spec import BATCH, SEQ, ModelSpec, Optimizer, seed_recipe, tensor

VOCAB = "ehlo"  # the seed's idx2char


class HelloRNN(nn.Module):
    def __init__(self, num_class: int = 4, embedding_size: int = 10, hidden_size: int = 8, num_layers: int = 2):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.emb = nn.Embedding(num_class, embedding_size)
        self.rnn = nn.RNN(embedding_size, hidden_size, num_layers=num_layers)
        self.fc = nn.Linear(hidden_size, num_class)

    def forward(self, x):  # (T, B) char ids -> (B, T, 4) logits per position
        hidden = torch.zeros(self.num_layers, x.size(1), self.hidden_size, device=x.device)
        out, _ = self.rnn(self.emb(x), hidden)  # (T, B, H)
        return self.fc(out).transpose(0, 1)


register(ModelSpec(
    name="rnn-hello",
    description='char RNN (embedding 10, RNN 8 x 2 layers) learning "hello" -> "ohlol"',
    seed="003 lecture 12",
    builder=HelloRNN,
    input=tensor((SEQ, BATCH), ("seq", "batch"), dtype="int64"), kind=InputKind.TEXT,
    # Every id is a letter: there is no padding token, so ptx never pads this model's input (it
    # batches words of one length together).
    preprocessing=(EncodeStep("vocab", vocab=VOCAB),),
    labels=tuple(VOCAB),
    dataset="hello",
    recipe=seed_recipe(epochs=15, optimizer=Optimizer.ADAM, lr=0.05, batch_size=1),
    params=4 * 10 + (10 * 8 + 8 * 8 + 16) + (8 * 8 + 8 * 8 + 16) + (8 * 4 + 4),
    output_shape=(BATCH, SEQ, len(VOCAB)),
    # torch.export unrolls nn.RNN over the example's length, fixing the sequence length in the
    # graph; the TorchScript-based exporter emits ONNX's RNN op, whose length stays dynamic.
    onnx_exporter="legacy",
    torch_export_blocker="torch.export unrolls nn.RNN over the example's length, so the sequence length "
                         "cannot stay dynamic",
))
