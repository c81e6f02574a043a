"""Two models a user would bring, for scripts/gpu_check.sh's `own` phase (issue 45): exported with
`ptx export --module scripts/gpu_own_models.py:FACTORY`, then verified, benched and served on the GPU
rows as any user's file is.

- ``resnet_like``: convolutions with batch norm and a residual add (the layers whose CUDA kernels,
  cuDNN's algorithm choice and TF32 part most from the CPU's), input ``image`` [batch, 3, 32, 32].
- ``bert_like``: token and position embeddings, one transformer encoder layer with a padding mask,
  two dynamic axes (batch and sequence) and two int64 inputs, ``input_ids`` and ``attention_mask``.

Seeded weights: the check compares backends, not accuracy, so nothing is trained.
"""
import torch
from torch import nn

VOCAB, WIDTH, MAX_TOKENS = 1000, 64, 128


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResNetLike(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = nn.Sequential(ResidualBlock(32), ResidualBlock(32))
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layer2 = nn.Sequential(ResidualBlock(64), ResidualBlock(64))
        self.head = nn.Linear(64, classes)

    def forward(self, image):
        x = self.layer2(self.down(self.layer1(self.stem(image))))
        return self.head(x.mean(dim=(2, 3)))


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


def _seeded(module: nn.Module) -> nn.Module:
    """Seeded weights and batch-norm statistics that are not the identity (so folding them matters)."""
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def resnet_like() -> nn.Module:
    return _seeded(ResNetLike())


def bert_like() -> nn.Module:
    return _seeded(BertLike())
