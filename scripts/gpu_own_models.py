"""A BERT-like model a user would bring, for scripts/gpu_check.sh's `own` phase (issue 45):
exported with `ptx export --module scripts/gpu_own_models.py:bert_like`, then verified, benched and
served on the GPU rows as any user's file is (the phase's ResNet-like net is the docs' own,
docs/examples/mynet.py). Token and position embeddings, one transformer encoder layer with a
padding mask, two dynamic axes (batch and sequence) and two int64 inputs, ``input_ids`` and
``attention_mask``. Seeded weights: the check compares backends, not accuracy, so nothing is trained.
"""
import torch
from torch import nn

VOCAB, WIDTH, MAX_TOKENS = 1000, 64, 128


class BertLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(MAX_TOKENS, WIDTH)
        self.encoder = nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=128, batch_first=True, dropout=0.0)
        self.pooler = nn.Linear(WIDTH, WIDTH)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.tokens(input_ids) + self.positions(positions)
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        return x, torch.tanh(self.pooler(x[:, 0]))


def bert_like() -> nn.Module:
    torch.manual_seed(0)
    module = BertLike()
    for p in module.parameters():
        nn.init.normal_(p, std=0.1)
    return module.eval()
