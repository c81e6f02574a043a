"""003 lecture 13: embedding + bidirectional GRU + linear over packed variable-length sequences.

The seed classifies names by country; the data here is words by language (Debian word lists).
Packed sequences do not go through torch.export (dynamo fails on pack_padded_sequence), so this
model's ONNX export uses the TorchScript-based exporter, which handles them: the spec says so.
"""
import torch
from torch import nn

from ptx.contract import EncodeStep, InputKind

from .registry import register
from .spec import BATCH, SEQ, InputContract, ModelSpec, Optimizer, seed_recipe

LANGUAGES = ("english", "german", "french", "italian", "spanish", "dutch")
N_CHARS = 256  # Latin-1 codes; 0 pads, 1 stands for anything outside Latin-1
PAD_ID, UNKNOWN_ID = 0, 1


class GRUClassifier(nn.Module):
    def __init__(self, n_chars: int = N_CHARS, hidden_size: int = 100, n_classes: int = len(LANGUAGES),
                 n_layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(n_chars, hidden_size, padding_idx=PAD_ID)
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers, bidirectional=True)
        self.fc = nn.Linear(hidden_size * 2, n_classes)

    def forward(self, x):  # (T, B) char codes, 0-padded at the end -> (B, classes)
        # Lengths come from the padding, so the input contract stays one tensor. An all-padding
        # row still gets length 1: packing refuses empty sequences.
        lengths = (x != PAD_ID).sum(0).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(x), lengths.cpu(), enforce_sorted=False)
        _, hidden = self.gru(packed)  # (layers * 2, B, H)
        return self.fc(torch.cat([hidden[-1], hidden[-2]], dim=1))


def _gru_params(n_in: int, h: int) -> int:
    return 2 * (3 * h * n_in + 3 * h * h + 2 * 3 * h)  # two directions


register(ModelSpec(
    name="gru-classifier",
    description="embedding + bidirectional GRU (100 x 2 layers) + linear: word -> language",
    seed="003 lecture 13",
    builder=GRUClassifier,
    input=InputContract(shape=(SEQ, BATCH), axes=("seq", "batch"), kind=InputKind.TEXT),
    preprocessing=(EncodeStep("latin-1", pad_id=PAD_ID, unknown_id=UNKNOWN_ID),),
    labels=LANGUAGES,
    dataset="words",
    recipe=seed_recipe(epochs=100, optimizer=Optimizer.ADAM, lr=1e-3, batch_size=256),
    params=N_CHARS * 100 + _gru_params(100, 100) + _gru_params(200, 100) + (200 * len(LANGUAGES) + len(LANGUAGES)),
    onnx_exporter="legacy",
    torch_export_blocker="torch.export cannot trace pack_padded_sequence with a dynamic batch and length "
                         "(its lengths become data-dependent sizes)",
))
