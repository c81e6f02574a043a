"""003 lecture 13: embedding + bidirectional GRU + linear over variable-length sequences.

The seed classifies names by country; the data here is words by language (Debian word lists).
The seed packs the padded batch (pack_padded_sequence) so that each direction of the GRU reads a
word's own characters only. The same answer is computed here without packing, so that the ONNX
graph needs no run-time ``sequence_lens`` (OpenVINO with dynamic shapes, onnx's reference evaluator
and tract ignore or refuse one) and no shape arithmetic (ONNX Runtime's CUDA provider hands that to
the CPU): with padding at the end, the forward direction's state at a word's last real character
does not depend on what follows, and the backward direction is the forward GRU run over each word
reversed within its length. Both read the GRU's full output at the last real character.
"""
import torch
from torch import nn

from ptx.contract import EncodeStep, InputKind

from .registry import register
from .spec import BATCH, SEQ, ModelSpec, Optimizer, seed_recipe, tensor

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
        real = (x != PAD_ID).float()                                   # (T, B)
        # An all-padding row reads step 0 (packing gave it length 1: it refuses empty sequences).
        last = real.sum(0).clamp(min=1) - 1                            # (B,) index of the last real character
        step = torch.cumsum(real * 0 + 1, 0) - 1                       # (T, B) 0, 1, 2, ... (no Shape node)
        # Within its length each word is read backwards; padding stays where it is, after the word.
        reverse = torch.where(step <= last, last - step, step).long()  # (T, B)
        forward_in, backward_in = self.embedding(x), self.embedding(torch.gather(x, 0, reverse))
        hidden = self.gru.hidden_size  # a Python int: sizes read from tensors would become Shape nodes
        for layer in range(self.gru.num_layers):
            ahead = self._direction(forward_in, layer, reverse=False)    # (T, B, H) in the word's order
            behind = self._direction(backward_in, layer, reverse=True)   # (T, B, H) in reversed order
            flipped = _take_steps(torch.cat([ahead, behind], 2), reverse, 2 * hidden)
            forward_in = torch.cat([ahead, flipped[:, :, hidden:]], 2)   # both directions, word order
            backward_in = torch.cat([flipped[:, :, :hidden], behind], 2)  # both directions, reversed order
        # The last layer's states after the word's last character in each reading direction: what
        # the packed GRU returns as hidden[-1] (backward) and hidden[-2] (forward).
        final = _take_steps(torch.cat([behind, ahead], 2), last.long().unsqueeze(0), 2 * hidden)  # (1, B, 2H)
        return self.fc(final.squeeze(0))

    def _direction(self, inputs, layer: int, reverse: bool):
        """One direction of one layer of ``self.gru`` run forward over ``inputs`` (T, B, F) from a
        zero state (which the ONNX export omits: ONNX's default). This is the call nn.GRU.forward
        makes, with one direction's weights, so the weights and checkpoints stay nn.GRU's own."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        weights = [getattr(self.gru, f"{kind}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        zeros = inputs.new_zeros(1, inputs.size(1), self.gru.hidden_size)
        out, _ = torch._VF.gru(inputs, zeros, weights, True, 1, 0.0, self.training, False, False)
        return out


def _take_steps(seq, index, width: int):
    """seq[index[t, b], b, :] for every t, b: (T, B, width) and (T', B) int64 -> (T', B, width). The
    index is widened over the feature axis by adding a constant zero row, not by Expand on a Shape.
    The row is made from ``index`` (new_zeros), not with ``device=``: a trace would bake the device
    it was traced on into the TorchScript file, which then fails on any other (issue 26)."""
    return torch.gather(seq, 0, index.unsqueeze(2) + index.new_zeros(1, 1, width))


def _gru_params(n_in: int, h: int) -> int:
    return 2 * (3 * h * n_in + 3 * h * h + 2 * 3 * h)  # two directions


register(ModelSpec(
    name="gru-classifier",
    description="embedding + bidirectional GRU (100 x 2 layers) + linear: word -> language",
    seed="003 lecture 13",
    builder=GRUClassifier,
    input=tensor((SEQ, BATCH), ("seq", "batch"), dtype="int64"), kind=InputKind.TEXT,
    preprocessing=(EncodeStep("latin-1", pad_id=PAD_ID, unknown_id=UNKNOWN_ID),),
    labels=LANGUAGES,
    dataset="words",
    recipe=seed_recipe(epochs=100, optimizer=Optimizer.ADAM, lr=1e-3, batch_size=256),
    params=N_CHARS * 100 + _gru_params(100, 100) + _gru_params(200, 100) + (200 * len(LANGUAGES) + len(LANGUAGES)),
    # The TorchScript-based exporter emits ONNX's GRU op, whose length stays dynamic.
    onnx_exporter="legacy",
    torch_export_blocker="torch.export unrolls the GRU over the example's length, so the sequence length "
                         "cannot stay dynamic",
))
